"""Portfolio risk engine (keeper/quant/risk/engine.py): closed forms, laws and second computations."""
from __future__ import annotations

import csv
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from py_vollib.black import black as vollib_black
from py_vollib.black.greeks.analytical import delta as vollib_delta
from py_vollib.black.greeks.analytical import gamma as vollib_gamma
from py_vollib.black.greeks.analytical import vega as vollib_vega
from scipy.signal import lfilter
from scipy.stats import norm

from keeper.quant.risk.engine import (
    CALL,
    FORWARD,
    NO_UNDERLYING,
    PUT,
    CollateralTable,
    RiskInputs,
    RiskParams,
    SeriesTable,
    compute_account_risk,
    deserialize_risk_inputs,
    model_values,
    revalue,
    risk_inputs_hash,
    serialize_risk_inputs,
    tail_stats,
    to_quote_units,
)
from keeper.quant.risk.scenarios import (
    MertonParams,
    ScenarioSet,
    grid_scenarios,
    historical_scenarios,
    log_returns_from_closes,
    monte_carlo_scenarios,
    seed_from_block_hash,
)
from keeper.quant.risk.synthetic import synthetic_book


def _quantile_scenarios(sigma: float, n: int, n_und: int = 1) -> ScenarioSet:
    """Deterministic 'exact quantile' normal scenario set: log returns sigma * Phi^-1((i + 1/2) / n)."""
    z = norm.ppf((np.arange(n) + 0.5) / n)
    ls = np.repeat((sigma * z)[:, None], n_und, axis=1)
    return ScenarioSet("quantiles", ls, np.zeros_like(ls), np.ones(n), 0.0)


def _single_book(kind: int, strike: float, expiry: float, vol: float, size: float, forward: float = 3000.0,
                 collateral: float = 0.0, haircut: float = 0.0, coll_underlying: int = NO_UNDERLYING,
                 discount: float = 1.0) -> RiskInputs:
    series = SeriesTable(np.array([0]), [strike], [expiry], np.array([kind]), [discount])
    price = forward if coll_underlying >= 0 else 1.0
    inputs = RiskInputs(series, sp.csr_matrix(np.array([[size]])), np.array([[collateral]]),
                        CollateralTable([price], [haircut], np.array([coll_underlying])), [forward], [vol], [0.0])
    return RiskInputs(series, inputs.positions, inputs.collateral, inputs.collateral_assets, inputs.forward,
                      inputs.vols, model_values(inputs))


def _lognormal_var_es(value: float, sigma: float, var_level: float, es_level: float) -> tuple[float, float]:
    """Closed-form VaR and ES of the loss value * (1 - exp(X)), X ~ N(0, sigma^2)."""
    var = value * (1.0 - math.exp(sigma * norm.ppf(1.0 - var_level)))
    p = 1.0 - es_level
    es = value * (1.0 - math.exp(0.5 * sigma ** 2) * norm.cdf(norm.ppf(p) - sigma) / p)
    return var, es


@pytest.mark.parametrize("holding", ["collateral", "forward"])
def test_var_es_of_linear_position_match_lognormal_closed_form(holding):
    sigma, n, f = 0.05, 200_000, 3000.0
    if holding == "collateral":   # 7 ETH at a 20% haircut: moves at its haircut value
        inputs = _single_book(FORWARD, 3000.0, 0.5, 0.8, 0.0, forward=f, collateral=7.0, haircut=0.2,
                              coll_underlying=0)
        value = 7.0 * 0.8 * f
    else:                         # long 7 forwards
        inputs = _single_book(FORWARD, 2500.0, 0.5, 0.8, 7.0, forward=f)
        value = 7.0 * f
    scen = _quantile_scenarios(sigma, n)
    grid = grid_scenarios(0.1, n_underlyings=1, horizon=0.0)
    risk = compute_account_risk(inputs, scen, grid)
    var, es = _lognormal_var_es(value, sigma, 0.99, 0.975)
    assert risk.var[0] == pytest.approx(var, rel=2e-4)
    assert risk.es[0] == pytest.approx(es, rel=2e-4)
    var975, _ = _lognormal_var_es(value, sigma, 0.975, 0.975)
    assert risk.var_at_es_level[0] == pytest.approx(var975, rel=2e-4)
    # worst grid loss of a long linear position: the extreme down move (-2 x 10%) at 35% coverage vs -10% in full
    assert risk.grid_worst_loss[0] == pytest.approx(max(0.35 * 0.2, 0.1) * value, rel=1e-12)
    assert risk.delta[0, 0] == pytest.approx(value / f, rel=1e-12)


def test_es_at_least_var_for_every_account():
    inputs = synthetic_book(7, 300, 40, positions_per_account=5)
    mc = monte_carlo_scenarios(seed_from_block_hash("0x" + "ab" * 32), 4000, 2)
    risk = compute_account_risk(inputs, mc, grid_scenarios([0.15, 0.2]))
    assert np.all(risk.es >= risk.var_at_es_level)             # ES_b >= VaR_b: a law at the same level
    assert np.all(risk.tail_worst_loss >= risk.es)
    assert np.all(risk.var_at_es_level <= risk.var)           # VaR is non-decreasing in the level
    assert np.all(risk.initial_margin >= risk.maintenance_margin)
    assert np.all(risk.maintenance_margin >= np.maximum(risk.es, risk.grid_worst_loss))


def test_es975_below_var99_is_possible_so_only_same_level_is_a_law():
    # 1.5% of scenarios lose 100, the rest nothing: VaR99 = 100 but ES97.5 = 60 (documented in docs/risk.md)
    n = 1000
    dv = np.zeros((1, n))
    dv[0, :15] = -100.0
    stats = tail_stats(sp.csr_matrix(np.ones((1, 1))), dv, 0.99, 0.975)
    assert stats.var[0] == 100.0 and stats.es[0] == pytest.approx(60.0)


def _slow_account_risk(inputs: RiskInputs, scen: ScenarioSet, var_level: float, es_level: float):
    """Second computation: loop over accounts and their positions, pricing each series per scenario with
    py_vollib (scalar), sorting all losses in full."""
    s, ca = inputs.series, inputs.collateral_assets
    n_scen = scen.n_scenarios
    dv = {}
    for i in range(s.n):
        u = s.underlying[i]
        f0 = inputs.forward[u]
        if s.kind[i] == FORWARD:
            v0 = s.discount[i] * (f0 - s.strike[i])
            d1 = math.exp(math.log(s.discount[i]) * (s.expiry[i] - scen.horizon) / s.expiry[i])
            vals = [d1 * (f0 * math.exp(scen.log_spot[k, u]) - s.strike[i]) for k in range(n_scen)]
        else:
            flag = "c" if s.kind[i] == CALL else "p"
            r = -math.log(s.discount[i]) / s.expiry[i]
            t1 = s.expiry[i] - scen.horizon
            v0 = vollib_black(flag, f0, s.strike[i], s.expiry[i], r, inputs.vols[i])
            vals = []
            for k in range(n_scen):
                f1 = f0 * math.exp(scen.log_spot[k, u])
                vol1 = inputs.vols[i] * math.exp(scen.vol_shock[k, u])
                vals.append(vollib_black(flag, f1, s.strike[i], t1, r, vol1))
        dv[i] = np.array(vals) - v0
    out = []
    for a in range(inputs.n_accounts):
        pnl = np.zeros(n_scen)
        row = inputs.positions.getrow(a)
        for i, q in zip(row.indices, row.data):
            pnl += q * dv[i]
        for j in range(ca.n):
            if ca.underlying[j] >= 0:
                pnl += inputs.collateral[a, j] * (1 - ca.haircut[j]) * ca.price[j] * np.expm1(
                    scen.log_spot[:, ca.underlying[j]])
        losses = np.sort(-pnl)
        j_var = math.ceil(var_level * n_scen - 1e-9)
        m = n_scen - math.floor(es_level * n_scen + 1e-9)
        equity = math.fsum([inputs.collateral[a, j] * ca.price[j] * (1 - ca.haircut[j]) for j in range(ca.n)]
                           + [q * inputs.marks[i] for i, q in zip(row.indices, row.data)])
        delta = np.zeros(inputs.n_underlyings)
        gamma = np.zeros(inputs.n_underlyings)
        vega = np.zeros(inputs.n_underlyings)
        for i, q in zip(row.indices, row.data):
            u = s.underlying[i]
            if s.kind[i] == FORWARD:
                delta[u] += q * s.discount[i]
                continue
            flag = "c" if s.kind[i] == CALL else "p"
            r = -math.log(s.discount[i]) / s.expiry[i]
            args = (flag, inputs.forward[u], s.strike[i], s.expiry[i], r, inputs.vols[i])
            delta[u] += q * vollib_delta(*args)
            gamma[u] += q * vollib_gamma(*args)
            vega[u] += q * vollib_vega(*args) * 100.0      # py_vollib's vega is per 1% of vol
        out.append(dict(var=losses[j_var - 1], es=losses[-m:].mean(), worst=losses[-1], equity=equity,
                        delta=delta, gamma=gamma, vega=vega))
    return out


def test_sparse_aggregation_equals_slow_per_account_loop():
    base = synthetic_book(11, 25, 12, positions_per_account=4)
    # give the options non-trivial discount factors and keep expiries beyond the horizon
    series = SeriesTable(base.series.underlying, base.series.strike, np.maximum(base.series.expiry, 0.05),
                         base.series.kind, np.linspace(0.97, 1.0, base.series.n))
    inputs = RiskInputs(series, base.positions, base.collateral, base.collateral_assets, base.forward, base.vols,
                        base.marks)
    scen = monte_carlo_scenarios(5, 400, 2)
    risk = compute_account_risk(inputs, scen, grid_scenarios([0.1, 0.15]), chunk=7)
    slow = _slow_account_risk(inputs, scen, 0.99, 0.975)
    scale = np.abs(risk.equity).max()
    for a, ref in enumerate(slow):
        assert risk.var[a] == pytest.approx(ref["var"], rel=1e-8, abs=1e-8 * scale)
        assert risk.es[a] == pytest.approx(ref["es"], rel=1e-8, abs=1e-8 * scale)
        assert risk.tail_worst_loss[a] == pytest.approx(ref["worst"], rel=1e-8, abs=1e-8 * scale)
        assert risk.equity[a] == pytest.approx(ref["equity"], rel=1e-12, abs=1e-9)
        np.testing.assert_allclose(risk.gamma[a], ref["gamma"], rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(risk.vega[a], ref["vega"], rtol=1e-7, atol=1e-6)
        # account delta = options + haircut value of volatile collateral (in underlying units)
        coll_delta = np.zeros(inputs.n_underlyings)
        for j in range(inputs.collateral_assets.n):
            u = inputs.collateral_assets.underlying[j]
            if u >= 0:
                coll_delta[u] += inputs.collateral[a, j] * (1 - inputs.collateral_assets.haircut[j])
        np.testing.assert_allclose(risk.delta[a], ref["delta"] + coll_delta, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", [CALL, PUT])
def test_grid_pnl_of_one_option_equals_direct_black76_revaluation(kind):
    f, k, t, vol, size = 60000.0, 65000.0, 0.25, 0.7, -3.0
    inputs = _single_book(kind, k, t, vol, size, forward=f)
    grid = grid_scenarios(0.15, vol_range=0.25, n_underlyings=1, horizon=2.0 / 365.0)
    dv = revalue(inputs, grid)
    flag = "c" if kind == CALL else "p"
    v0 = vollib_black(flag, f, k, t, 0.0, vol)
    moves = [m / 3 * 0.15 for m in range(-3, 4) for _ in (0, 1)] + [-0.3, 0.3]
    vols = [vol * (1.25 if j % 2 == 0 else 0.75) for j in range(14)] + [vol, vol]
    expected = np.array([vollib_black(flag, f * (1 + m), k, t - 2.0 / 365.0, 0.0, v) - v0
                         for m, v in zip(moves, vols)])
    np.testing.assert_allclose(dv[0], expected, rtol=1e-9, atol=1e-7)
    risk = compute_account_risk(inputs, monte_carlo_scenarios(1, 100, 1), grid)
    weights = np.array([1.0] * 14 + [0.35, 0.35])
    assert risk.grid_worst_loss[0] == pytest.approx(np.max(-size * expected * weights), rel=1e-9)


def test_grid_moves_underlyings_together_alone_and_against_each_other():
    grid = grid_scenarios([0.1, 0.2], n_underlyings=2)
    assert grid.n_scenarios == 16 * 4
    together, first, second, opposite = (grid.log_spot[16 * i:16 * (i + 1)] for i in range(4))
    np.testing.assert_allclose(np.expm1(together[-1]), [0.2, 0.4])
    assert np.all(first[:, 1] == 0) and np.all(second[:, 0] == 0)
    assert np.all(first[:, 0] == together[:, 0]) and np.all(second[:, 1] == together[:, 1])
    # the pair block: the first underlying up by its range while the second falls by its own, and the reverse
    np.testing.assert_allclose(np.expm1(opposite[-1]), [0.2, -0.4])
    np.testing.assert_allclose(np.expm1(opposite[-2]), [-0.2, 0.4])
    assert np.all(np.sign(opposite[:, 0]) == -np.sign(opposite[:, 1]))
    three = grid_scenarios(0.1, n_underlyings=3)
    assert three.n_scenarios == 16 * (1 + 3 + 3)


def test_netting_across_underlyings_is_capped_by_the_opposite_move():
    """Long a BTC call and short an ETH call of equal delta: a correlated tail set nets them, but the opposite
    move (BTC down, ETH up) loses on both legs and the grid charges it (second computation: both legs revalued
    by Black-76 in that scenario, py_vollib)."""
    f = np.array([40000.0, 2500.0])
    series = SeriesTable(np.array([0, 1]), [40000.0, 2500.0], [30 / 365, 30 / 365], np.array([CALL, CALL]), [1.0, 1.0])
    size = np.array([[1.0, -16.0]])
    inputs = RiskInputs(series, sp.csr_matrix(size), np.zeros((1, 1)),
                        CollateralTable([1.0], [0.0], np.array([NO_UNDERLYING])), f, [0.6, 0.6], [0.0, 0.0])
    grid = grid_scenarios(0.1, n_underlyings=2, horizon=0.0)
    risk = compute_account_risk(inputs, monte_carlo_scenarios(1, 500, 2), grid)
    t = 30 / 365
    btc0, eth0 = vollib_black("c", 40000.0, 40000.0, t, 0.0, 0.6), vollib_black("c", 2500.0, 2500.0, t, 0.0, 0.6)
    btc1 = vollib_black("c", 40000.0 * 0.8, 40000.0, t, 0.0, 0.6)   # extreme pair move: -2 x 10 %
    eth1 = vollib_black("c", 2500.0 * 1.2, 2500.0, t, 0.0, 0.6)
    opposite_loss = 0.35 * -((btc1 - btc0) - 16.0 * (eth1 - eth0))   # the extreme moves count at 35 %
    assert opposite_loss > 0
    assert risk.grid_worst_loss[0] >= opposite_loss * (1 - 1e-9)
    together = grid_scenarios(0.1, n_underlyings=2, horizon=0.0)
    joint_only = ScenarioSet("joint", together.log_spot[:16], together.vol_shock[:16], together.weight[:16], 0.0)
    assert compute_account_risk(inputs, monte_carlo_scenarios(1, 500, 2), joint_only).grid_worst_loss[0] \
        < risk.grid_worst_loss[0]


def _short_gamma_book(seed: int) -> RiskInputs:
    return synthetic_book(seed, 6, 10, positions_per_account=3)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), account=st.integers(0, 5), series=st.integers(0, 9),
       size=st.floats(0.01, 50.0), scen_seed=st.integers(0, 2 ** 64 - 1))
def test_adding_a_short_option_never_lowers_margin(seed, account, series, size, scen_seed):
    inputs = _short_gamma_book(seed)
    if inputs.series.kind[series] == FORWARD:
        series = (series + 1) % inputs.series.n
        if inputs.series.kind[series] == FORWARD:
            return
    pos = inputs.positions.tolil()
    if pos[account, series] > 0:      # reducing a long is closing risk, not adding short gamma
        pos[account, series] = 0.0
        inputs = RiskInputs(inputs.series, pos.tocsr(), inputs.collateral, inputs.collateral_assets,
                            inputs.forward, inputs.vols, inputs.marks)
        pos = inputs.positions.tolil()
    pos[account, series] = pos[account, series] - size
    more_short = RiskInputs(inputs.series, pos.tocsr(), inputs.collateral, inputs.collateral_assets,
                            inputs.forward, inputs.vols, inputs.marks)
    mc = monte_carlo_scenarios(scen_seed, 500, 2)
    grid = grid_scenarios([0.15, 0.2])
    before = compute_account_risk(inputs, mc, grid)
    after = compute_account_risk(more_short, mc, grid)
    tol = 1e-9 * (1.0 + before.maintenance_margin[account])
    assert after.maintenance_margin[account] >= before.maintenance_margin[account] - tol
    assert after.gamma_multiplier[account] >= before.gamma_multiplier[account]
    assert after.gamma_addon[account] >= before.gamma_addon[account] - tol


def test_without_premium_charge_a_short_option_can_lower_margin():
    """Why short_premium_charge defaults to 1: a short call on a short-put book hedges the put's crash loss."""
    params = RiskParams(short_premium_charge=0.0, gamma_addon=0.0, vega_shift=0.0, gamma_tightening=0.0)
    f = 3000.0
    series = SeriesTable(np.array([0, 0]), [2500.0, 4000.0], [0.05, 0.05], np.array([PUT, CALL]), [1.0, 1.0])
    coll = CollateralTable([1.0], [0.0], np.array([NO_UNDERLYING]))

    def book(short_call: float) -> RiskInputs:
        return RiskInputs(series, sp.csr_matrix(np.array([[-10.0, -short_call]])), np.array([[1e5]]), coll, [f],
                          [0.8, 0.8], [0.0, 0.0], params)

    mc = monte_carlo_scenarios(3, 4000, 1, MertonParams(jump_intensity=0.0, vol_of_vol=0.0))
    grid = grid_scenarios(0.15, n_underlyings=1)
    lowered = compute_account_risk(book(10.0), mc, grid).maintenance_margin[0]
    assert lowered < compute_account_risk(book(0.0), mc, grid).maintenance_margin[0]
    with_charge = RiskParams()
    assert (compute_account_risk(RiskInputs(series, sp.csr_matrix(np.array([[-10.0, -10.0]])), np.array([[1e5]]),
                                            coll, [f], [0.8, 0.8], [0.0, 0.0], with_charge), mc, grid)
            .maintenance_margin[0]
            >= compute_account_risk(RiskInputs(series, sp.csr_matrix(np.array([[-10.0, 0.0]])), np.array([[1e5]]),
                                               coll, [f], [0.8, 0.8], [0.0, 0.0], with_charge), mc, grid)
            .maintenance_margin[0])


def test_margin_tightens_with_gross_gamma():
    f = 3000.0
    series = SeriesTable(np.array([0]), [3000.0], [0.02], np.array([CALL]), [1.0])
    coll = CollateralTable([1.0], [0.0], np.array([NO_UNDERLYING]))
    params = RiskParams(gamma_scale=1e4)
    mults = []
    for size in (-1.0, -10.0, -100.0):
        inp = RiskInputs(series, sp.csr_matrix(np.array([[size]])), np.array([[1e6]]), coll, [f], [0.8], [0.0],
                         params)
        r = compute_account_risk(inp, monte_carlo_scenarios(1, 2000, 1), grid_scenarios(0.1, n_underlyings=1))
        mults.append(r.gamma_multiplier[0])
        gross = abs(size) * 0.5 * (f * params.gamma_move) ** 2 * r.gamma[0, 0] / size
        assert r.gamma_multiplier[0] == pytest.approx(1 + 0.5 * gross / (gross + 1e4), rel=1e-12)
    assert mults[0] < mults[1] < mults[2] < 1.5


def test_monte_carlo_seeded_twice_identical_different_seed_different():
    a = monte_carlo_scenarios(seed_from_block_hash(b"\x01" * 32), 5000, 2)
    b = monte_carlo_scenarios(seed_from_block_hash("0x" + "01" * 32), 5000, 2)
    c = monte_carlo_scenarios(seed_from_block_hash(b"\x01" * 31 + b"\x02"), 5000, 2)
    assert a.log_spot.tobytes() == b.log_spot.tobytes() and a.vol_shock.tobytes() == b.vol_shock.tobytes()
    assert a.hash() == b.hash() and a.hash() != c.hash()
    assert not np.any(a.log_spot == c.log_spot)


def test_monte_carlo_is_a_martingale_with_one_factor_correlation():
    n = 200_000
    p = MertonParams(diffusion_vol=[0.6, 0.9], jump_beta=[1.0, 1.3])
    mc = monte_carlo_scenarios(42, n, 2, p, horizon=10 / 365)
    growth = np.exp(mc.log_spot)
    se = growth.std(axis=0) / math.sqrt(n)
    assert np.all(np.abs(growth.mean(axis=0) - 1.0) < 4 * se)  # drift compensates the jumps: E[F_h] = F_0
    diff = monte_carlo_scenarios(43, n, 2, MertonParams(jump_intensity=0.0, common_factor_rho=0.6,
                                                        spot_vol_corr=-0.5, vol_of_vol=1.5, jump_vol_beta=0.0))
    assert np.corrcoef(diff.log_spot.T)[0, 1] == pytest.approx(0.6, abs=0.01)
    assert np.corrcoef(diff.log_spot[:, 0], diff.vol_shock[:, 0])[0, 1] == pytest.approx(-0.5, abs=0.01)
    assert diff.log_spot[:, 0].std() == pytest.approx(0.7 * math.sqrt(1 / 365), rel=0.01)


def _daily_closes(folder: Path, name: str) -> np.ndarray:
    with open(folder / "price_paths" / f"{name}_daily.csv", newline="") as fh:
        return np.array([float(row["close"]) for row in csv.DictReader(fh)])


@pytest.mark.parametrize("name", ["BTCUSD", "ETHUSD"])
@pytest.mark.parametrize("filtered", [False, True])
def test_historical_var_es_of_unit_spot_position_match_np_quantile(shared_data, name, filtered):
    closes = _daily_closes(shared_data, name)
    spot = closes[-1]
    # independent returns and EWMA (scipy's IIR filter instead of the engine's loop)
    r = np.log(closes[1:] / closes[:-1])
    if filtered:
        lam = 0.94
        var0 = np.mean(r[:30] ** 2)
        var, _ = lfilter([1 - lam], [1, -lam], r ** 2, zi=[lam * var0])
        sig_before = np.sqrt(np.concatenate([[var0], var]))     # forecast for each day, then today's
        moves = r[30:] / sig_before[30:-1] * sig_before[-1]
    else:
        moves = r
    losses = spot * (1.0 - np.exp(moves))
    inputs = _single_book(FORWARD, spot, 0.5, 0.8, 0.0, forward=spot, collateral=1.0, haircut=0.0,
                          coll_underlying=0)
    scen = historical_scenarios(log_returns_from_closes(closes), filtered=filtered)
    risk = compute_account_risk(inputs, scen, grid_scenarios(0.2, n_underlyings=1, horizon=0.0))
    assert scen.n_scenarios == losses.size
    assert risk.var[0] == pytest.approx(np.quantile(losses, 0.99, method="inverted_cdf"), rel=1e-9)
    tail = np.sort(losses)[-(losses.size - math.floor(0.975 * losses.size)):]
    assert risk.es[0] == pytest.approx(tail.mean(), rel=1e-9)
    assert risk.es[0] >= np.quantile(losses, 0.975, method="inverted_cdf")


def test_equity_conserves_haircut_collateral_plus_positions_at_mark():
    inputs = synthetic_book(3, 200, 30, positions_per_account=6)
    risk = compute_account_risk(inputs, monte_carlo_scenarios(1, 500, 2), grid_scenarios([0.1, 0.1]))
    ca = inputs.collateral_assets
    dense = inputs.positions.toarray()
    for a in range(inputs.n_accounts):
        coll = math.fsum(inputs.collateral[a, j] * ca.price[j] * (1 - ca.haircut[j]) for j in range(ca.n))
        posv = math.fsum(dense[a, i] * inputs.marks[i] for i in range(inputs.series.n))
        assert risk.collateral_value[a] == pytest.approx(coll, rel=1e-13, abs=1e-9)
        assert risk.position_value[a] == pytest.approx(posv, rel=1e-12, abs=1e-7)
        assert risk.equity[a] == pytest.approx(coll + posv, rel=1e-12, abs=1e-7)


def test_quote_units_round_against_the_account():
    # 0.1 is stored as 0.1000000000000000055511151231257827...: above 0.1
    assert Fraction(0.1) > Fraction(1, 10)
    assert to_quote_units([0.1], 6, "floor") == [100000]
    assert to_quote_units([0.1], 6, "ceil") == [100001]
    assert to_quote_units([-1.5e-7, 2.0], 6, "floor") == [-1, 2000000]
    assert to_quote_units([-1.5e-7, 2.0], 6, "ceil") == [0, 2000000]
    with pytest.raises(ValueError):
        to_quote_units([float("nan")], 6, "floor")
    with pytest.raises(ValueError):
        to_quote_units([1.0], 6, "nearest")


def test_inputs_hash_binds_every_input_and_round_trips():
    inputs = synthetic_book(5, 20, 8)
    blob = serialize_risk_inputs(inputs)
    again = deserialize_risk_inputs(blob)
    assert serialize_risk_inputs(again) == blob and risk_inputs_hash(again) == risk_inputs_hash(inputs)
    bumped_vols = np.array(inputs.vols)
    bumped_vols[3] = np.nextafter(bumped_vols[3], 2.0)
    other = RiskInputs(inputs.series, inputs.positions, inputs.collateral, inputs.collateral_assets,
                       inputs.forward, bumped_vols, inputs.marks)
    assert risk_inputs_hash(other) != risk_inputs_hash(inputs)
    other_params = RiskInputs(inputs.series, inputs.positions, inputs.collateral, inputs.collateral_assets,
                              inputs.forward, inputs.vols, inputs.marks, RiskParams(im_multiplier=1.6))
    assert risk_inputs_hash(other_params) != risk_inputs_hash(inputs)


def test_bad_inputs_are_refused_with_a_reason():
    inputs = synthetic_book(5, 4, 3)
    with pytest.raises(ValueError, match="vols"):
        RiskInputs(inputs.series, inputs.positions, inputs.collateral, inputs.collateral_assets, inputs.forward,
                   np.array([0.5, np.nan, 0.5]), inputs.marks)
    with pytest.raises(ValueError, match="haircut"):
        CollateralTable([1.0], [1.0], np.array([-1]))
    with pytest.raises(ValueError, match="underlyings"):
        compute_account_risk(inputs, monte_carlo_scenarios(1, 10, 3), grid_scenarios([0.1, 0.1]))
    with pytest.raises(ValueError, match="closes"):
        log_returns_from_closes(np.array([100.0, -1.0, 50.0]))


def test_fast_serialization_is_byte_identical_to_canonical_json():
    from keeper.codec.canonical import canonical_json, inputs_hash
    from keeper.quant.risk.engine import _to_plain

    inputs = synthetic_book(8, 50, 20)
    plain = _to_plain(inputs)
    assert serialize_risk_inputs(inputs) == canonical_json(plain)
    assert risk_inputs_hash(inputs) == inputs_hash(plain)


def test_fast_canonical_json_matches_canonical_json_on_arrays_and_scenarios():
    from keeper.codec.canonical import canonical_json, inputs_hash
    from keeper.codec.fast_json import fast_canonical_json

    rng = np.random.default_rng(4)
    value = {"b": rng.normal(size=(3, 4, 2)), "a": np.arange(6, dtype=np.int64).reshape(2, 3), "c": [1.5, -0.0],
             "d": np.zeros((0,)), "d2": np.zeros((3, 0)), "d3": np.zeros((0, 2), dtype=np.int64), "e": "x", "f": np.array([1e-310, 2.0 ** 60, -np.pi])}
    assert fast_canonical_json(value) == canonical_json(value)
    scen = monte_carlo_scenarios(1, 50, 2)
    plain = {"name": scen.name, "log_spot": scen.log_spot, "vol_shock": scen.vol_shock, "weight": scen.weight,
             "horizon": scen.horizon}
    assert scen.hash() == inputs_hash(plain)


def test_vol_function_after_shock_is_used_for_revaluation():
    """A surface-like callable (vol rising as the forward falls) replaces the sticky-strike default."""
    f, k, t, vol = 3000.0, 2700.0, 0.1, 0.6
    inputs = _single_book(PUT, k, t, vol, -2.0, forward=f)
    grid = grid_scenarios(0.1, n_underlyings=1, horizon=1.0 / 365.0)

    def skew(strike, expiry_after, forward_after, base_vol, vol_shock):
        return base_vol * (forward_after / f) ** -0.5

    dv = revalue(inputs, grid, vol_fn=skew)
    v0 = vollib_black("p", f, k, t, 0.0, vol)
    f_after = f * np.exp(grid.log_spot[:, 0])
    expected = [vollib_black("p", fa, k, t - 1.0 / 365.0, 0.0, vol * (fa / f) ** -0.5) - v0 for fa in f_after]
    np.testing.assert_allclose(dv[0], expected, rtol=1e-9, atol=1e-8)
    assert not np.allclose(dv[0], revalue(inputs, grid)[0])
    with pytest.raises(ValueError, match="vol_fn"):
        revalue(inputs, grid, vol_fn=lambda *a: -np.ones((1, grid.n_scenarios)))


def test_attested_units_floor_equity_and_ceil_margins():
    inputs = synthetic_book(12, 30, 10)
    risk = compute_account_risk(inputs, monte_carlo_scenarios(2, 300, 2), grid_scenarios([0.1, 0.1]))
    units = risk.attested_units(6)
    for a in range(inputs.n_accounts):
        eq = Fraction(float(risk.equity[a])) * 10 ** 6
        mm = Fraction(float(risk.maintenance_margin[a])) * 10 ** 6
        assert units["equity"][a] <= eq < units["equity"][a] + 1
        assert units["maintenance_margin"][a] - 1 < mm <= units["maintenance_margin"][a]


def test_two_underlying_fhs_on_real_closes_matches_direct_revaluation(shared_data):
    """BTC and ETH collateral plus a short ETH put under FHS of the aligned real closes: the engine's VaR/ES equal
    np.quantile / a sorted tail of P&Ls computed directly per scenario."""
    from keeper.quant.risk.scenarios import aligned_log_returns

    cols = {}
    for name in ("BTCUSD", "ETHUSD"):
        with open(shared_data / "price_paths" / f"{name}_daily.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        cols[name] = (np.array([r["timestamp_utc"] for r in rows]), np.array([float(r["close"]) for r in rows]))
    r = aligned_log_returns([cols["BTCUSD"][0], cols["ETHUSD"][0]], [cols["BTCUSD"][1], cols["ETHUSD"][1]])
    assert r.shape == (2477, 2)
    np.testing.assert_array_equal(r[:, 1], np.diff(np.log(cols["ETHUSD"][1])))
    scen = historical_scenarios(r, filtered=True)
    f_btc, f_eth = cols["BTCUSD"][1][-1], cols["ETHUSD"][1][-1]
    series = SeriesTable(np.array([1]), [0.9 * f_eth], [30 / 365], np.array([PUT]), [1.0])
    coll = CollateralTable([1.0, f_btc, f_eth], [0.0, 0.1, 0.2], np.array([NO_UNDERLYING, 0, 1]))
    inputs = RiskInputs(series, sp.csr_matrix(np.array([[-5.0]])), np.array([[1000.0, 0.5, 3.0]]), coll,
                        [f_btc, f_eth], [0.7], [0.0])
    risk = compute_account_risk(inputs, scen, grid_scenarios([0.15, 0.2]))
    v0 = vollib_black("p", f_eth, 0.9 * f_eth, 30 / 365, 0.0, 0.7)
    pnl = np.array([0.5 * 0.9 * f_btc * math.expm1(a) + 3.0 * 0.8 * f_eth * math.expm1(b)
                    - 5.0 * (vollib_black("p", f_eth * math.exp(b), 0.9 * f_eth, 29 / 365, 0.0, 0.7) - v0)
                    for a, b in scen.log_spot])
    losses = -pnl
    assert risk.var[0] == pytest.approx(np.quantile(losses, 0.99, method="inverted_cdf"), rel=1e-9)
    m = losses.size - math.floor(0.975 * losses.size)
    assert risk.es[0] == pytest.approx(np.sort(losses)[-m:].mean(), rel=1e-9)


def test_bad_series_are_skipped_and_their_accounts_flagged():
    from keeper.quant.risk.engine import screen_market_data

    book = synthetic_book(21, 40, 12, positions_per_account=3)
    vols, marks = np.array(book.vols), np.array(book.marks)
    vols[2], marks[5] = np.nan, np.inf
    screened = screen_market_data(vols, marks, book.positions)
    assert screened.bad_series.tolist() == [2, 5]
    holders = sorted(set(book.positions[:, 2].nonzero()[0]) | set(book.positions[:, 5].nonzero()[0]))
    assert screened.unattestable_accounts.tolist() == holders and holders
    inputs = RiskInputs(book.series, screened.positions, book.collateral, book.collateral_assets, book.forward,
                        screened.vols, screened.marks)
    clean = compute_account_risk(inputs, monte_carlo_scenarios(1, 300, 2), grid_scenarios([0.1, 0.1]))
    full = compute_account_risk(book, monte_carlo_scenarios(1, 300, 2), grid_scenarios([0.1, 0.1]))
    others = np.setdiff1d(np.arange(book.n_accounts), holders)
    assert np.array_equal(clean.maintenance_margin[others], full.maintenance_margin[others])
    assert np.array_equal(clean.equity[others], full.equity[others])


def test_sticky_moneyness_vol_fn_reads_each_underlyings_smile():
    from keeper.quant.risk.engine import sticky_moneyness_vol_fn

    def smile_btc(k, t, f):
        return 0.6 + 0.5 * np.log(k / f) ** 2

    def smile_eth(k, t, f):
        return 0.8 - 0.2 * np.log(k / f)

    series = SeriesTable(np.array([0, 1]), [50000.0, 2800.0], [0.1, 0.2], np.array([CALL, PUT]), [1.0, 1.0])
    coll = CollateralTable([1.0], [0.0], np.array([NO_UNDERLYING]))
    fwd = [60000.0, 3000.0]
    inputs = RiskInputs(series, sp.csr_matrix(np.array([[1.0, -2.0]])), np.array([[0.0]]), coll, fwd, [0.6, 0.8],
                        [0.0, 0.0])
    scen = monte_carlo_scenarios(8, 64, 2)
    dv = revalue(inputs, scen, vol_fn=sticky_moneyness_vol_fn([smile_btc, smile_eth], series.underlying))
    h = scen.horizon
    for row, (flag, k, t, smile, u, v0vol) in enumerate([("c", 50000.0, 0.1, smile_btc, 0, 0.6),
                                                         ("p", 2800.0, 0.2, smile_eth, 1, 0.8)]):
        v0 = vollib_black(flag, fwd[u], k, t, 0.0, v0vol)
        for j in range(scen.n_scenarios):
            fa = fwd[u] * math.exp(scen.log_spot[j, u])
            va = smile(k, t - h, fa) * math.exp(scen.vol_shock[j, u])
            assert dv[row, j] == pytest.approx(vollib_black(flag, fa, k, t - h, 0.0, va) - v0, rel=1e-9, abs=1e-7)


def test_monte_carlo_var_es_of_collateral_match_lognormal_closed_form_within_sampling_error():
    """No jumps: the log move is N(-s^2 h / 2, s^2 h); VaR/ES of 10 ETH held as collateral vs the closed form."""
    s, h, n = 0.8, 1.0 / 365.0, 200_000
    mc = monte_carlo_scenarios(77, n, 1, MertonParams(diffusion_vol=s, jump_intensity=0.0), horizon=h)
    inputs = _single_book(FORWARD, 3000.0, 0.5, 0.8, 0.0, collateral=10.0, haircut=0.0, coll_underlying=0)
    risk = compute_account_risk(inputs, mc, grid_scenarios(0.1, n_underlyings=1))
    sd, mu = s * math.sqrt(h), -0.5 * s * s * h
    value = 10.0 * 3000.0
    var = value * (1.0 - math.exp(mu + sd * norm.ppf(0.01)))
    es = value * (1.0 - math.exp(mu + 0.5 * sd ** 2) * norm.cdf(norm.ppf(0.025) - sd) / 0.025)
    assert risk.var[0] == pytest.approx(var, rel=0.01)    # ~3 standard errors of the sample quantile
    assert risk.es[0] == pytest.approx(es, rel=0.01)


def test_short_premium_charge_counts_options_only():
    f = 3000.0
    series = SeriesTable(np.array([0, 0]), [3500.0, 2000.0], [0.2, 0.2], np.array([FORWARD, CALL]), [1.0, 1.0])
    coll = CollateralTable([1.0], [0.0], np.array([NO_UNDERLYING]))
    inputs = RiskInputs(series, sp.csr_matrix(np.array([[-4.0, -2.0]])), np.array([[1e5]]), coll, [f], [0.7, 0.7],
                        [0.0, 0.0])
    risk = compute_account_risk(inputs, monte_carlo_scenarios(1, 200, 1), grid_scenarios(0.1, n_underlyings=1))
    assert risk.short_premium_charge[0] == pytest.approx(2.0 * vollib_black("c", f, 2000.0, 0.2, 0.0, 0.7),
                                                         rel=1e-12)


def test_empty_books_and_tables_are_handled():
    mc, grid = monte_carlo_scenarios(1, 100, 1), grid_scenarios(0.1, n_underlyings=1)
    series = SeriesTable(np.array([0]), [100.0], [0.1], np.array([CALL]), [1.0])
    stable = CollateralTable([1.0], [0.0], np.array([NO_UNDERLYING]))
    none = CollateralTable([], [], np.array([], dtype=np.int64))
    no_accounts = compute_account_risk(RiskInputs(series, sp.csr_matrix((0, 1)), np.zeros((0, 1)), stable, [100.0],
                                                  [0.5], [1.0]), mc, grid)
    assert no_accounts.equity.shape == (0,) and no_accounts.maintenance_margin.shape == (0,)
    no_assets = compute_account_risk(RiskInputs(series, sp.csr_matrix(np.array([[2.0]])), np.zeros((1, 0)), none,
                                                [100.0], [0.5], [1.5]), mc, grid)
    assert no_assets.equity[0] == 3.0 and no_assets.es[0] > 0
    empty = SeriesTable(np.array([], dtype=np.int64), [], [], np.array([], dtype=np.int64), [])
    cash_only = compute_account_risk(RiskInputs(empty, sp.csr_matrix((1, 0)), np.array([[7.0]]), stable, [100.0],
                                                [], []), mc, grid)
    assert cash_only.equity[0] == 7.0 and cash_only.maintenance_margin[0] == 0.0 and cash_only.es[0] == 0.0


def test_block_risk_is_the_seeded_mc_plus_grid_run():
    from keeper.quant.risk.engine import block_risk

    inputs = synthetic_book(13, 50, 15)
    block = "0x" + "3f" * 32
    one = block_risk(inputs, block, n_scenarios=2000, grid_range=[0.12, 0.18])
    manual = compute_account_risk(inputs, monte_carlo_scenarios(int(block, 16), 2000, 2),
                                  grid_scenarios([0.12, 0.18]))
    assert one.to_bytes() == manual.to_bytes()
    other = block_risk(inputs, "0x" + "3f" * 31 + "40", n_scenarios=2000, grid_range=[0.12, 0.18])
    assert other.scenarios_hash != one.scenarios_hash and not np.array_equal(other.es, one.es)
    assert other.inputs_hash == one.inputs_hash and np.array_equal(other.equity, one.equity)


def test_inputs_are_frozen_copies_and_callers_arrays_stay_writable():
    vols = np.array([0.5])
    log_spot = np.zeros((3, 1))
    series = SeriesTable(np.array([0]), [100.0], [0.1], np.array([CALL]), [1.0])
    inputs = RiskInputs(series, sp.csr_matrix(np.array([[1.0]])), np.zeros((1, 1)),
                        CollateralTable([1.0], [0.0], np.array([NO_UNDERLYING])), [100.0], vols, [1.0])
    scen = ScenarioSet("t", log_spot, log_spot, np.ones(3), 0.0)
    vols[0] = 0.9
    log_spot[0, 0] = 0.1
    assert inputs.vols[0] == 0.5 and scen.log_spot[0, 0] == 0.0
    with pytest.raises(ValueError):
        inputs.vols[0] = 0.7
    with pytest.raises(ValueError):
        inputs.positions.data[0] = 2.0


def test_series_carry_prices_on_the_expiry_forward_and_moves_it_with_spot():
    """A series with carry c (forward / spot) is worth Black-76 on spot x c (py_vollib), and a scenario that moves
    spot by g revalues it on spot x c x g; carry 1 is the spot-priced book and serializes as before."""
    spot, carry, k, t, vol = 2222.0, 1.1062, 2500.0, 0.97, 0.62
    plain = SeriesTable(np.array([0]), [k], [t], np.array([CALL]), [1.0])
    carried = SeriesTable(np.array([0]), [k], [t], np.array([CALL]), [1.0], [carry])
    mk = lambda s: RiskInputs(s, sp.csr_matrix(np.array([[1.0]])), np.zeros((1, 1)),  # noqa: E731
                              CollateralTable([1.0], [0.0], np.array([NO_UNDERLYING])), [spot], [vol], [0.0])
    assert model_values(mk(carried))[0] == pytest.approx(vollib_black("c", spot * carry, k, t, 0.0, vol), rel=1e-12)
    assert model_values(mk(plain))[0] == pytest.approx(vollib_black("c", spot, k, t, 0.0, vol), rel=1e-12)
    g = 0.8
    scen = ScenarioSet("one", np.array([[math.log(g)]]), np.zeros((1, 1)), np.ones(1), 0.0)
    move = revalue(mk(carried), scen)[0, 0]
    assert move == pytest.approx(vollib_black("c", spot * carry * g, k, t, 0.0, vol)
                                 - vollib_black("c", spot * carry, k, t, 0.0, vol), rel=1e-10)
    assert "carry" not in serialize_risk_inputs(mk(plain)).decode()
    assert "carry" in serialize_risk_inputs(mk(carried)).decode()
    back = deserialize_risk_inputs(serialize_risk_inputs(mk(carried)))
    assert back.series.carry.tolist() == [carry]
    with pytest.raises(ValueError, match="carry"):
        SeriesTable(np.array([0]), [k], [t], np.array([CALL]), [1.0], [0.0])

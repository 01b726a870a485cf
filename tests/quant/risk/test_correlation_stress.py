"""The correlation stress (issue 16 item 1): a Monte Carlo set in which the cross-asset correlation goes to 1
(keeper/quant/risk/scenarios.py ``correlation_stress_scenarios``), part of the margin as
``max(ES, grid, stress ES, 0)`` (keeper/quant/risk/engine.py ``compute_account_risk(stress_set=...)``).

Second computations: the stress set is redrawn here from the draw order docs/risk.md states (numpy's PCG64, not the
engine's code), and every book's losses are repriced scenario by scenario with py_vollib's Black-76, the ES taken
from a full sort."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from py_vollib.black import black as vollib_black
from py_vollib.black.greeks.analytical import delta as vollib_delta

from keeper.quant.risk.engine import (
    CALL,
    NO_UNDERLYING,
    PUT,
    CollateralTable,
    RiskInputs,
    SeriesTable,
    compute_account_risk,
)
from keeper.quant.risk.scenarios import (
    MertonParams,
    correlation_stress_scenarios,
    grid_scenarios,
    monte_carlo_scenarios,
)

SEED, N = 20_261_207, 2000
H = 3 / 365  # a three-day margin period of risk: the tail sets, not the 15 % grid, decide these books' margin
BTC, ETH = 60_000.0, 3_000.0
T = 30 / 365
VOLS = (0.60, 0.75)


def _inputs(kinds, strikes, sizes) -> RiskInputs:
    """One account holding ``sizes`` of a BTC option (underlying 0) and an ETH option (underlying 1)."""
    series = SeriesTable(np.array([0, 1]), strikes, [T, T], np.array(kinds), [1.0, 1.0])
    return RiskInputs(series, sp.csr_matrix(np.array([sizes], dtype=float)), np.zeros((1, 1)),
                      CollateralTable([1.0], [0.0], np.array([NO_UNDERLYING])), np.array([BTC, ETH]), list(VOLS),
                      [0.0, 0.0])


def _redraw_stress(seed: int, n: int, p: MertonParams, h: float) -> tuple[np.ndarray, np.ndarray]:
    """The stress set from its documented recipe: draws common, idiosyncratic (n x 2), vol noise (n x 2), jump
    counts, jump sizes, then one common vol draw; correlation 1 means every underlying takes the common draws."""
    rng = np.random.Generator(np.random.PCG64(seed))
    common = rng.standard_normal(n)
    rng.standard_normal((n, 2))
    rng.standard_normal((n, 2))
    jumps = rng.poisson(p.jump_intensity * h, n).astype(float)
    jump_z = rng.standard_normal(n)
    common_vol = rng.standard_normal(n)
    log_spot, vol_shock = np.empty((n, 2)), np.empty((n, 2))
    for i in range(n):
        j = jumps[i] * p.jump_mean + math.sqrt(jumps[i]) * p.jump_std * jump_z[i]
        k = math.exp(p.jump_mean + 0.5 * p.jump_std ** 2) - 1.0
        x = -0.5 * p.diffusion_vol ** 2 * h - p.jump_intensity * h * k + p.diffusion_vol * math.sqrt(h) * common[i] + j
        c = p.spot_vol_corr
        v = p.vol_of_vol * math.sqrt(h) * (c * common[i] + math.sqrt(1 - c * c) * common_vol[i]) \
            + p.jump_vol_beta * max(-j, 0.0)
        log_spot[i, :], vol_shock[i, :] = x, v
    return log_spot, vol_shock


def _es_by_hand(kinds, strikes, sizes, log_spot, vol_shock, h, level=0.975) -> float:
    """ES of the book's loss over the given moves, each leg repriced by py_vollib (r = 0), losses sorted in full."""
    flags = ["c" if k == CALL else "p" for k in kinds]
    fwd = (BTC, ETH)
    v0 = [vollib_black(flags[u], fwd[u], strikes[u], T, 0.0, VOLS[u]) for u in range(2)]
    losses = []
    for x, v in zip(log_spot, vol_shock):
        pnl = sum(sizes[u] * (vollib_black(flags[u], fwd[u] * math.exp(x[u]), strikes[u], T - h, 0.0,
                                           VOLS[u] * math.exp(v[u])) - v0[u]) for u in range(2))
        losses.append(-pnl)
    losses.sort(reverse=True)
    m = len(losses) - math.floor(level * len(losses))
    return sum(losses[:m]) / m


def test_stress_set_is_the_documented_draw_with_correlation_one():
    p = MertonParams()
    stress = correlation_stress_scenarios(SEED, N, 2, p, H)
    log_spot, vol_shock = _redraw_stress(SEED, N, p, H)
    np.testing.assert_allclose(stress.log_spot, log_spot, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stress.vol_shock, vol_shock, rtol=1e-12, atol=1e-15)
    assert np.array_equal(stress.log_spot[:, 0], stress.log_spot[:, 1])         # correlation exactly 1
    base = monte_carlo_scenarios(SEED, N, 2, p, H)
    assert not np.array_equal(base.log_spot[:, 0], base.log_spot[:, 1])
    assert np.corrcoef(base.log_spot.T)[0, 1] < 0.95
    # the base set's bits do not depend on the stress being drawn (its extra draw comes last)
    assert base.hash() == monte_carlo_scenarios(SEED, N, 2, p, H).hash()
    with pytest.raises(ValueError):
        correlation_stress_scenarios(SEED, N, 2, p, H, rho=0.5)                 # a stress never lowers it


def test_hedged_cross_asset_book_gains_from_correlation_one_so_the_grid_caps_its_netting():
    """Long a BTC put against short ETH puts of the same dollar delta (and opposite vega): a hedge across assets.
    Correlation going to 1 makes the hedge *better*, not worse: its stress ES is a few percent of its base ES
    (recomputed by hand; the ratio is 0.02 for every seed tried, 1-8 and this one). Its risk is the correlation
    breaking, which the tail sets do not charge and the grid's single-asset and opposite-direction blocks do: the MM
    is at least the loss of each leg moving alone and of the two moving apart (the cap on the netting credit),
    recomputed here by py_vollib in those grid scenarios."""
    kinds, strikes = (PUT, PUT), (0.8 * BTC, 0.8 * ETH)
    d_btc = vollib_delta("p", BTC, strikes[0], T, 0.0, VOLS[0])
    d_eth = vollib_delta("p", ETH, strikes[1], T, 0.0, VOLS[1])
    sizes = (1.0, -d_btc * BTC / (d_eth * ETH))                                      # < 0: short ETH puts
    assert abs(sizes[0] * d_btc * BTC + sizes[1] * d_eth * ETH) < 1e-6 and sizes[1] < 0
    p = MertonParams()
    base, stress = monte_carlo_scenarios(SEED, N, 2, p, H), correlation_stress_scenarios(SEED, N, 2, p, H)
    grid = grid_scenarios(0.15, n_underlyings=2, horizon=H)
    risk = compute_account_risk(_inputs(kinds, strikes, sizes), base, grid, stress_set=stress)
    es_base = _es_by_hand(kinds, strikes, sizes, base.log_spot, base.vol_shock, H)
    es_stress = _es_by_hand(kinds, strikes, sizes, stress.log_spot, stress.vol_shock, H)
    assert risk.es[0] == pytest.approx(es_base, rel=1e-9)
    assert risk.stress_es[0] == pytest.approx(es_stress, rel=1e-9)
    assert es_stress < 0.1 * es_base
    # the grid's other blocks by hand: each leg alone, and the pair apart (BTC up / ETH down and the reverse),
    # regular moves k/3 x 15 % with vol x 1.25 / x 0.75 in full and +-30 % at 35 %
    def loss(x_btc, x_eth, vs_btc, vs_eth):
        return -_book_pnl(kinds, strikes, sizes, (x_btc, x_eth), (vs_btc, vs_eth), H)
    moves = [(k / 3 * 0.15, v, 1.0) for k in range(-3, 4) for v in (1.25, 0.75)] + [(-0.3, 1.0, 0.35), (0.3, 1.0, 0.35)]
    alone_or_apart = []
    for m, v, w in moves:
        x = math.log1p(m)
        alone_or_apart += [w * loss(x, 0.0, math.log(v), 0.0), w * loss(0.0, x, 0.0, math.log(v)),
                           w * loss(x, math.log1p(-m), math.log(v), math.log(v))]
    worst = max(alone_or_apart)
    assert worst > 1.5 * es_base                                                  # the hedge's real risk
    assert risk.grid_worst_loss[0] == pytest.approx(worst, rel=1e-9)              # and the grid charges it
    base_term = max(es_base, risk.grid_worst_loss[0], es_stress, 0.0)
    mm = (base_term + risk.short_premium_charge[0] + risk.gamma_addon[0] + risk.vega_addon[0]) \
        * risk.gamma_multiplier[0]
    assert risk.maintenance_margin[0] == pytest.approx(mm, rel=1e-12)


def _book_pnl(kinds, strikes, sizes, log_moves, vol_shocks, h) -> float:
    flags = ["c" if k == CALL else "p" for k in kinds]
    fwd = (BTC, ETH)
    return sum(sizes[u] * (vollib_black(flags[u], fwd[u] * math.exp(log_moves[u]), strikes[u], T - h, 0.0,
                                        VOLS[u] * math.exp(vol_shocks[u]))
                           - vollib_black(flags[u], fwd[u], strikes[u], T, 0.0, VOLS[u])) for u in range(2))


def test_stress_raises_the_margin_of_a_cross_asset_book_and_netting_stays_capped():
    """Short puts on both assets: the base correlation credits their diversification, the stress does not. The
    stress binds (above ES and grid): MM with it exceeds MM without it by exactly the stress's excess times the gamma
    multiplier; and the netting cap still holds: the combined book's MM is at least each leg's own grid loss, and
    the credit it gets over the sum of the separate books' MMs is at most the base ES's diversification."""
    kinds, strikes, sizes = (PUT, PUT), (0.7 * BTC, 0.7 * ETH), (-1.0, -20.0)
    p = MertonParams()
    base, stress = monte_carlo_scenarios(SEED, N, 2, p, H), correlation_stress_scenarios(SEED, N, 2, p, H)
    grid = grid_scenarios(0.15, n_underlyings=2, horizon=H)
    book = _inputs(kinds, strikes, sizes)
    with_stress = compute_account_risk(book, base, grid, stress_set=stress)
    without = compute_account_risk(book, base, grid)
    es_stress = _es_by_hand(kinds, strikes, sizes, stress.log_spot, stress.vol_shock, H)
    es_base = _es_by_hand(kinds, strikes, sizes, base.log_spot, base.vol_shock, H)
    assert with_stress.stress_es[0] == pytest.approx(es_stress, rel=1e-9)
    grid_loss = with_stress.grid_worst_loss[0]
    assert es_stress > max(es_base, grid_loss)                                  # the stress binds
    charges = with_stress.short_premium_charge[0] + with_stress.gamma_addon[0] + with_stress.vega_addon[0]
    k = with_stress.gamma_multiplier[0]
    assert with_stress.maintenance_margin[0] == pytest.approx((es_stress + charges) * k, rel=1e-9)
    assert without.maintenance_margin[0] == pytest.approx((max(es_base, grid_loss) + charges) * k, rel=1e-9)
    assert with_stress.maintenance_margin[0] > without.maintenance_margin[0]
    assert np.array_equal(without.stress_es, [0.0])
    # the separate books (one leg each)
    legs = [compute_account_risk(_inputs(kinds, strikes, (sizes[0], 0.0)), base, grid, stress_set=stress),
            compute_account_risk(_inputs(kinds, strikes, (0.0, sizes[1])), base, grid, stress_set=stress)]
    combined = with_stress.maintenance_margin[0]
    assert combined >= max(l.grid_worst_loss[0] for l in legs)                  # never below a leg alone
    assert combined <= sum(l.maintenance_margin[0] for l in legs) * (1 + 1e-12)  # short legs: no negative credit


def test_block_risk_draws_the_stress_from_the_block_seed():
    """``block_risk(stress_rho=1)``: the stress set comes from the same block seed as the tail set, and its ES joins
    the margin; the same run without it has the same ES and grid and a margin that is never higher."""
    from keeper.quant.risk.engine import block_risk
    from keeper.quant.risk.synthetic import synthetic_book

    inputs = synthetic_book(5, 40, 12)
    block = "0x" + "5c" * 32
    h = 5 / 365
    with_stress = block_risk(inputs, block, n_scenarios=1000, grid_range=[0.12, 0.18], horizon=h, stress_rho=1.0)
    seed = int(block, 16)
    manual = compute_account_risk(inputs, monte_carlo_scenarios(seed, 1000, 2, horizon=h),
                                  grid_scenarios([0.12, 0.18], horizon=h),
                                  stress_set=correlation_stress_scenarios(seed, 1000, 2, horizon=h))
    assert with_stress.to_bytes() == manual.to_bytes()
    plain = block_risk(inputs, block, n_scenarios=1000, grid_range=[0.12, 0.18], horizon=h)
    assert np.array_equal(plain.es, with_stress.es) and np.array_equal(plain.grid_worst_loss, with_stress.grid_worst_loss)
    assert np.all(with_stress.maintenance_margin >= plain.maintenance_margin)
    raised = with_stress.stress_es > np.maximum(with_stress.es, with_stress.grid_worst_loss)
    assert 0 < raised.sum() < raised.size                                       # binds for some accounts only
    assert np.array_equal(with_stress.maintenance_margin > plain.maintenance_margin, raised)
    assert plain.scenarios_hash != with_stress.scenarios_hash

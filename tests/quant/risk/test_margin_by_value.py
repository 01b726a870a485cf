"""Margins asserted by value (issue 16 item 6): for a small two-asset book (BTC and ETH options, WBTC collateral, a
book hedged across assets, one short on both, one short straddle), maintenance and initial margin are recomputed
here term by term with this file's own code, following docs/risk.md ("Margins"):

    base = max(ES 97.5 (tail set), grid worst weighted loss, ES 97.5 (correlation stress set), 0)
    MM   = (base + short premium charge + gamma add-on + vega add-on) x (1 + t g / (g + G))
    IM   = k x MM

and compared with the leaves the keepers' engine computes from the same inputs document
(:func:`keeper.attest.leaves.leaves_from_inputs`), to the unit rounding (leaves round margins up to a quote base unit).

What is the engine's and what is this file's: the scenario sets (the document's seeded Monte Carlo set, its grid and
its correlation stress, keeper.quant.risk.scenarios) are inputs of the margin and are drawn by the engine's
generators with the document's parameters. Every price is py_vollib's Black-76 (not keeper.quant.pricing); the
Greeks are the closed forms written out below; P&L per scenario, the ES order statistic, the grid's weighted worst
loss, the add-ons and the multiplier are this file's own numpy. ES is the mean of the ``n - floor(0.975 n)`` largest
losses of the equally weighted set, as docs/risk.md's engine takes it (``_order_stat_indices``).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from py_vollib.black import black as vollib_black
from scipy.stats import norm

from keeper.attest.inputs import build_document
from keeper.attest.leaves import leaves_from_inputs
from keeper.data.feed import BlockRef
from keeper.quant.risk.scenarios import (
    MertonParams,
    correlation_stress_scenarios,
    grid_scenarios,
    monte_carlo_scenarios,
)

WAD = 10**18
YEAR = 365 * 86_400
NOW = 1_700_000_000
BTC, ETH = 40_000.0, 2_000.0
WBTC_ADDR = "0x00000000000000000000000000000000000000b1"
WETH_ADDR = "0x00000000000000000000000000000000000000e1"
USDC_ADDR = "0x00000000000000000000000000000000000000c1"
#: (id, underlying index, strike, days, call?, vol)
SERIES = ((1, 0, 36_000.0, 30, False, 0.55), (2, 0, 44_000.0, 30, True, 0.50), (3, 1, 1_800.0, 30, False, 0.75),
          (4, 1, 2_000.0, 14, True, 0.70), (5, 1, 2_000.0, 14, False, 0.72))
#: account -> (positions {series id: contracts}, WBTC, WETH, quote cash)
BOOKS = {
    "0x00000000000000000000000000000000000000a1": ({1: 0.5, 3: -20.0}, 0.0, 0.0, 10_000.0),  # hedged across assets
    "0x00000000000000000000000000000000000000a2": ({1: -0.5, 3: -10.0}, 0.25, 0.0, 5_000.0),  # short both, WBTC
    "0x00000000000000000000000000000000000000a3": ({4: -5.0, 5: -5.0, 2: 0.25}, 0.0, 2.0, 3_000.0),  # straddle
}
RISK = {"var_confidence": 0.99, "es_confidence": 0.975, "im_multiplier": 1.5, "horizon_days": 1.0, "mc_paths": 400,
        "mc_diffusion_vol": 0.7, "grid_spot_range": 0.15, "grid_vol_range": 0.25, "stress_correlation": 1.0}
HAIRCUT = {WBTC_ADDR: 0.10, WETH_ADDR: 0.15}
# docs/risk.md defaults of RiskParams
PREMIUM, GAMMA_MOVE, GAMMA_ADDON, VEGA_SHIFT, TIGHTEN, GAMMA_SCALE = 1.0, 0.10, 0.5, 0.05, 0.5, 1.0e6


def _document(seed: int) -> dict:
    series = [{"id": i, "underlying": u, "strike": str(int(k * WAD)), "expiry": NOW + d * 86_400, "is_call": c}
              for i, u, k, d, c, _v in SERIES]
    marks = [_price(u, k, d * 86_400 / YEAR, c, v) for _i, u, k, d, c, v in SERIES]
    accounts = [{"account": a, "state_nonce": 1, "cash": str(int(cash * 10**6)),
                 "collateral": [[x, str(int(round(n * 10**dec)))] for x, n, dec in ((WBTC_ADDR, wbtc, 8),
                                                                                    (WETH_ADDR, weth, 18)) if n],
                 "positions": [[i, str(int(round(q * WAD)))] for i, q in sorted(pos.items())]}
                for a, (pos, wbtc, weth, cash) in sorted(BOOKS.items())]
    return build_document(
        block=BlockRef(100, "0x" + "11" * 32, NOW), mc_seed=seed,
        underlyings=[{"asset": WBTC_ADDR, "spot_wad": int(BTC * WAD), "surface": None},
                     {"asset": WETH_ADDR, "spot_wad": int(ETH * WAD), "surface": None}],
        series=series, vols=[v for *_, v in SERIES], marks=marks,
        collateral_assets=[{"asset": USDC_ADDR, "decimals": 6, "haircut": "0", "underlying": None, "price": "1"},
                           {"asset": WBTC_ADDR, "decimals": 8, "haircut": str(10**17), "underlying": 0, "price": "0"},
                           {"asset": WETH_ADDR, "decimals": 18, "haircut": str(15 * 10**16), "underlying": 1,
                            "price": "0"}],
        accounts=accounts, quote_decimals=6, risk=dict(RISK))


def _fwd(u: int) -> float:
    return (BTC, ETH)[u]


def _price(u: int, k: float, t: float, call: bool, vol: float, f: float | None = None) -> float:
    f = _fwd(u) if f is None else f
    if t <= 0:
        return max(f - k, 0.0) if call else max(k - f, 0.0)
    return float(vollib_black("c" if call else "p", f, k, t, 0.0, vol))


def _gamma_vega(u: int, k: float, t: float, vol: float) -> tuple[float, float]:
    """Black-76 (undiscounted) gamma on the forward and vega per 1.00 vol: phi(d1) / (F s sqrt t), F phi(d1) sqrt t."""
    f = _fwd(u)
    d1 = (math.log(f / k) + 0.5 * vol * vol * t) / (vol * math.sqrt(t))
    return norm.pdf(d1) / (f * vol * math.sqrt(t)), f * norm.pdf(d1) * math.sqrt(t)


@functools.lru_cache(maxsize=None)
def _series_dv(sid: int, scen_key: tuple) -> np.ndarray:
    """Series ``sid`` repriced in every scenario of the set ``scen_key`` names (:func:`_sets`), minus its value now:
    at F exp(move), vol exp(shock), t - horizon."""
    scen = _sets(*scen_key[1:])[scen_key[0]]
    _i, u, k, d, c, v = {s[0]: s for s in SERIES}[sid]
    t = d * 86_400 / YEAR
    v0 = _price(u, k, t, c, v)
    return np.array([_price(u, k, max(t - scen.horizon, 0.0), c, v * math.exp(dv), _fwd(u) * math.exp(ds))
                     for ds, dv in zip(scen.log_spot[:, u], scen.vol_shock[:, u])]) - v0


@functools.lru_cache(maxsize=None)
def _sets(seed: int) -> dict:
    """The document's scenario sets, drawn by the engine's generators with its parameters."""
    paths, horizon = RISK["mc_paths"], RISK["horizon_days"] / 365.0
    merton = MertonParams(diffusion_vol=RISK["mc_diffusion_vol"])
    return {"tail": monte_carlo_scenarios(seed, paths, 2, merton, horizon=horizon),
            "grid": grid_scenarios(RISK["grid_spot_range"], RISK["grid_vol_range"], n_underlyings=2, horizon=horizon),
            "stress": correlation_stress_scenarios(seed, paths, 2, merton, horizon=horizon,
                                                   rho=RISK["stress_correlation"])}


def _pnl(name: str, seed: int, positions: dict, wbtc: float, weth: float) -> np.ndarray:
    """The account's P&L in every scenario of set ``name``: each option's repriced change x its size; collateral
    amount x (1 - haircut) x price x (exp(move) - 1)."""
    scen = _sets(seed)[name]
    out = np.zeros(scen.log_spot.shape[0])
    for sid, q in positions.items():
        out += q * _series_dv(sid, (name, seed))
    out += wbtc * (1 - HAIRCUT[WBTC_ADDR]) * BTC * np.expm1(scen.log_spot[:, 0])
    out += weth * (1 - HAIRCUT[WETH_ADDR]) * ETH * np.expm1(scen.log_spot[:, 1])
    return out


def _es(pnl: np.ndarray, level: float) -> float:
    losses = np.sort(-pnl)[::-1]
    m = max(1, len(losses) - math.floor(level * len(losses) + 1e-9))
    return float(losses[:m].mean())


def _margins(doc: dict, positions: dict, wbtc: float, weth: float) -> dict:
    seed = int(doc["mc_seed"])
    es = _es(_pnl("tail", seed, positions, wbtc, weth), RISK["es_confidence"])
    grid_loss = float(np.max(-_sets(seed)["grid"].weight * _pnl("grid", seed, positions, wbtc, weth)))
    stress_es = _es(_pnl("stress", seed, positions, wbtc, weth), RISK["es_confidence"])
    base = max(es, grid_loss, stress_es, 0.0)
    by_id = {s[0]: s for s in SERIES}
    premium = PREMIUM * sum(-q * _price(by_id[i][1], by_id[i][2], by_id[i][3] * 86_400 / YEAR, by_id[i][4],
                                        by_id[i][5]) for i, q in positions.items() if q < 0)
    gamma_u, vega_u, gross = [0.0, 0.0], [0.0, 0.0], 0.0
    for i, q in positions.items():
        _i, u, k, d, _c, v = by_id[i]
        g, vg = _gamma_vega(u, k, d * 86_400 / YEAR, v)
        gamma_u[u] += q * g
        vega_u[u] += q * vg
        gross += abs(q) * g * 0.5 * (_fwd(u) * GAMMA_MOVE) ** 2
    gamma_addon = GAMMA_ADDON * sum(max(-gamma_u[u], 0.0) * 0.5 * (_fwd(u) * GAMMA_MOVE) ** 2 for u in (0, 1))
    vega_addon = VEGA_SHIFT * sum(max(-x, 0.0) for x in vega_u)
    multiplier = 1 + TIGHTEN * gross / (gross + GAMMA_SCALE)
    mm = (base + premium + gamma_addon + vega_addon) * multiplier
    return {"es": es, "grid": grid_loss, "stress": stress_es, "premium": premium, "gamma": gamma_addon,
            "vega": vega_addon, "multiplier": multiplier, "mm": mm, "im": RISK["im_multiplier"] * mm}


@pytest.mark.parametrize("seed", [7, 2024])
def test_two_asset_margins_recomputed_term_by_term_equal_the_engines_leaves(seed):
    doc = _document(seed)
    leaves = {x.account.lower(): x for x in leaves_from_inputs(doc)[0]}
    assert len(leaves) == len(BOOKS)
    for account, (positions, wbtc, weth, _cash) in BOOKS.items():
        mine = _margins(doc, positions, wbtc, weth)
        leaf = leaves[account.lower()]
        # every term is in play somewhere in the book; the leaf's margins are rounded up to a base unit (1e-6)
        assert mine["premium"] >= 0 and mine["multiplier"] > 1
        assert abs(leaf.maintenance - mine["mm"] * 1e6) <= 1, (account, leaf, mine)
        assert abs(leaf.initial - mine["im"] * 1e6) <= 1, (account, leaf, mine)
        assert leaf.initial == pytest.approx(1.5 * leaf.maintenance, abs=2)


def test_each_term_matters_in_this_book():
    """The comparison above would not notice a missing term if it were zero here: each one is material for some
    account (the hedged book's base is the grid or the stress, the short straddle carries gamma and vega add-ons,
    WBTC collateral moves the short-both book's P&L)."""
    doc = _document(7)
    m = {a: _margins(doc, *BOOKS[a][:3]) for a in BOOKS}
    straddle = m["0x00000000000000000000000000000000000000a3"]
    assert straddle["gamma"] > 1 and straddle["vega"] > 1 and straddle["premium"] > 100
    both = m["0x00000000000000000000000000000000000000a2"]
    no_wbtc = _margins(doc, BOOKS["0x00000000000000000000000000000000000000a2"][0], 0.0, 0.0)
    assert both["mm"] > no_wbtc["mm"] + 50  # wrong-way collateral raises the margin of a short-put book
    hedged = m["0x00000000000000000000000000000000000000a1"]
    assert max(hedged["grid"], hedged["stress"]) >= hedged["es"]  # the tail set nets the hedge; the grid caps it

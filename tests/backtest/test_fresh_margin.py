"""The keepers' MM at the bar's spot (issue 14, healthy accounts liquidated).

* ``Replay.row_split`` (one engine run on a few population rows and only the series they hold) equals the full engine
  run on every row and every series (the reference computation) to float noise;
* the "healthy" yardstick of a fill is the engine's MM with the reference vols **at the fill's bar** (a full
  reference run there, scaled to the book), not the MM of the last 15-minute run;
* regression: between full runs a book is sold only when its equity is below the keepers' MM recomputed at the
  bar's spot. With the old rule (``fresh_breach=False``: the MM of the last full run is held) the mark-to-market
  baseline sells books whose fresh MM is below their equity (the test checks that this happens on this path) and
  the auction policies start auctions on them; with the rule no sale happens on a stale MM.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from keeper.backtest.engine import BacktestConfig, Replay, scaled_mm, split_mm
from keeper.backtest.market import validate_bars
from keeper.backtest.runner import prepare
from keeper.data.paths import CrashConfig, crash_path

CFG = BacktestConfig(n_scenarios=400)
POLS = ("backstop:hedging", "backstop:none", "mark_to_market")


def _path():
    # a crash with a rebound: spot moves by several % between two 15-minute runs in both directions
    mp = crash_path(CrashConfig(spot0=2000.0, n_steps=96, step_seconds=300.0, base_vol=0.6, crash_step=31,
                                jump=-0.12, vol_spike=2.0, vol_half_life_steps=12, seed=7))
    return validate_bars("fresh", 1.7e9 + mp.times, mp.spot, underlying="ETH")


class Recording(Replay):
    """A replay that records, per fill, the keepers' vols of its bar (for an independent engine run after)."""

    def _defer_healthy(self, fill, a, view):
        fill.__dict__["_vols"] = np.array(self._cur[2])
        fill.__dict__["_lam"] = view["lam"]  # the book on offer is the population row times lambda
        super()._defer_healthy(fill, a, view)


@pytest.fixture(scope="module")
def runs():
    path = _path()
    out = {}
    for fresh in (True, False):
        cfg = replace(CFG, fresh_breach=fresh)
        market, pop = prepare(path, 50, cfg, seed=2)
        rp = Recording(market, pop, cfg, policies=POLS)
        out[fresh] = (rp, rp.run())
    return out


def test_row_split_equals_the_full_engine_run():
    path = _path()
    market, pop = prepare(path, 30, CFG, seed=2)
    rp = Replay(market, pop, CFG, policies=("mark_to_market",))
    rp.refit(0)
    for i, vols in ((40, market.fair_vol[40]), (41, rp._vols(41, rp.surface))):
        full = rp.risk_full(i, pop.positions, pop.coll, vols)
        base, g = split_mm(full.maintenance_margin, full.gamma_multiplier)
        rows = np.array([3, 7, 11, 29])
        b2, g2 = rp.row_split(i, rows, vols)
        assert np.count_nonzero(np.any(pop.positions[rows] != 0, axis=0)) < market.series.n  # a real restriction
        np.testing.assert_allclose(b2, base[rows], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(g2, g[rows], rtol=1e-12, atol=1e-9)


def _reference_mm(rp, i, vols, a, lam):
    r = rp.risk_full(int(i), rp.pop.positions, rp.pop.coll, vols)
    base, g = split_mm(r.maintenance_margin, r.gamma_multiplier)
    return float(scaled_mm(base[a:a + 1], g[a:a + 1], np.array([lam]))[0])


def test_healthy_yardstick_is_the_fair_mm_at_the_fill_bar(runs):
    rp, res = runs[True]
    fills = [f for p in POLS for f in res[p]["fill_list"]]
    off_grid = [f for f in fills if int(f["bar"]) not in set(rp.margin_bars.tolist())]
    assert off_grid, "fills between full runs are where the old yardstick (last run's MM) was stale"
    for f in off_grid[:12]:
        i, a = int(f["bar"]), int(f["account"])
        ref = _reference_mm(rp, i, rp.m.fair_vol[i], a, f["_lam"])
        assert f["fair_mm"] == pytest.approx(ref, rel=1e-9)
        assert f["healthy"] == (f["fair_equity"] >= f["fair_mm"])


def test_no_sale_on_a_stale_mm(runs):
    """Between full runs, every market sale and every take by the buyer of last resort (at an auction's reset,
    which needs a fresh breach record) is sized on the keepers' MM at that bar's spot: the MM the policy held for
    the book equals a full engine run there (the reference computation), and the book's equity is below it. With the
    old rule (the last full run's MM held) the MM differs on this path."""
    def check(rp, res):
        margin = set(rp.margin_bars.tolist())
        fills = [f for f in res["mark_to_market"]["fill_list"] + res["backstop:none"]["fill_list"]
                 if int(f["bar"]) not in margin and (f["buyer"] in ("market", "fund"))]
        assert len(fills) >= 3
        off = 0
        for f in fills:
            ref = _reference_mm(rp, int(f["bar"]), f["_vols"], int(f["account"]), f["_lam"])
            if abs(f["keeper_mm"] - ref) > 1e-9 * ref:
                off += 1
            else:
                assert f["keeper_equity"] < ref
        return off

    assert check(*runs[False]) > 0, "the old rule holds the last run's MM at a sale between runs"
    assert check(*runs[True]) == 0


def test_fits_ahead_in_a_helper_process_give_the_same_replay():
    """The surfaces fitted ahead in a helper process (``fit_workers=1``) are taken in order and give the replay fitted
    in line, figure for figure."""
    path = _path()
    market, pop = prepare(path, 20, CFG, seed=4)
    a = Replay(market, pop, CFG, policies=("backstop:hedging", "mark_to_market"))
    b = Replay(market, pop, CFG, policies=("backstop:hedging", "mark_to_market"), fit_workers=1)
    assert len(b.fit_plan()) > 5
    ra, rb = a.run(), b.run()
    assert a.surface_fits == b.surface_fits == len(b.fit_plan()) - b.surface_failures
    for p in ra:
        assert ra[p]["fill_list"] == rb[p]["fill_list"]
        assert ra[p]["fund_series"] == rb[p]["fund_series"]

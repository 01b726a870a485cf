"""The documented cadence rule (full margin run and refit every 15 minutes of path time, equity and breaches every
bar) against a finer one (every 5-minute bar) on one path: the outcome table does not change beyond the stated
tolerances (docs/risk-efficacy.md, "Cadence check")."""
from __future__ import annotations


import pytest

from keeper.backtest.engine import BacktestConfig, Replay
from keeper.backtest.market import validate_bars
from keeper.backtest.runner import prepare
from keeper.data.paths import CrashConfig, crash_path

POLS = ("backstop:hedging", "backstop:conservative", "backstop:none", "mark_to_market")


@pytest.fixture(scope="module")
def both():
    # the jump falls between two 15-minute runs (bar 31), so the coarse cadence sees it a bar late
    mp = crash_path(CrashConfig(spot0=2000.0, n_steps=144, step_seconds=300.0, base_vol=0.6, crash_step=31,
                                jump=-0.12, vol_spike=2.0, vol_half_life_steps=24, seed=11))
    path = validate_bars("cadence", 1.7e9 + mp.times, mp.spot, underlying="ETH")
    out = {}
    for cadence in (900.0, 300.0):
        cfg = BacktestConfig(n_scenarios=500, cadence_s=cadence)
        market, pop = prepare(path, 60, cfg, seed=3)
        rp = Replay(market, pop, cfg, policies=POLS)
        out[cadence] = (rp.run(), rp.margin_bars.size)
    return out


def test_finer_cadence_runs_more_margins(both):
    # every 15 minutes (48) plus one run at the jump bar (spot moved more than margin_move = 2 % since the last run)
    assert both[300.0][1] == 144 and both[900.0][1] == 49


@pytest.mark.parametrize("policy", POLS)
def test_finer_cadence_does_not_change_the_outcome_table(both, policy):
    a, b = both[900.0][0][policy], both[300.0][0][policy]
    assert a["fills"] > 0
    for k in ("liquidated_in_part", "liquidated_in_full", "fills_by_fund", "bad_debt", "fund_drawdown"):
        assert a[k] == pytest.approx(b[k], abs=1e-6), k
    assert abs(a["healthy_liquidated"] - b["healthy_liquidated"]) <= 1
    assert a["holder_loss"] == pytest.approx(b["holder_loss"], rel=0.05)
    assert a["transfer"] == pytest.approx(b["transfer"], rel=0.20, abs=1.0)
    assert a["max_minutes_below_mm_without_fill"] <= 30 and b["max_minutes_below_mm_without_fill"] <= 30
    for r in (a, b):
        if policy.startswith("backstop"):
            assert r["xfer_attested_share_max"] <= 0.09 + 1e-6

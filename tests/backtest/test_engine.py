"""Offline replay: value conservation of the insurance fund for every policy on a crash, and a fat-finger print that
makes the last-trade baseline liquidate healthy accounts while Backstop (hybrid mark) liquidates none."""
from __future__ import annotations

import numpy as np
import pytest

from keeper.backtest.engine import BacktestConfig, Replay
from keeper.backtest.market import build_market, list_series, validate_bars
from keeper.backtest.population import Population, size_collateral
from keeper.backtest.runner import prepare
from keeper.data.paths import CrashConfig, crash_path

CFG = BacktestConfig(n_scenarios=500)
POLS = ("backstop:hedging", "backstop:conservative", "backstop:none", "today:conservative", "mark_to_market",
        "static")


@pytest.fixture(scope="module")
def crash_run():
    mp = crash_path(CrashConfig(spot0=2000.0, n_steps=96, step_seconds=300.0, base_vol=0.6, crash_step=30,
                                jump=-0.35, vol_spike=2.0, vol_half_life_steps=24, seed=11))
    path = validate_bars("test_crash", 1.7e9 + mp.times, mp.spot, underlying="ETH")
    market, pop = prepare(path, 40, CFG, seed=5)
    rp = Replay(market, pop, CFG, policies=POLS)
    return rp.run()


@pytest.mark.parametrize("policy", POLS)
def test_fund_after_is_before_plus_penalties_minus_payouts(crash_run, policy):
    r = crash_run[policy]
    fills = r["fill_list"]
    assert fills, "the crash must liquidate someone, or the identity below says nothing"
    assert r["penalties_to_fund"] > 0
    # the fund's running balance (moved fill by fill, plus its own account's book at exit) against the totals
    penalties = sum(f["penalty"] for f in fills) - r["starter_rewards"]
    assert penalties == pytest.approx(r["penalties_to_fund"], abs=1e-5)
    bidders = sum(f["fund_paid"] for f in fills if f["buyer"] != "fund")
    assert r["fund_payouts"] == pytest.approx(bidders + r["fund_account_loss"], abs=1e-5)
    assert r["fund_after"] == pytest.approx(r["fund_before"] + penalties - r["bad_debt_repaid"] - r["fund_payouts"],
                                            abs=1e-5)
    assert r["fund_series"][-1] == pytest.approx(r["fund_free_after"] + (r["fund_account_value_end"] if
                                                 r["fund_account_books_taken"] else 0.0), rel=0.05, abs=50.0)
    bad = sum(f["bad_debt"] for f in fills)
    assert r["bad_debt_outstanding"] == pytest.approx(bad - r["bad_debt_repaid"], abs=1e-5)
    assert r["fund_free_after"] >= -1e-9
    # holders' loss is transfer plus penalties, fill by fill; a transfer is fair value bought minus price paid
    assert r["holder_loss"] == pytest.approx(sum(f["transfer"] + f["penalty"] for f in fills), rel=1e-12)
    for f in fills:
        if f["amount"] > 0:
            assert f["transfer"] == pytest.approx(f["fair_value"] - f["amount"], abs=1e-6)
        assert f["xfer_attested"] == pytest.approx(f["attested_value"] - f["amount"], abs=1e-6)
    assert r["liquidated_in_part"] + r["liquidated_in_full"] == len({f["account"] for f in fills})


def test_static_policy_liquidates_in_full_only(crash_run):
    r = crash_run["static"]
    assert r["liquidated_in_part"] == 0 and all(f["full"] and f["fraction"] == 1.0 for f in r["fill_list"])


def test_auction_fills_never_sell_more_than_the_book(crash_run):
    for pol in POLS[:4]:
        sold = {}
        for f in crash_run[pol]["fill_list"]:
            assert 0 < f["fraction"] <= 1.0
            sold[f["account"]] = sold.get(f["account"], 0.0) + f["fraction"]
        assert sold, pol


def test_fat_finger_liquidates_healthy_accounts_under_last_trade_mark_not_under_backstop():
    rng = np.random.default_rng(2)
    n = 180
    close = 2000 * np.exp(np.cumsum(np.concatenate([[0.0], rng.normal(0, 0.0004, n - 1)])))
    close[120] = close.min() * 0.999  # the low (where the fat finger prints)
    path = validate_bars("flat", 1.7e9 + 60.0 * np.arange(n), close, underlying="ETH")
    series = list_series(close[0], path.times[0])
    market = build_market(path, series, seed=4)
    ff = market.fat_finger
    j = ff["series"]
    assert ff["bar"] == 120 and ff["price"] > 5 * ff["fair"]
    k = 6
    pos = np.zeros((k, series.n))
    pos[:, j] = -np.linspace(40, 90, k)  # short the thin series
    pop = Population(["short_far_put"] * k, pos, np.zeros(k), np.zeros(k), np.full(k, 1.2))
    rp0 = Replay(market, pop, CFG, policies=("backstop:hedging",))
    rp0.refit(0)
    _, _, v0 = rp0.model_prices(0)
    pop = size_collateral(pop, close[0], CFG.haircut, market.fair[0], lambda p, c: rp0.risk(0, p, c, v0)[0])
    res = Replay(market, pop, CFG, policies=("backstop:hedging", "mark_to_market")).run()
    mtm = res["mark_to_market"]["fill_list"]
    assert mtm and all(f["bar"] == ff["bar"] for f in mtm), "the print, and only the print, liquidates"
    assert sum(f["healthy"] for f in mtm) >= 1
    assert res["mark_to_market"]["healthy_liquidated"] >= 1
    assert res["backstop:hedging"]["fills"] == 0 and res["backstop:hedging"]["auctions_started"] == 0

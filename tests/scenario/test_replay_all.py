"""`backstop scenario --replay all`: which paths it runs, the row it makes of a run's report, and bad input.

The on-chain runs themselves are in docs/risk-efficacy.md ("On chain: every real path"); the scenario's own run
and invariants are tested in test_scenario_anvil.py."""
from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from keeper.cli.main import main as cli
from keeper.scenario.replay_all import ReplayError, failed_row, real_path_names, replay_row


def test_the_ten_crash_paths_and_not_the_daily_closes(shared_data):
    names = real_path_names(shared_data)
    listed = sorted(p.name[:-4] for p in (shared_data / "price_paths").iterdir()
                    if p.suffix == ".csv" and "daily" not in p.name)
    assert names == listed and len(names) == 10
    for n in names:  # each is a readable bar file with a time and a close column
        with open(shared_data / "price_paths" / f"{n}.csv") as f:
            assert len(next(csv.reader(f))) >= 2


def test_no_shared_folder_is_one_readable_line(tmp_path):
    with pytest.raises(ReplayError, match="no crash path"):
        real_path_names(tmp_path)
    r = CliRunner().invoke(cli, ["scenario", "--replay", "all", "--shared-data", str(tmp_path), "--small"])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "no crash path" in r.output


def test_row_from_a_report():
    """Transfers per fill = (model value - price) x fraction where positive; longest stretch below MM by steps."""
    fills = [
        {"fraction": 0.5, "price_paid": 900.0, "model_value": 1000.0},   # transfer 50 of 500: 10 %
        {"fraction": 0.25, "price_paid": 1100.0, "model_value": 1000.0},  # paid above value: no transfer
        {"fraction": 1.0, "price_paid": 1960.0, "model_value": 2000.0},   # 40 of 2000: 2 %
    ]
    report = {
        "summary": {"insurance_fund_before": 50_000.0, "insurance_fund_after": 50_120.0,
                    "insurance_fund_payouts": 0.0, "bad_debt": 0.0, "fills": fills,
                    "accounts_liquidated_full": ["0xa"], "accounts_liquidated_partial": ["0xb", "0xc"],
                    "healthy_accounts_liquidated": [], "auctions_still_running": 0,
                    "invariants": {"conservation": {"ok": True}, "fund": {"ok": True}}},
        "record": {"times": [0.0, 600.0, 1200.0, 1800.0, 2400.0],
                   "margin_ratios": {"0xa": [1.2, 0.9, 0.8, 1.1, 1.3],  # below from 600 to 1800: 20 min
                                     "0xb": [0.95, 1.1, 0.99, 0.98, 0.97]}},  # 10 min, then 20 to the end
    }
    row = replay_row("BTCUSD_2022-06-13_5m", report)
    assert row["transfer"] == pytest.approx(50.0 + 40.0)
    assert row["max_transfer_share"] == pytest.approx(0.10)
    assert row["minutes_below_mm"] == pytest.approx(20.0)
    assert (row["liquidated_full"], row["liquidated_partial"], row["healthy_liquidated"]) == (1, 2, 0)
    assert row["invariants_ok"] and row["failed_invariants"] == []
    report["summary"]["invariants"]["fund"]["ok"] = False
    assert replay_row("x", report)["failed_invariants"] == ["fund"]
    assert failed_row("x", "boom")["invariants_ok"] is False


def test_per_fill_transfer_over_the_mm_bought():
    """Issue 14's per-fill measure in the scenario report: fraction x (V - price) over fraction x MM, V and MM those
    of the (re)start the bid was on (here a reset lowered both), hand-computed; then the replay row's median and max."""
    from keeper.scenario.report import AuctionTrace, BidTrace, ScenarioRecord, summarize

    d = 10**6
    a = AuctionTrace(1, "0xa", 0.0, 1_000 * d, 800 * d)
    a.bids = [BidTrace(10.0, 960 * d, "0xb1", 0.5, "filled", attested_value=800 * d, start_price=1_000 * d,
                       maintenance=1_200 * d),  # 0.5 x 40 = 20 of 0.5 x 1,200 = 600: 3.33 %
              BidTrace(20.0, 0, "0xb2", 0.0, "lost_race"),  # not a fill
              BidTrace(900.0, 430 * d, "0xb2", 0.25, "filled", attested_value=400 * d, start_price=500 * d,
                       maintenance=1_000 * d),  # 0.25 x 70 = 17.5 of 250: 7 %
              BidTrace(950.0, 510 * d, "0xb1", 0.25, "filled", attested_value=400 * d, start_price=500 * d,
                       maintenance=1_000 * d)]  # paid above V: -2.5 of 250: -1 %
    s = summarize(ScenarioRecord(auctions=[a], spot=[2000.0]))
    got = [f["transfer_share_of_mm"] for f in s["fills"]]
    assert got == pytest.approx([20 / 600, 17.5 / 250, -2.5 / 250])
    assert [f["transfer"] for f in s["fills"]] == pytest.approx([20.0, 17.5, -2.5])
    assert s["fill_transfer_share_of_mm"] == pytest.approx({"fills": 3, "median": 20 / 600, "max": 0.07})
    row = replay_row("x", {"summary": dict(s, invariants={}), "record": {}})
    assert (row["fill_xfer_mm_median"], row["fill_xfer_mm_max"]) == pytest.approx((20 / 600, 0.07))
    empty = summarize(ScenarioRecord(spot=[2000.0]))
    assert empty["fill_transfer_share_of_mm"] == {"fills": 0, "median": None, "max": None}
    # an insolvent book (E = -300): its bidder paid 360 per whole book (the price -360) is 1.2 times the deficit;
    # solvent fills do not count
    b = AuctionTrace(2, "0xc", 0.0, -300 * d, -300 * d)
    b.bids = [BidTrace(5.0, -360 * d, "0xb1", 1.0, "filled", attested_value=-300 * d, start_price=-300 * d,
                       maintenance=500 * d)]
    s2 = summarize(ScenarioRecord(auctions=[a, b], spot=[2000.0]))
    assert s2["insolvent_payout_to_deficit"] == pytest.approx({"fills": 1, "median": 1.2, "max": 1.2})
    assert s2["fills"][-1]["transfer_share_of_mm"] == pytest.approx(60 / 500)  # 1.0 x (-300 + 360) over MM 500


def test_an_account_that_appears_late_counts_below_mm_only_from_its_first_leaf():
    """Found on the no-bidder run with a large fund: the fund's account has no leaf until its first take, and the
    record back-filled its first ratio (0.994) over the steps before it existed, so the run reported 147.7 minutes
    below MM for an account that was below MM for two steps. Steps before an account's first leaf are ``None`` now;
    after it, a missing step repeats the last ratio."""
    from keeper.scenario.report import append_ratio

    ratios: list = []
    append_ratio(ratios, 4, 0.99)  # first leaf at step 3
    append_ratio(ratios, 5, 0.98)
    append_ratio(ratios, 7, 1.1)  # no leaf at step 5: the last ratio repeats
    assert ratios == [None, None, None, 0.99, 0.98, 0.98, 1.1]
    times = [0.0, 900.0, 1800.0, 2700.0, 3600.0, 4500.0, 5400.0]
    rec = {"summary": {"fills": [], "invariants": {}}, "record": {"times": times, "margin_ratios": {"0xf": ratios}}}
    assert replay_row("late", rec)["minutes_below_mm"] == pytest.approx(3 * 15.0)  # steps 3, 4, 5 until step 6


def test_the_fund_accounts_equity_counts_in_the_funds_assets_only_when_attested():
    """The report's fund's account: the fund's assets are its free balance plus the account's equity in the keepers'
    last leaf (a loss of the account is the fund's); an account the keepers never attested has unknown equity, shown
    as None rather than 0 (the first no-bidder run of this stop printed 0.0 there)."""
    from keeper.scenario.report import ScenarioRecord, summarize

    d = 10**6
    fa = {"address": "0xf", "books_taken": 2, "positions": {"3": {"contracts": -1.5}}, "cash": 9_000 * d,
          "equity": 12_500 * d, "maintenance": 10_000 * d, "breached": False}
    rec = ScenarioRecord(spot=[2000.0], insurance_fund_after=40_000 * d, fund_account=fa)
    s = summarize(rec)
    assert (s["fund_account_equity"], s["fund_account_maintenance"]) == (12_500.0, 10_000.0)
    assert s["insurance_fund_assets_after"] == 52_500.0  # 40,000 free + 12,500 in its account
    assert s["fund_account_books_taken"] == 2 and not s["fund_account_breached_at_end"]
    s = summarize(ScenarioRecord(spot=[2000.0], insurance_fund_after=40_000 * d,
                                 fund_account={**fa, "equity": None, "maintenance": None}))
    assert s["fund_account_equity"] is None and s["insurance_fund_assets_after"] is None
    assert "fund_account" not in summarize(ScenarioRecord(spot=[2000.0]))  # no fund's account set

"""Scenario market path (synthetic crash, real replay) and the report/plot module on synthetic data."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from keeper.data.paths import CrashConfig, MarketPath, crash_path, ewma_vol, read_price_bars, replay_path
from keeper.scenario.report import AuctionTrace, BidTrace, ScenarioRecord, SurfaceSnapshot, summarize, write_report


def test_crash_path_has_the_configured_jump_and_vol_spike():
    cfg = CrashConfig(spot0=2000, n_steps=30, crash_step=10, jump=-0.3, vol_spike=2.0, base_vol=0.5,
                      vol_half_life_steps=4)
    p = crash_path(cfg)
    r = np.expm1(np.diff(np.log(p.spot)))
    assert r[cfg.crash_step - 1] == pytest.approx(-0.30, abs=1e-12)
    assert p.worst_return == pytest.approx(-0.30, abs=1e-12)
    assert p.spot[0] == 2000
    assert np.all(p.atm_vol[: cfg.crash_step] == 0.5)
    assert p.atm_vol[cfg.crash_step] == pytest.approx(1.0)
    # half-life: four steps after the crash the excess vol has halved
    assert p.atm_vol[cfg.crash_step + 4] - 0.5 == pytest.approx(0.25)
    # deterministic for a seed, different for another
    assert np.array_equal(crash_path(cfg).spot, p.spot)
    assert not np.array_equal(crash_path(CrashConfig(seed=8)).spot, crash_path(CrashConfig(seed=7)).spot)
    # round trip through JSON
    q = MarketPath.from_json(json.loads(json.dumps(p.to_json())))
    assert np.array_equal(q.spot, p.spot) and q.crash_step == p.crash_step


@pytest.mark.parametrize("bad", [dict(jump=-1.0), dict(crash_step=99), dict(n_steps=1), dict(spot0=0.0)])
def test_crash_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        crash_path(CrashConfig(**bad))


def test_ewma_vol_of_constant_returns_is_the_return_size():
    # log returns alternating +-a: variance a^2 per bar, annualised with 300-second bars
    a = 0.01
    close = 100 * np.exp(np.cumsum([0] + [a if i % 2 else -a for i in range(500)]))
    v = ewma_vol(close, 300.0)
    assert v[-1] == pytest.approx(a * math.sqrt(365 * 24 * 12), rel=1e-6)


def test_replay_of_a_real_crash(shared_data):
    bars = read_price_bars(shared_data / "price_paths" / "ETHUSD_2020-03-12_5m.csv")
    p = replay_path(bars, n_steps=50, spot0=2000.0, window_bars=800)
    assert len(p) == 50 and p.spot[0] == pytest.approx(2000.0)
    # the crash low is on the path, and the rescaling kept the returns of the real bars
    lo = int(np.argmin(bars.close))
    assert p.spot[p.crash_step] / p.spot[0] == pytest.approx(bars.close[lo] / bars.close[lo - 400], rel=1e-9)
    assert p.spot.min() == p.spot[p.crash_step]
    # Black Thursday: ETH fell more than 40 % inside this window
    assert p.spot.min() / p.spot.max() < 0.6
    # realised vol spikes around the crash
    assert p.atm_vol.max() > 1.5 * p.atm_vol[0]


def test_replay_rejects_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_price_bars(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp_utc,close\n2020-01-01T00:00:00Z,-1\nnot-a-date,5\n")
    with pytest.raises(ValueError, match="fewer than two"):
        read_price_bars(bad)


def synthetic_record() -> ScenarioRecord:
    rec = ScenarioRecord(quote_decimals=6)
    p = crash_path(CrashConfig(n_steps=20, crash_step=5))
    rec.spot = [float(x) for x in p.spot]
    rec.atm_vol = [float(x) for x in p.atm_vol]
    rec.crash_step = 5
    rec.margin_ratios = {"0xaaa": [3.0] * 20, "0xbbb": [1.5] * 5 + [0.8] * 15, "0xccc": [1.2] * 5 + [0.2] * 15}
    rec.account_kind = {"0xaaa": "maker", "0xbbb": "short_vol", "0xccc": "short_vol"}
    x = np.linspace(-0.5, 0.5, 11)
    rec.surfaces = [SurfaceSnapshot("before", [0.1, 0.3], list(x), [list(0.6 + 0.1 * x**2)] * 2),
                    SurfaceSnapshot("after", [0.1, 0.3], list(x), [list(1.1 + 0.2 * x**2)] * 2)]
    a1 = AuctionTrace(1, "0xbbb", 100.0, 50_000_000, 50_000_000, [(100.0 + i, 50_000_000 - i * 1_000_000)
                                                                   for i in range(10)])
    a1.bids = [BidTrace(104.0, 46_000_000, "0xliq1", 0.5, "filled"), BidTrace(104.0, 46_000_000, "0xliq2", 0.5,
                                                                               "lost_race")]
    a1.sold_fraction, a1.paid, a1.penalty, a1.to_fund, a1.ended = 0.5, 23_000_000, 1_000_000, 900_000, "Restored"
    a2 = AuctionTrace(2, "0xccc", 110.0, 20_000_000, 20_000_000, [(110.0, 20_000_000)])
    a2.bids = [BidTrace(115.0, 18_000_000, "0xliq2", 1.0, "filled")]
    a2.sold_fraction, a2.paid, a2.penalty, a2.to_fund, a2.bad_debt = 1.0, 18_000_000, 500_000, 500_000, 0
    a2.ended = "SoldOut"
    rec.auctions = [a1, a2]
    rec.insurance_fund_before = 1_000_000_000
    rec.fund_payouts = 200_000
    rec.insurance_fund_after = 1_000_000_000 + 900_000 + 500_000 - 200_000
    return rec


def test_summary_and_files(tmp_path):
    rec = synthetic_record()
    s = summarize(rec)
    assert s["accounts_liquidated_partial"] == ["0xbbb"]
    assert s["accounts_liquidated_full"] == ["0xccc"]
    assert s["penalties"] == pytest.approx(1.5)
    assert s["insurance_fund_arithmetic_ok"] is True
    assert s["lost_races"] == 1
    assert s["healthy_accounts_liquidated"] == []
    assert [f["discount_to_model"] for f in s["fills"]] == pytest.approx([0.08, 0.10])
    # a fund that does not add up is reported as such
    rec.insurance_fund_after += 1
    assert summarize(rec)["insurance_fund_arithmetic_ok"] is False
    rec.insurance_fund_after -= 1
    paths = write_report(rec, tmp_path / "out")
    for key in ("spot", "surface", "margin_ratios", "auctions"):
        data = paths[key].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    doc = json.loads(paths["report"].read_text())
    assert doc["summary"]["auctions"] == 2 and len(doc["record"]["auctions"][0]["bids"]) == 2


def test_the_haircut_table_is_in_the_summary_and_printed():
    from rich.console import Console

    from keeper.scenario.report import render_summary

    rec = synthetic_record()
    rec.haircuts = [{"asset": "WBTC", "listed": 0.10, "recommended": 0.2345, "listed_wad": 10**17,
                     "recommended_wad": 2345 * 10**14, "daily_vol": 0.05, "size": 5000.0, "depth": 1000.0,
                     "closes": 20, "action": "raise"}]
    s = summarize(rec)
    assert s["haircuts"] == rec.haircuts
    con = Console(record=True, width=140)
    render_summary(s, con)
    text = con.export_text()
    assert "Collateral haircuts" in text and "WBTC" in text and "10.00%" in text and "23.45%" in text

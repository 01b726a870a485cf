"""Option-chain loader: real Deribit snapshots against their PROVENANCE figures and an independent csv recount;
JSON-style rows with missing cells and bad rows; the loaded time/forward conventions against Deribit's own marks."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from keeper.units import SECONDS_PER_YEAR
from keeper.quant.chains import OptionChain, chain_from_rows
from keeper.data.deribit import load_deribit_csv
from keeper.quant.pricing import black76_price

# Figures stated in shared/data/option_chains/PROVENANCE.md (rows, expiries, rows without bid / without ask).
PROVENANCE = {
    "deribit_BTC_20200514T0541Z.csv": (310, 7, 26, 26),
    "deribit_BTC_20200521T2319Z.csv": (326, 7, 64, 49),
    "deribit_ETH_20240108T1119Z.csv": (684, 11, 230, 253),
}


@pytest.mark.parametrize("name", sorted(PROVENANCE))
def test_real_chain_matches_provenance(shared_data, name):
    loaded = load_deribit_csv(shared_data / "option_chains" / name)
    chain = loaded.chain
    rows, expiries, no_bid, no_ask = PROVENANCE[name]
    assert loaded.report.rows_read == rows and loaded.report.rows_kept == rows and loaded.report.rejected == {}
    assert len(chain) == rows
    assert chain.expiries().size == expiries
    assert int(np.sum(~np.isfinite(chain.bid))) == no_bid
    assert int(np.sum(~np.isfinite(chain.ask))) == no_ask
    assert int(chain.is_call.sum()) == rows // 2
    assert chain.underlying == name.split("_")[1]


@pytest.mark.parametrize("name", sorted(PROVENANCE))
def test_usd_conversion_and_times_against_csv_recount(shared_data, name):
    path = shared_data / "option_chains" / name
    chain = load_deribit_csv(path).chain
    with open(path, newline="") as fh:
        raw = list(csv.DictReader(fh))
    from datetime import datetime
    stamps = [datetime.fromisoformat(r["snapshot_utc"].replace("Z", "+00:00")).timestamp() for r in raw]
    assert chain.asof == max(stamps)
    for i in (0, len(raw) // 2, len(raw) - 1):
        r = raw[i]
        fwd = float(r["underlying_price"])
        assert chain.forward[i] == fwd
        assert chain.strike[i] == float(r["strike"])
        assert bool(chain.is_call[i]) == (r["kind"] == "C")
        for col, arr in (("bid", chain.bid), ("ask", chain.ask), ("mark_price", chain.mark)):
            if r[col]:
                assert arr[i] == pytest.approx(float(r[col]) * fwd, rel=1e-15)
            else:
                assert math.isnan(arr[i])
        expiry = datetime.fromisoformat(r["expiry_utc"].replace("Z", "+00:00")).timestamp()
        assert chain.quote_expiry_years[i] == pytest.approx((expiry - stamps[i]) / (365 * 86400.0), rel=1e-12)
        assert chain.quote_age[i] == pytest.approx(max(stamps) - stamps[i], abs=1e-6)


@pytest.mark.parametrize("name", ["deribit_BTC_20200514T0541Z.csv", "deribit_BTC_20200521T2319Z.csv"])
def test_deribit_marks_are_black76_on_row_forward_and_quote_time(shared_data, name):
    """PROVENANCE: mark_price = Black-76(underlying_price, mark_iv, T from the row's own time) / underlying_price.
    Our USD marks must match Black-76 on the loaded forward, maturity and mark_iv (a check of the conventions)."""
    chain = load_deribit_csv(shared_data / "option_chains" / name).chain
    ok = np.isfinite(chain.mark_iv) & np.isfinite(chain.mark)
    model = black76_price(chain.forward[ok], chain.strike[ok], chain.quote_expiry_years[ok], chain.mark_iv[ok],
                          chain.is_call[ok])
    err_coin = np.abs(model - chain.mark[ok]) / chain.forward[ok]
    assert np.median(err_coin) < 2e-5  # PROVENANCE: 4e-6 median
    assert np.percentile(err_coin, 95) < 2e-4  # PROVENANCE: 5e-5 at the 95th percentile


def test_json_rows_missing_cells_are_nan_and_bad_rows_are_counted():
    good = {"snapshot_utc": "2024-01-08T11:19:41.423Z", "underlying": "ETH", "index_price": 2222.19,
            "expiry_utc": "2024-01-26T08:00:00Z", "strike": 2300, "kind": "C", "bid": 0.05, "ask": None,
            "mark_price": "0.051", "underlying_price": 2240.0, "bid_amount": 12,
            "instrument_name": "ETH-26JAN24-2300-C"}
    ms = {**good, "snapshot_utc": 1704712781423, "kind": "put", "bid": "", "ask": "0.06", "strike": "2100"}
    rows = [
        good,
        ms,
        {**good, "strike": "abc"},  # bad strike
        {**good, "kind": "X"},  # bad kind
        {**good, "underlying_price": None},  # no forward
        {**good, "expiry_utc": "2024-01-01T08:00:00Z"},  # expired before the quote
        {**good, "underlying": "BTC"},  # another underlying
        "not a mapping",
    ]
    loaded = chain_from_rows(rows)
    chain = loaded.chain
    assert loaded.report.rows_read == 8 and loaded.report.rows_kept == 2
    assert loaded.report.rejected == {"bad_forward": 1, "bad_kind": 1, "bad_strike": 1, "expired": 1,
                                      "not_a_row": 1, "other_underlying": 1}
    assert chain.underlying == "ETH"
    assert chain.bid[0] == pytest.approx(0.05 * 2240.0) and math.isnan(chain.ask[0])
    assert math.isnan(chain.bid[1]) and chain.ask[1] == pytest.approx(0.06 * 2240.0)
    assert math.isnan(chain.ask_size[0]) and chain.bid_size[0] == 12.0
    assert math.isnan(chain.mark_iv[0]) and math.isnan(chain.open_interest[1])
    assert list(chain.is_call) == [True, False]
    # the millisecond timestamp and the ISO one are the same instant
    assert chain.quote_ts[1] == pytest.approx(chain.quote_ts[0], abs=1e-3)
    assert chain.expiry_years[0] == pytest.approx((1706256000.0 - chain.asof) / SECONDS_PER_YEAR)
    sub = chain.select(np.array([False, True]))
    assert len(sub) == 1 and sub.instrument == (ms["instrument_name"],) and sub.asof == chain.asof


def test_chain_arrays_are_read_only_without_freezing_the_callers_arrays(shared_data):
    chain = load_deribit_csv(shared_data / "option_chains" / "deribit_BTC_20200514T0541Z.csv").chain
    with pytest.raises(ValueError):
        chain.bid[0] = 1.0
    bid = np.array(chain.bid)
    copy = OptionChain(**{**{f: getattr(chain, f) for f in chain.__dataclass_fields__}, "bid": bid})
    bid[0] = 1.0  # still writable for its owner (and the chain sees its own read-only view of it)
    with pytest.raises(ValueError):
        copy.bid[0] = 2.0
    with pytest.raises(ValueError, match="length"):
        OptionChain(**{**{f: getattr(chain, f) for f in chain.__dataclass_fields__}, "ask": chain.ask[:3]})


def test_json_rows_of_a_real_chain_load_like_the_csv(shared_data):
    """The replay adapter feeds JSON objects (numbers as numbers, empty cells as null): same chain as the CSV."""
    import json

    path = shared_data / "option_chains" / "deribit_BTC_20200521T2319Z.csv"
    with open(path, newline="") as fh:
        raw = list(csv.DictReader(fh))
    numeric = {"index_price", "strike", "bid", "ask", "bid_iv", "ask_iv", "mark_price", "mark_iv", "open_interest",
               "underlying_price", "bid_amount", "ask_amount"}
    as_json = json.dumps([{k: (None if v == "" else float(v) if k in numeric else v) for k, v in r.items()}
                          for r in raw])
    from_json = chain_from_rows(json.loads(as_json)).chain
    from_csv = load_deribit_csv(path).chain
    for name in ("quote_ts", "expiry_ts", "strike", "is_call", "bid", "ask", "bid_size", "ask_size", "mark",
                 "forward", "index_price", "open_interest", "bid_iv", "ask_iv", "mark_iv"):
        assert np.array_equal(getattr(from_json, name), getattr(from_csv, name), equal_nan=True), name
    assert from_json.asof == from_csv.asof and from_json.instrument == from_csv.instrument

"""Market-data adapters on the real files, the simulated market, and spot aggregation with MAD outliers."""
import csv
import json
import math
import statistics

import numpy as np
import pytest

from keeper.ops.config import parse_config
from keeper.units import price_to_wad, quantize_price
from keeper.data.sources import (
    AggregatedSpot,
    BlockRef,
    FileSpotSource,
    OnChainSpotSource,
    ReplayChainSource,
    ReplaySpotSource,
    SimulatedMarket,
    Skip,
    SpotQuote,
    aggregate_spot,
    build_market_data,
    clean_chain,
    load_price_rows,
)
from keeper.quant.pricing import black76_price

B = BlockRef(10, "0x" + "00" * 32, 1_700_000_000)


def q(name, price, volume=1.0):
    return SpotQuote(name, price, volume, 0.0)


def independent_mad_filter(prices, k):
    """Second computation with the statistics module: keep |x - med| <= k * max(1.4826 MAD, 1e-4 med)."""
    med = statistics.median(prices)
    mad = statistics.median([abs(x - med) for x in prices])
    scale = max(1.4826 * mad, 1e-4 * abs(med))
    return [x for x in prices if abs(x - med) <= k * scale]


def test_median_rejects_outlier_like_independent_computation():
    prices = [2000.0, 2001.5, 1999.0, 2000.7, 2600.0]
    agg = aggregate_spot([q(f"s{i}", p) for i, p in enumerate(prices)], method="median", mad_threshold=3.5)
    kept = independent_mad_filter(prices, 3.5)
    assert 2600.0 not in kept
    assert agg.rejected == ("s4",)
    assert agg.price == statistics.median(kept)


def test_vwap_after_rejection():
    quotes = [q("a", 100.0, 1.0), q("b", 102.0, 3.0), q("c", 101.0, 0.0), q("d", 50.0, 100.0)]
    agg = aggregate_spot(quotes, method="vwap", mad_threshold=3.5)
    assert agg.rejected == ("d",)
    assert agg.price == pytest.approx((100 * 1 + 102 * 3 + 101 * 0) / 4.0, rel=1e-15)


@pytest.mark.parametrize("seed", range(20))
def test_random_sets_match_independent_median(seed):
    rng = np.random.default_rng(seed)
    prices = list(1000 + rng.normal(0, 2, 7))
    if seed % 2:
        prices[int(rng.integers(7))] *= 1.3
    agg = aggregate_spot([q(str(i), p) for i, p in enumerate(prices)], mad_threshold=3.0)
    assert agg.price == pytest.approx(statistics.median(independent_mad_filter(prices, 3.0)), rel=0, abs=1e-12)


def test_bad_quotes_skipped_and_too_few_sources():
    agg = aggregate_spot([q("a", math.nan), q("b", -1.0), q("c", 2000.0)], min_sources=1)
    assert isinstance(agg, AggregatedSpot) and agg.used == ("c",) and agg.price == 2000.0
    skip = aggregate_spot([q("a", math.nan), q("c", 2000.0)], min_sources=2)
    assert isinstance(skip, Skip) and skip.reason == "too_few_sources"


def test_quantize_makes_tiny_differences_agree():
    assert quantize_price(2000.004999, 2) == quantize_price(2000.000001, 2) == 2000.0
    assert quantize_price(0.125, 2) == 0.12  # half-to-even on the decimal value
    assert price_to_wad(1987.2345, 2) == 1987_23 * 10**16
    with pytest.raises(ValueError):
        quantize_price(math.nan, 2)


def test_replay_ohlcv_real_file(shared_data):
    path = shared_data / "price_paths" / "ETHUSD_2020-03-12_5m.csv"
    rows = load_price_rows(path)
    with open(path) as fh:
        raw = list(csv.DictReader(fh))
    assert len(rows) == len(raw) == 2304
    src = ReplaySpotSource("eth", rows, start_block=100, rows_per_block=2, start_row=5)
    got = src.spot(BlockRef(100 + 2 * 7 + 1, "0x", 0))
    assert got.price == float(raw[5 + 7]["close"]) and got.volume == float(raw[5 + 7]["volume"])
    low = min(float(r["close"]) for r in raw)
    assert low == pytest.approx(88.35)  # PROVENANCE.md: min close 88.35
    assert isinstance(src.spot(BlockRef(100 + 2 * 3000, "0x", 0)), Skip)


def test_replay_daily_and_json(shared_data, tmp_path):
    rows = load_price_rows(shared_data / "price_paths" / "BTCUSD_daily.csv")
    assert len(rows) == 3627 and np.all(np.isnan(rows.volume))
    j = tmp_path / "p.json"
    j.write_text(json.dumps([{"timestamp": 1, "price": 10.0, "volume": 2}, {"timestamp": 2, "price": None}]))
    r = load_price_rows(j)
    src = ReplaySpotSource("j", r)
    assert src.spot(BlockRef(0, "0x", 0)).price == 10.0
    bad = src.spot(BlockRef(1, "0x", 0))
    assert isinstance(bad, Skip) and bad.reason == "bad_price"


def test_deribit_chain_replay_real_file(shared_data):
    path = shared_data / "option_chains" / "deribit_BTC_20200514T0541Z.csv"
    src = ReplayChainSource.from_file(path)
    ch = src.chain(B, 9000.0)
    with open(path) as fh:
        first = next(csv.DictReader(fh))
    assert len(ch) == 310
    # USD price = coin price * row forward (PROVENANCE.md)
    assert ch.ask[0] == pytest.approx(float(first["ask"]) * float(first["underlying_price"]))
    checked = clean_chain(ch)
    assert checked.dropped == {}  # PROVENANCE: no row has bid > ask
    moved = ReplayChainSource.from_file(path, rescale=True).chain(B, ch.spot * 0.5)
    assert moved.strike[0] == pytest.approx(ch.strike[0] * 0.5) and moved.asof == B.timestamp


def test_crossed_and_empty_chain_are_skipped(shared_data):
    ch = ReplayChainSource.from_file(shared_data / "option_chains" / "deribit_ETH_20240108T1119Z.csv").base
    bid = np.array(ch.bid)
    ask = np.array(ch.ask)
    both = np.where(np.isfinite(bid) & np.isfinite(ask))[0][:3]
    bid[both] = ask[both] + 1.0
    import dataclasses

    crossed = dataclasses.replace(ch, bid=bid, ask=ask)
    res = clean_chain(crossed)
    assert res.dropped == {"crossed_quote": 3} and len(res.chain) == len(ch) - 3
    empty = clean_chain(ch.select(np.zeros(len(ch), dtype=bool)))
    assert isinstance(empty, Skip) and empty.reason == "empty_chain"


def test_simulated_market_is_seeded_and_priced_by_black76():
    cfg = parse_config({"market": {"simulated": {"seed": 3, "jump_intensity": 0.0}}}).market.simulated
    a, b = SimulatedMarket(cfg), SimulatedMarket(cfg)
    assert a.spot_at(5000) == b.spot_at(5000)
    b2 = SimulatedMarket(cfg)
    b2.spot_at(10)  # different access pattern, same path
    assert b2.spot_at(5000) == a.spot_at(5000)
    other = SimulatedMarket(cfg.model_copy(update={"seed": 4}))
    assert other.spot_at(100) != a.spot_at(100)
    ch = a.chain(B, 2000.0)
    assert np.all(ch.bid <= ch.ask)
    t = (ch.expiry_ts - ch.asof) / (365 * 86400)
    model = black76_price(ch.forward, ch.strike, t, ch.mark_iv, ch.is_call)
    mid = 0.5 * (ch.bid + ch.ask)
    assert np.allclose(mid, model, rtol=0.01, atol=1e-9)  # 0.2% noise around Black-76


def test_simulated_log_returns_have_configured_vol():
    cfg = parse_config({"market": {"simulated": {"seed": 1, "jump_intensity": 0.0, "vol": 0.8}}}).market.simulated
    m = SimulatedMarket(cfg)
    path = np.array([m.spot_at(i) for i in range(20001)])
    r = np.diff(np.log(path))
    est = r.std() * math.sqrt(365 * 86400 / 12.0)
    assert est == pytest.approx(0.8, rel=0.03)


def test_file_and_onchain_sources(tmp_path):
    f = tmp_path / "spot.json"
    src = FileSpotSource("f", f)
    assert isinstance(src.spot(B), Skip)
    f.write_text(json.dumps({"price": 1234.5}))
    assert src.spot(B).price == 1234.5
    f.write_text(json.dumps({"price": "NaN"}))
    assert src.spot(B).reason == "bad_price"
    oc = OnChainSpotSource("oc", lambda: (2000 * 10**18, B.timestamp - 5), max_age_s=60)
    assert oc.spot(B).price == 2000.0
    assert OnChainSpotSource("oc", lambda: (0, 0)).spot(B).reason == "missing_price"
    stale = OnChainSpotSource("oc", lambda: (10**18, B.timestamp - 600), max_age_s=60)
    assert stale.spot(B).reason == "stale_price"

    def boom():
        raise ConnectionError("down")

    assert OnChainSpotSource("oc", boom).spot(B).reason == "source_unavailable"


def test_build_market_data_combines_sources(tmp_path):
    files = []
    for i, p in enumerate([2000.0, 2000.02, 2500.0]):
        f = tmp_path / f"s{i}.json"
        f.write_text(json.dumps({"price": p, "volume": 1}))
        files.append({"name": f"s{i}", "kind": "file", "path": str(f)})
    cfg = parse_config({"market": {"spot_sources": files, "spot_decimals": 1, "chain": {"kind": "none"}}})
    md = build_market_data(cfg.market)
    agg, skips = md.spot(B)
    # two sources -> outlier rule needs >= 3: with 3, the MAD scale is 1.4826*0.02, 2500 is rejected
    assert agg.rejected == ("s2",) and agg.price == 2000.0 and skips == []
    assert md.chain(B, 2000.0) is None

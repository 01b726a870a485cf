"""The keeper's market configuration per asset (issue 16, item 1) and the ``deribit_api`` source kind (issue 15,
item 8): both config forms, their round trip, and a config naming a folder of saved Deribit answers that builds a
working source (spot, chain, surface). Pure: no chain."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import numpy as np
import pytest
from py_vollib.black import black as vollib_black

from keeper.data.deribit_api import DeribitApiSource
from keeper.data.feed import BlockRef, Skip, SpotQuote
from keeper.data.sources import build_market_data
from keeper.errors import ConfigError
from keeper.ops.config import load_config, parse_config
from keeper.quant.surface import fit_surface


def test_the_one_asset_form_is_the_one_asset_case_and_round_trips():
    cfg = parse_config({"market": {"underlying": "WETH", "chain": {"kind": "simulated"}}})
    assets = cfg.market.asset_settings()
    assert list(assets) == ["WETH"] and assets["WETH"].chain.kind == "simulated"
    assert [s.kind for s in assets["WETH"].spot_sources] == ["simulated"]
    assert assets["WETH"].min_sources == 1 and assets["WETH"].spot_decimals == 2
    assert parse_config(json.loads(cfg.model_dump_json())) == cfg  # what `keeper run` does with overrides


def test_the_per_asset_form(tmp_path):
    (tmp_path / "k.toml").write_text('''
[market]
spot_decimals = 2
fallback_blocks = 5
[market.assets.WETH]
spot_sources = [{name = "eth", kind = "file", path = "eth.json"}]
chain = {kind = "simulated"}
[market.assets.WBTC]
spot_sources = [{name = "btc", kind = "file", path = "btc.json"}, {name = "btc2", kind = "onchain"}]
min_sources = 2
spot_decimals = 0
simulated = {spot0 = 40000.0, seed = 3}
''')
    cfg = load_config(tmp_path / "k.toml")
    a = cfg.market.asset_settings()
    assert sorted(a) == ["WBTC", "WETH"]
    assert a["WETH"].spot_sources[0].path == tmp_path / "eth.json"  # relative to the config file
    assert a["WBTC"].chain.kind == "none"  # a collateral-only asset unless it names a chain source
    assert a["WBTC"].min_sources == 2 and a["WBTC"].spot_decimals == 0 and a["WETH"].spot_decimals == 2
    assert a["WBTC"].simulated.spot0 == 40000.0 and a["WETH"].simulated.spot0 == 2000.0
    assert cfg.market.fallback_blocks == 5
    assert parse_config(json.loads(cfg.model_dump_json())) == cfg


@pytest.mark.parametrize("market, words", [
    ({"underlying": "WETH", "assets": {"WETH": {"spot_sources": [{"name": "s", "kind": "simulated"}]}}},
     "drop market.underlying"),
    ({"assets": {"WETH": {"spot_sources": []}}}, "spot_sources"),
    ({"assets": {"WETH": {"spot_sources": [{"name": "s", "kind": "simulated"}], "min_sources": 2}}},
     "exceeds the 1 spot sources"),
    ({"assets": {"WETH": {"spot_sources": [{"name": "s", "kind": "deribit_api"}]}}}, "exactly one of url and path"),
    ({"chain": {"kind": "deribit_api", "url": "http://x", "path": "y"}}, "exactly one of url and path"),
])
def test_bad_market_configs_name_the_problem(market, words):
    with pytest.raises(ConfigError, match=words):
        parse_config({"market": market})


# ------------------------------------------------------------------------------------------------------------
# deribit_api from a folder of saved answers
# ------------------------------------------------------------------------------------------------------------
ASOF = datetime(2024, 1, 8, 11, 19, tzinfo=timezone.utc)
EXPIRIES = ((datetime(2024, 1, 26, 8, tzinfo=timezone.utc), "26JAN24", 2240.0),
            (datetime(2024, 3, 29, 8, tzinfo=timezone.utc), "29MAR24", 2290.0))
STRIKES = (1600, 1800, 1900, 2000, 2100, 2200, 2300, 2400, 2600, 2800)


def _smile(k):
    return 0.55 - 0.1 * k + 0.3 * k * k


def _answers(folder):
    """Deribit answers in the documented format (inverse options: prices in ETH per option on one ETH), the mids
    priced with py_vollib's Black-76 on each expiry's forward at a known smile, 2 % wide."""
    ms = int(ASOF.timestamp() * 1000)
    rows = []
    for exp, code, fwd in EXPIRIES:
        t = (exp - ASOF).total_seconds() / (365 * 86400)
        for k in STRIKES:
            for cp in ("C", "P"):
                vol = _smile(math.log(k / fwd))
                usd = vollib_black(cp.lower(), fwd, float(k), t, 0.0, vol)
                mid = usd / fwd
                rows.append({"instrument_name": f"ETH-{code}-{k}-{cp}", "bid_price": mid * 0.99,
                             "ask_price": mid * 1.01, "mid_price": mid, "mark_price": mid, "underlying_price": fwd,
                             "underlying_index": "SYN.ETH", "estimated_delivery_price": 2222.19,
                             "open_interest": 10.0, "creation_timestamp": ms, "mark_iv": vol * 100})
    folder.mkdir()
    (folder / "get_book_summary_by_currency.json").write_text(json.dumps(
        {"jsonrpc": "2.0", "id": 1, "result": rows, "usIn": ms * 1000, "usOut": ms * 1000 + 5, "usDiff": 5,
         "testnet": False}))
    (folder / "get_index_price.json").write_text(json.dumps(
        {"jsonrpc": "2.0", "id": 2, "result": {"index_price": 2222.19, "estimated_delivery_price": 2222.19},
         "usIn": ms * 1000, "usOut": ms * 1000 + 5, "usDiff": 5, "testnet": False}))
    return folder


def test_a_deribit_api_folder_source_in_the_config_builds_a_working_source(tmp_path):
    folder = _answers(tmp_path / "deribit")
    (tmp_path / "k.json").write_text(json.dumps({"market": {"assets": {"WETH": {
        "spot_sources": [{"name": "deribit-index", "kind": "deribit_api", "path": "deribit", "currency": "ETH"}],
        "chain": {"kind": "deribit_api", "path": "deribit", "currency": "ETH"}}}}}))
    cfg = load_config(tmp_path / "k.json")
    settings = cfg.market.asset_settings()["WETH"]
    assert settings.chain.path == folder
    md = build_market_data(settings)
    assert isinstance(md.chain_source, DeribitApiSource) and isinstance(md.spot_sources[0], DeribitApiSource)
    block = BlockRef(5, "0x" + "11" * 32, int(ASOF.timestamp()) + 60)
    agg, skips = md.spot(block)
    assert skips == [] and agg.price == 2222.19 and agg.used == ("deribit-index",)
    chain = md.chain(block, agg.price)
    assert not isinstance(chain, Skip) and len(chain) == 2 * len(STRIKES) * len(EXPIRIES)
    # USD prices back from coin prices x forward, as priced
    j = int(np.argmin(np.abs(chain.strike - 2000.0) + 1e9 * ~chain.is_call + 1e9 * (chain.forward != 2240.0)))
    t = (EXPIRIES[0][0] - ASOF).total_seconds() / (365 * 86400)
    fair = vollib_black("c", 2240.0, 2000.0, t, 0.0, _smile(math.log(2000 / 2240)))
    assert 0.5 * (chain.bid[j] + chain.ask[j]) == pytest.approx(fair, rel=1e-12)
    # the surface fitted on it gives back the generating smile at each expiry's forward
    surface = fit_surface(chain)
    assert len(surface.slices) == 2
    for exp, _code, fwd in EXPIRIES:
        t = (exp.timestamp() - chain.asof) / (365 * 86400)
        for k in (1900.0, 2200.0, 2400.0):
            assert float(surface.implied_vol(k, t, fwd)) == pytest.approx(_smile(math.log(k / fwd)), abs=0.005)
    # a missing answer is a Skip through the same config, never an exception
    (folder / "get_index_price.json").unlink()
    agg, skips = md.spot(block)
    assert isinstance(agg, Skip) and [s.reason for s in skips] == ["source_unavailable"]
    assert isinstance(md.spot_sources[0].spot(block), Skip) and not isinstance(md.spot_sources[0].spot(block),
                                                                              SpotQuote)

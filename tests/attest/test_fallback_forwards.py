"""An asset on fallback keeps pricing its series on their forwards (issue 16): without this block's chain, each
expiry's carry (forward / spot) comes from the last attested document, so a series' forward moves with this block's
spot but keeps the term structure the chain last showed; ``backstop verify`` re-marks it at those forwards."""
from __future__ import annotations

import dataclasses
import json
from collections import namedtuple
from types import SimpleNamespace

import numpy as np

from keeper.attest.leaves import canonical_inputs
from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs, carry_from_document
from keeper.data.feed import BlockRef
from keeper.data.sources import draw_chain
from keeper.quant.risk.engine import from_canonical
from keeper.quant.surface import fit_surface
from keeper.units import WAD
from keeper.verify.quotes import rederive

NOW = 1_800_000_000
ETH, USD = "0x" + "e" * 40, "0x" + "a" * 40
Series = namedtuple("Series", "series_id underlying strike expiry is_call")
Acct = namedtuple("Acct", "account state_nonce cash collateral positions")
RISK = {"var_confidence": 0.99, "es_confidence": 0.975, "im_multiplier": 1.5, "horizon_days": 1.0, "mc_paths": 300,
        "mc_diffusion_vol": 0.7, "grid_spot_range": 0.15, "grid_vol_range": 0.25}


def _chain(carry_per_year):
    st = SimpleNamespace(seed=5, expiries_days=[7, 30, 90], strikes_pct=[0.8, 0.9, 1.0, 1.1, 1.2],
                         spread_pct=0.04, depth_mean=20.0)
    c = draw_chain(st, BlockRef(77, "0x" + "5a" * 32, NOW), 2000.0, lambda k, t: np.full(np.shape(k), 0.6))
    t = (c.expiry_ts - c.asof) / (365 * 86400)
    return dataclasses.replace(c, forward=2000.0 * (1 + carry_per_year * t))  # a contango the venue shows


def _build(market, block):
    series = [Series(i + 1, ETH, k * WAD, NOW + d * 86400, False) for i, (k, d) in
              enumerate([(1900, 7), (2000, 30), (2100, 90)])]
    return build_portfolio_inputs(block=block, markets=[market], series=series,
                                  accounts=[Acct("0x" + "01" * 20, 1, 10**10, {}, {1: -WAD, 3: WAD})],
                                  collateral={USD: {"decimals": 6, "haircut": 0}}, quote_asset=USD, quote_decimals=6,
                                  risk=RISK)


def test_a_fallback_asset_keeps_the_last_documents_carry():
    chain = _chain(0.20)
    surface = fit_surface(chain)
    prev = _build(AssetMarket(ETH, 2000 * WAD, surface, chain), BlockRef(77, "0x" + "5a" * 32, NOW)).document
    # the next block: the chain is rejected, the asset falls back on the last surface; spot moved to 1,900
    flag = {"reason": "surface_arbitrage", "since_block": 78, "source_block": 77, "shock_widening": 0.5}
    carry = carry_from_document(prev, ETH)
    doc = _build(AssetMarket(ETH, 1900 * WAD, surface, None, flag, carry=carry),
                 BlockRef(78, "0x" + "5b" * 32, NOW + 12)).document
    for old, new in zip(prev["series"], doc["series"]):
        want = int(old["forward_wad"]) / int(prev["underlyings"][0]["spot_wad"]) * 1900  # second computation
        assert abs(int(new["forward_wad"]) / WAD - want) < 1e-6 * want
        assert int(new["forward_wad"]) > 1900 * WAD  # contango kept, not priced at spot
    at_spot = _build(AssetMarket(ETH, 1900 * WAD, surface, None, flag), BlockRef(78, "0x" + "5b" * 32, NOW + 12))
    assert all(int(s["forward_wad"]) == 1900 * WAD for s in at_spot.document["series"])  # what it was before
    assert doc["marks"] != at_spot.document["marks"]
    # verify re-marks the fallback asset at its archived forwards and finds no difference
    r = rederive(from_canonical(json.loads(canonical_inputs(doc))))
    assert not r.differences, r.differences

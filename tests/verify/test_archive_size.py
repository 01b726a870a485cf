"""The archive's size per block with the raw quotes (docs/verify.md, "Size of the archive and its retention"): the
keepers' document (``build_portfolio_inputs``) on drawn chains of two sizes, with and without the chain. Prints the
table of docs/verify.md (``-s``); asserts that the quotes cost what their canonical form says (a second
computation: the canonical JSON of the ``quotes`` and ``fit`` entries alone) and grow linearly with the quotes."""
from __future__ import annotations

import json
from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import pytest

from keeper.attest.leaves import canonical_inputs
from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
from keeper.codec.canonical import canonical_json
from keeper.data.feed import BlockRef
from keeper.data.sources import draw_chain
from keeper.quant.surface import fit_surface

WAD = 10**18
NOW = 1_800_000_000
ETH, USD = "0x" + "e" * 40, "0x" + "a" * 40
S = namedtuple("S", "series_id underlying strike expiry is_call")
A = namedtuple("A", "account state_nonce cash collateral positions")
RISK = {"var_confidence": 0.99, "es_confidence": 0.975, "im_multiplier": 1.5, "horizon_days": 1.0, "mc_paths": 400,
        "mc_diffusion_vol": 0.7, "grid_spot_range": 0.15, "grid_vol_range": 0.25}
SERIES = [S(i + 1, ETH, int(2000 * p) * WAD, NOW + 30 * 86400, i % 2 == 0)
          for i, p in enumerate(np.linspace(0.7, 1.3, 10))]
ACCOUNTS = [A("0x%040x" % (i + 1), 1, 10**9, {}, {1 + i % 10: -WAD}) for i in range(100)]


def _sizes(n_exp: int, n_k: int) -> dict:
    m = SimpleNamespace(seed=5, expiries_days=list(np.linspace(7, 180, n_exp)), spread_pct=0.04, depth_mean=20.0,
                        strikes_pct=list(np.linspace(0.6, 1.6, n_k)))
    blk = BlockRef(77, "0x" + "5a" * 32, NOW)
    chain = draw_chain(m, blk, 2000.0, lambda k, t: np.maximum(0.6 - 0.1 * k + 0.3 * k * k, 0.05))
    prior = fit_surface(draw_chain(m, BlockRef(76, "0x" + "59" * 32, NOW - 12), 2000.0,
                                   lambda k, t: np.maximum(0.55 - 0.1 * k + 0.3 * k * k, 0.05)))
    surface = fit_surface(chain, prior=prior)
    pi = build_portfolio_inputs(block=blk, markets=[AssetMarket(ETH, 2000 * WAD, surface, chain, prior=prior)],
                                series=SERIES, accounts=ACCOUNTS, collateral={USD: {"decimals": 6, "haircut": 0}},
                                quote_asset=USD, quote_decimals=6, risk=RISK)
    doc = pi.document
    whole = len(canonical_inputs(doc))
    u = doc["underlyings"][0]
    part = len(canonical_json({"quotes": u["quotes"], "fit": u["fit"]}))
    without = dict(doc, underlyings=[{k: v for k, v in u.items() if k not in ("quotes", "fit")}])
    return {"quotes": len(chain), "whole": whole, "without": len(canonical_inputs(without)), "part": part,
            "quotes_only": len(canonical_json(u["quotes"]))}


@pytest.mark.parametrize("grid", [(3, 9), (6, 20)])
def test_the_archive_grows_by_the_quotes_canonical_size(grid):
    s = _sizes(*grid)
    print(f"\n{s['quotes']} quotes ({grid[0]} expiries x {grid[1]} strikes x call/put), 10 series, 100 accounts: "
          f"{s['whole']:,} B, of which quotes and fit {s['whole'] - s['without']:,} B "
          f"({s['quotes_only'] / s['quotes']:.0f} B per quote)")
    # the document's growth is the canonical size of the two entries, give or take their keys and separators
    assert abs((s["whole"] - s["without"]) - s["part"]) <= 32
    # 15 columns per quote, each an exact-hex float (about 24 B) or a bool/null: linear in the quotes
    assert 15 * 4 <= s["quotes_only"] / s["quotes"] <= 15 * 32
    assert json.loads(json.dumps(s))  # plain numbers (printed in docs/verify.md)

"""``risk.workers`` (keeper.ops.pool.RiskPool) changes no bit of what is signed (issue 16, Speed): a two-underlying
book with WETH and WBTC collateral and the correlation stress, its leaves, tree root, every account's risk numbers
and the solvency index computed with 1, 2 and 3 workers, and with blocks as small as one chunk. The reference is
the serial run; the configuration's worker count is not in the inputs document."""
from __future__ import annotations

from collections import namedtuple
from dataclasses import replace

import numpy as np
import pytest

from keeper.attest.inputs import risk_document
from keeper.attest.leaves import canonical_inputs, risk_run, solvency_from_run
from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
from keeper.codec.merkle import MerkleTree, leaf_hashes
from keeper.data.sources import BlockRef
from keeper.ops.config import parse_config
from keeper.ops.pool import RiskPool
from keeper.quant.risk.solvency import solvency_index
from keeper.quant.surface import CANONICAL_VERSION, VolSurface
from keeper.units import SECONDS_PER_YEAR, WAD

NOW = 1_800_000_000
ETH, BTC, USD = "0x" + "e" * 40, "0x" + "b" * 40, "0x" + "a" * 40
Series = namedtuple("Series", "series_id underlying strike expiry is_call")
Acct = namedtuple("Acct", "account state_nonce cash collateral positions")


def _surface(name, vol, forward):
    slices = [{"expiry_ts": NOW + t * SECONDS_PER_YEAR, "t": t, "forward": forward, "a": vol * vol * t, "b": 0.0,
               "rho": 0.0, "m": 0.0, "sigma": 0.1} for t in (0.02, 0.5)]
    return VolSurface.from_canonical({"version": CANONICAL_VERSION, "underlying": name, "asof": NOW, "slices": slices})


def _document(n_accounts: int, workers: int):
    rng = np.random.default_rng(16)
    series, sid = [], 1
    for asset, spot in ((ETH, 2000), (BTC, 40000)):
        for days in (7, 30, 90):
            for pct in (0.8, 1.0, 1.2):
                for call in (True, False):
                    series.append(Series(sid, asset, int(spot * pct) * WAD, NOW + days * 86400, call))
                    sid += 1
    accounts = []
    for i in range(n_accounts):
        ids = rng.choice(len(series), size=int(rng.integers(1, 7)), replace=False)
        accounts.append(Acct(f"0x{i + 1:040x}", int(rng.integers(0, 9)), int(rng.integers(0, 10**11)),
                             {ETH: int(rng.integers(0, 20)) * WAD, BTC: int(rng.integers(0, 200)) * 10**6},
                             {series[j].series_id: int(rng.integers(-10, 11)) * WAD for j in ids}))
    cfg = parse_config({"risk": {"mc_paths": 500, "workers": workers}})
    markets = [AssetMarket(ETH, 2000 * WAD, _surface("ETH", 0.8, 2000.0)),
               AssetMarket(BTC, 40000 * WAD, _surface("BTC", 0.6, 40000.0))]
    return build_portfolio_inputs(
        block=BlockRef(99, "0x" + "3c" * 32, NOW), markets=markets, series=series, accounts=accounts,
        collateral={USD: {"decimals": 6, "haircut": 0}, ETH: {"decimals": 18, "haircut": 15 * 10**16},
                    BTC: {"decimals": 8, "haircut": 10**17}},
        quote_asset=USD, quote_decimals=6, risk=risk_document(cfg.risk)).document


class CountingPool(RiskPool):
    """The pool, recording how many blocks each scenario pass was split into (so the test sees the split happen)."""

    def __init__(self, workers):
        super().__init__(workers)
        self.blocks = []

    def map(self, fn, items):
        self.blocks.append(len(items))
        return super().map(fn, items)


@pytest.fixture(scope="module")
def serial():
    doc = _document(700, workers=1)
    run = risk_run(doc)
    return doc, run, MerkleTree(leaf_hashes(run.leaves)).root, solvency_from_run(run, 250_000.0)


def test_the_shortfall_summed_in_the_tail_pass_is_the_separate_pass_bit_for_bit(serial):
    doc, one, _, index = serial
    assert one.risk.tail_shortfall is not None and np.any(one.risk.tail_shortfall > 0)
    separate = solvency_index(one.inputs, one.risk, one.cash, one.tail, 250_000.0)  # its own pass over the book
    assert separate == index
    assert separate.shortfall_es975 > 0


@pytest.mark.parametrize("workers, chunk", [(2, 256), (3, 256), (2, 64), (3, 1)])
def test_leaves_root_risk_and_solvency_are_the_same_bits_for_any_worker_count(serial, workers, chunk):
    doc, one, root, index = serial
    assert len(doc["underlyings"]) == 2 and doc["risk"]["stress_correlation"] == 1.0
    assert canonical_inputs(_document(700, workers=workers)) == canonical_inputs(doc)  # not in the document
    with CountingPool(workers) as pool:
        many = risk_run(doc, chunk=chunk, mapper=pool)
        many_index = solvency_from_run(many, 250_000.0, mapper=pool)
    # tail (with the shortfall riding on it at 256-account chunks, else a pass of its own), grid and stress each
    # ran on ``workers`` blocks of whole chunks
    assert pool.blocks == [min(workers, -(-700 // chunk))] * (3 if chunk == 256 else 4)
    assert many.leaves == one.leaves
    assert MerkleTree(leaf_hashes(many.leaves)).root == root
    # every per-account array, bit for bit (the shortfall is summed in the tail pass at 256-account chunks only)
    assert replace(many.risk, tail_shortfall=None).to_bytes() == replace(one.risk, tail_shortfall=None).to_bytes()
    assert many_index == index
    # the run is not degenerate: accounts in breach and not, margins from the stress and the tail both
    mm = np.array([l.maintenance for l in one.leaves])
    eq = np.array([l.equity for l in one.leaves])
    assert 0 < int(np.sum(eq < mm)) < len(mm)
    assert np.any(one.risk.stress_es > one.risk.es) and np.any(one.risk.es > one.risk.stress_es)

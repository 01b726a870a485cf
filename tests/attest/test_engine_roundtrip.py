"""The scenario's set-up attestation: leaves recomputed from the archived inputs alone equal the attested ones,
the inputs hash is the keccak of the archived bytes, and a short-put book's margin follows the stress it carries."""
from __future__ import annotations

import numpy as np
from eth_utils import keccak

from keeper.attest.engine import (
    BookState,
    EngineSettings,
    MarketState,
    compute_attestation,
    recompute_leaves,
    smile_from,
)

WETH = "0x" + "22" * 20
WBTC = "0x" + "33" * 20
NOW = 1_800_000_000
SERIES = {1: {"strike": 1800.0, "expiry": NOW + 14 * 86400, "is_call": False},
          2: {"strike": 2200.0, "expiry": NOW + 45 * 86400, "is_call": True}}


def book():
    accts = ["0x" + f"{i:040x}" for i in range(1, 6)]
    pos = np.array([[-10, 0], [10, 0], [0, -5], [0, 0], [-20, 4]], float)
    coll = np.array([[0, 0], [0, 0], [2.0, 0], [1.0, 0.1], [0, 0]], float)
    return BookState(accts, [1, 2], pos, [WETH, WBTC], coll, [5_000_000_000, 1_000_000_000, 0, 0, 9_000_000_000],
                     [3, 4, 5, 1, 2])


def attest(spot=2000.0, vol=0.6):
    m = MarketState({WETH: spot, WBTC: 40000.0}, smile_from(vol), NOW, b"\x01" * 32)
    return compute_attestation(book(), SERIES, m, {WETH: 0.15, WBTC: 0.1}, WETH, EngineSettings(mc_paths=500), 7, NOW)


def test_recomputation_from_archive_is_exact():
    att = attest()
    assert att.inputs_hash == keccak(att.inputs_blob)
    again = recompute_leaves(att.inputs_blob)
    assert again == att.leaves
    # and every branch leads to the root
    from keeper.codec.merkle import process_proof

    for leaf in att.leaves:
        assert process_proof(leaf.hash(), att.tree.proof(leaf.hash())) == att.tree.root


def test_cash_and_collateral_enter_equity_and_crash_raises_short_put_margin():
    att = attest()
    leaves = {x.account: x for x in att.leaves}
    a4 = leaves["0x" + f"{4:040x}"]
    # no positions: equity = haircut collateral value (1 WETH at 85 %, 0.1 WBTC at 90 %), no option model value
    assert abs(a4.equity - (1 * 2000 * 0.85 + 0.1 * 40000 * 0.9) * 1e6) <= 1
    assert a4.model_value == 0
    crash = attest(spot=1400.0, vol=1.2)
    short_put = "0x" + f"{1:040x}"
    before = {x.account: x for x in att.leaves}[short_put]
    after = {x.account: x for x in crash.leaves}[short_put]
    assert after.maintenance > before.maintenance
    assert after.equity < before.equity
    assert after.initial >= after.maintenance

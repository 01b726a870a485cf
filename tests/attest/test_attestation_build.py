"""Leaves, the Merkle tree (vs OZ's processProof/processMultiProof written out independently), and determinism of
the leaves computed from an inputs document (same document -> same root; recompute from the archive)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from eth_abi import encode
from eth_utils import keccak

from keeper.data.archive import InputsArchive
from keeper.codec.canonical import canonical_json
from keeper.chain.client import AccountSnapshot, SeriesInfo
from keeper.ops.config import parse_config
from keeper.codec.merkle import MarginLeaf, MerkleTree
from keeper.attest.leaves import leaves_from_inputs, recompute_from_archive
from keeper.attest.inputs import mark_series, risk_document
from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
from keeper.data.sources import BlockRef, SimulatedMarket
from keeper.quant.risk.engine import to_quote_units

WAD = 10**18


def oz_process_proof(leaf, proof):
    h = leaf
    for p in proof:
        h = keccak(h + p) if h < p else keccak(p + h)
    return h


def oz_process_multiproof(leaves, proof, flags):
    """MerkleProof.processMultiProof transcribed from OpenZeppelin 5."""
    n_leaves, n_proof, total = len(leaves), len(proof), len(flags)
    assert n_leaves + n_proof == total + 1
    hashes = [b""] * total
    li = hi = pi = 0
    for i in range(total):
        if li < n_leaves:
            a = leaves[li]; li += 1
        else:
            a = hashes[hi]; hi += 1
        if flags[i]:
            if li < n_leaves:
                b = leaves[li]; li += 1
            else:
                b = hashes[hi]; hi += 1
        else:
            b = proof[pi]; pi += 1
        hashes[i] = keccak(a + b) if a < b else keccak(b + a)
    if total > 0:
        return hashes[total - 1]
    return leaves[0] if n_leaves > 0 else proof[0]


def test_leaf_hash_is_double_keccak_of_abi_encoding():
    l = MarginLeaf("0x" + "12" * 20, 3, -5, 7, 11, -13)
    inner = keccak(encode(["address", "uint32", "int256", "uint256", "uint256", "int256"],
                          ["0x" + "12" * 20, 3, -5, 7, 11, -13]))
    assert l.hash() == keccak(inner)
    assert l.breached and not MarginLeaf(l.account, 3, 7, 7, 11, 0).breached


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_tree_proofs_and_multiproofs_verify(n):
    leaves = [MarginLeaf("0x" + f"{i + 1:040x}", i, i * 10 - 20, 5, 8, 0).hash() for i in range(n)]
    t = MerkleTree(leaves)
    for h in leaves:
        assert oz_process_proof(h, t.proof(h)) == t.root
    rng = np.random.default_rng(n)
    for k in range(1, n + 1):
        subset = list(rng.choice(n, size=k, replace=False))
        ordered, proof, flags = t.multiproof([leaves[i] for i in subset])
        assert sorted(ordered) == list(ordered)  # ascending hash order, as the contract expects
        assert oz_process_multiproof(ordered, proof, flags) == t.root
    # full batch: empty proof, n-1 true flags (docs/contracts.md)
    ordered, proof, flags = t.multiproof(leaves)
    assert list(proof) == [] and list(flags) == [True] * (n - 1)
    with pytest.raises(ValueError):
        MerkleTree([])


WETH = "0x" + "ee" * 20
QUOTE = "0x" + "0c" * 20


class Flat:  # a flat 60 % surface: the leaves' test does not depend on the fit
    def implied_vol(self, k, t, f):
        return np.full(np.broadcast(np.asarray(k), np.asarray(t)).shape, 0.6)

    def to_canonical(self):
        return {"flat": 0.6}


def _inputs(block, spot, surface, chain, series, accounts):
    """The keeper's document builder (keeper.attest.portfolio) over the one underlying WETH, also WETH collateral at
    a 20 % haircut."""
    cfg = parse_config({"market": {"simulated": {"seed": 5, "jump_intensity": 0.0}}})
    return build_portfolio_inputs(block=block, markets=[AssetMarket(WETH, int(spot * WAD), surface, chain)],
                                  series=series, accounts=accounts, collateral={WETH: {"decimals": 18,
                                                                                       "haircut": WAD // 5}},
                                  quote_asset=QUOTE, quote_decimals=6, risk=risk_document(cfg.risk))


def _series(now):
    return [SeriesInfo(1, WETH, 2000 * WAD, now + 30 * 86400, True),
            SeriesInfo(2, WETH, 1800 * WAD, now + 30 * 86400, False)]


def _accounts(cash=(5_000_000_000, 10**9, 50_000_000)):
    return [AccountSnapshot("0x" + "01" * 20, 1, cash[0], {WETH: 2 * WAD}, {1: -10 * WAD}),
            AccountSnapshot("0x" + "02" * 20, 4, cash[1], {}, {1: 3 * WAD, 2: -1 * WAD}),
            AccountSnapshot("0x" + "03" * 20, 2, cash[2], {}, {2: -40 * WAD})]


def _doc(block_hash="0x" + "ab" * 32, spot=2000.0, cash=(5_000_000_000, 10**9, 50_000_000)):
    cfg = parse_config({"market": {"simulated": {"seed": 5, "jump_intensity": 0.0}}})
    now = 1_700_000_000
    series = _series(now)
    sim = SimulatedMarket(cfg.market.simulated)
    block = BlockRef(100, block_hash, now)
    chain = sim.chain(block, spot)
    pi = _inputs(block, spot, Flat(), chain, series, _accounts(cash))
    assert pi.excluded == {} and pi.marks == mark_series(series, Flat(), chain, spot, now)
    return pi.document, pi.marks


def test_leaves_follow_the_risk_engine_units():
    doc, marks = _doc()
    leaves, details = leaves_from_inputs(doc)
    assert [l.account for l in leaves] == sorted(l.account for l in leaves)
    # equity of account 1 by hand: cash + collateral at (1 - haircut) * spot + position at mark
    eq1 = 5_000.0 + 2 * 2000.0 * 0.8 + (-10) * marks.marks[0]
    assert leaves[0].equity == to_quote_units([eq1], 6, "floor")[0]
    assert abs(details["equity"][0] - eq1) < 1e-9
    for l in leaves:
        assert l.initial >= l.maintenance > 0
    # the short-put account with 50 quote units is under water, the others are not
    assert [l.breached for l in leaves] == [False, False, True]


def test_same_inputs_same_root_and_seed_matters():
    doc, _ = _doc()
    r1 = MerkleTree([l.hash() for l in leaves_from_inputs(doc)[0]]).root
    r2 = MerkleTree([l.hash() for l in leaves_from_inputs(json.loads(json.dumps(doc)))[0]]).root
    assert r1 == r2
    other, _ = _doc(block_hash="0x" + "cd" * 32)  # another block hash: other Monte Carlo draws
    l1, d1 = leaves_from_inputs(doc)
    l2, d2 = leaves_from_inputs(other)
    assert [l.equity for l in l1] == [l.equity for l in l2]
    assert not np.array_equal(d1["es"], d2["es"])  # the Monte Carlo set is seeded from the block hash


def test_recompute_from_archive_in_another_process(tmp_path):
    doc, _ = _doc()
    arch = InputsArchive(tmp_path)
    h = arch.put(doc)
    leaves, _ = leaves_from_inputs(doc)
    root = MerkleTree([l.hash() for l in leaves]).root
    blob = arch.get(h)
    assert recompute_from_archive(blob)[0] == root
    code = ("import sys; from pathlib import Path; from keeper.attest.leaves import recompute_from_archive;"
            f"print(recompute_from_archive(Path(sys.argv[1]).read_bytes())[0].hex())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{h}.json")], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin"},
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert out.stdout.strip() == root.hex()


def test_fast_canonical_inputs_is_byte_identical():
    from keeper.attest.leaves import canonical_inputs

    doc, _ = _doc()
    assert canonical_inputs(doc) == canonical_json(doc)


def test_leaf_outside_its_abi_types_raises():
    with pytest.raises(ValueError):
        MarginLeaf("0x" + "ff" * 20, 2**32, 0, 0, 0, 0).hash()
    with pytest.raises(ValueError):
        MarginLeaf("0x" + "ff" * 20, 0, 0, -1, 0, 0).hash()


def _flat_except(bad_strike: float):
    class Surface(Flat):  # flat 60 %, but no vol (NaN) at one strike: a failed slice for one series
        def implied_vol(self, k, t, f):
            k = np.asarray(k, dtype=float)
            return np.where(np.isclose(k, bad_strike), np.nan, np.full(np.broadcast(k, np.asarray(t)).shape, 0.6))

    return Surface()


def test_nan_vol_for_one_series_leaves_only_its_holders_out_of_the_signed_root():
    from keeper.attest.inputs import screen_series

    doc, marks = _doc()  # account 1 holds series 1 only, account 2 both, account 3 series 2 only
    now, spot = doc["block"]["timestamp"], 2000.0
    series = _series(now)
    bad = mark_series(series, _flat_except(1800.0), None, spot, now)
    assert np.isnan(bad.vols[1]) and np.isnan(bad.marks[1]) and not np.isnan(bad.marks[0])
    accounts = _accounts()
    scr = screen_series(series, bad, accounts)
    assert scr.bad_series == [2]
    assert [a.account for a in scr.accounts] == ["0x" + "01" * 20]
    assert sorted(a.account for a in scr.unattestable) == ["0x" + "02" * 20, "0x" + "03" * 20]
    assert all(np.isfinite(scr.marks.vols)) and all(np.isfinite(scr.marks.marks))
    # the keeper's builder screens the same way: series 2 and its holders are out of the document
    pi = _inputs(BlockRef(100, doc["block"]["hash"], now), spot, _flat_except(1800.0), None, series, accounts)
    assert pi.bad_series == [2] and pi.marks == scr.marks
    assert sorted(pi.excluded["bad_market_data"]) == ["0x" + "02" * 20, "0x" + "03" * 20]
    screened_doc = pi.document
    leaves, _ = leaves_from_inputs(screened_doc)
    tree = MerkleTree([l.hash() for l in leaves])
    assert [l.account for l in leaves] == ["0x" + "01" * 20]
    # account 1's leaf is the one a clean block computes for it (its numbers do not depend on series 2) ...
    clean_doc = json.loads(json.dumps(doc))
    clean_doc["marks"][0] = scr.marks.marks[0]  # the clean block marked series 1 from the chain's quotes too
    clean_leaves, _ = leaves_from_inputs(clean_doc)
    assert leaves[0].equity == to_quote_units([5_000.0 + 2 * 2000.0 * 0.8 - 10 * scr.marks.marks[0]], 6, "floor")[0]
    assert leaves[0].maintenance == clean_leaves[0].maintenance
    assert oz_process_proof(leaves[0].hash(), tree.proof(leaves[0].hash())) == tree.root
    # ... and the holders of series 2 are not provable against the signed root
    for l in clean_leaves[1:]:
        with pytest.raises(KeyError):
            tree.proof(l.hash())


def test_out_of_range_account_is_left_out_and_the_archive_agrees(tmp_path):
    from keeper.attest.leaves import storable_leaves

    doc, _ = _doc(cash=(5_000_000_000, 2**96, 50_000_000))  # account 2's equity cannot be stored as int96
    all_leaves, details = leaves_from_inputs(doc)
    assert all_leaves[1].equity > 2**95 - 1 and all_leaves[0].violation() is None
    assert "int96" in all_leaves[1].violation()
    kept, kept_details, skipped = storable_leaves(all_leaves, details)
    assert [l.account for l in kept] == [all_leaves[0].account, all_leaves[2].account]
    assert [(l.account, "equity" in why) for l, why in skipped] == [(all_leaves[1].account, True)]
    assert list(kept_details["equity"]) == [details["equity"][0], details["equity"][2]]
    arch = InputsArchive(tmp_path)
    root, leaves = recompute_from_archive(arch.get(arch.put(doc)))
    assert leaves == kept and root == MerkleTree([l.hash() for l in kept]).root
    # a maintenance margin above uint96 is caught the same way
    huge = MarginLeaf(all_leaves[0].account, 1, 0, 2**96, 2**96, 0)
    assert "maintenance" in huge.violation()
    assert storable_leaves([huge], {})[0] == []

"""The protocol solvency index on chain (issue 16, item 5): signed with every margin root (``MarginRoot.solvencyHash``
is the EIP-712 struct hash of the ``SolvencyIndex`` posted with it), stored as the latest, readable by any contract
through ``solvencyIndex()``, emitted as ``SolvencyIndexPosted``. Real chain, real keeper signatures
(keeper/codec/eip712.py), the index built by ``keeper.codec.eip712.solvency_index_tuple`` from the keeper's
``keeper.quant.risk.solvency.SolvencyIndex``."""
import brownie
import pytest
from brownie import SolvencyReader, accounts, chain

from core_helpers import SOLVENCY, USDC, WAD, err
from keeper.codec import eip712
from keeper.codec.merkle import MarginLeaf, MerkleTree
from keeper.ops import signing
from keeper.quant.risk.solvency import SolvencyIndex

UINT256_MAX = 2**256 - 1
FIELDS = [f["name"] for f in eip712.SOLVENCY_INDEX_TYPE]


def _index(**kw) -> SolvencyIndex:
    """A keeper-side index (floats, whole quote units): an insolvent tail, some accounts left out."""
    d = dict(total_equity=-1_234.5678915, total_maintenance=98_765.4321001, total_initial=148_148.1481501,
             shortfall_now=2_000.0000004, shortfall_var99=41_000.25, shortfall_es975=52_345.6789012,
             fund=75_000.9999999, coverage=75_000.9999999 / 52_345.6789012, accounts=2, excluded_accounts=3,
             excluded_equity=-17.0000001, excluded_reasons={"unpriced_series": 2, "leaf_out_of_range": 1})
    d.update(kw)
    return SolvencyIndex(**d)


def _view(ch) -> tuple[tuple, int, int, int]:
    index, seq, ts, cov = ch.solvencyIndex()
    return tuple(int(x) for x in index), int(seq), int(ts), int(cov)


@pytest.mark.ganache
def test_index_posted_with_a_batch_is_readable_with_the_exact_values_signed(protocol):
    p = protocol
    assert _view(p.ch)[1:3] == (0, 0)  # nothing posted yet
    s = eip712.solvency_index_tuple(_index(), 6)
    # rounded once against the protocol: equity and fund down, margins and shortfalls up
    assert s == (-1_234_567_892, 98_765_432_101, 148_148_148_151, 2_000_000_001, 41_000_250_000, 52_345_678_902,
                 75_000_999_999, -17_000_001, 2, 3)
    leaves = [MarginLeaf(str(accounts[i]), 0, (i - 1) * 700 * USDC, 100 * USDC, 150 * USDC, 0) for i in range(2)]
    tree, header, tx = p.post_margin(leaves, solvency=s)
    assert header.solvency_hash == eip712.solvency_struct_hash(s)
    index, seq, ts, cov = _view(p.ch)
    assert index == s and (seq, ts) == (header.sequence, header.timestamp)
    assert cov == 75_000_999_999 * WAD // 52_345_678_902
    ev = tx.events["SolvencyIndexPosted"]
    assert (int(ev["sequence"]), int(ev["timestamp"])) == (header.sequence, header.timestamp)
    assert tuple(int(x) for x in ev["index"]) == s
    # the next root replaces it
    chain.sleep(1)
    s2 = SOLVENCY
    _, h2, _ = p.post_margin(leaves[:1], solvency=s2)
    index, seq, _, cov = _view(p.ch)
    assert index == s2 and seq == h2.sequence == header.sequence + 1
    assert cov == s2[FIELDS.index("fund")] * WAD // s2[FIELDS.index("shortfallEs975")]


def test_root_only_post_carries_the_index_and_a_second_contract_reads_it(protocol, owner):
    p = protocol
    reader = SolvencyReader.deploy(p.ch, {"from": owner})
    assert reader.healthy(3600, 0) is False  # no index yet
    s = eip712.solvency_index_tuple(_index(shortfall_es975=0.0, shortfall_var99=0.0, coverage=float("inf")), 6)
    tree = MerkleTree.of_leaves([MarginLeaf(str(accounts[3]), 0, 5 * USDC, 0, 0, 0)])
    header = p.margin_header(tree, solvency=s)
    tx = p.ch.postMarginRoot(tree.root, *p.posting(header, s), p.sign_root(tree, header), {"from": owner})
    assert tuple(int(x) for x in tx.events["SolvencyIndexPosted"]["index"]) == s
    assert _view(p.ch)[3] == UINT256_MAX  # no shortfall at risk: coverage unbounded
    reader.snapshot({"from": accounts[1]})
    assert tuple(int(x) for x in reader.last()) == s
    assert int(reader.lastSequence()) == header.sequence and int(reader.lastCoverageWad()) == UINT256_MAX
    eq, es = reader.equityAndShortfall()
    assert (int(eq), int(es)) == (s[0], 0)
    assert reader.healthy(3600, 10 * WAD) is True
    chain.sleep(4000)
    chain.mine()
    assert reader.healthy(3600, 0) is False  # too old for this reader


def test_index_other_than_the_signed_one_reverts(protocol, owner):
    p = protocol
    signed = SOLVENCY
    tree = MerkleTree.of_leaves([MarginLeaf(str(accounts[2]), 0, 9 * USDC, 0, 0, 0)])
    header = p.margin_header(tree, solvency=signed)
    sigs = p.sign_root(tree, header)
    # one unit more of ES 97.5 than the keepers signed
    forged = list(signed)
    forged[FIELDS.index("shortfallEs975")] += 1
    forged = tuple(forged)
    posted = eip712.solvency_struct_hash(forged)
    with brownie.reverts(err("AO_SolvencyIndexMismatch(bytes32,bytes32)", header.solvency_hash, posted)):
        p.ch.postMarginRoot(tree.root, header.as_tuple(), header.solvency_hash, forged, sigs, {"from": owner})
    # the same with a batch
    mp = tree.multiproof()
    with brownie.reverts(err("AO_SolvencyIndexMismatch(bytes32,bytes32)", header.solvency_hash, posted)):
        p.ch.postMarginBatch(header.as_tuple(), header.solvency_hash, forged, [l.as_tuple() for l in mp.leaves],
                             list(mp.proof), list(mp.flags), sigs, {"from": owner})
    # claiming the forged index's hash as the signed one: the keepers' signatures do not cover it
    fake = eip712.MarginRootHeader(header.inputs_hash, header.sequence, header.timestamp, header.leaf_count, posted)
    typed = eip712.margin_root_typed_data(p.domain, tree.root, fake)
    with brownie.reverts(err("KS_NotAKeeper(address)", signing.recover(typed, sigs[:65]))):
        p.ch.postMarginRoot(tree.root, header.as_tuple(), posted, forged, sigs, {"from": owner})
    # an all-zero index is an index like any other: accepted only if signed (never in place of a missing one)
    zero = (0,) * len(FIELDS)
    with brownie.reverts(err("AO_SolvencyIndexMismatch(bytes32,bytes32)", header.solvency_hash,
                             eip712.solvency_struct_hash(zero))):
        p.ch.postMarginRoot(tree.root, header.as_tuple(), header.solvency_hash, zero, sigs, {"from": owner})
    assert _view(p.ch)[1] == 0  # nothing stored by any of these
    # the signed one goes through; posting the same root again stores nothing new
    p.ch.postMarginRoot(tree.root, *p.posting(header, signed), sigs, {"from": owner})
    tx = p.ch.postMarginRoot(tree.root, *p.posting(header, signed), sigs, {"from": owner})
    assert "SolvencyIndexPosted" not in tx.events and "MarginRootPosted" not in tx.events
    assert _view(p.ch)[:2] == (signed, header.sequence)


def test_python_side_refuses_a_root_without_its_index():
    with pytest.raises(ValueError, match="solvency"):
        eip712.MarginRootHeader(b"\x01" * 32, 1, 1, 1, b"\x00" * 32)
    with pytest.raises(ValueError, match="outside uint128"):
        eip712.solvency_index_tuple(_index(total_maintenance=-1.0), 6)
    with pytest.raises(ValueError, match="non-finite"):
        eip712.solvency_index_tuple(_index(shortfall_es975=float("nan")), 6)

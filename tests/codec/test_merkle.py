"""The one Merkle tree (keeper.codec.merkle) against second computations: a recursive OZ StandardMerkleTree built
here from the convention in docs/contracts.md, and OZ's processMultiProof algorithm (a different traversal). The
real-chain check (the contracts' own MerkleProof accepting these proofs) is in tests/contracts/test_margin.py."""
from __future__ import annotations

import random

import pytest
from eth_utils import keccak, to_checksum_address

from keeper.codec.merkle import MarginLeaf, MerkleTree, leaf_hashes, process_multiproof, process_proof
from keeper.units import UINT32_MAX


def leaves(n, seed=1):
    rng = random.Random(seed)
    return [MarginLeaf("0x" + rng.randbytes(20).hex(), rng.randrange(1, 50), rng.randrange(-10**9, 10**12),
                       rng.randrange(0, 10**12), rng.randrange(0, 10**12), rng.randrange(-10**12, 10**12))
            for _ in range(n)]


def reference_root(hashes):
    """OZ StandardMerkleTree root, written independently: complete binary tree in array layout, sorted leaves
    stored from the end, each node the keccak of its two children in ascending order."""
    leaves_ = sorted(hashes)
    n = len(leaves_)
    nodes = {2 * n - 2 - i: h for i, h in enumerate(leaves_)}

    def node(i):
        if i in nodes:
            return nodes[i]
        a, b = node(2 * i + 1), node(2 * i + 2)
        return keccak(min(a, b) + max(a, b))

    return node(0)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 40])
def test_root_equals_an_independent_tree_and_the_all_leaves_multiproof(n):
    hashes = [leaf.hash() for leaf in leaves(n, seed=n)]
    tree = MerkleTree(hashes)
    assert tree.root == reference_root(hashes)
    assert tree.root == process_multiproof(sorted(hashes), [], [True] * (n - 1))
    for h in hashes:
        assert process_proof(h, tree.proof(h)) == tree.root


def test_changed_number_breaks_the_proof():
    ls = leaves(6)
    tree = MerkleTree([x.hash() for x in ls])
    x = ls[2]
    forged = MarginLeaf(x.account, x.state_nonce, x.equity + 1, x.maintenance, x.initial, x.model_value)
    assert process_proof(forged.hash(), tree.proof(x.hash())) != tree.root
    with pytest.raises(KeyError):
        tree.proof(forged.hash())


def test_leaf_hash_matches_hand_encoding():
    leaf = MarginLeaf("0x" + "11" * 20, 7, -5, 10, 15, -3)
    word = lambda v: (v % 2**256).to_bytes(32, "big")  # noqa: E731 - two's complement ABI words
    enc = bytes(12) + bytes.fromhex("11" * 20) + word(7) + word(-5) + word(10) + word(15) + word(-3)
    assert leaf.hash() == keccak(keccak(enc))


def test_partial_multiproof_reaches_the_root_and_rejects_a_slipped_in_leaf():
    ls = leaves(11, seed=3)
    hashes = [x.hash() for x in ls]
    tree = MerkleTree(hashes)
    ordered, proof, flags = tree.multiproof([hashes[1], hashes[4], hashes[9]])
    assert sorted(ordered) == sorted([hashes[1], hashes[4], hashes[9]])
    assert process_multiproof(ordered, proof, flags) == reference_root(hashes)
    forged = leaves(1, seed=99)[0].hash()
    with pytest.raises((ValueError, IndexError)):
        assert process_multiproof([forged] + list(ordered), proof, flags) != tree.root


def test_tree_of_leaves_answers_by_account_and_checks_what_the_contract_can_store():
    ls = leaves(5, seed=7)
    tree = MerkleTree.of_leaves(ls)
    assert tree.root == reference_root([x.hash() for x in ls])
    acct = ls[3].account.lower()  # lookups ignore case
    assert tree.leaf_of(acct).hash() == ls[3].hash()
    assert tree.proof(acct) == tree.proof(ls[3].hash())
    mp = tree.multiproof([ls[0].account, ls[2].account])
    assert all(isinstance(l, MarginLeaf) for l in mp.leaves)
    assert process_multiproof(*mp) == tree.root
    with pytest.raises(ValueError, match="outside int96"):
        MerkleTree.of_leaves([MarginLeaf(ls[0].account, 1, 2**95, 0, 0, 0)])
    with pytest.raises(ValueError, match="outside uint32"):
        MerkleTree.of_leaves([MarginLeaf(ls[0].account, 2**32, 0, 0, 0, 0)])
    with pytest.raises(ValueError, match="duplicate account"):
        MerkleTree.of_leaves([ls[0], MarginLeaf(ls[0].account, 9, 1, 0, 0, 0)])
    with pytest.raises(ValueError, match="duplicate leaves"):
        MerkleTree([ls[0].hash(), ls[0].hash()])


# ---------------------------------------------------------------------------------------------------------------
# The keeper's fast path (leaf_hashes, the tree on the C keccak) against the eth_abi reference
# ---------------------------------------------------------------------------------------------------------------
def _random_book(rng, n):
    """Leaves the keeper signs: checksummed, lower- or upper-case accounts, values across int64, a few repeats of
    an earlier leaf (duplicates) when ``n`` > 2."""
    out = []
    for _ in range(n):
        body = rng.randbytes(20).hex()
        account = rng.choice([to_checksum_address("0x" + body), "0x" + body, "0x" + body.upper()])
        out.append(MarginLeaf(account, rng.randrange(0, 2**32), rng.randrange(-2**63, 2**63),
                              rng.randrange(0, 2**63), rng.randrange(0, 2**63), rng.randrange(-2**63, 2**63)))
    if n > 2:
        out[rng.randrange(n)] = out[rng.randrange(n)]
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 255, 1000])
def test_bulk_leaf_hashes_and_the_tree_equal_the_eth_abi_reference(n):
    rng = random.Random(1000 + n)
    book = _random_book(rng, n)
    reference = [x.hash() for x in book]  # eth_abi encoding, eth_utils keccak
    assert leaf_hashes(book) == reference
    distinct = list(dict.fromkeys(reference))
    if len(distinct) < len(reference):  # a repeated leaf: both paths refuse the tree
        with pytest.raises(ValueError, match="duplicate"):
            MerkleTree(leaf_hashes(book))
    tree = MerkleTree(leaf_hashes([x for x in dict.fromkeys(book)]))
    assert tree.root == reference_root(distinct)
    assert tree.root == process_multiproof(sorted(distinct), [], [True] * (len(distinct) - 1))


def test_bulk_leaf_hashes_at_every_type_bound_and_beyond_int64():
    acc = "0x" + "ab" * 20
    bounds = [MarginLeaf(acc, 0, 0, 0, 0, 0), MarginLeaf(acc, UINT32_MAX, 2**255 - 1, 2**256 - 1, 2**256 - 1, -2**255),
              MarginLeaf(acc, 1, -2**63, 2**63 - 1, 2**63, -2**63 - 1), MarginLeaf(acc, 2, -1, 1, 2**64, 2**63)]
    for batch in ([bounds[0]], bounds, bounds[::-1]):
        assert leaf_hashes(batch) == [x.hash() for x in batch]


@pytest.mark.parametrize("bad", [
    MarginLeaf("0x" + "ab" * 20, UINT32_MAX + 1, 0, 0, 0, 0),   # uint32 overflow
    MarginLeaf("0x" + "ab" * 20, 0, 2**255, 0, 0, 0),           # int256 overflow
    MarginLeaf("0x" + "ab" * 20, 0, 0, -1, 0, 0),               # negative uint256
    MarginLeaf("0x" + "ab" * 20, 0, 0, 0, 0, 1.5),              # not an int
    MarginLeaf("0x" + "ab" * 19, 0, 0, 0, 0, 0),                # 19-byte address
    MarginLeaf("0x" + "ab" * 19 + "zz", 0, 0, 0, 0, 0),         # not hex
])
def test_bulk_leaf_hashes_refuse_what_eth_abi_refuses(bad):
    good = leaves(3, seed=5)
    with pytest.raises(ValueError):
        bad.hash()
    with pytest.raises(ValueError):
        leaf_hashes(good + [bad])


def test_an_account_in_any_letter_case_hashes_as_its_20_bytes_in_both_paths():
    """eth_abi checks no EIP-55 checksum (a mixed-case address with wrong letters is its 20 bytes); the bulk path
    neither: the same hash for every spelling, both ways."""
    rng = random.Random(8)
    for _ in range(50):
        good = to_checksum_address("0x" + rng.randbytes(20).hex())
        flipped = "0x" + "".join(c.swapcase() if c.isalpha() and rng.random() < 0.3 else c for c in good[2:])
        batch = [MarginLeaf(a, 1, 2, 3, 4, 5) for a in (good, flipped, good.lower(), "0x" + good[2:].upper())]
        hashes = leaf_hashes(batch)
        assert hashes == [x.hash() for x in batch]
        assert len(set(hashes)) == 1

"""The verifier's Merkle tree: root via the array tree equals the all-leaves multiproof (a second algorithm),
every branch leads to the root, and a changed number breaks the proof."""
from __future__ import annotations

import random

import pytest

from keeper.codec.merkle import MarginLeaf, build_tree, process_full_multiproof, process_proof


def leaves(n, seed=1):
    rng = random.Random(seed)
    return [MarginLeaf("0x" + rng.randbytes(20).hex(), rng.randrange(1, 50), rng.randrange(-10**9, 10**12),
                       rng.randrange(0, 10**12), rng.randrange(0, 10**12), rng.randrange(-10**12, 10**12))
            for _ in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 40])
def test_tree_root_equals_multiproof_and_branches_verify(n):
    ls = leaves(n, seed=n)
    hashes = [leaf.hash() for leaf in ls]
    tree = build_tree(hashes)
    assert tree.root == process_full_multiproof(sorted(hashes))
    for h in hashes:
        assert process_proof(h, tree.proof(h)) == tree.root


def test_changed_number_breaks_the_proof():
    ls = leaves(6)
    tree = build_tree([x.hash() for x in ls])
    x = ls[2]
    forged = MarginLeaf(x.account, x.state_nonce, x.equity + 1, x.maintenance, x.initial, x.model_value)
    assert process_proof(forged.hash(), tree.proof(x.hash())) != tree.root
    with pytest.raises(KeyError):
        tree.proof(forged.hash())


def test_leaf_hash_matches_hand_encoding():
    from eth_utils import keccak

    leaf = MarginLeaf("0x" + "11" * 20, 7, -5, 10, 15, -3)
    word = lambda v: (v % 2**256).to_bytes(32, "big")  # noqa: E731 - two's complement ABI words
    enc = bytes(12) + bytes.fromhex("11" * 20) + word(7) + word(-5) + word(10) + word(15) + word(-3)
    assert leaf.hash() == keccak(keccak(enc))


def test_partial_multiproof_from_the_keepers_tree_matches_the_root():
    # the keepers post only breached leaves with a multiproof built by their own tree code (keeper_bot); the
    # verifier's processMultiProof must reach the same root as the verifier's own full tree
    from keeper.attest.leaves import MerkleTree
    from keeper.codec.merkle import process_multiproof

    ls = leaves(11, seed=3)
    hashes = [x.hash() for x in ls]
    mine = build_tree(hashes)
    theirs = MerkleTree(hashes)
    assert theirs.root == mine.root
    subset = [hashes[1], hashes[4], hashes[9]]
    ordered, proof, flags = theirs.multiproof(subset)
    assert process_multiproof(ordered, proof, flags) == mine.root
    # a leaf that was not attested cannot be slipped in
    forged = leaves(1, seed=99)[0].hash()
    with pytest.raises((ValueError, IndexError)):
        assert process_multiproof([forged] + list(ordered), proof, flags) != mine.root

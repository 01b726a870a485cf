"""Margin leaves and OpenZeppelin ``StandardMerkleTree`` trees, written from the convention in docs/contracts.md.

This is the verifier's own implementation (``backstop verify`` and the scenario's checks use it), kept
independent of the keepers' signing code so that a liquidation can be checked by a second computation:

* leaf hash: ``keccak256(bytes.concat(keccak256(abi.encode(account, stateNonce, equity, maintenance, initial,
  modelValue))))``;
* tree: leaves sorted by hash, sorted-pair ``keccak256`` nodes, array layout ``tree[len-1-i] = leaf i``;
* proofs: the sibling path of one leaf (``MerkleProof.processProof``), and the all-leaves multiproof the
  batch posting uses (``processMultiProof`` with an empty proof and every flag true).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

LEAF_TYPES = ["address", "uint32", "int256", "uint256", "uint256", "int256"]


@dataclass(frozen=True)
class MarginLeaf:
    """One account's attested margin numbers (quote base units), bound to its state nonce."""

    account: str
    state_nonce: int
    equity: int
    maintenance: int
    initial: int
    model_value: int

    def as_tuple(self) -> tuple:
        """The Solidity ``MarginLeaf`` struct as a tuple (ABI order)."""
        return (to_checksum_address(self.account), int(self.state_nonce), int(self.equity), int(self.maintenance),
                int(self.initial), int(self.model_value))

    @staticmethod
    def from_tuple(t) -> "MarginLeaf":
        """From the struct as a tuple or as web3's decoded dict."""
        if isinstance(t, dict):
            t = (t["account"], t["stateNonce"], t["equity"], t["maintenance"], t["initial"], t["modelValue"])
        return MarginLeaf(to_checksum_address(t[0]), int(t[1]), int(t[2]), int(t[3]), int(t[4]), int(t[5]))

    def hash(self) -> bytes:
        """The leaf hash (double keccak of the ABI encoding)."""
        return keccak(keccak(encode(LEAF_TYPES, list(self.as_tuple()))))


def hash_pair(a: bytes, b: bytes) -> bytes:
    """OZ commutative keccak: hash of the two nodes in ascending order."""
    return keccak(a + b) if a < b else keccak(b + a)


@dataclass(frozen=True)
class StandardTree:
    """An OZ StandardMerkleTree over leaf hashes: ``tree`` in array layout, ``leaves`` sorted ascending."""

    tree: tuple[bytes, ...]
    leaves: tuple[bytes, ...]

    @property
    def root(self) -> bytes:
        return self.tree[0]

    def index_of(self, leaf_hash: bytes) -> int:
        """Tree index of a leaf; raises ``KeyError`` when the leaf is not in the tree."""
        try:
            i = self.leaves.index(leaf_hash)
        except ValueError:
            raise KeyError("leaf not in tree") from None
        return len(self.tree) - 1 - i

    def proof(self, leaf_hash: bytes) -> list[bytes]:
        """Sibling path from the leaf to the root."""
        i = self.index_of(leaf_hash)
        out = []
        while i > 0:
            sib = i + 1 if i % 2 == 1 else i - 1
            out.append(self.tree[sib])
            i = (i - 1) // 2
        return out


def build_tree(leaf_hashes: Sequence[bytes]) -> StandardTree:
    """Build the tree of ``leaf_hashes`` (any order; duplicates are rejected)."""
    if not leaf_hashes:
        raise ValueError("cannot build a Merkle tree of no leaves")
    leaves = tuple(sorted(leaf_hashes))
    if len(set(leaves)) != len(leaves):
        raise ValueError("duplicate leaves")
    n = len(leaves)
    tree: list[bytes] = [b""] * (2 * n - 1)
    for i, h in enumerate(leaves):
        tree[len(tree) - 1 - i] = h
    for i in range(len(tree) - 1 - n, -1, -1):
        tree[i] = hash_pair(tree[2 * i + 1], tree[2 * i + 2])
    return StandardTree(tuple(tree), leaves)


def process_proof(leaf_hash: bytes, proof: Sequence[bytes]) -> bytes:
    """``MerkleProof.processProof``: the root a branch leads to."""
    h = leaf_hash
    for p in proof:
        h = hash_pair(h, p)
    return h


def process_full_multiproof(leaf_hashes_ascending: Sequence[bytes]) -> bytes:
    """``MerkleProof.processMultiProof`` with every leaf, an empty proof and every flag true (the batch posting)."""
    queue = list(leaf_hashes_ascending)
    if not queue:
        raise ValueError("no leaves")
    if len(queue) == 1:
        return queue[0]
    hashes: list[bytes] = []
    li = hi = 0
    total = len(queue) - 1
    for _ in range(total):
        def take() -> bytes:
            nonlocal li, hi
            if li < len(queue):
                li += 1
                return queue[li - 1]
            hi += 1
            return hashes[hi - 1]

        a = take()
        b = take()
        hashes.append(hash_pair(a, b))
    return hashes[-1]


def process_multiproof(leaves: Sequence[bytes], proof: Sequence[bytes], flags: Sequence[bool]) -> bytes:
    """``MerkleProof.processMultiProof``: the root that ``leaves`` (in the order given), ``proof`` and ``flags``
    lead to. Raises ``ValueError`` on inconsistent lengths (the contract reverts there)."""
    leaves, proof, flags = list(leaves), list(proof), list(flags)
    if len(leaves) + len(proof) != len(flags) + 1:
        raise ValueError("invalid multiproof: leaves + proof != flags + 1")
    hashes: list[bytes] = []
    li = hi = pi = 0
    for flag in flags:
        if li < len(leaves):
            a = leaves[li]
            li += 1
        else:
            a = hashes[hi]
            hi += 1
        if flag:
            if li < len(leaves):
                b = leaves[li]
                li += 1
            else:
                b = hashes[hi]
                hi += 1
        else:
            b = proof[pi]
            pi += 1
        hashes.append(hash_pair(a, b))
    if flags:
        return hashes[-1]
    return leaves[0] if leaves else proof[0]

"""Margin leaves and the one Merkle tree every room uses: OpenZeppelin's ``StandardMerkleTree`` convention
(docs/contracts.md), the layout the contracts' ``MerkleProof.processProof`` / ``processMultiProof`` verify.

* leaf hash: ``keccak256(bytes.concat(keccak256(abi.encode(account, stateNonce, equity, maintenance, initial,
  modelValue))))``;
* tree: leaves sorted by hash, sorted-pair ``keccak256`` nodes (``Hashes.commutativeKeccak256``), array layout
  ``tree[len-1-i] = sorted leaf i``;
* proofs: the sibling path of one leaf, and OZ ``getMultiProof`` multiproofs (a batch posting proves every leaf with
  an empty proof and every flag true).

The keeper hashes its leaves in bulk (:func:`leaf_hashes`: the ABI words written column-wise with numpy, keccak
from ``safe-pysha3``'s C extension when installed, else ``eth_utils``; the same bytes as :meth:`MarginLeaf.hash`,
which goes through ``eth_abi`` and stays the reference) and builds its tree from those hashes (10,000 leaves in
tens of milliseconds, ``benchmarks/bench_keeper.py``); tests and the deployment tools build it from leaves
(:meth:`MerkleTree.of_leaves`, which also checks every leaf against what the contract can store). The second
computation that checks this module is the contracts' own OpenZeppelin ``MerkleProof`` on a real chain
(tests/contracts, tests/bots/keeper).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np

from eth_abi import encode as abi_encode
from eth_abi.exceptions import EncodingError
from eth_utils import keccak, to_checksum_address

from keeper.units import INT96_MAX, INT96_MIN, UINT32_MAX, UINT96_MAX

try:  # the C keccak of safe-pysha3 (a project dependency): ~10x less per call than eth_utils' pycryptodome backend
    from sha3 import keccak_256 as _keccak_256
except ImportError:  # pragma: no cover - same digests through eth_utils
    _keccak_256 = None

log = logging.getLogger(__name__)

#: ABI types of the Solidity ``MarginLeaf`` struct, in field order
LEAF_TYPES = ("address", "uint32", "int256", "uint256", "uint256", "int256")


@dataclass(frozen=True)
class MarginLeaf:
    """One account's attested margin numbers, bound to its on-chain state nonce.

    Construction does not check ranges (the keeper builds 10,000 per block and leaves an out-of-range account out
    of the batch instead of failing it): :meth:`violation` says why the contract could not store a leaf and
    :meth:`checked` raises on it. Everything that is signed goes through one of the two.
    """

    account: str  # checksummed address
    state_nonce: int  # [uint32] the account's stateNonce the numbers were computed at
    equity: int  # [quote units, int96] value of the book at model marks plus cash
    maintenance: int  # [quote units, uint96] maintenance margin
    initial: int  # [quote units, uint96] initial margin
    model_value: int  # [quote units, int96] model value of the option positions alone

    @classmethod
    def from_tuple(cls, t) -> "MarginLeaf":
        """From the struct as a tuple (ABI order) or as web3's decoded dict."""
        if isinstance(t, Mapping):
            t = (t["account"], t["stateNonce"], t["equity"], t["maintenance"], t["initial"], t["modelValue"])
        return cls(to_checksum_address(t[0]), int(t[1]), int(t[2]), int(t[3]), int(t[4]), int(t[5]))

    def as_tuple(self) -> tuple:
        """The Solidity ``MarginLeaf`` struct as a tuple (for contract calls and hashing)."""
        return (self.account, self.state_nonce, self.equity, self.maintenance, self.initial, self.model_value)

    def to_json(self) -> dict:
        """The leaf as the keeper's API publishes it (camelCase keys)."""
        return {"account": self.account, "stateNonce": self.state_nonce, "equity": self.equity,
                "maintenance": self.maintenance, "initial": self.initial, "modelValue": self.model_value}

    @property
    def breached(self) -> bool:
        """Equity below maintenance margin."""
        return self.equity < self.maintenance

    def violation(self) -> str | None:
        """``None`` when the contract can store this leaf (``AccountState`` / ``BreachRecord``: uint32 stateNonce,
        int96 equity and model value, uint96 maintenance and initial), else why not."""
        for name in ("state_nonce", "equity", "maintenance", "initial", "model_value"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                return f"{name} must be an int, got {type(v).__name__}"
        if not 0 <= self.state_nonce <= UINT32_MAX:
            return f"state_nonce {self.state_nonce} outside uint32"
        if not INT96_MIN <= self.equity <= INT96_MAX:
            return f"equity {self.equity} outside int96"
        if not 0 <= self.maintenance <= UINT96_MAX:
            return f"maintenance {self.maintenance} outside uint96"
        if not 0 <= self.initial <= UINT96_MAX:
            return f"initial {self.initial} outside uint96"
        if not INT96_MIN <= self.model_value <= INT96_MAX:
            return f"model_value {self.model_value} outside int96"
        return None

    def checked(self) -> "MarginLeaf":
        """This leaf with a checksummed account; ``ValueError`` naming the field when the contract could not
        store it (so nothing unrepresentable is ever signed)."""
        why = self.violation()
        if why is not None:
            raise ValueError(f"margin leaf of {self.account}: {why}")
        return replace(self, account=to_checksum_address(self.account))

    def hash(self) -> bytes:
        """The leaf hash (double keccak of the ABI encoding); ``ValueError`` when a value is outside its ABI type."""
        try:
            return keccak(keccak(abi_encode(LEAF_TYPES, self.as_tuple())))
        except EncodingError as exc:
            raise ValueError(f"margin leaf of {self.account}: value out of range for its ABI type ({exc})") from exc


def leaf_hash(leaf: MarginLeaf) -> bytes:
    """:meth:`MarginLeaf.hash` as a function (a sort key)."""
    return leaf.hash()


def valid_leaves(raw: Iterable[Mapping]) -> list[MarginLeaf]:
    """Checked leaves from dicts keyed as the dataclass fields; a malformed row is logged and skipped."""
    out: list[MarginLeaf] = []
    for row in raw:
        try:
            out.append(MarginLeaf(**row).checked())
        except (TypeError, ValueError) as exc:
            log.warning("skipping margin leaf %r: %s", row, exc)
    return out


def keccak256(data: bytes) -> bytes:
    """keccak-256 of ``data`` (the C extension when installed; equal to ``eth_utils.keccak``)."""
    if _keccak_256 is None:  # pragma: no cover
        return keccak(data)
    return _keccak_256(data).digest()


def hash_pair(a: bytes, b: bytes) -> bytes:
    """Sorted-pair keccak (OZ ``Hashes.commutativeKeccak256``)."""
    return keccak256(a + b) if a < b else keccak256(b + a)


def _leaf_hashes_one_by_one(leaves: Sequence[MarginLeaf]) -> list[bytes]:
    """:meth:`MarginLeaf.hash` of each leaf (eth_abi): the path for a batch the fast path does not cover."""
    return [l.hash() for l in leaves]


#: the leaf fields after the account, the lowest value each may take in the fast path (int64 words)
_FAST_FIELDS = (("state_nonce", 0), ("equity", None), ("maintenance", 0), ("initial", 0), ("model_value", None))


def _encoded_leaves(leaves: Sequence[MarginLeaf]) -> Optional[np.ndarray]:
    """The ABI encodings of ``leaves`` as an (n, 192) byte matrix, built column-wise, or ``None`` when some leaf
    falls outside the fast path (an account not a ``0x`` + 40 hex digit string, a value that is not an int, outside
    int64 or below its type's minimum, a state nonce above uint32): the caller then hashes leaf by leaf through
    eth_abi, which encodes or raises as always. eth_abi takes any ``0x`` + 40 hex string as the address's 20
    bytes, whatever the letters' case (it checks no EIP-55 checksum), and so does this."""
    n = len(leaves)
    accounts = [l.account for l in leaves]
    if not all(type(a) is str and len(a) == 42 and a[:2] == "0x" for a in accounts):
        return None
    bodies = "".join(a[2:] for a in accounts)
    try:
        raw = bytes.fromhex(bodies)
    except ValueError:
        return None
    if len(raw) != 20 * n:  # fromhex skips whitespace
        return None
    enc = np.zeros((n, 192), dtype=np.uint8)
    enc[:, 12:32] = np.frombuffer(raw, dtype=np.uint8).reshape(n, 20)
    for k, (name, lowest) in enumerate(_FAST_FIELDS, start=1):
        col = [getattr(l, name) for l in leaves]
        if not all(type(v) is int for v in col):
            return None
        try:
            v = np.array(col, dtype=np.int64)
        except OverflowError:
            return None
        if lowest is not None and np.any(v < lowest):
            return None
        if name == "state_nonce" and np.any(v > UINT32_MAX):
            return None
        enc[:, 32 * k + 24:32 * k + 32] = v.astype(">i8").view(np.uint8).reshape(n, 8)
        enc[v < 0, 32 * k:32 * k + 24] = 0xFF  # two's complement: sign-extend negative words
    return enc


def leaf_hashes(leaves: Sequence[MarginLeaf]) -> list[bytes]:
    """:meth:`MarginLeaf.hash` of every leaf, computed in bulk: the six ABI words (address, uint32, int256,
    uint256, uint256, int256) written column-wise into one byte matrix with numpy, then two keccaks per row.
    Byte-identical to the eth_abi path (tests/codec/test_merkle.py compares them on random leaves and at every type
    bound); a leaf the fast path does not cover sends the batch through :meth:`MarginLeaf.hash` leaf by leaf,
    which raises ``ValueError`` naming the account on a value outside its ABI type."""
    if not leaves:
        return []
    enc = _encoded_leaves(leaves)
    if enc is None:
        return _leaf_hashes_one_by_one(leaves)
    h = keccak256
    flat = memoryview(enc.tobytes())
    return [h(h(flat[i:i + 192])) for i in range(0, 192 * len(leaves), 192)]


class MultiProof(NamedTuple):
    """An OZ multiproof: the leaves in processing order (:class:`MarginLeaf` when the tree knows them, else leaf
    hashes), the proof nodes and the flags, as ``processMultiProof`` takes them. Unpacks as a 3-tuple."""

    leaves: tuple
    proof: tuple
    flags: tuple


#: what names a leaf of a tree: its hash, its account (trees built of leaves) or the leaf itself
LeafKey = Union[bytes, str, MarginLeaf]


class MerkleTree:
    """The OZ StandardMerkleTree over margin leaves.

    ``MerkleTree(leaf_hashes)`` builds from hashes (the keeper's path: each leaf hashed once);
    :meth:`of_leaves` builds from leaves, checks each (:meth:`MarginLeaf.checked`) and rejects a repeated account,
    and then answers by account too. Duplicate hashes are rejected either way.
    """

    def __init__(self, leaf_hashes: Sequence[bytes], leaves: Sequence[MarginLeaf] | None = None) -> None:
        if not leaf_hashes:
            raise ValueError("a Merkle tree needs at least one leaf")
        hashes = [bytes(h) for h in leaf_hashes]
        by_hash = dict(zip(hashes, leaves)) if leaves is not None else {}
        ordered = sorted(set(hashes))
        if len(ordered) != len(hashes):
            raise ValueError("duplicate leaves in a Merkle tree")
        n = len(ordered)
        tree: list[bytes] = [b""] * (n - 1) + ordered[::-1]
        h = keccak256
        for i in range(n - 2, -1, -1):
            a, b = tree[2 * i + 1], tree[2 * i + 2]
            tree[i] = h(a + b) if a < b else h(b + a)
        self.tree: tuple[bytes, ...] = tuple(tree)
        #: leaf hashes, ascending (sorted leaf ``i`` sits at ``tree[len - 1 - i]``)
        self.hashes: tuple[bytes, ...] = tuple(ordered)
        self._index = {h: 2 * n - 2 - i for i, h in enumerate(ordered)}
        self._leaf = by_hash
        self._by_account = {l.account.lower(): h for h, l in by_hash.items()}

    @classmethod
    def of_leaves(cls, leaves: Sequence[MarginLeaf]) -> "MerkleTree":
        """The tree of checked ``leaves``; ``ValueError`` on a leaf the contract cannot store or a repeated
        account."""
        checked = [l.checked() for l in leaves]
        accounts = [l.account for l in checked]
        if len(set(accounts)) != len(accounts):
            raise ValueError("duplicate account in margin batch")
        return cls([l.hash() for l in checked], checked)

    @property
    def root(self) -> bytes:
        return self.tree[0]

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def leaves(self) -> tuple:
        """The leaves sorted by hash (:class:`MarginLeaf` when built of leaves, else the hashes)."""
        return tuple(self._leaf.get(h, h) for h in self.hashes)

    def _hash_of(self, key: LeafKey) -> bytes:
        if isinstance(key, MarginLeaf):
            return key.hash()
        if isinstance(key, str):
            try:
                return self._by_account[key.lower()]
            except KeyError:
                raise KeyError(f"account {key} not in tree") from None
        return bytes(key)

    def _tree_index(self, key: LeafKey) -> int:
        h = self._hash_of(key)
        try:
            return self._index[h]
        except KeyError:
            raise KeyError("leaf not in tree") from None

    def leaf_of(self, account: str) -> MarginLeaf:
        """The leaf of ``account`` (trees built of leaves)."""
        return self._leaf[self._hash_of(account)]

    def proof(self, key: LeafKey) -> list[bytes]:
        """The branch of one leaf (``MerkleProof.processProof``); ``KeyError`` when it is not in the tree."""
        i = self._tree_index(key)
        out = []
        while i > 0:
            out.append(self.tree[i - 1 if i % 2 == 0 else i + 1])
            i = (i - 1) // 2
        return out

    def multiproof(self, keys: Sequence[LeafKey] | None = None) -> MultiProof:
        """OZ ``getMultiProof`` of a subset (``None``: every leaf): leaves in processing order, proof, flags."""
        if keys is None:
            indices = [len(self.tree) - 1 - i for i in range(len(self.hashes))]
        else:
            indices = list(dict.fromkeys(self._tree_index(k) for k in keys))
        indices.sort(reverse=True)
        stack = list(indices)
        proof: list[bytes] = []
        flags: list[bool] = []
        while stack and stack[0] > 0:
            j = stack.pop(0)
            s = j - 1 if j % 2 == 0 else j + 1
            if stack and s == stack[0]:
                flags.append(True)
                stack.pop(0)
            else:
                flags.append(False)
                proof.append(self.tree[s])
            stack.append((j - 1) // 2)
        if not indices:
            proof.append(self.tree[0])
        leaves = tuple(self._leaf.get(self.tree[i], self.tree[i]) for i in indices)
        return MultiProof(leaves, tuple(proof), tuple(flags))


def process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """``MerkleProof.processProof``: the root a branch leads to."""
    h = bytes(leaf)
    for p in proof:
        h = hash_pair(h, p)
    return h


def process_multiproof(leaves: Sequence, proof: Sequence[bytes], flags: Sequence[bool]) -> bytes:
    """``MerkleProof.processMultiProof``: the root that ``leaves`` (hashes or :class:`MarginLeaf`, in processing
    order), ``proof`` and ``flags`` lead to. ``ValueError`` on inconsistent lengths (the contract reverts there)."""
    hashes = [l.hash() if isinstance(l, MarginLeaf) else bytes(l) for l in leaves]
    proof, flags = list(proof), list(flags)
    if len(hashes) + len(proof) != len(flags) + 1:
        raise ValueError("invalid multiproof: leaves + proof != flags + 1")
    queue: list[bytes] = []
    li = qi = pi = 0
    for flag in flags:
        if li < len(hashes):
            a, li = hashes[li], li + 1
        else:
            a, qi = queue[qi], qi + 1
        if flag:
            if li < len(hashes):
                b, li = hashes[li], li + 1
            else:
                b, qi = queue[qi], qi + 1
        else:
            b, pi = proof[pi], pi + 1
        queue.append(hash_pair(a, b))
    if flags:
        return queue[-1]
    return hashes[0] if hashes else proof[0]

"""EIP-712 typed data, margin leaves, Merkle trees and signatures: exactly what the Backstop contracts verify.

One source of truth for the keepers, the HTTP margin query and the tests:

* domain ``Backstop`` / ``1`` / chain id / the ``Clearinghouse`` address;
* typed data ``MarginRoot``, ``Prices``, ``SettlementPrices`` and ``Quote`` (type strings in ``docs/contracts.md``);
* margin leaves encoded like OpenZeppelin's ``StandardMerkleTree`` with leaf encoding
  ``["address","uint32","int256","uint256","uint256","int256"]`` (double-hashed), the tree built with the same
  layout (leaves sorted by hash, sorted-pair keccak nodes), single proofs and multiproofs;
* signatures with eth-account (``encode_typed_data`` + ``Account.sign_message``), concatenated in strictly
  ascending signer order as the contracts require.

Values are in quote-asset base units, prices/sizes in WAD (see ``docs/ARCHITECTURE.md``). Everything here is pure:
no chain access, no module-level mutable state.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import (
    SignableMessage,
    _hash_eip191_message,
    encode_typed_data,
)
from eth_utils import keccak, to_checksum_address

from keeper.units import (
    INT96_MAX,
    INT96_MIN,
    UINT32_MAX,
    UINT40_MAX,
    UINT96_MAX,
)

log = logging.getLogger(__name__)

DOMAIN_NAME = "Backstop"
DOMAIN_VERSION = "1"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

LEAF_ENCODING = ("address", "uint32", "int256", "uint256", "uint256", "int256")

EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
MARGIN_ROOT_TYPE = [
    {"name": "root", "type": "bytes32"},
    {"name": "inputsHash", "type": "bytes32"},
    {"name": "sequence", "type": "uint64"},
    {"name": "timestamp", "type": "uint64"},
    {"name": "leafCount", "type": "uint32"},
]
PRICES_TYPE = [
    {"name": "assets", "type": "address[]"},
    {"name": "prices", "type": "uint256[]"},
    {"name": "sequence", "type": "uint64"},
    {"name": "timestamp", "type": "uint64"},
]
SETTLEMENT_PRICES_TYPE = [
    {"name": "underlyings", "type": "address[]"},
    {"name": "prices", "type": "uint256[]"},
    {"name": "expiry", "type": "uint64"},
    {"name": "timestamp", "type": "uint64"},
]
QUOTE_TYPE = [
    {"name": "maker", "type": "address"},
    {"name": "seriesId", "type": "uint256"},
    {"name": "size", "type": "int256"},
    {"name": "price", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint64"},
]

# --------------------------------------------------------------------------------------------------- domain


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain of one Clearinghouse deployment."""

    chain_id: int
    verifying_contract: str
    name: str = DOMAIN_NAME
    version: str = DOMAIN_VERSION

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": int(self.chain_id),
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


# --------------------------------------------------------------------------------------------------- leaves


@dataclass(frozen=True)
class MarginLeaf:
    """One account's attested margin state (quote base units), bound to its on-chain ``state_nonce``.

    Raises ``ValueError`` when a value does not fit what the contract stores (int96 equity, uint96 maintenance,
    uint32 stateNonce) so nothing unrepresentable is ever signed.
    """

    account: str
    state_nonce: int
    equity: int
    maintenance: int
    initial: int
    model_value: int

    def __post_init__(self) -> None:
        for name in ("state_nonce", "equity", "maintenance", "initial", "model_value"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be an int, got {type(getattr(self, name)).__name__}")
        if not 0 <= self.state_nonce <= UINT32_MAX:
            raise ValueError(f"state_nonce {self.state_nonce} outside uint32")
        if not INT96_MIN <= self.equity <= INT96_MAX:
            raise ValueError(f"equity {self.equity} outside int96")
        if not 0 <= self.maintenance <= UINT96_MAX:
            raise ValueError(f"maintenance {self.maintenance} outside uint96")
        if not 0 <= self.initial <= UINT96_MAX:
            raise ValueError(f"initial {self.initial} outside uint96")
        if not INT96_MIN <= self.model_value <= INT96_MAX:
            raise ValueError(f"model_value {self.model_value} outside int96")
        object.__setattr__(self, "account", to_checksum_address(self.account))

    def as_tuple(self) -> tuple:
        """The Solidity ``MarginLeaf`` struct as a tuple (for contract calls)."""
        return (self.account, self.state_nonce, self.equity, self.maintenance, self.initial, self.model_value)


def leaf_hash(leaf: MarginLeaf) -> bytes:
    """OZ StandardMerkleTree leaf: ``keccak256(keccak256(abi.encode(...)))``."""
    return keccak(keccak(abi_encode(list(LEAF_ENCODING), list(leaf.as_tuple()))))


def valid_leaves(raw: Iterable[Mapping]) -> list[MarginLeaf]:
    """Build leaves from dicts (keys as the dataclass fields); skip and log any that is malformed."""
    out: list[MarginLeaf] = []
    for row in raw:
        try:
            out.append(MarginLeaf(**row))
        except (TypeError, ValueError) as exc:
            log.warning("skipping margin leaf %r: %s", row, exc)
    return out


# --------------------------------------------------------------------------------------------------- Merkle


def hash_pair(a: bytes, b: bytes) -> bytes:
    """Sorted-pair keccak (OZ ``Hashes.commutativeKeccak256``)."""
    return keccak(a + b) if a < b else keccak(b + a)


@dataclass(frozen=True)
class MultiProof:
    """A multiproof in the form ``MerkleProof.processMultiProofCalldata`` takes."""

    leaves: tuple[MarginLeaf, ...]
    proof: tuple[bytes, ...]
    flags: tuple[bool, ...]


@dataclass(frozen=True)
class MarginTree:
    """OZ StandardMerkleTree over margin leaves (leaves sorted by hash; ``tree[len-1-i]`` is sorted leaf i)."""

    leaves: tuple[MarginLeaf, ...]  # sorted by leaf hash
    tree: tuple[bytes, ...] = field(repr=False)

    @classmethod
    def build(cls, leaves: Sequence[MarginLeaf]) -> "MarginTree":
        if not leaves:
            raise ValueError("a margin tree needs at least one leaf")
        accounts = [l.account for l in leaves]
        if len(set(accounts)) != len(accounts):
            raise ValueError("duplicate account in margin batch")
        ordered = sorted(leaves, key=leaf_hash)
        hashes = [leaf_hash(l) for l in ordered]
        n = len(hashes)
        tree: list[bytes] = [b""] * (2 * n - 1)
        for i, h in enumerate(hashes):
            tree[len(tree) - 1 - i] = h
        for i in range(len(tree) - 1 - n, -1, -1):
            tree[i] = hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        return cls(tuple(ordered), tuple(tree))

    @property
    def root(self) -> bytes:
        return self.tree[0]

    def _tree_index(self, account: str) -> int:
        account = to_checksum_address(account)
        for i, l in enumerate(self.leaves):
            if l.account == account:
                return len(self.tree) - 1 - i
        raise KeyError(f"account {account} not in tree")

    def leaf_of(self, account: str) -> MarginLeaf:
        return self.leaves[len(self.tree) - 1 - self._tree_index(account)]

    def proof(self, account: str) -> list[bytes]:
        """The branch of ``account``'s leaf (for ``MerkleProof.processProofCalldata``)."""
        i = self._tree_index(account)
        out = []
        while i > 0:
            sibling = i - 1 if i % 2 == 0 else i + 1
            out.append(self.tree[sibling])
            i = (i - 1) // 2
        return out

    def multiproof(self, accounts: Sequence[str] | None = None) -> MultiProof:
        """OZ ``getMultiProof``: leaves in descending tree index, proof nodes and flags. None: all leaves."""
        if accounts is None:
            indices = [len(self.tree) - 1 - i for i in range(len(self.leaves))]
        else:
            indices = [self._tree_index(a) for a in accounts]
        indices = sorted(indices, reverse=True)
        if len(set(indices)) != len(indices):
            raise ValueError("cannot prove a duplicated leaf")
        stack = list(indices)
        proof: list[bytes] = []
        flags: list[bool] = []
        while stack and stack[0] > 0:
            j = stack.pop(0)
            s = j - 1 if j % 2 == 0 else j + 1
            p = (j - 1) // 2
            if stack and s == stack[0]:
                flags.append(True)
                stack.pop(0)
            else:
                flags.append(False)
                proof.append(self.tree[s])
            stack.append(p)
        if not indices:
            proof.append(self.tree[0])
        leaves = tuple(self.leaves[len(self.tree) - 1 - i] for i in indices)
        return MultiProof(leaves, tuple(proof), tuple(flags))


def process_multiproof(mp: MultiProof) -> bytes:
    """Rebuild the root from a multiproof (the contract's algorithm, for cross-checks)."""
    hashes = [leaf_hash(l) for l in mp.leaves]
    total = len(mp.flags)
    if len(hashes) + len(mp.proof) != total + 1:
        raise ValueError("invalid multiproof")
    queue: list[bytes] = []
    li = qi = pi = 0
    for flag in mp.flags:
        def nxt() -> bytes:
            nonlocal li, qi
            if li < len(hashes):
                li += 1
                return hashes[li - 1]
            qi += 1
            return queue[qi - 1]

        a = nxt()
        if flag:
            b = nxt()
        else:
            b = mp.proof[pi]
            pi += 1
        queue.append(hash_pair(a, b))
    if total > 0:
        return queue[-1]
    return hashes[0] if hashes else mp.proof[0]


# --------------------------------------------------------------------------------------------------- typed data


@dataclass(frozen=True)
class MarginRootHeader:
    """Signed fields of a margin root besides the root itself."""

    inputs_hash: bytes
    sequence: int
    timestamp: int
    leaf_count: int

    def __post_init__(self) -> None:
        if len(self.inputs_hash) != 32:
            raise ValueError("inputs_hash must be 32 bytes")
        if not 0 < self.sequence <= UINT40_MAX:
            raise ValueError(f"sequence {self.sequence} outside (0, 2^40)")
        if not 0 < self.timestamp <= UINT32_MAX:
            raise ValueError(f"timestamp {self.timestamp} outside uint32")
        if not 0 <= self.leaf_count <= UINT32_MAX:
            raise ValueError(f"leaf_count {self.leaf_count} outside uint32")

    def as_tuple(self) -> tuple:
        return (self.inputs_hash, self.sequence, self.timestamp, self.leaf_count)


def margin_root_typed_data(domain: Domain, root: bytes, header: MarginRootHeader) -> dict:
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "MarginRoot": MARGIN_ROOT_TYPE},
        "primaryType": "MarginRoot",
        "domain": domain.as_dict(),
        "message": {
            "root": root,
            "inputsHash": header.inputs_hash,
            "sequence": header.sequence,
            "timestamp": header.timestamp,
            "leafCount": header.leaf_count,
        },
    }


def prices_typed_data(domain: Domain, assets: Sequence[str], prices: Sequence[int], sequence: int, timestamp: int) -> dict:
    if len(assets) != len(prices):
        raise ValueError("assets and prices differ in length")
    if any((not isinstance(p, int)) or p <= 0 or p >= 2**192 for p in prices):
        raise ValueError("prices must be positive WAD integers below 2^192")
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "Prices": PRICES_TYPE},
        "primaryType": "Prices",
        "domain": domain.as_dict(),
        "message": {
            "assets": [to_checksum_address(a) for a in assets],
            "prices": [int(p) for p in prices],
            "sequence": sequence,
            "timestamp": timestamp,
        },
    }


def settlement_typed_data(
    domain: Domain, underlyings: Sequence[str], prices: Sequence[int], expiry: int, timestamp: int
) -> dict:
    if len(underlyings) != len(prices):
        raise ValueError("underlyings and prices differ in length")
    if any((not isinstance(p, int)) or p <= 0 for p in prices):
        raise ValueError("settlement prices must be positive WAD integers")
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "SettlementPrices": SETTLEMENT_PRICES_TYPE},
        "primaryType": "SettlementPrices",
        "domain": domain.as_dict(),
        "message": {
            "underlyings": [to_checksum_address(a) for a in underlyings],
            "prices": [int(p) for p in prices],
            "expiry": expiry,
            "timestamp": timestamp,
        },
    }


@dataclass(frozen=True)
class Quote:
    """A maker's quote: ``size`` is the maker's signed WAD size (> 0: maker buys), ``price`` WAD per contract."""

    maker: str
    series_id: int
    size: int
    price: int
    nonce: int
    deadline: int

    def as_tuple(self) -> tuple:
        return (to_checksum_address(self.maker), self.series_id, self.size, self.price, self.nonce, self.deadline)


def quote_typed_data(domain: Domain, q: Quote) -> dict:
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "Quote": QUOTE_TYPE},
        "primaryType": "Quote",
        "domain": domain.as_dict(),
        "message": {
            "maker": to_checksum_address(q.maker),
            "seriesId": q.series_id,
            "size": q.size,
            "price": q.price,
            "nonce": q.nonce,
            "deadline": q.deadline,
        },
    }


# --------------------------------------------------------------------------------------------------- signing


def signable(typed: dict) -> SignableMessage:
    return encode_typed_data(full_message=typed)


def digest(typed: dict) -> bytes:
    """The 32-byte EIP-712 digest (``\\x19\\x01 ‖ domainSeparator ‖ structHash`` hashed)."""
    return bytes(_hash_eip191_message(signable(typed)))


def struct_hash(typed: dict) -> bytes:
    """The EIP-712 struct hash of the message (what the contract's ``hashTypedData`` takes)."""
    return bytes(signable(typed).body)


def sign(typed: dict, private_key) -> bytes:
    """One 65-byte ``r ‖ s ‖ v`` signature (low-s, v in {27, 28})."""
    return bytes(Account.sign_message(signable(typed), private_key).signature)


def sign_attestation(typed: dict, private_keys: Sequence) -> bytes:
    """Signatures of all ``private_keys`` concatenated in strictly ascending signer-address order."""
    accts = [k if hasattr(k, "key") else Account.from_key(k) for k in private_keys]
    signed = sorted(((int(a.address, 16), sign(typed, a.key)) for a in accts), key=lambda t: t[0])
    if len({a for a, _ in signed}) != len(signed):
        raise ValueError("duplicate signer")
    return b"".join(s for _, s in signed)


def combine_signatures(signatures: Mapping[str, bytes]) -> bytes:
    """Concatenate signatures gathered from peers (keyed by signer address) in ascending signer order."""
    return b"".join(sig for _, sig in sorted(signatures.items(), key=lambda kv: int(kv[0], 16)))


def recover(typed: dict, signature: bytes) -> str:
    """Address that produced ``signature`` over ``typed``."""
    return Account.recover_message(signable(typed), signature=signature)


def malleate(signature: bytes) -> bytes:
    """The high-s twin of a signature (s' = n - s, v flipped): valid for ecrecover, rejected by the contracts."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


MARGIN_ROOT_TYPEHASH = keccak(
    b"MarginRoot(bytes32 root,bytes32 inputsHash,uint64 sequence,uint64 timestamp,uint32 leafCount)")


PRICES_TYPEHASH = keccak(b"Prices(address[] assets,uint256[] prices,uint64 sequence,uint64 timestamp)")


def prices_struct_hash(assets: Sequence[str], prices: Sequence[int], sequence: int, timestamp: int) -> bytes:
    """EIP-712 struct hash of ``Prices`` (arrays hashed as the packed 32-byte words of their elements)."""
    a = keccak(b"".join(abi_encode(["address"], [to_checksum_address(x)]) for x in assets))
    p = keccak(b"".join(int(x).to_bytes(32, "big") for x in prices))
    return keccak(abi_encode(["bytes32", "bytes32", "bytes32", "uint64", "uint64"],
                         [PRICES_TYPEHASH, a, p, int(sequence), int(timestamp)]))


def margin_root_struct_hash(root: bytes, inputs_hash: bytes, sequence: int, timestamp: int, leaf_count: int) -> bytes:
    """EIP-712 struct hash of ``MarginRoot``."""
    return keccak(abi_encode(["bytes32", "bytes32", "bytes32", "uint64", "uint64", "uint32"],
                         [MARGIN_ROOT_TYPEHASH, root, inputs_hash, int(sequence), int(timestamp), int(leaf_count)]))



"""EIP-712 typed data exactly as the Backstop contracts verify it: the domain, the four attested or signed
messages (``MarginRoot``, ``Prices``, ``SettlementPrices``, ``Quote``; type strings in docs/contracts.md) and the
``SolvencyIndex`` whose struct hash a ``MarginRoot`` carries (``solvency_index_tuple`` rounds the keeper's float
index once, against the protocol), their
digests and struct hashes through eth-account's ``encode_typed_data`` (the library's EIP-712 encoding; nothing
here signs: keys live in :mod:`keeper.ops.signing`), and the signature bytes rules the contracts apply (ascending
signer order, low-s).

Margin leaves and the Merkle tree are :mod:`keeper.codec.merkle`. Values are in quote-asset base units,
prices/sizes in WAD (docs/ARCHITECTURE.md). Pure: no chain access, no keys, no module-level mutable state.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

from eth_account.messages import (
    SignableMessage,
    encode_typed_data,
)
from eth_utils import keccak, to_checksum_address

from keeper.units import (
    UINT32_MAX,
    UINT40_MAX,
    to_base_units,
)

log = logging.getLogger(__name__)

DOMAIN_NAME = "Backstop"
DOMAIN_VERSION = "1"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


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
    {"name": "solvencyHash", "type": "bytes32"},
]
#: the protocol solvency index signed with every margin root (contracts/libraries/BackstopTypes.sol)
SOLVENCY_INDEX_TYPE = [
    {"name": "totalEquity", "type": "int128"},
    {"name": "totalMaintenance", "type": "uint128"},
    {"name": "totalInitial", "type": "uint128"},
    {"name": "shortfallNow", "type": "uint128"},
    {"name": "shortfallVar99", "type": "uint128"},
    {"name": "shortfallEs975", "type": "uint128"},
    {"name": "fund", "type": "uint128"},
    {"name": "excludedEquity", "type": "int128"},
    {"name": "accounts", "type": "uint32"},
    {"name": "excludedAccounts", "type": "uint32"},
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


# --------------------------------------------------------------------------------------------------- typed data


@dataclass(frozen=True)
class MarginRootHeader:
    """Signed fields of a margin root besides the root itself. ``solvency_hash`` is the struct hash of the
    solvency index posted with the root (:func:`solvency_struct_hash`): required, never zero (the contract takes no
    root without its index). :meth:`as_tuple` is the on-chain ``MarginRootHeader`` struct (the first four fields,
    what proofs carry); the posting calls pass ``solvency_hash`` and the index next to it."""

    inputs_hash: bytes
    sequence: int
    timestamp: int
    leaf_count: int
    solvency_hash: bytes

    def __post_init__(self) -> None:
        if len(self.inputs_hash) != 32:
            raise ValueError("inputs_hash must be 32 bytes")
        if not 0 < self.sequence <= UINT40_MAX:
            raise ValueError(f"sequence {self.sequence} outside (0, 2^40)")
        if not 0 < self.timestamp <= UINT32_MAX:
            raise ValueError(f"timestamp {self.timestamp} outside uint32")
        if not 0 <= self.leaf_count <= UINT32_MAX:
            raise ValueError(f"leaf_count {self.leaf_count} outside uint32")
        if len(self.solvency_hash) != 32 or not any(self.solvency_hash):
            raise ValueError("solvency_hash must be the 32-byte struct hash of the root's solvency index")

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
            "solvencyHash": header.solvency_hash,
        },
    }


# --------------------------------------------------------------------------------------------------- solvency index

INT128_MIN, INT128_MAX, UINT128_MAX = -(2**127), 2**127 - 1, 2**128 - 1
#: field -> rounding of the float (whole quote units) to quote base units: against the protocol (equity and the
#: fund down, margins and shortfalls up)
#: float ulps within which a solvency figure is taken as the base unit it came from
SOLVENCY_SNAP_ULPS = 8

SOLVENCY_ROUNDING = {
    "totalEquity": "floor", "totalMaintenance": "ceil", "totalInitial": "ceil", "shortfallNow": "ceil",
    "shortfallVar99": "ceil", "shortfallEs975": "ceil", "fund": "floor", "excludedEquity": "floor",
}
_SOLVENCY_ATTR = {
    "totalEquity": "total_equity", "totalMaintenance": "total_maintenance", "totalInitial": "total_initial",
    "shortfallNow": "shortfall_now", "shortfallVar99": "shortfall_var99", "shortfallEs975": "shortfall_es975",
    "fund": "fund", "excludedEquity": "excluded_equity", "accounts": "accounts",
    "excludedAccounts": "excluded_accounts",
}


def solvency_index_tuple(index, quote_decimals: int) -> tuple:
    """The on-chain ``SolvencyIndex`` struct (``SOLVENCY_INDEX_TYPE`` order) of a
    :class:`keeper.quant.risk.solvency.SolvencyIndex` (floats in whole quote units), rounded once to quote base units
    by :data:`SOLVENCY_ROUNDING`: total equity, the fund and the excluded equity down, margins and shortfalls up. The
    coverage is not signed: the contract derives it (fund / ES 97.5). Raises ValueError when a value does not fit its
    field (a shortfall or margin below 0 included)."""
    out = []
    for f in SOLVENCY_INDEX_TYPE:
        name, typ = f["name"], f["type"]
        v = getattr(index, _SOLVENCY_ATTR[name])
        try:
            # an amount that came from whole base units (the fund read from chain, divided for the float engine) is
            # back within a float's representation error of that integer: taken, so the signed figure is the
            # chain's exact one; anything farther from an integer is a real fraction and rounds
            x = int(v) if typ == "uint32" else to_base_units(float(v), quote_decimals, SOLVENCY_ROUNDING[name],
                                                              snap_ulps=SOLVENCY_SNAP_ULPS)
        except ValueError as exc:
            raise ValueError(f"solvency index: {name}: {exc}") from None
        lo, hi = {"int128": (INT128_MIN, INT128_MAX), "uint128": (0, UINT128_MAX), "uint32": (0, UINT32_MAX)}[typ]
        if not lo <= x <= hi:
            raise ValueError(f"solvency index: {name} = {x} outside {typ}")
        out.append(x)
    return tuple(out)


def unavailable_solvency(leaf_count: int) -> tuple:
    """The "no figures" index a keeper signs when it could not compute one (the root must not wait for it: breaches
    need recording): every value 0, ``accounts`` 0 and all ``leaf_count`` attested accounts counted as left out.
    Explicit on chain (``accounts == 0`` with ``excludedAccounts > 0``), never a silent zero."""
    return (0, 0, 0, 0, 0, 0, 0, 0, 0, int(leaf_count))


def solvency_index_dict(values: Sequence[int]) -> dict:
    """The struct tuple as a ``{field: int}`` dict (EIP-712 message, JSON)."""
    if len(values) != len(SOLVENCY_INDEX_TYPE):
        raise ValueError(f"solvency index has {len(values)} fields, expected {len(SOLVENCY_INDEX_TYPE)}")
    return {f["name"]: int(v) for f, v in zip(SOLVENCY_INDEX_TYPE, values)}


def solvency_index_from(value) -> tuple:
    """A struct tuple from a tuple/list or a ``{field: int}`` dict (e.g. read back from JSON or an event)."""
    if isinstance(value, Mapping):
        return tuple(int(value[f["name"]]) for f in SOLVENCY_INDEX_TYPE)
    return tuple(int(v) for v in value)


def solvency_typed_data(domain: Domain, values: Sequence[int]) -> dict:
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "SolvencyIndex": SOLVENCY_INDEX_TYPE},
        "primaryType": "SolvencyIndex",
        "domain": domain.as_dict(),
        "message": solvency_index_dict(values),
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


# --------------------------------------------------------------------------------------------------- digests


def signable(typed: dict) -> SignableMessage:
    return encode_typed_data(full_message=typed)


def digest(typed: dict) -> bytes:
    """The 32-byte EIP-712 digest: ``keccak(0x19 ‖ 0x01 ‖ domainSeparator ‖ structHash)`` (EIP-191 version 1)."""
    m = signable(typed)
    return keccak(b"\x19" + m.version + m.header + m.body)


def struct_hash(typed: dict) -> bytes:
    """The EIP-712 struct hash of the message (what the contract's ``hashTypedData`` takes)."""
    return bytes(signable(typed).body)






def combine_signatures(signatures: Mapping[str, bytes]) -> bytes:
    """Concatenate signatures gathered from peers (keyed by signer address) in ascending signer order."""
    return b"".join(sig for _, sig in sorted(signatures.items(), key=lambda kv: int(kv[0], 16)))




def malleate(signature: bytes) -> bytes:
    """The high-s twin of a signature (s' = n - s, v flipped): valid for ecrecover, rejected by the contracts."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


#: a domain for struct hashes (a struct hash does not depend on the domain)
_ANY_DOMAIN = Domain(1, "0x" + "00" * 20)


def margin_root_struct_hash(root: bytes, inputs_hash: bytes, sequence: int, timestamp: int, leaf_count: int,
                            solvency_hash: bytes) -> bytes:
    """EIP-712 struct hash of ``MarginRoot`` (what the contract's ``hashTypedData`` takes)."""
    return struct_hash(margin_root_typed_data(_ANY_DOMAIN, root, MarginRootHeader(inputs_hash, sequence, timestamp,
                                                                                  leaf_count, solvency_hash)))


def solvency_struct_hash(values: Sequence[int]) -> bytes:
    """EIP-712 struct hash of a ``SolvencyIndex`` struct tuple (the ``solvencyHash`` a ``MarginRoot`` signs)."""
    return struct_hash(solvency_typed_data(_ANY_DOMAIN, values))


def prices_struct_hash(assets: Sequence[str], prices: Sequence[int], sequence: int, timestamp: int) -> bytes:
    """EIP-712 struct hash of ``Prices``."""
    return struct_hash(prices_typed_data(_ANY_DOMAIN, assets, prices, sequence, timestamp))

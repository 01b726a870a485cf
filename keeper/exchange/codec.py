"""EIP-712 digests of the three attested messages (margin root, prices, settlement) from JSON."""
from __future__ import annotations

from typing import Any, Mapping

from eth_utils import is_address, to_checksum_address

from keeper.codec import eip712 as _eip712
from keeper.exchange.book import hex_to_bytes
from keeper.ops import signing

# ------------------------------------------------------------------------------------------------------------
# EIP-712 digests of the three attested messages (docs/contracts.md)
# ------------------------------------------------------------------------------------------------------------
TYPES = {  # the type strings are keeper/codec/eip712.py's (docs/contracts.md)
    "margin": ("MarginRoot", _eip712.MARGIN_ROOT_TYPE),
    "prices": ("Prices", _eip712.PRICES_TYPE),
    "settlement": ("SettlementPrices", _eip712.SETTLEMENT_PRICES_TYPE),
}


def _typed_value(typ: str, value: Any) -> Any:
    if typ == "bytes32":
        b = value if isinstance(value, (bytes, bytearray)) else hex_to_bytes(value)
        if len(b) != 32:
            raise ValueError(f"bytes32 value has {len(b)} bytes")
        return bytes(b)
    if typ == "address":
        if not is_address(value):
            raise ValueError(f"not an address: {value!r}")
        return to_checksum_address(value)
    if typ.endswith("[]"):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{typ} value must be a list")
        return [_typed_value(typ[:-2], v) for v in value]
    if typ.startswith(("uint", "int")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{typ} value must be an integer, got {value!r}")
        bits = int(typ.lstrip("uint") or 256)
        lo, hi = (0, 2**bits - 1) if typ.startswith("uint") else (-(2**(bits - 1)), 2**(bits - 1) - 1)
        if not lo <= value <= hi:
            raise ValueError(f"{value} out of range for {typ}")
        return value
    raise ValueError(f"unsupported type {typ}")


class TypedDataCodec:
    """EIP-712 digests with domain ``("Backstop", "1", chainId, Clearinghouse)`` and the exact type strings of
    ``docs/contracts.md``, through eth-account's ``encode_typed_data``. ``keeper/codec/eip712.py`` (the contracts side)
    builds the same; the integration tests compare both with the contract's ``hashTypedData``."""

    def __init__(self, chain_id: int, verifying_contract: str, name: str = "Backstop", version: str = "1") -> None:
        self.domain = _eip712.Domain(int(chain_id), verifying_contract, name, version).as_dict()

    def typed_data(self, kind: str, message: Mapping[str, Any]) -> dict:
        """The full EIP-712 structure (``domain``, ``types``, ``primaryType``, ``message``) for a message."""
        if kind not in TYPES:
            raise ValueError(f"unknown kind {kind!r}")
        primary, fields = TYPES[kind]
        extra = set(message) - {f["name"] for f in fields}
        if extra:
            raise ValueError(f"unexpected fields {sorted(extra)}")
        missing = [f["name"] for f in fields if f["name"] not in message]
        if missing:  # e.g. a margin root without its solvencyHash: never signed as zero
            raise ValueError(f"missing fields {missing}")
        msg = {f["name"]: _typed_value(f["type"], message[f["name"]]) for f in fields}
        if kind != "margin" and len(msg[fields[0]["name"]]) != len(msg["prices"]):
            raise ValueError("assets and prices differ in length")
        return {"types": {"EIP712Domain": _eip712.EIP712_DOMAIN_TYPE, primary: fields},
                "domain": self.domain, "primaryType": primary, "message": msg}

    def digest(self, kind: str, message: Mapping[str, Any]) -> bytes:
        """The 32-byte EIP-712 digest of a message (:func:`keeper.codec.eip712.digest`)."""
        return _eip712.digest(self.typed_data(kind, message))

    def sign(self, kind: str, message: Mapping[str, Any], account) -> bytes:
        """This keeper's 65-byte signature of a message (:func:`keeper.ops.signing.sign`)."""
        return signing.sign(self.typed_data(kind, message), account.key)

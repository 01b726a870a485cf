"""Revert decoding: the custom errors of a contract ABI by 4-byte selector, and the error (name and arguments)
inside a web3 exception, decoded with them. The one place that turns a revert into words (the transaction
sender's messages, the liquidator's lost-race test)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector

_HEX = re.compile(r"0x[0-9a-fA-F]{8,}")


def abi_type(param: dict) -> str:
    """The canonical type of one ABI parameter, tuples spelt out (``(address,uint256)[]``)."""
    if param["type"].startswith("tuple"):
        return "(" + ",".join(abi_type(c) for c in param["components"]) + ")" + param["type"][5:]
    return param["type"]


@dataclass(frozen=True)
class CustomError:
    """A decoded custom error: its name and its arguments (``()`` when the data held only the selector)."""

    name: str
    args: tuple = ()

    def __str__(self) -> str:
        shown = ", ".join(("0x" + a.hex()) if isinstance(a, bytes) else str(a) for a in self.args)
        return f"{self.name}({shown})"


def error_table(*abis: list) -> dict[str, tuple[str, list[str]]]:
    """4-byte selector (lower-case 0x hex) -> ``(name, argument types)`` of every custom error in ``abis``."""
    out: dict[str, tuple[str, list[str]]] = {}
    for abi in abis:
        for item in abi or ():
            if item.get("type") == "error":
                types = [abi_type(i) for i in item.get("inputs", [])]
                sel = "0x" + function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})").hex()
                out.setdefault(sel, (item["name"], types))
    return out


def revert_data_candidates(exc: BaseException) -> list[str]:
    """Hex strings in a web3 revert exception that may be revert data: ``exc.data`` first, then every ``0x…``
    string in its arguments (``ContractCustomError`` carries the data in both; nodes' messages quote it)."""
    data = getattr(exc, "data", None)
    out = [data] if isinstance(data, str) and data.startswith("0x") else []
    text = " ".join(str(a) for a in getattr(exc, "args", ())) + " " + str(data or "")
    out += [m.group(0) for m in _HEX.finditer(text)]
    return out


class RevertDecoder:
    """Decodes the custom errors of one or more ABIs out of web3 exceptions."""

    def __init__(self, *abis: list) -> None:
        self.table = error_table(*abis)
        self.names = {name for name, _types in self.table.values()}

    def decode(self, exc: BaseException) -> Optional[CustomError]:
        """The custom error inside ``exc`` (arguments decoded when the data holds them), else ``None``; a
        node message that names a known error without its data gives the name alone."""
        for data in revert_data_candidates(exc):
            hit = self.table.get(data[:10].lower())
            if hit is None:
                continue
            name, types = hit
            try:
                args = tuple(decode(types, bytes.fromhex(data[10:]))) if len(data) > 10 else ()
            except Exception:  # noqa: BLE001 - a truncated quote of the data: the name is still right
                args = ()
            return CustomError(name, args)
        text = " ".join(str(a) for a in getattr(exc, "args", ()))
        for name in sorted(self.names):
            if re.search(rf"\b{re.escape(name)}\b", text):
                return CustomError(name)
        return None

    def name(self, exc: BaseException) -> str:
        """Name of the custom error inside ``exc`` ("" when none is recognised)."""
        got = self.decode(exc)
        return got.name if got is not None else ""

    def describe(self, exc: BaseException, limit: int = 200) -> str:
        """One line: ``Name(arg, ...)`` of the custom error inside ``exc``, else the exception's message."""
        got = self.decode(exc)
        return str(got) if got is not None else str(exc)[:limit]

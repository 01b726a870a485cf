"""Live collateral haircuts on chain (issue 16 item 4): read what is listed and the keepers' price history, and apply
a recommendation (keeper/quant/haircuts.py ``recommend_haircuts``) the way the contracts allow.

``setCollateralParams`` lets the risk admin only tighten (raise a haircut: it acts at once; a lower one reverts
``CH_OnlyTightening``); the owner, a ``BackstopTimelock`` (OpenZeppelin ``TimelockController``) in every deployment,
may lower it, after the timelock's delay. So a raise is sent by the risk-admin key, and a lowering is scheduled on the
timelock by a proposer key (``schedule(target, 0, data, 0, salt, minDelay)``) and executed by anyone once ready. The
salt is derived from (asset, haircut, cap), so running :func:`apply_recommendation` again finds the same operation:
pending (nothing to do, its ETA is reported), ready (executed now) or done.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from keeper.errors import TxFailed
from keeper.quant.haircuts import CollateralMarket, HaircutRecommendation, daily_closes
from keeper.units import WAD

ZERO32 = b"\x00" * 32

#: The slice of ``BackstopTimelock``'s ABI used here (OpenZeppelin TimelockController 5).
TIMELOCK_ABI = [
    {"type": "function", "name": "getMinDelay", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "hashOperation", "stateMutability": "pure",
     "inputs": [{"name": "target", "type": "address"}, {"name": "value", "type": "uint256"},
                {"name": "data", "type": "bytes"}, {"name": "predecessor", "type": "bytes32"},
                {"name": "salt", "type": "bytes32"}],
     "outputs": [{"name": "", "type": "bytes32"}]},
    {"type": "function", "name": "getTimestamp", "stateMutability": "view",
     "inputs": [{"name": "id", "type": "bytes32"}], "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "isOperationReady", "stateMutability": "view",
     "inputs": [{"name": "id", "type": "bytes32"}], "outputs": [{"name": "", "type": "bool"}]},
    {"type": "function", "name": "isOperationDone", "stateMutability": "view",
     "inputs": [{"name": "id", "type": "bytes32"}], "outputs": [{"name": "", "type": "bool"}]},
    {"type": "function", "name": "schedule", "stateMutability": "nonpayable",
     "inputs": [{"name": "target", "type": "address"}, {"name": "value", "type": "uint256"},
                {"name": "data", "type": "bytes"}, {"name": "predecessor", "type": "bytes32"},
                {"name": "salt", "type": "bytes32"}, {"name": "delay", "type": "uint256"}], "outputs": []},
    {"type": "function", "name": "execute", "stateMutability": "payable",
     "inputs": [{"name": "target", "type": "address"}, {"name": "value", "type": "uint256"},
                {"name": "payload", "type": "bytes"}, {"name": "predecessor", "type": "bytes32"},
                {"name": "salt", "type": "bytes32"}], "outputs": []},
]


@dataclass(frozen=True)
class ListedAsset:
    """A listed collateral asset as stored on chain: haircut [WAD], deposit cap [token base units], decimals."""

    symbol: str
    address: str
    decimals: int
    haircut_wad: int
    cap: int


@dataclass(frozen=True)
class Applied:
    """What :func:`apply_recommendation` did for one asset: ``"raised"``, ``"scheduled"``, ``"pending"`` (already
    scheduled, not ready), ``"executed"`` (a ready lowering run now), ``"kept"``; ``eta`` the unix time a scheduled
    lowering becomes executable; ``operation`` its timelock id."""

    symbol: str
    outcome: str
    listed_wad: int
    target_wad: int
    eta: int = 0
    operation: str = ""


def read_listed(ch: Any, assets: dict[str, str]) -> list[ListedAsset]:
    """``assetConfig`` of each ``symbol -> address`` (all must be listed; raises ValueError naming one that is not)."""
    out = []
    for sym, addr in assets.items():
        listed, decimals, haircut, cap = ch.functions.assetConfig(to_checksum_address(addr)).call()
        if not listed:
            raise ValueError(f"{sym} ({addr}) is not listed collateral")
        out.append(ListedAsset(sym, to_checksum_address(addr), int(decimals), int(haircut), int(cap)))
    return out


def price_history(w3: Any, ch: Any, asset: str, from_block: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The keepers' attested prices of ``asset`` (``PricesPosted`` events since ``from_block``): ``(timestamps,
    prices)`` with prices as floats in quote units per whole asset unit."""
    asset = to_checksum_address(asset)
    ts, px = [], []
    for ev in ch.events.PricesPosted().get_logs(from_block=from_block, to_block="latest"):
        for a, p in zip(ev["args"]["assets"], ev["args"]["prices"]):
            if to_checksum_address(a) == asset:
                ts.append(int(ev["args"]["timestamp"]))
                px.append(int(p) / WAD)
    return np.asarray(ts, dtype=np.int64), np.asarray(px, dtype=np.float64)


def market_from_chain(w3: Any, ch: Any, asset: ListedAsset, depth: float, from_block: int = 0,
                      closes: Optional[np.ndarray] = None) -> CollateralMarket:
    """The :class:`CollateralMarket` of a listed asset: its daily closes (given, or the last attested price of each
    UTC day from :func:`price_history`), its cap in whole units as the size, ``depth`` whole units per day."""
    if closes is None:
        _, closes = daily_closes(*price_history(w3, ch, asset.address, from_block))
    return CollateralMarket(asset.symbol, np.asarray(closes, dtype=np.float64), asset.cap / 10**asset.decimals,
                            float(depth), asset.haircut_wad)


def timelock_of(w3: Any, ch: Any) -> Any:
    """The clearinghouse's owner as a timelock contract; raises ValueError if the owner is not one (a deployment
    still owned by a key: lower haircuts with that key's own ``setCollateralParams``)."""
    owner = ch.functions.owner().call()
    tl = w3.eth.contract(address=owner, abi=TIMELOCK_ABI)
    try:
        tl.functions.getMinDelay().call()
    except Exception:  # noqa: BLE001 - no such function at that address
        raise ValueError(f"the clearinghouse owner {owner} is not a timelock") from None
    return tl


def lowering_call(ch: Any, asset: ListedAsset, target_wad: int) -> tuple[bytes, bytes]:
    """``(calldata, salt)`` of the timelock operation that sets ``asset``'s haircut to ``target_wad`` (cap kept)."""
    data = bytes.fromhex(ch.encode_abi("setCollateralParams", [asset.address, int(target_wad), int(asset.cap)])[2:])
    salt = keccak(b"backstop-haircut" + abi_encode(["address", "uint64", "uint128"],
                                                   [asset.address, int(target_wad), int(asset.cap)]))
    return data, salt


def apply_recommendation(w3: Any, ch: Any, asset: ListedAsset, rec: HaircutRecommendation, risk_admin: Any,
                         proposer: Optional[Any] = None) -> Applied:
    """Apply one recommendation: a higher haircut at once through ``risk_admin`` (a :class:`~keeper.chain.sender.
    Sender`; the value is read back), a lower one through the timelock (scheduled by ``proposer`` with the
    timelock's minimum delay; when the same operation is already scheduled and ready, executed now). Raises
    :class:`TxFailed` naming the custom error if the chain refuses."""
    target = int(rec.recommended_wad)
    if target == asset.haircut_wad:
        return Applied(asset.symbol, "kept", asset.haircut_wad, target)
    if target > asset.haircut_wad:
        risk_admin.call(ch.functions.setCollateralParams(asset.address, target, asset.cap),
                        f"setCollateralParams {asset.symbol}")
        now = int(ch.functions.assetConfig(asset.address).call()[2])
        if now != target:
            raise TxFailed(f"{asset.symbol}: haircut reads {now} after the raise to {target}")
        return Applied(asset.symbol, "raised", asset.haircut_wad, target)
    tl = timelock_of(w3, ch)
    data, salt = lowering_call(ch, asset, target)
    op = tl.functions.hashOperation(ch.address, 0, data, ZERO32, salt).call()
    op_hex = "0x" + bytes(op).hex()
    if tl.functions.isOperationDone(op).call():
        return Applied(asset.symbol, "kept", asset.haircut_wad, target, operation=op_hex)
    if tl.functions.isOperationReady(op).call():
        (proposer or risk_admin).call(tl.functions.execute(ch.address, 0, data, ZERO32, salt),
                                      f"timelock execute haircut {asset.symbol}")
        return Applied(asset.symbol, "executed", asset.haircut_wad, target, operation=op_hex)
    eta = int(tl.functions.getTimestamp(op).call())
    if eta > 1:
        return Applied(asset.symbol, "pending", asset.haircut_wad, target, eta=eta, operation=op_hex)
    delay = int(tl.functions.getMinDelay().call())
    (proposer or risk_admin).call(tl.functions.schedule(ch.address, 0, data, ZERO32, salt, delay),
                                  f"timelock schedule haircut {asset.symbol}")
    return Applied(asset.symbol, "scheduled", asset.haircut_wad, target,
                   eta=int(tl.functions.getTimestamp(op).call()), operation=op_hex)


def apply_all(w3: Any, ch: Any, listed: Sequence[ListedAsset], recs: Sequence[HaircutRecommendation],
              risk_admin: Any, proposer: Optional[Any] = None) -> list[Applied]:
    """:func:`apply_recommendation` for each (asset, recommendation) pair, in order."""
    return [apply_recommendation(w3, ch, a, r, risk_admin, proposer) for a, r in zip(listed, recs)]

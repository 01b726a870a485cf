"""The one transaction sender: signs locally with one key, tracks the nonce, prices gas, estimates the gas limit,
sends, awaits the receipt and raises :class:`~keeper.errors.TxFailed` (naming the custom error) when the
transaction would revert or reverted. Used by deployment, the keeper, the liquidator, the scenario and verify."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional

from eth_account import Account
from eth_utils import to_checksum_address

from keeper.chain.client import CONNECTION_ERRORS
from keeper.chain.revert import RevertDecoder
from keeper.errors import TxFailed

GWEI = 10**9


@dataclass(frozen=True)
class Fees:
    max_fee: int
    priority_fee: int


def eip1559_fees(base_fee: int, priority_fee: int, max_fee_cap: int) -> Fees:
    """``maxFeePerGas = min(2 * baseFee + priority, cap)``; the priority fee never exceeds the max fee."""
    max_fee = min(2 * base_fee + priority_fee, max_fee_cap)
    if max_fee < base_fee:
        raise TxFailed(f"base fee {base_fee} wei exceeds the configured cap {max_fee_cap} wei")
    return Fees(max_fee, min(priority_fee, max_fee))


class Sender:
    """Sends transactions signed locally with one key (hex private key or an eth_account account).

    Nonces are tracked locally (read from the chain's pending count on first use and again after any failed
    send; a nonce conflict, e.g. the same key used by another process, is retried with the re-read nonce).
    Fees: without ``settings`` a legacy ``gasPrice`` at the node's price; with ``settings`` (a
    :class:`keeper.ops.config.ChainSettings`: ``max_fee_gwei``, ``priority_fee_gwei``, ``gas_limit_multiplier``,
    ``receipt_timeout_s``) EIP-1559 fields from the latest base fee, or a legacy ``gasPrice`` capped at
    ``max_fee_gwei`` on a chain without base fee (Ganache on istanbul). Gas limit: the estimate times the
    multiplier plus ``gas_headroom``, at most ``gas_limit`` (never below the estimate). ``metrics`` (with a
    ``rpc_errors`` counter) and ``log`` (a structlog-style logger) are optional."""

    def __init__(self, w3, key: Any, gas_limit: int = 12_000_000, *, settings: Any = None,
                 chain_id: Optional[int] = None, metrics: Any = None, log: Any = None,
                 gas_headroom: int = 50_000) -> None:
        self.w3 = w3
        self.account = Account.from_key(key) if isinstance(key, (str, bytes)) else key
        self.address = self.account.address
        self.gas_limit = gas_limit
        self.s = settings
        self.gas_multiplier = float(settings.gas_limit_multiplier) if settings is not None else 1.3
        self.receipt_timeout = float(settings.receipt_timeout_s) if settings is not None else 120.0
        self.gas_headroom = gas_headroom
        self.metrics = metrics
        self.log = log
        self._chain_id = chain_id
        self._nonce: Optional[int] = None
        self._lock = threading.RLock()

    # -- parts ----------------------------------------------------------------------------------------------
    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    def reset_nonce(self) -> None:
        """Forget the local nonce: the next send re-reads it from the chain."""
        with self._lock:
            self._nonce = None

    def fee_fields(self) -> dict:
        """Fee fields of the next transaction (see the class docstring)."""
        if self.s is None:
            return {"gasPrice": max(int(self.w3.eth.gas_price), 1)}
        cap = int(self.s.max_fee_gwei * GWEI)
        base_fee = self.w3.eth.get_block("latest").get("baseFeePerGas")
        if base_fee is None:
            return {"gasPrice": min(max(int(self.w3.eth.gas_price), 1), cap)}
        fees = eip1559_fees(int(base_fee), int(self.s.priority_fee_gwei * GWEI), cap)
        return {"maxFeePerGas": fees.max_fee, "maxPriorityFeePerGas": fees.priority_fee, "type": 2}

    def gas_for(self, estimate: int) -> int:
        return max(min(int(estimate * self.gas_multiplier) + self.gas_headroom, self.gas_limit), int(estimate))

    def _warn(self, event: str, **fields: Any) -> None:
        if self.log is not None:
            self.log.warning(event, sender=self.address, **fields)

    def _rpc_failed(self, what: str, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.rpc_errors.inc()
        self._warn("tx_rpc_error", what=what, error=str(exc)[:200])

    # -- sending --------------------------------------------------------------------------------------------
    def send(self, tx: dict, wait: bool = True, what: str = "transaction", abi: Optional[list] = None):
        """Fill sender, chain id, fees, gas and nonce of ``tx``, sign and send it. With ``wait`` return the receipt
        (raise :class:`TxFailed` when it reverted), else the transaction hash. A transaction that would revert
        raises :class:`TxFailed` before anything is sent (the custom error decoded with ``abi`` when given);
        connection errors propagate as they are."""
        tx = dict(tx)
        tx.setdefault("from", self.address)
        tx.setdefault("value", 0)
        tx.setdefault("chainId", self.chain_id)
        if "gasPrice" not in tx and "maxFeePerGas" not in tx:
            tx.update(self.fee_fields())
        if "to" in tx and tx["to"]:
            tx["to"] = to_checksum_address(tx["to"])
        if "gas" not in tx:
            try:
                tx["gas"] = self.gas_for(self.w3.eth.estimate_gas({k: v for k, v in tx.items() if k != "chainId"}))
            except CONNECTION_ERRORS as e:
                self._rpc_failed(what, e)
                raise
            except Exception as e:  # noqa: BLE001 - the node's revert reason is the useful part
                raise TxFailed(f"{what} would revert: {RevertDecoder(abi or []).describe(e)}") from None
        with self._lock:
            for attempt in range(3):
                if self._nonce is None:
                    self._nonce = self.w3.eth.get_transaction_count(self.address, "pending")
                tx["nonce"] = self._nonce
                signed = self.account.sign_transaction(tx)
                try:
                    h = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                except Exception as e:  # noqa: BLE001
                    self._nonce = None  # re-read: another sender may have used this key's nonce (a shared node)
                    if isinstance(e, CONNECTION_ERRORS):
                        self._rpc_failed(what, e)
                    if "nonce" not in str(e).lower() or attempt == 2:
                        raise
                    self._warn("nonce_conflict", what=what, attempt=attempt + 1, error=str(e)[:200])
                    continue
                self._nonce += 1
                break
        if not wait:
            return h
        rcpt = self.w3.eth.wait_for_transaction_receipt(h, timeout=self.receipt_timeout, poll_latency=0.05)
        if int(rcpt["status"]) != 1:
            txh = "0x" + bytes(h).hex()
            self._warn("tx_reverted", what=what, tx=txh, block=int(rcpt["blockNumber"]))
            raise TxFailed(f"{what} reverted in block {int(rcpt['blockNumber'])} (tx {txh})")
        return rcpt

    def call(self, fn, what: str = "", **tx):
        """Send a contract function call (``contract.functions.f(...)``; ``tx`` fields such as ``value`` or
        ``gas`` as given); returns the receipt. A revert raises :class:`TxFailed` naming the custom error and
        its arguments."""
        what = what or fn.fn_name
        abi = fn.contract_abi
        tx.setdefault("from", self.address)
        if "gas" not in tx:
            try:
                est = fn.estimate_gas({"from": tx["from"], "value": tx.get("value", 0)})
            except CONNECTION_ERRORS as e:
                self._rpc_failed(what, e)
                raise
            except Exception as e:  # noqa: BLE001 - estimate_gas reverted: say which error
                raise TxFailed(f"{what} would revert: {RevertDecoder(abi).describe(e)}") from None
            tx["gas"] = self.gas_for(est)
        if "gasPrice" not in tx and "maxFeePerGas" not in tx:
            tx.update(self.fee_fields())
        tx.setdefault("chainId", self.chain_id)
        built = fn.build_transaction(tx)
        return self.send(built, what=what, abi=abi)

    def deploy(self, art, *args):
        """Deploy artefact ``art`` (``.name``, ``.abi``, ``.bytecode``) with constructor ``args``; returns a web3
        contract at the new address."""
        c = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        tx = c.constructor(*args).build_transaction({"from": self.address, "gas": self.gas_limit,
                                                     "chainId": self.chain_id, **self.fee_fields()})
        rcpt = self.send(tx, what=f"deploy {art.name}", abi=art.abi)
        return self.w3.eth.contract(address=rcpt["contractAddress"], abi=art.abi)

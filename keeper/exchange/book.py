"""Signature exchange between keepers: the signature book, the HTTP API each keeper serves, the peer client, and
the submitter rotation.

HTTP API (JSON unless noted; see ``docs/keeper.md``):

==========================================  ===================================================================
``GET  /health``                            ``{"status": "ok", "address", "block"}``
``GET  /status``                            the keeper's view: block, spot, surface fit, near-margin accounts, peers
``GET  /signatures/<kind>/<sequence>``      every message of that kind and sequence with the signatures held
``POST /signatures``                        ``{"kind", "message", "signature"}``: stored only if it recovers to a
                                            registered keeper over the typed-data digest of ``message``
``GET  /attestation/<sequence>``            header, root and the leaf list of the keeper's own attestation
``GET  /margin/<account>[?sequence=N]``     the account's leaf, header, values and Merkle proof in the latest
                                            root that is on chain (else the latest root)
``GET  /archive/<inputsHash>``              the canonical inputs file (``application/json`` bytes)
==========================================  ===================================================================

``kind`` is ``margin`` (``MarginRoot``), ``prices`` (``Prices``) or ``settlement`` (``SettlementPrices``), the
typed data of ``docs/contracts.md``. Messages travel as JSON with ``bytes32``/``address`` as ``0x`` hex and
integers as JSON integers.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Protocol

from eth_utils import to_checksum_address

from keeper.errors import SignatureRejected
from keeper.ops.signing import recover_digest

KINDS = ("margin", "prices", "settlement")
MAX_BODY = 64 * 1024


class Codec(Protocol):
    """Turns a message of a kind into its EIP-712 digest (the thing keepers sign and the contract verifies)."""

    def digest(self, kind: str, message: Mapping[str, Any]) -> bytes: ...


def _seq_of(kind: str, message: Mapping[str, Any]) -> int:
    key = "expiry" if kind == "settlement" else "sequence"
    return int(message[key])


@dataclass
class _Entry:
    message: dict
    sigs: dict = field(default_factory=dict)  # signer -> signature bytes


class SignatureBook:
    """Signatures held per (kind, sequence) and digest; thread-safe. Only registered keepers' signatures over the
    recomputed digest of the message they came with are stored."""

    def __init__(self, codec: Codec, keepers: Iterable[str], keep: int = 256) -> None:
        self.codec = codec
        self.keepers = {to_checksum_address(k) for k in keepers}
        self.keep = keep
        self._lock = threading.Lock()
        self._book: dict[tuple[str, int], dict[bytes, _Entry]] = {}

    def set_keepers(self, keepers: Iterable[str]) -> None:
        """Replace the registered keeper set (e.g. after a ``KeeperAdded``/``KeeperRemoved`` event)."""
        with self._lock:
            self.keepers = {to_checksum_address(k) for k in keepers}

    def add(self, kind: str, message: Mapping[str, Any], signature: bytes) -> str:
        """Verify and store; returns the signer. Raises :class:`SignatureRejected`."""
        if kind not in KINDS:
            raise SignatureRejected("bad_kind", f"unknown kind {kind!r}")
        try:
            digest = self.codec.digest(kind, message)
            seq = _seq_of(kind, message)
        except Exception as exc:
            raise SignatureRejected("bad_message", str(exc)) from None
        if len(signature) != 65:
            raise SignatureRejected("bad_signature", f"signature is {len(signature)} bytes, expected 65")
        try:
            signer = recover_digest(digest, signature)
        except Exception as exc:
            raise SignatureRejected("bad_signature", str(exc)) from None
        if signer not in self.keepers:
            raise SignatureRejected("not_a_keeper", f"{signer} is not a registered keeper")
        with self._lock:
            slot = self._book.setdefault((kind, seq), {})
            entry = slot.setdefault(digest, _Entry(dict(message)))
            entry.sigs[signer] = bytes(signature)
            self._prune(kind)
        return signer

    def _prune(self, kind: str) -> None:
        seqs = sorted(s for (k, s) in self._book if k == kind)
        for s in seqs[:-self.keep] if len(seqs) > self.keep else []:
            del self._book[(kind, s)]

    def entries(self, kind: str, sequence: int) -> list[tuple[bytes, dict, dict]]:
        """``[(digest, message, {signer: signature})]`` held for (kind, sequence)."""
        with self._lock:
            slot = self._book.get((kind, sequence), {})
            return [(d, dict(e.message), dict(e.sigs)) for d, e in slot.items()]

    def count(self, kind: str, sequence: int, digest: bytes) -> int:
        """Signatures held over ``digest``."""
        with self._lock:
            e = self._book.get((kind, sequence), {}).get(digest)
            return len(e.sigs) if e else 0

    def quorum(self, kind: str, sequence: int, digest: bytes, m: int) -> Optional[bytes]:
        """The concatenated signatures of ``m`` keepers over ``digest``, signers strictly ascending (as the contract
        requires), or ``None`` while fewer than ``m`` are held."""
        with self._lock:
            e = self._book.get((kind, sequence), {}).get(digest)
            if e is None or len(e.sigs) < m:
                return None
            signers = sorted(e.sigs, key=lambda a: int(a, 16))[:m]
            return b"".join(e.sigs[s] for s in signers)

    def equivocators(self, kind: str, sequence: int) -> set[str]:
        """Keepers that signed two different messages of the same kind and sequence."""
        seen: dict[str, int] = {}
        for _d, _m, sigs in self.entries(kind, sequence):
            for s in sigs:
                seen[s] = seen.get(s, 0) + 1
        return {s for s, n in seen.items() if n > 1}


# ------------------------------------------------------------------------------------------------------------
# Submitter rotation
# ------------------------------------------------------------------------------------------------------------
def rotation_order(sequence: int, keepers: Iterable[str]) -> list[str]:
    """Keepers in submission order for ``sequence``: sorted by address, starting at index ``sequence % n``."""
    ks = sorted({to_checksum_address(k) for k in keepers}, key=lambda a: int(a, 16))
    if not ks:
        return []
    i = sequence % len(ks)
    return ks[i:] + ks[:i]


def submit_delay_blocks(me: str, sequence: int, keepers: Iterable[str], up: Iterable[str],
                        takeover_blocks: int) -> int:
    """Blocks after ``sequence`` that keeper ``me`` waits before submitting: its position in the rotation among
    the keepers currently up (``me`` always counts as up) times ``takeover_blocks``. The designated submitter waits
    0; when it is down the next one up takes its place at once, and when it is silently stuck, the next takes over
    after ``takeover_blocks``."""
    me = to_checksum_address(me)
    alive = {to_checksum_address(u) for u in up} | {me}
    order = [k for k in rotation_order(sequence, keepers) if k in alive]
    if me not in order:
        raise ValueError(f"{me} is not a registered keeper")
    return order.index(me) * takeover_blocks


def should_submit(me: str, sequence: int, current_block: int, keepers: Iterable[str], up: Iterable[str],
                  takeover_blocks: int) -> bool:
    """True when ``me`` should submit the attestation of ``sequence`` at ``current_block``."""
    return current_block - sequence >= submit_delay_blocks(me, sequence, keepers, up, takeover_blocks)


# ------------------------------------------------------------------------------------------------------------
# JSON helpers
# ------------------------------------------------------------------------------------------------------------
def to_jsonable(value: Any) -> Any:
    """bytes -> 0x hex, tuples -> lists, recursively."""
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def hex_to_bytes(text: Any) -> bytes:
    if not isinstance(text, str) or not text.startswith("0x"):
        raise ValueError("expected 0x hex")
    return bytes.fromhex(text[2:])



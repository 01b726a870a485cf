"""What this keeper signed: each message it may have to submit (:class:`Pending`) and each block's attestation as it
computed it, shared by the cycle (which signs), the exchange round (which pushes them to the peers) and the
submitter (which sends them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from keeper.attest.inputs import Attestation


@dataclass
class Pending:
    """A message this keeper signed and may have to submit."""

    kind: str
    sequence: int  # block number the message was built at
    message: dict
    digest: bytes
    signature: bytes
    payload: dict = field(default_factory=dict)
    posted_to: set = field(default_factory=set)
    done: bool = False


class SignedMessages:
    """The keeper's signed messages by ``(kind, sequence)`` and its attestations by block. ``sign`` enters a
    signature in the signature book too; a message older than the rotation's window (``keepers() *
    takeover_blocks + 3`` blocks) is forgotten."""

    def __init__(self, codec, account, book, takeover_blocks: int, keepers: Callable[[], list]) -> None:
        self.codec = codec
        self.account = account
        self.book = book
        self.takeover_blocks = takeover_blocks
        self.keepers = keepers
        self.pending: dict[tuple[str, int], Pending] = {}
        self.attestations: dict[int, Attestation] = {}

    def sign(self, kind: str, seq: int, message: dict, payload: dict) -> Pending:
        digest = self.codec.digest(kind, message)
        sig = self.codec.sign(kind, message, self.account)
        self.book.add(kind, message, sig)
        p = Pending(kind, seq, message, digest, sig, payload)
        self.pending[(kind, seq)] = p
        window = len(self.keepers()) * self.takeover_blocks + 3
        for k in [k for k in self.pending if k[0] == kind and k[1] < seq - window]:
            del self.pending[k]
        return p

    def keep_attestation(self, att: Attestation, keep_blocks: int) -> None:
        """Hold ``att`` (by its block), forgetting those more than ``keep_blocks`` older."""
        self.attestations[att.sequence] = att
        for s in [s for s in self.attestations if s < att.sequence - keep_blocks]:
            del self.attestations[s]

    def drop_from(self, block: int) -> None:
        """Forget everything built at ``block`` or later (a reorg replaced those blocks)."""
        for k in [k for k in self.pending if k[1] >= block]:
            del self.pending[k]
        for s in [s for s in self.attestations if s >= block]:
            del self.attestations[s]

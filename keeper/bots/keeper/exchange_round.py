"""The keepers' signature exchange, one round per tick: every message this keeper signed pushed to each peer, the
peers' signatures pulled and verified before they are stored, who is up noted, and a peer that signed another root
reported with the leaves that differ."""
from __future__ import annotations

from keeper.bots.keeper.messages import Pending, SignedMessages
from keeper.errors import SignatureRejected
from keeper.exchange.client import diff_leaves


class ExchangeRound:
    """One keeper's side of the exchange with its ``peers`` (:class:`keeper.exchange.client.PeerClient`);
    ``up``: the peers' addresses that answered the last round."""

    def __init__(self, peers, book, messages: SignedMessages, view, metrics, log) -> None:
        self.peers = peers
        self.book = book
        self.messages = messages
        self.view = view
        self.metrics = metrics
        self.log = log
        self.up: set[str] = set()
        self._reported_disagreement: set[tuple[str, int]] = set()

    def run(self, head_number: int) -> None:
        """Push our signatures to every peer, pull theirs (verified before storing), note who is up, and log
        which leaves differ when a peer signed another root."""

        up = set()
        live = [p for p in self.messages.pending.values() if not p.done]
        for peer in self.peers:
            ok = True
            for p in live:
                if peer.name not in p.posted_to:
                    st = peer.post_signature(p.kind, p.message, p.signature)
                    if st is None:
                        ok = False
                        break
                    if st in (200, 201):
                        p.posted_to.add(peer.name)
                book_seq = p.message.get("expiry", p.message.get("sequence"))
                got = peer.signatures(p.kind, int(book_seq))
                if got is None:
                    ok = False
                    break
                for msg, sig, _claimed in got:
                    try:
                        self.book.add(p.kind, msg, sig)
                    except SignatureRejected as exc:
                        self.metrics.skipped_inputs.labels(reason="bad_peer_signature").inc()
                        self.log.warning("peer_signature_rejected", peer=peer.name, reason=exc.reason)
            if ok and peer.health() is not None and peer.address:
                up.add(peer.address)
        self.up = up
        self.metrics.peers_up.set(len(up))
        self.view.update_status(peers={p.name: bool(p.address in up) for p in self.peers})
        latest = max((p for p in live if p.kind == "margin"), key=lambda p: p.sequence, default=None)
        if latest is not None:
            self.metrics.signatures_held.set(self.book.count("margin", latest.sequence, latest.digest))
            self._check_disagreement(latest)

    def _check_disagreement(self, p: Pending) -> None:

        for digest, msg, sigs in self.book.entries("margin", p.sequence):
            if digest == p.digest:
                continue
            for signer in sigs:
                if (signer, p.sequence) in self._reported_disagreement:
                    continue
                self._reported_disagreement.add((signer, p.sequence))
                self.metrics.disagreements.inc()
                peer = next((x for x in self.peers if x.address == signer), None)
                theirs = peer.attestation(p.sequence) if peer is not None else None
                mine = self.messages.attestations.get(p.sequence)
                diff = diff_leaves([l.to_json() for l in mine.leaves], theirs.get("leaves", [])) \
                    if (mine is not None and theirs) else None
                self.log.warning("keepers_disagree", block=p.sequence, peer=signer, my_root=p.message["root"],
                                 their_root=msg.get("root"), leaf_diff=diff)

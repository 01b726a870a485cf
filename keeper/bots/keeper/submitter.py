"""Submission: the newest signed message of each kind that has a quorum of signatures, sent when this keeper's turn
in the submitter rotation has come and the chain does not have it yet (``postMarginRoot``, ``postMarginBatch`` with
the multiproof of the new breaches, ``postPrices``, ``postSettlementPrices``); then the liquidation auction of each
newly registered breach.
"""
from __future__ import annotations

from typing import Callable

from keeper.attest.inputs import Attestation
from keeper.bots.keeper.messages import Pending, SignedMessages
from keeper.codec.merkle import MarginLeaf
from keeper.errors import TxFailed
from keeper.exchange.book import rotation_order, should_submit

#: blocks to wait before sending settleMany again for a series (the state cache must see the Settled events first)
SETTLE_RETRY_BLOCKS = 3


class Submitter:
    """Sends what this keeper signed (``messages``) with ``sender``; ``peers_up``: the peers that answered the last
    exchange round (a keeper that did not is skipped in the rotation)."""

    def __init__(self, cfg, chain, sender, book, messages: SignedMessages, me: str, peers,
                 peers_up: Callable[[], set], metrics, log) -> None:
        self.cfg = cfg
        self.chain = chain
        self.sender = sender
        self.book = book
        self.messages = messages
        self.me = me
        self.peers = peers
        self.peers_up = peers_up
        self.metrics = metrics
        self.log = log
        self._settle_sent: dict[int, int] = {}  # series id -> block its last settleMany was sent at

    def quorum_size(self) -> int:
        return max(int(self.cfg.thresholds.quorum), int(self.chain.state.threshold or 0))

    def keepers(self) -> list[str]:
        ks = set(self.chain.state.keepers)
        return sorted(ks) if ks else sorted({self.me} | {p.address for p in self.peers if p.address})

    def submit_due(self, head_number: int) -> None:
        """Submit the newest margin attestation (and prices / settlements) that has a quorum, when this keeper's
        turn in the rotation has come and the chain does not have it yet."""
        for kind in ("margin", "prices", "settlement"):
            cands = sorted((p for p in self.messages.pending.values() if p.kind == kind and not p.done),
                           key=lambda p: p.sequence, reverse=True)
            for p in cands:
                if self._try_submit(p, head_number):
                    break

    def _try_submit(self, p: Pending, head_number: int) -> bool:

        f = self.chain.ch.functions
        if p.kind == "margin":
            att = self.messages.attestations.get(p.sequence)
            if att is None:
                p.done = True
                return False
            on_chain = int(self.chain.rpc(lambda: f.lastMarginAttestation().call())[0])
            if on_chain >= p.sequence:  # already posted (by a peer, or before a restart)
                p.done = True
                return False
            breached = [l for l in att.breached() if not self._already_breached(l)]
            if not breached and p.sequence - on_chain < self.cfg.publish.root_every_blocks:
                return False  # nothing due: no new breach and the last root on chain is recent enough
        elif p.kind == "prices":
            on_chain = int(self.chain.rpc(lambda: f.lastPriceAttestation().call())[0])
            if on_chain >= p.sequence:
                p.done = True
                return False
        else:
            unders = list(p.message["underlyings"])
            if all(int(x) for x in self.chain.raw_batch_call([("settlementPrice", (u, p.payload["expiry"]))
                                                               for u in unders])):
                p.done = True
                return False
        sigs = self.book.quorum(p.kind, int(p.message.get("expiry", p.message.get("sequence"))), p.digest,
                                self.quorum_size())
        if sigs is None:
            return False
        # live for this message: peers that answered the last poll AND signed this very digest (a dead, stuck or
        # dissenting keeper is skipped in the rotation at once)
        signed = {signer for d, _m, sigs in self.book.entries(p.kind, int(p.message.get("expiry",
                                                                                        p.message.get("sequence"))))
                  if d == p.digest for signer in sigs}
        if not should_submit(self.me, p.sequence, head_number, self.keepers(), self.peers_up() & signed,
                             self.cfg.exchange.takeover_blocks):
            return True  # someone else's turn: do not fall back to older sequences either
        try:
            if p.kind == "margin":
                call, label = self._margin_call(att, breached, sigs)
            elif p.kind == "prices":
                msg = p.message
                call, label = f.postPrices(msg["assets"], msg["prices"], msg["sequence"], msg["timestamp"], sigs), \
                    "postPrices"
            else:
                msg = p.message
                call, label = f.postSettlementPrices(msg["underlyings"], msg["prices"], msg["expiry"],
                                                     msg["timestamp"], sigs), "postSettlementPrices"
            receipt = self.sender.call(call, label)
        except TxFailed as exc:
            p.done = True
            self.metrics.submissions.labels(outcome="failed").inc()
            self.log.warning("submission_failed", kind=p.kind, sequence=p.sequence, error=str(exc)[:300])
            return False
        p.done = True
        self.metrics.submissions.labels(outcome="ok").inc()
        self.log.info("submitted", kind=p.kind, sequence=p.sequence, tx="0x" + bytes(receipt["transactionHash"]).hex(),
                      block=int(receipt["blockNumber"]),
                      breached=[l.account for l in breached] if p.kind == "margin" else None)
        if p.kind == "margin" and breached:
            self._start_auctions(breached)
        return True

    def settle_expired(self, head) -> None:
        """Settle the holders of every expired series whose settlement price is on chain (``settleMany``, at most
        ``publish.settle_batch`` accounts per transaction), so no expired position waits for its holder. One keeper
        sends per block: the first of the block's rotation order (the next block has the next keeper)."""
        pub = self.cfg.publish
        if not (pub.settlement and pub.settle_holders):
            return
        state = self.chain.state
        holders: dict[int, list[str]] = {}
        for a in state.accounts.values():
            for sid, size in a.positions.items():
                s = state.series.get(int(sid))
                if size and s is not None and s.expiry <= head.timestamp:
                    holders.setdefault(int(sid), []).append(a.account)
        due = [sid for sid in sorted(holders)
               if head.number - self._settle_sent.get(sid, -10**9) >= SETTLE_RETRY_BLOCKS]
        if not due:
            return
        order = rotation_order(head.number, self.keepers())
        if not order or order[0].lower() != self.me.lower():
            return
        f = self.chain.ch.functions
        for sid in due:
            if not state.settlement_price(state.series[sid].underlying, state.series[sid].expiry):
                continue  # no settlement price yet
            accounts = sorted(holders[sid])[: pub.settle_batch]
            self._settle_sent[sid] = head.number
            try:
                r = self.sender.call(f.settleMany(accounts, sid), "settleMany")
            except TxFailed as exc:
                self.log.warning("settle_failed", series=sid, accounts=len(accounts), error=str(exc)[:300])
                continue
            self.metrics.submissions.labels(outcome="settled").inc()
            self.log.info("settled_expired", series=sid, accounts=len(accounts), left=len(holders[sid]) - len(accounts),
                          block=int(r["blockNumber"]))

    def _start_auctions(self, breached: list[MarginLeaf]) -> None:
        """Start the liquidation auction of each newly registered breach (the starter earns the reward); another
        starter may have been faster, which is logged, not an error."""

        auction = self.chain.auction
        if auction is None or not self.cfg.publish.start_auctions:
            return
        for l in breached:
            if l.account in self.chain.state.open_auctions:
                continue
            try:
                r = self.sender.call(auction.functions.start(l.account), "startAuction")
                self.metrics.submissions.labels(outcome="auction_started").inc()
                self.log.info("auction_started", account=l.account, block=int(r["blockNumber"]))
            except TxFailed as exc:
                self.log.warning("auction_start_failed", account=l.account, error=str(exc)[:300])

    def _already_breached(self, leaf: MarginLeaf) -> bool:
        rec = self.chain.state.breached.get(leaf.account)
        return rec is not None and int(rec.get("stateNonce", -1)) == leaf.state_nonce

    def _margin_call(self, att: Attestation, breached: list[MarginLeaf], sigs: bytes):
        f = self.chain.ch.functions
        h = att.header()
        header = (bytes.fromhex(h["inputsHash"][2:]), h["sequence"], h["timestamp"], h["leafCount"])
        # the solvency index signed with the root (its struct hash is the message's solvencyHash)
        sh, solvency = bytes.fromhex(h["solvencyHash"][2:]), att.solvency_struct()
        if not breached:
            return f.postMarginRoot(att.tree.root, header, sh, solvency, sigs), "postMarginRoot"
        by_hash = {l.hash(): l for l in breached}
        ordered, proof, flags = att.tree.multiproof(list(by_hash))
        leaves = [by_hash[h_].as_tuple() for h_ in ordered]
        return f.postMarginBatch(header, sh, solvency, leaves, proof, flags, sigs), "postMarginBatch"

"""The keeper's side of agreeing on one quote set per block (``exchange.quote_agreement``; the rule is
:mod:`keeper.attest.agreement`, docs/keeper.md "Agreeing on one quote set").

Each block the proposer is the first keeper of the block's rotation order (:func:`keeper.exchange.book.rotation_order`
over the on-chain keeper set) that is this keeper or a peer not known to be down. The proposer publishes what it read
(``GET /quotes/<block>/<asset>``) and uses it; every other keeper fetches the proposer's set (waiting up to
``exchange.agreement_wait_s``), checks it against its own read and, when it agrees, prices on the proposer's spot
and chain. A set it does not accept, or none in time, rejects the asset's market data this block: the keeper signs
nothing built on it and follows the one fallback rule (docs/keeper.md, "Fallback").
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence, Union

from keeper.attest.agreement import (
    AgreementRule,
    QuoteSet,
    QuoteSetInvalid,
    check_quote_set,
    quote_set_document,
    quote_set_from_document,
    quote_set_hash,
)
from keeper.exchange.book import rotation_order
from keeper.quant.chains import OptionChain

#: the reasons an asset's market data is rejected by the agreement step (metric labels)
NO_QUOTE_SET = "no_quote_set"
QUOTE_SET_REJECTED = "quote_set_rejected"

Agreed = tuple[float, Optional[OptionChain]]


class QuoteAgreement:
    """One keeper's agreement step. ``keepers``: the on-chain keeper set now; ``peers``: PeerClients (with
    ``address``, ``up``); ``view``: this keeper's KeeperView (where it publishes)."""

    def __init__(self, me: str, keepers: Callable[[], Sequence[str]], peers, view, metrics, log,
                 rule: AgreementRule = AgreementRule(), wait_s: float = 2.0, poll_s: float = 0.05) -> None:
        self.me = me.lower()
        self.keepers = keepers
        self.peers = {str(p.address).lower(): p for p in peers if getattr(p, "address", None)}
        self.view = view
        self.metrics = metrics
        self.log = log
        self.rule = rule
        self.wait_s = wait_s
        self.poll_s = poll_s

    def proposer(self, block: int) -> Optional[str]:
        """The block's proposer: the first in rotation order that is this keeper or a peer not known down."""
        for k in rotation_order(block, self.keepers()):
            k = k.lower()
            if k == self.me or (k in self.peers and self.peers[k].up is not False):
                return k
        return None

    def agree(self, asset: str, block: int, spot: float, chain: Optional[OptionChain]) -> Union[Agreed, str]:
        """The spot and chain to price ``asset`` on at ``block`` (this keeper's own read when it proposes, else the
        proposer's once checked), or the reason the asset's market data is rejected this block."""
        own = QuoteSet(asset, block, spot, chain)
        who = self.proposer(block)
        if who is None or who == self.me:
            doc = quote_set_document(own)
            self.view.publish_quote_set(block, asset, doc)
            self.log.info("quote_set_proposed", asset=asset, block=block, quote_set=quote_set_hash(doc))
            return spot, chain
        peer = self.peers[who]
        deadline = time.monotonic() + self.wait_s
        got = peer.quote_set(block, asset)
        while got is None and time.monotonic() < deadline:
            time.sleep(self.poll_s)
            got = peer.quote_set(block, asset)
        if got is None:
            self.log.warning("input_skipped", reason=NO_QUOTE_SET, asset=asset, block=block, proposer=who)
            self.metrics.skipped_inputs.labels(reason=NO_QUOTE_SET).inc()
            return NO_QUOTE_SET
        try:
            proposed = quote_set_from_document(got)
        except QuoteSetInvalid as exc:
            return self._reject(asset, block, who, [str(exc)])
        if proposed.block != block or proposed.asset.lower() != asset.lower():
            return self._reject(asset, block, who, [f"set is for block {proposed.block}, asset {proposed.asset}"])
        verdict = check_quote_set(proposed, own, self.rule)
        if not verdict.accepted:
            return self._reject(asset, block, who, [d.to_json() for d in verdict.disagreements[:10]],
                                count=len(verdict.disagreements))
        self.log.info("quote_set_agreed", asset=asset, block=block, proposer=who, rows=verdict.matched,
                      quote_set=quote_set_hash(got))
        return proposed.spot, proposed.chain

    def _reject(self, asset: str, block: int, who: str, details: list, count: Optional[int] = None) -> str:
        self.metrics.skipped_inputs.labels(reason=QUOTE_SET_REJECTED).inc()
        self.log.warning("input_skipped", reason=QUOTE_SET_REJECTED, asset=asset, block=block, proposer=who,
                         disagreements=count if count is not None else len(details), first=details)
        return QUOTE_SET_REJECTED

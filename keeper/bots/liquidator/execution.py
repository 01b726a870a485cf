"""What the liquidator sends: bids (with their price limit and deadline; a lost race told apart from a fault),
auction starts, restarts and finishes, the buyer of last resort's take (``takeAsLastResort``), its own margin
record, and the settlement of its claims.
"""
from __future__ import annotations

import time
from typing import Callable

import requests
from web3.logs import DISCARD

from keeper.bots.liquidator.status import ChainStatus
from keeper.bots.liquidator.strategies import LotQuote
from keeper.units import WAD

#: bid reverts that mean another bidder (or the account's own owner) got there first: a lost race, not a fault
LOST_RACE_ERRORS = frozenset({"LA_NoAuction", "LA_NothingToSell", "LA_AccountChanged", "LA_PriceAboveLimit",
                              "LA_AuctionNeedsReset", "LA_AuctionRunning", "LA_NoBreach", "LA_StaleBreach",
                              "LA_MustBuyWhole", "LA_AuctionDone"})


class BidExecution:
    """The liquidator's transactions through ``sender`` (its key); ``running``: account -> auction id of the auctions
    it follows (shared with the bot); ``status``: its chain reads; ``reverts``: the revert decoder that tells a lost
    race from a fault; ``emit``/``count``: the bot's event log and counters."""

    def __init__(self, w3, ch, auction, sender, reverts, settings, running: dict, status: ChainStatus,
                 emit: Callable[..., None], count: Callable[[str], None]) -> None:
        self.w3 = w3
        self.ch = ch
        self.auction = auction
        self.sender = sender
        self.reverts = reverts
        self.s = settings
        self.address = sender.address
        self.running = running
        self.status = status
        self.emit = emit
        self.count = count
        self._redo_reason: dict[str, str] = {}
        self._last_refresh: dict[str, float] = {}
        #: other accounts whose ended claims this bot delivers (``settleClaim(holder)``) on its next pass
        self.deliveries: set[str] = set()

    def try_start(self, account: str) -> None:
        """Start an auction for a breached account (the starter earns tip + chip out of the penalty)."""
        if account in self.running or account == self.address:
            return
        fn = self.auction.functions.start(account)
        try:
            fn.estimate_gas({"from": self.address})
        except Exception as e:  # noqa: BLE001
            name = self.reverts.name(e)
            self.emit("start_skipped", account=account, reason=name or str(e)[:120])
            return
        try:
            self.sender.call(fn, "start")
            self.count("starts")
            self.running[account] = int(self.auction.functions.auctionOf(account).call()[8])
            self.emit("auction_started", account=account, auction=self.running[account])
        except Exception as e:  # noqa: BLE001 - another bot started it in the same block
            self.emit("start_lost_race", account=account, reason=self.reverts.name(e) or str(e)[:120])


    def refresh_margin(self, account: str) -> bool:
        """Record ``account``'s leaf of the keepers' latest posted root on chain (``recordMargin``), e.g. the
        liquidator's own record after it bought options, or a breach record that expired. True when recorded."""

        last = self._last_refresh.get(account, 0.0)
        if time.monotonic() - last < 5.0:  # at most one attempt per account every 5 s
            return False
        self._last_refresh[account] = time.monotonic()
        nonce = int(self.ch.functions.stateNonce(account).call())
        for u in self.status.keeper_urls():
            try:
                r = requests.get(f"{u.rstrip('/')}/margin/{account}", timeout=3)
                if r.status_code != 200:
                    continue
                m = r.json()
                lf, h = m["leaf"], m["header"]
                if int(lf["stateNonce"]) != nonce:
                    continue
                proof = ((bytes.fromhex(str(h["inputsHash"]).removeprefix("0x")), int(h["sequence"]),
                          int(h["timestamp"]), int(h["leafCount"])),
                         (lf["account"], int(lf["stateNonce"]), int(lf["equity"]), int(lf["maintenance"]),
                          int(lf["initial"]), int(lf["modelValue"])),
                         [bytes.fromhex(x.removeprefix("0x")) for x in m["proof"]])
                fn = self.ch.functions.recordMargin(proof)
                fn.estimate_gas({"from": self.address})
                self.sender.call(fn, "recordMargin")
                self.emit("margin_recorded", account=account, sequence=int(h["sequence"]))
                return True
            except Exception as e:  # noqa: BLE001 - try the next keeper
                self.emit("margin_record_failed", account=account, keeper=u,
                          reason=self.reverts.name(e) or str(e)[:120])
        return False

    def try_redo(self, account: str) -> None:
        """Restart an auction that ran past its tail or floor, or whose account changed (needs a fresh breach:
        when the breach record expired, the account's current leaf is recorded from a keeper first)."""
        fn = self.auction.functions.redo(account)
        try:
            fn.estimate_gas({"from": self.address})
        except Exception as e:  # noqa: BLE001 - no fresh breach yet, or another bot reset it first
            reason = self.reverts.name(e) or str(e)[:120]
            if reason in ("LA_RecordExpired", "LA_StaleBreach", "LA_NoBreach") and self.refresh_margin(account):
                return self.try_redo_once(account)
            if self._redo_reason.get(account) != reason:  # log a reason once, not on every pass
                self._redo_reason[account] = reason
                self.emit("redo_skipped", account=account, reason=reason)
            return
        self._redo_reason.pop(account, None)
        try:
            self.sender.call(fn, "redo")
            self.emit("auction_reset", account=account)
        except Exception as e:  # noqa: BLE001
            self.emit("redo_lost_race", account=account, reason=self.reverts.name(e) or str(e)[:120])

    def try_redo_once(self, account: str) -> None:
        try:
            self.sender.call(self.auction.functions.redo(account), "redo")
            self.emit("auction_reset", account=account)
        except Exception as e:  # noqa: BLE001
            self.emit("redo_skipped", account=account, reason=self.reverts.name(e) or str(e)[:120])


    def try_last_resort(self, account: str, refreshed: bool = False) -> str:
        """Call ``takeAsLastResort(account)`` (anyone may): the auction reached its floor after ``lastResortAfter``
        resets, so the fund's account takes the restoring fraction (everything for an insolvent book) at the fresh
        attested model value, paid by the insurance fund, and the auction ends. It needs a fresh breach record of
        the account's current state, as ``redo`` does: when it expired, the account's current leaf is recorded from
        a keeper first. When the fund cannot pay (``LA_FundCannotPay``) the auction is reset instead (the contract
        allows ``redo`` then). Returns ``taken``, ``reset`` (fell back to ``redo``), ``skipped`` (another caller took
        or ended it first, or it is not due) or ``error`` (logged and counted)."""
        fn = self.auction.functions.takeAsLastResort(account)
        try:
            fn.estimate_gas({"from": self.address})
        except Exception as e:  # noqa: BLE001 - would revert: stale record, lost race, fund cannot pay
            reason = self.reverts.name(e) or str(e)[:120]
            if reason in ("LA_RecordExpired", "LA_StaleBreach", "LA_NoBreach") and not refreshed \
                    and self.refresh_margin(account):
                return self.try_last_resort(account, refreshed=True)
            if reason == "LA_FundCannotPay":
                self.emit("last_resort_unaffordable", account=account, reason=reason)
                self.try_redo(account)
                return "reset"
            if self._redo_reason.get(account) != reason:  # log a reason once, not on every pass
                self._redo_reason[account] = reason
                self.emit("last_resort_skipped", account=account, reason=reason)
            return "skipped"
        self._redo_reason.pop(account, None)
        try:
            rcpt = self.sender.call(fn, "takeAsLastResort")
        except Exception as e:  # noqa: BLE001 - another caller was first in the same block, or RPC
            self.sender.reset_nonce()
            name = self.reverts.name(e)
            if name in ("LA_NoAuction", "LA_AuctionDone", "LA_LastResortNotDue") or self._taken_by_another(account):
                self.emit("last_resort_skipped", account=account, reason=name or "taken or ended by another caller")
                return "skipped"
            self.count("errors")
            self.emit("last_resort_error", account=account, reason=name or str(e)[:160])
            return "error"
        taken = self.auction.events.LastResortTaken().process_receipt(rcpt, errors=DISCARD)
        spent = self.auction.events.FundSpent().process_receipt(rcpt, errors=DISCARD)
        got = taken[0]["args"] if taken else {}
        self.running.pop(account, None)
        if str(got.get("fundAccount", "")).lower() == self.address.lower():
            self.status.may_hold_claim = True  # this bot operates the fund's account: the claim is its own
        elif got.get("fundAccount"):
            # the take ended the auction: the fund's account's claim is delivered on the next pass (anyone may), so
            # that the book it took is in its own storage and an auction of the fund's account itself can be bid
            # on (a source holding an unsettled claim cannot be sold from: CH_ClaimUnsettled)
            self.deliveries.add(str(got["fundAccount"]))
        self.count("last_resort_takes")
        self.emit("last_resort_taken", auction=int(got.get("id", 0)), account=account,
                  fund_account=got.get("fundAccount"), fraction=int(got.get("fractionWad", 0)) / WAD,
                  price=int(got.get("price", 0)), amount=int(got.get("amount", 0)),
                  fund_spent=sum(int(x["args"]["amount"]) for x in spent),
                  fund_balance=int(got.get("fundBalance", 0)), tx=rcpt["transactionHash"].hex(),
                  block=int(rcpt["blockNumber"]))
        return "taken"

    def _taken_by_another(self, account: str) -> bool:
        """After a ``takeAsLastResort`` that reverted once mined (no reason to decode): whether the auction is gone
        or no longer due, i.e. another caller's take (or a bid, a cure) came first in that block: a lost race."""
        try:
            return self.status.auction_status(account) == "none" or not self.status.last_resort_due(account)
        except Exception:  # noqa: BLE001 - RPC: keep it an error
            return False

    def try_finish(self, account: str) -> str:
        """End an auction whose sale is complete (``finish``, anyone may: it pays the escrow to the account, the
        starter's reward and the fund's share); returns ``finished``, ``skipped`` (already ended, not done, or a
        module without ``finish``) or ``error``."""
        if not any(i.get("name") == "finish" for i in self.auction.abi):
            return "skipped"
        try:
            rcpt = self.sender.call(self.auction.functions.finish(account), "finish")
        except Exception as e:  # noqa: BLE001 - another caller finished it first, or it is not done
            self.sender.reset_nonce()
            name = self.reverts.name(e)
            if name in ("LA_NoAuction", "LA_AuctionNotDone"):
                self.emit("finish_skipped", account=account, reason=name)
                return "skipped"
            self.count("errors")
            self.emit("finish_error", account=account, reason=name or str(e)[:160])
            return "error"
        self.running.pop(account, None)
        self.emit("auction_finished", account=account, tx=rcpt["transactionHash"].hex())
        return "finished"

    def settle_claim(self, why: str) -> str:
        """Send ``settleClaim(self)``: move the claimed share of the source's frozen book into this account's own
        storage. Returns ``settled``, ``none`` (no claim left: anyone may settle it, so another caller may have
        been first, which is logged like a lost race) or ``error`` (logged and counted; the caller skips)."""
        return self.settle_claim_of(self.address, why)

    def deliver_claims(self) -> None:
        """Deliver the claims queued in :attr:`deliveries`; a holder leaves the queue once its claim is settled or
        gone, and stays (retried next pass) while the delivery fails."""
        for holder in sorted(self.deliveries):
            if self.settle_claim_of(holder, "queued delivery") in ("settled", "none"):
                self.deliveries.discard(holder)

    def _claim_of(self, holder: str) -> tuple[str, int] | None:
        """``(source, fractionWad)`` of ``holder``'s unsettled claim, or None (this bot's own through
        :meth:`ChainStatus.own_claim`, which also keeps ``may_hold_claim``)."""
        if holder.lower() == self.address.lower():
            return self.status.own_claim()
        source, fraction, _share = self.ch.functions.claimOf(holder).call()
        return (str(source), int(fraction)) if int(fraction) else None

    def settle_claim_of(self, holder: str, why: str) -> str:
        """Send ``settleClaim(holder)`` (anyone may): this bot's own claim, or another account's whose auction has
        ended (e.g. the fund's account's after a last-resort take). Returns ``settled``, ``none`` (no claim, or
        settled by another caller first) or ``error`` (logged; counted for the own claim; for another holder its
        auction may still run, retried on a later pass)."""
        own = holder.lower() == self.address.lower()
        try:
            claim = self._claim_of(holder)
        except Exception as e:  # noqa: BLE001 - RPC
            if own:
                raise
            self.emit("claim_settle_error", holder=holder, why=why, reason=str(e)[:160])
            return "error"
        if claim is None:
            return "none"
        source, fraction = claim
        fn = self.ch.functions.settleClaim(holder)
        try:
            rcpt = self.sender.call(fn, "settleClaim")
        except Exception as e:  # noqa: BLE001 - would revert / reverted / RPC
            self.sender.reset_nonce()
            name = self.reverts.name(e)
            if name == "CH_NoClaim" or (own and self.status.own_claim() is None):
                self.emit("claim_settle_skipped", holder=holder, source=source,
                          reason=name or "settled by another caller")
                return "none"
            if own:
                self.count("errors")
            self.emit("claim_settle_error", holder=holder, source=source, fraction=fraction / WAD, why=why,
                      reason=name or str(e)[:160])
            return "error"

        got = self.ch.events.ClaimSettled().process_receipt(rcpt, errors=DISCARD)
        share = int(got[0]["args"]["shareOfStoredWad"]) if got else 0
        if own:
            self.status.may_hold_claim = False
        self.count("claims_settled")
        self.emit("claim_settled", holder=holder, source=source, fraction=fraction / WAD, share_of_stored=share / WAD,
                  why=why, tx=rcpt["transactionHash"].hex(), block=int(rcpt["blockNumber"]))
        return "settled"

    def prime_claim_slot(self) -> str:
        """Send ``primeClaimSlot(self)`` unless the slot is already non-zero. Returns ``primed``, ``already``
        (nothing sent) or ``error`` (logged and counted; bidding still works, the first bid just costs more)."""
        try:
            if self.ch.functions.claimSlotPrimed(self.address).call():
                return "already"
            rcpt = self.sender.call(self.ch.functions.primeClaimSlot(self.address), "primeClaimSlot")
        except Exception as e:  # noqa: BLE001 - would revert / reverted / RPC: not fatal
            self.sender.reset_nonce()
            self.count("errors")
            self.emit("claim_slot_prime_error", reason=self.reverts.name(e) or str(e)[:160])
            return "error"
        self.emit("claim_slot_primed", tx=rcpt["transactionHash"].hex(), gas=int(rcpt["gasUsed"]))
        return "primed"


    def bid(self, account: str, quote: LotQuote, decision) -> str:
        """Send the bid with its price limit; returns ``filled``, ``lost_race`` or ``error``."""
        # asking for everything the auction allows: send WAD (the contract caps it at the allowed fraction exactly;
        # a float round trip would fall a few wei short and leave dust for the next bidder)
        frac_wad = WAD if decision.fraction >= quote.max_fraction - 1e-12 else min(int(decision.fraction * WAD), WAD)
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        fn = self.auction.functions.bid(account, frac_wad, int(decision.max_price), now + self.s.deadline_s, 0)
        self.count("bids_sent")
        try:
            gas = self.sender.gas_for(fn.estimate_gas({"from": self.address}))
        except Exception as e:  # noqa: BLE001
            name = self.reverts.name(e)
            if name in LOST_RACE_ERRORS:
                self.count("lost_races")
                self.emit("lost_race", auction=quote.auction_id, account=account, stage="preflight", reason=name,
                          price=quote.auction_price, limit=int(decision.max_price))
                return "lost_race"
            self.count("errors")
            self.emit("bid_error", auction=quote.auction_id, account=account, reason=name or str(e)[:160])
            if name == "CH_ClaimUnsettled":  # the account auctioned still holds a claim: deliver it next pass
                self.deliveries.add(account)
            return "error"
        try:
            tx = fn.build_transaction({"from": self.address, "gas": gas, **self.sender.fee_fields()})
            h = self.sender.send(tx, wait=False, what="bid")
            rcpt = self.w3.eth.wait_for_transaction_receipt(h, timeout=60, poll_latency=0.05)
        except Exception as e:  # noqa: BLE001
            self.sender.reset_nonce()
            self.count("errors")
            self.emit("bid_error", auction=quote.auction_id, account=account, reason=str(e)[:160])
            return "error"
        if int(rcpt["status"]) != 1:
            # mined but reverted: somebody filled first between our check and our inclusion
            self.count("lost_races")
            self.emit("lost_race", auction=quote.auction_id, account=account, stage="mined", tx=h.hex(),
                      price=quote.auction_price, limit=int(decision.max_price))
            return "lost_race"

        filled = self.auction.events.Bid().process_receipt(rcpt, errors=DISCARD)
        got = filled[0]["args"] if filled else {}
        claimed = self.ch.events.ClaimRecorded().process_receipt(rcpt, errors=DISCARD)
        self.status.may_hold_claim = True
        if self.auction.events.AuctionEnded().process_receipt(rcpt, errors=DISCARD):
            self.running.pop(account, None)
        self.count("bids_filled")
        self.emit("bid_filled", auction=quote.auction_id, account=account, tx=h.hex(),
                  price=int(got.get("price", quote.auction_price)),
                  fraction=int(got.get("fractionWad", frac_wad)) / WAD,
                  amount=int(got.get("amount", 0)), valuation=quote.valuation, limit=int(decision.max_price),
                  claim=int(claimed[0]["args"]["claimWad"]) / WAD if claimed else None)
        return "filled"

"""The liquidator bot: follows auction events, asks its strategy, bids, settles its claims."""
from __future__ import annotations

# ------------------------------------------------------------------------------------------------------------
# The bot
# ------------------------------------------------------------------------------------------------------------
import json  # noqa: E402
import logging
import time  # noqa: E402
from dataclasses import dataclass
from pathlib import Path  # noqa: E402

import numpy as np
import requests
from prometheus_client import Counter, start_http_server
from web3.logs import DISCARD

from keeper.bots.liquidator.strategies import BidDecision, LotQuote, load_strategy
from keeper.bots.liquidator.valuation import (
    MarketView,
    Portfolio,
    RiskAppetite,
    SeriesSpec,
    flat_vol,
    gas_cost_quote,
    make_quote,
    value_portfolio,
)
from keeper.chain.deploy import web3_for
from keeper.chain.revert import RevertDecoder
from keeper.chain.sender import Sender
from keeper.units import WAD

log = logging.getLogger("backstop.liquidator")

#: bid reverts that mean another bidder (or the account's own owner) got there first: a lost race, not a fault
LOST_RACE_ERRORS = frozenset({"LA_NoAuction", "LA_NothingToSell", "LA_AccountChanged", "LA_PriceAboveLimit",
                              "LA_AuctionNeedsReset", "LA_AuctionRunning", "LA_NoBreach", "LA_StaleBreach",
                              "LA_MustBuyWhole", "LA_AuctionDone"})


@dataclass
class LiquidatorSettings:
    """Run-time settings of one liquidator (see docs/liquidator.md)."""

    rpc_url: str
    deployment_file: str
    key: str
    strategy: str = "edge"
    edge: float = 0.02
    aversion: float = 0.25
    own_haircut: float = 0.10
    vol: float = 0.8
    market_file: str | None = None
    poll_s: float = 0.5
    min_fraction: float = 0.01
    margin_safety: float = 0.8
    gas_per_bid: int = 700_000
    gas_price_gwei: float = 1.0
    start_auctions: bool = True
    deadline_s: int = 120
    name: str = "liquidator"
    keeper_urls: tuple[str, ...] = ()
    keeper_urls_file: str | None = None
    events_file: str | None = None
    metrics_port: int = 0
    strategy_timeout_s: float = 2.0
    #: settle its own claim (``settleClaim(self)``) as soon as the auction it bought from no longer runs; off: only
    #: when it must (before bidding on another account), e.g. to leave the gas of delivery to someone else
    settle_claims: bool = True
    #: write the own claim slot once at start (``primeClaimSlot``) so that even the first bid in a race pays no
    #: zero-slot write (about 17,000 gas less in the time-critical transaction)
    prime_claim_slot: bool = True


class LiquidatorBot:
    """Watches breaches and auctions, values lots with its own engine and bids through its strategy.

    ``step()`` does one pass (new events, then every running auction); ``run()`` loops until stopped. Every
    decision and outcome is appended as a JSON line to ``events_file`` (the scenario's live view reads it)."""

    def __init__(self, settings: LiquidatorSettings, strategy=None):

        self.s = settings
        self.w3 = web3_for(settings.rpc_url)
        dep = json.loads(Path(settings.deployment_file).read_text())
        full_path = Path(settings.deployment_file).with_name(Path(settings.deployment_file).stem + ".full.json")
        self.full = json.loads(full_path.read_text()) if full_path.is_file() else {}
        if int(self.w3.eth.chain_id) != int(dep["chain_id"]):
            raise ValueError(f"chain id {self.w3.eth.chain_id} at {settings.rpc_url} != deployment's {dep['chain_id']}")
        if not dep.get("auction"):
            raise ValueError("deployment file names no auction contract")
        self.ch = self.w3.eth.contract(address=dep["clearinghouse"], abi=dep["abi"]["clearinghouse"])
        self.auction = self.w3.eth.contract(address=dep["auction"], abi=dep["abi"]["auction"])
        self.quote_asset = dep["quote_asset"]
        self.decimals = int(self.full.get("quote_decimals", 6))
        self.sender = Sender(self.w3, settings.key)
        self.address = self.sender.address
        self.strategy = strategy or load_strategy(settings.strategy, settings.edge, settings.strategy_timeout_s)
        self.reverts = RevertDecoder(dep["abi"]["auction"], dep["abi"]["clearinghouse"])
        self.from_block = int(dep["block"])
        self.running: dict[str, int] = {}  # account -> auction id
        self.series: dict[int, SeriesSpec] = {}
        self.token_decimals: dict[str, int] = {t["address"].lower(): int(t["decimals"])
                                               for t in self.full.get("tokens", {}).values()}
        self.stats = {"auctions_seen": 0, "bids_sent": 0, "bids_filled": 0, "lost_races": 0, "no_bid": 0,
                      "errors": 0, "starts": 0, "claims_settled": 0}
        self._may_hold_claim = True  # re-read claimOf(self) while this is set (start, and after every fill)
        # index of the `done` flag in auctionOf's struct (a module where the completing bid leaves `finish` to call)
        fields = next((i["outputs"][0].get("components", []) for i in self.auction.abi
                       if i.get("type") == "function" and i.get("name") == "auctionOf"), [])
        self._done_field = next((k for k, c in enumerate(fields) if c.get("name") == "done"), None)
        self._stop = False
        self._redo_reason: dict[str, str] = {}
        self._last_refresh: dict[str, float] = {}
        self._metrics = None
        if settings.metrics_port:
            self._start_metrics(settings.metrics_port)

    # -------------------------------------------------------------- plumbing
    def _start_metrics(self, port: int) -> None:

        self._metrics = {k: Counter(f"backstop_liquidator_{k}", f"liquidator {k}") for k in self.stats}
        start_http_server(port, addr="127.0.0.1")

    def _count(self, key: str) -> None:
        self.stats[key] += 1
        if self._metrics:
            self._metrics[key].inc()

    def emit(self, event: str, **fields) -> None:
        """Log one event (and append it to the events file)."""
        rec = {"t": time.time(), "bot": self.s.name, "event": event, **fields}
        log.info("%s %s", event, json.dumps(fields, default=str))
        if self.s.events_file:
            with open(self.s.events_file, "a") as fh:
                fh.write(json.dumps(rec, default=str) + "\n")

    def stop(self) -> None:
        self._stop = True

    def close(self) -> None:
        close = getattr(self.strategy, "close", None)
        if close:
            close()

    # -------------------------------------------------------------- market view
    def market(self) -> MarketView:
        """Spots from the clearinghouse's attested prices (the market file's spot when given), vol from the
        market file's ATM vol and smile (the liquidator's own smile parameters), else the configured flat vol."""
        spots: dict[str, float] = {}
        for t in self.full.get("tokens", {}).values():
            addr = t["address"]
            if addr.lower() == self.quote_asset.lower():
                continue
            try:
                p, _ts = self.ch.functions.spotPrice(addr).call()
                if int(p) > 0:
                    spots[addr] = int(p) / WAD
            except Exception:  # noqa: BLE001 - an unpriced asset is simply absent
                pass
        vol_fn = flat_vol(self.s.vol)
        if self.s.market_file and Path(self.s.market_file).is_file():
            try:
                m = json.loads(Path(self.s.market_file).read_text())
                atm = float(m["atm_vol"])
                skew, curv = float(m.get("skew", -0.15)), float(m.get("curvature", 0.4))

                def vol_fn(strike, expiry, forward, atm=atm, skew=skew, curv=curv):
                    k = np.log(np.asarray(strike, float) / np.asarray(forward, float))
                    return np.maximum(atm * (1 + skew * k + curv * k * k), 0.05) + 0 * np.asarray(expiry, float)
            except (OSError, ValueError, KeyError) as e:
                self.emit("market_file_unreadable", error=str(e))
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        return MarketView(spots, vol_fn, now, self.quote_asset)

    def _series(self, sid: int) -> SeriesSpec:
        if sid not in self.series:
            s = self.ch.functions.series(sid).call()
            # Series(address underlying, uint64 expiry, bool isCall, uint128 strike)
            self.series[sid] = SeriesSpec.from_chain(sid, s[0], int(s[3]), int(s[1]), bool(s[2]))
        return self.series[sid]

    def holdings(self, account: str) -> Portfolio:
        """The account's current portfolio as held in the clearinghouse."""
        positions = {}
        for sid in self.ch.functions.seriesOf(account).call():
            size = int(self.ch.functions.positionOf(account, int(sid)).call())
            if size:
                self._series(int(sid))
                positions[int(sid)] = size / WAD
        collateral = {}
        for asset in self.ch.functions.collateralAssetsOf(account).call():
            if asset.lower() == self.quote_asset.lower():
                continue
            amt = int(self.ch.functions.collateralOf(account, asset).call())
            if amt:
                collateral[asset] = amt / 10 ** self.token_decimals.get(asset.lower(), 18)
        return Portfolio(positions, collateral, int(self.ch.functions.cashOf(account).call()))

    def free_margin(self) -> int:
        """Own headroom as the auction computes it: fresh margin record (equity - maintenance), or, without
        option positions, the haircut collateral value; scaled by ``margin_safety``."""
        eq, mm, _n, at = self.ch.functions.marginRecord(self.address).call()
        cfg = self.auction.functions.config().call()
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        max_age = int(cfg[10])
        if int(at) != 0 and now <= int(at) + max_age:
            head = int(eq) - int(mm)
        elif not self.ch.functions.seriesOf(self.address).call():
            head = int(self.ch.functions.collateralValue(self.address).call())
        elif self.refresh_margin(self.address):  # holding options: record a fresh leaf of our own first
            eq, mm, _n, at = self.ch.functions.marginRecord(self.address).call()
            head = int(eq) - int(mm) if int(at) != 0 else 0
        else:
            return 0
        return int(max(head, 0) * self.s.margin_safety)

    # -------------------------------------------------------------- events
    def poll_events(self) -> None:
        head = int(self.w3.eth.block_number)
        if head < self.from_block:
            return
        for e in self.auction.events.AuctionStarted().get_logs(from_block=self.from_block, to_block=head):
            a = e["args"]["account"]
            self.running[a] = int(e["args"]["id"])
            self._count("auctions_seen")
            self.emit("auction_seen", auction=int(e["args"]["id"]), account=a, start_price=int(e["args"]["startPrice"]))
        for e in self.auction.events.AuctionEnded().get_logs(from_block=self.from_block, to_block=head):
            self.running.pop(e["args"]["account"], None)
        breached = [e["args"]["account"] for e in
                    self.ch.events.AccountBreached().get_logs(from_block=self.from_block, to_block=head)]
        self.from_block = head + 1
        if self.s.start_auctions:
            for acct in dict.fromkeys(breached):
                self.try_start(acct)

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
            self._count("starts")
            self.running[account] = int(self.auction.functions.auctionOf(account).call()[8])
            self.emit("auction_started", account=account, auction=self.running[account])
        except Exception as e:  # noqa: BLE001 - another bot started it in the same block
            self.emit("start_lost_race", account=account, reason=self.reverts.name(e) or str(e)[:120])

    def keeper_urls(self) -> list[str]:
        """Keepers' HTTP APIs: the configured list, plus a JSON list re-read from ``keeper_urls_file``."""
        urls = list(self.s.keeper_urls)
        if self.s.keeper_urls_file:
            try:
                urls += [str(u) for u in json.loads(Path(self.s.keeper_urls_file).read_text())]
            except (OSError, ValueError):
                pass
        return urls

    def refresh_margin(self, account: str) -> bool:
        """Record ``account``'s leaf of the keepers' latest posted root on chain (``recordMargin``), e.g. the
        liquidator's own record after it bought options, or a breach record that expired. True when recorded."""

        last = self._last_refresh.get(account, 0.0)
        if time.monotonic() - last < 5.0:  # at most one attempt per account every 5 s
            return False
        self._last_refresh[account] = time.monotonic()
        nonce = int(self.ch.functions.stateNonce(account).call())
        for u in self.keeper_urls():
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

    # -------------------------------------------------------------- claims (deferred delivery of bought shares)
    def own_claim(self) -> tuple[str, int] | None:
        """``(source, fractionWad)`` of this bot's unsettled claim (a fraction of the source's frozen book), or
        None. A bid records a claim instead of moving the bought share: it counts in the bot's effective book at
        once (the views and the keepers' leaves include it) and reaches its own storage by ``settleClaim``."""
        source, fraction, _share = self.ch.functions.claimOf(self.address).call()
        if int(fraction) == 0:
            self._may_hold_claim = False
            return None
        return str(source), int(fraction)

    def auction_status(self, account: str) -> str:
        """The auction of ``account`` on chain: ``none``, ``running`` (bids may still come), or ``done`` (the bids
        sold what they may and only ``finish`` is left, on an auction module that separates the two)."""
        # Auction(starter, startedAt, ..., done): startedAt == 0 means none
        a = self.auction.functions.auctionOf(account).call()
        if int(a[1]) == 0:
            return "none"
        return "done" if self._done_field is not None and bool(a[self._done_field]) else "running"

    def auction_running(self, account: str) -> bool:
        """Whether bids on ``account``'s auction may still come (it exists and its sale is not complete)."""
        return self.auction_status(account) == "running"

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
            self._count("errors")
            self.emit("finish_error", account=account, reason=name or str(e)[:160])
            return "error"
        self.running.pop(account, None)
        self.emit("auction_finished", account=account, tx=rcpt["transactionHash"].hex())
        return "finished"

    def settle_claim(self, why: str) -> str:
        """Send ``settleClaim(self)``: move the claimed share of the source's frozen book into this account's own
        storage. Returns ``settled``, ``none`` (no claim left: anyone may settle it, so another caller may have
        been first, which is logged like a lost race) or ``error`` (logged and counted; the caller skips)."""
        claim = self.own_claim()
        if claim is None:
            return "none"
        source, fraction = claim
        fn = self.ch.functions.settleClaim(self.address)
        try:
            rcpt = self.sender.call(fn, "settleClaim")
        except Exception as e:  # noqa: BLE001 - would revert / reverted / RPC
            self.sender.reset_nonce()
            name = self.reverts.name(e)
            if name == "CH_NoClaim" or self.own_claim() is None:
                self.emit("claim_settle_skipped", source=source, reason=name or "settled by another caller")
                return "none"
            self._count("errors")
            self.emit("claim_settle_error", source=source, fraction=fraction / WAD, why=why,
                      reason=name or str(e)[:160])
            return "error"

        got = self.ch.events.ClaimSettled().process_receipt(rcpt, errors=DISCARD)
        share = int(got[0]["args"]["shareOfStoredWad"]) if got else 0
        self._may_hold_claim = False
        self._count("claims_settled")
        self.emit("claim_settled", source=source, fraction=fraction / WAD, share_of_stored=share / WAD, why=why,
                  tx=rcpt["transactionHash"].hex(), block=int(rcpt["blockNumber"]))
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
            self._count("errors")
            self.emit("claim_slot_prime_error", reason=self.reverts.name(e) or str(e)[:160])
            return "error"
        self.emit("claim_slot_primed", tx=rcpt["transactionHash"].hex(), gas=int(rcpt["gasUsed"]))
        return "primed"

    def settle_if_done(self) -> str:
        """With ``settle_claims``: settle the own claim at once (a delivery moves no stateNonce, so an auction still
        running on its source goes on); if that auction's sale is complete, ``finish`` it first. Returns what
        :meth:`settle_claim` returned, or ``none``."""
        if not (self.s.settle_claims and self._may_hold_claim):
            return "none"
        claim = self.own_claim()
        if claim is None:
            return "none"
        status = self.auction_status(claim[0])
        if status == "done":  # the sale is complete: end the auction too
            self.try_finish(claim[0])
        return self.settle_claim("after the bid" if status == "running" else "auction ended")

    def claim_elsewhere(self, account: str) -> str | None:
        """The source of an unsettled own claim on an account other than ``account`` (a bid on ``account`` would
        revert with ``CH_ClaimUnsettled`` until it is settled), else None."""
        if not self._may_hold_claim:
            return None
        claim = self.own_claim()
        return claim[0] if claim is not None and claim[0].lower() != account.lower() else None

    # -------------------------------------------------------------- auctions
    def evaluate(self, account: str):
        """(quote, decision, context) for one running auction, or None when it needs a reset or is gone."""

        try:
            price, allowed, _factor, needs_reset = self.auction.functions.quote(account).call()
        except Exception as e:  # noqa: BLE001 - ended meanwhile
            self.running.pop(account, None)
            self.emit("auction_gone", account=account, reason=self.reverts.name(e) or str(e)[:80])
            return None
        if needs_reset:
            self.try_redo(account)
            return None
        a = self.auction.functions.auctionOf(account).call()
        # Auction(starter, startedAt, expectedNonce, equity, maintenance, soldWad, initial, rewardPromised, id, ...)
        equity, sold, initial, auction_id = int(a[3]), int(a[5]), int(a[6]), int(a[8])
        remaining = (WAD - sold) / WAD
        if remaining <= 0:
            return None
        held = self.holdings(account)
        original = held.scaled(1.0 / remaining)  # price and fractions refer to the original portfolio
        mkt = self.market()
        app = RiskAppetite(aversion=self.s.aversion, default_haircut=self.s.own_haircut)
        val = value_portfolio(original, self.series, mkt, app, self.decimals)
        native = mkt.spots.get(self.full.get("underlying", ""), 2000.0)
        gas = gas_cost_quote(self.s.gas_per_bid, int(self.s.gas_price_gwei * 1e9), native, self.decimals)
        quote = make_quote(auction_id=auction_id, account=account, now=mkt.now, auction_price=int(price),
                           valuation=val, gas_cost=gas, free_margin=self.free_margin(),
                           max_fraction=int(allowed) / WAD, min_fraction=self.s.min_fraction)
        # the contract's own margin rule for the bidder: amount + fraction * (IM - E) of headroom
        quote = LotQuote(**{**quote.to_json(), "margin_per_lot": max(int(price), 0) + max(initial - equity, 0)})
        if equity < 0 and quote.max_fraction < remaining - 1e-12:
            return quote, BidDecision(False, reason="insolvent auction must be bought whole"), val
        decision = self.strategy.decide(quote)
        if equity < 0 and decision.bid:
            decision = BidDecision(True, remaining, decision.max_price, decision.reason + " (whole: insolvent)")
        return quote, decision, val

    def bid(self, account: str, quote: LotQuote, decision) -> str:
        """Send the bid with its price limit; returns ``filled``, ``lost_race`` or ``error``."""
        # asking for everything the auction allows: send WAD (the contract caps it at the allowed fraction exactly;
        # a float round trip would fall a few wei short and leave dust for the next bidder)
        frac_wad = WAD if decision.fraction >= quote.max_fraction - 1e-12 else min(int(decision.fraction * WAD), WAD)
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        fn = self.auction.functions.bid(account, frac_wad, int(decision.max_price), now + self.s.deadline_s, 0)
        self._count("bids_sent")
        try:
            gas = self.sender.gas_for(fn.estimate_gas({"from": self.address}))
        except Exception as e:  # noqa: BLE001
            name = self.reverts.name(e)
            if name in LOST_RACE_ERRORS:
                self._count("lost_races")
                self.emit("lost_race", auction=quote.auction_id, account=account, stage="preflight", reason=name,
                          price=quote.auction_price, limit=int(decision.max_price))
                return "lost_race"
            self._count("errors")
            self.emit("bid_error", auction=quote.auction_id, account=account, reason=name or str(e)[:160])
            return "error"
        try:
            tx = fn.build_transaction({"from": self.address, "gas": gas, **self.sender.fee_fields()})
            h = self.sender.send(tx, wait=False, what="bid")
            rcpt = self.w3.eth.wait_for_transaction_receipt(h, timeout=60, poll_latency=0.05)
        except Exception as e:  # noqa: BLE001
            self.sender.reset_nonce()
            self._count("errors")
            self.emit("bid_error", auction=quote.auction_id, account=account, reason=str(e)[:160])
            return "error"
        if int(rcpt["status"]) != 1:
            # mined but reverted: somebody filled first between our check and our inclusion
            self._count("lost_races")
            self.emit("lost_race", auction=quote.auction_id, account=account, stage="mined", tx=h.hex(),
                      price=quote.auction_price, limit=int(decision.max_price))
            return "lost_race"

        filled = self.auction.events.Bid().process_receipt(rcpt, errors=DISCARD)
        got = filled[0]["args"] if filled else {}
        claimed = self.ch.events.ClaimRecorded().process_receipt(rcpt, errors=DISCARD)
        self._may_hold_claim = True
        if self.auction.events.AuctionEnded().process_receipt(rcpt, errors=DISCARD):
            self.running.pop(account, None)
        self._count("bids_filled")
        self.emit("bid_filled", auction=quote.auction_id, account=account, tx=h.hex(),
                  price=int(got.get("price", quote.auction_price)), fraction=int(got.get("fractionWad", frac_wad)) / WAD,
                  amount=int(got.get("amount", 0)), valuation=quote.valuation, limit=int(decision.max_price),
                  claim=int(claimed[0]["args"]["claimWad"]) / WAD if claimed else None)
        return "filled"

    def consider(self, account: str) -> str:
        """One auction: value it, ask the strategy, and bid when it says so. An unsettled own claim on another
        account is settled first (then the lot is valued again: the own book and margin record changed). An
        auction whose sale is complete (``done``, by this bot's bid or another's) is finished (``finish``) and the
        own claim then settled at once (:meth:`settle_if_done`). Returns ``filled``, ``lost_race``, ``error``,
        ``no_bid`` or ``skipped``."""
        try:
            if self.auction_status(account) == "done":  # another bid completed the sale: only finish is left
                self.try_finish(account)
                self.settle_if_done()
                return "skipped"
            got = self.evaluate(account)
            if got is not None and got[1].bid and self.claim_elsewhere(account):
                if self.settle_claim(f"before bidding on {account}") == "error":
                    return "error"
                got = self.evaluate(account)
        except Exception as e:  # noqa: BLE001 - bad data for one auction must not stop the bot
            self._count("errors")
            self.emit("valuation_error", account=account, error=f"{type(e).__name__}: {e}"[:200])
            return "error"
        if got is None:
            return "skipped"
        quote, decision, _val = got
        if not decision.bid:
            self._count("no_bid")
            return "no_bid"
        self.emit("bidding", auction=quote.auction_id, account=account, price=quote.auction_price,
                  valuation=quote.valuation, risk_charge=quote.risk_charge, fraction=decision.fraction,
                  limit=decision.max_price)
        outcome = self.bid(account, quote, decision)
        if outcome == "filled":
            if self.auction_status(account) == "done":  # this bid completed the sale: end the auction now
                self.try_finish(account)
            self.settle_if_done()
        return outcome

    def step(self) -> None:
        """One pass: new events, the own claim settled when its auction is over, then every running auction."""
        self.poll_events()
        self.settle_if_done()
        for account in list(self.running):
            self.consider(account)

    def run(self, max_seconds: float | None = None) -> None:
        """Loop until :meth:`stop` (or ``max_seconds``)."""
        t0 = time.monotonic()
        self.emit("started", address=self.address, strategy=getattr(self.strategy, "name", "?"))
        if self.s.prime_claim_slot:
            self.prime_claim_slot()
        try:
            while not self._stop and (max_seconds is None or time.monotonic() - t0 < max_seconds):
                try:
                    self.step()
                except Exception as e:  # noqa: BLE001 - RPC hiccups: log, back off, go on
                    self._count("errors")
                    self.emit("step_error", error=f"{type(e).__name__}: {e}"[:200])
                    time.sleep(min(5.0, self.s.poll_s * 4))
                time.sleep(self.s.poll_s)
        finally:
            self.emit("stopped", **self.stats)
            self.close()

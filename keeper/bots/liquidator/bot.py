"""The liquidator bot (docs/liquidator.md): follows auction events, reads each running auction into a status
(:mod:`.status`), asks its model (:func:`.model.decide_lot`: a status in, a stance out; the lot valued with the
configured valuation, ``hedging`` by default, then its strategy), bids and settles its claims, and calls the buyer
of last resort (``takeAsLastResort``) when an auction is due for it (:mod:`.execution`)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, start_http_server

from keeper.bots.liquidator.execution import BidExecution
from keeper.bots.liquidator.hedging import HedgingAppetite
from keeper.bots.liquidator.model import VALUATIONS, LotValuer, decide_lot
from keeper.bots.liquidator.status import ChainStatus
from keeper.bots.liquidator.strategies import LotQuote, load_strategy
from keeper.bots.liquidator.valuation import RiskAppetite
from keeper.chain.deploy import web3_for
from keeper.chain.revert import RevertDecoder
from keeper.chain.sender import Sender

log = logging.getLogger("backstop.liquidator")


@dataclass
class LiquidatorSettings:
    """Run-time settings of one liquidator (see docs/liquidator.md)."""

    rpc_url: str
    deployment_file: str
    key: str
    strategy: str = "edge"
    edge: float = 0.02
    #: how lots are valued (:data:`keeper.bots.liquidator.model.VALUATIONS`): ``hedging`` (delta-hedged, charges the
    #: residual gamma/vega over ``hedge_horizon_s`` plus spreads; bids inside the deployed 0.1 MM span) or
    #: ``conservative`` (``aversion`` x the worst loss of the unhedged lot on a stress grid, collateral at
    #: ``own_haircut``)
    valuation: str = "hedging"
    hedge_horizon_s: float = 3600.0
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
    #: call ``takeAsLastResort`` (anyone may) when an auction is due for the buyer of last resort
    #: (``lastResortDue``: at its floor after ``lastResortAfter`` resets, with a fund account set); off: leave it to
    #: others (e.g. the fund's operator)
    take_last_resort: bool = True

    def __post_init__(self) -> None:
        if self.valuation not in VALUATIONS:
            raise ValueError(f"valuation must be one of {', '.join(VALUATIONS)}, got {self.valuation!r}")
        if not self.hedge_horizon_s > 0:
            raise ValueError(f"hedge horizon must be > 0 seconds, got {self.hedge_horizon_s}")

    def valuer(self) -> LotValuer:
        """The configured :class:`~keeper.bots.liquidator.model.LotValuer`."""
        return LotValuer(self.valuation, RiskAppetite(aversion=self.aversion, default_haircut=self.own_haircut),
                         HedgingAppetite(horizon_s=self.hedge_horizon_s))


class LiquidatorBot:
    """Watches breaches and auctions, values lots with its own engine and bids through its strategy.

    ``step()`` does one pass (new events, then every running auction); ``run()`` loops until stopped. Every
    decision and outcome is appended as a JSON line to ``events_file`` (the scenario's live view reads it).
    Its parts: ``status`` (:class:`ChainStatus`, what it reads), ``strategy`` (the decision) and ``execution``
    (:class:`BidExecution`, what it sends)."""

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
        self.sender = Sender(self.w3, settings.key)
        self.address = self.sender.address
        self.strategy = strategy or load_strategy(settings.strategy, settings.edge, settings.strategy_timeout_s)
        self.valuer = settings.valuer()
        self.reverts = RevertDecoder(dep["abi"]["auction"], dep["abi"]["clearinghouse"])
        self.from_block = int(dep["block"])
        self.running: dict[str, int] = {}  # account -> auction id
        self.stats = {"auctions_seen": 0, "bids_sent": 0, "bids_filled": 0, "lost_races": 0, "no_bid": 0,
                      "errors": 0, "starts": 0, "claims_settled": 0, "last_resort_takes": 0}
        self.status = ChainStatus(self.w3, self.ch, self.auction, settings, self.full, dep["quote_asset"], self.address,
                                  emit=self.emit, refresh_margin=lambda account: self.execution.refresh_margin(account))
        self.execution = BidExecution(self.w3, self.ch, self.auction, self.sender, self.reverts, settings, self.running,
                                      self.status, emit=self.emit, count=self.count)
        self._stop = False
        self._metrics = None
        if settings.metrics_port:
            self._start_metrics(settings.metrics_port)

    # -------------------------------------------------------------- plumbing
    def _start_metrics(self, port: int) -> None:

        self._metrics = {k: Counter(f"backstop_liquidator_{k}", f"liquidator {k}") for k in self.stats}
        start_http_server(port, addr="127.0.0.1")

    def count(self, key: str) -> None:
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

    # -------------------------------------------------------------- the parts' calls the bot answers for
    def bid(self, account: str, quote: LotQuote, decision) -> str:
        """:meth:`BidExecution.bid`."""
        return self.execution.bid(account, quote, decision)

    def prime_claim_slot(self) -> str:
        """:meth:`BidExecution.prime_claim_slot`."""
        return self.execution.prime_claim_slot()

    def own_claim(self) -> tuple[str, int] | None:
        """:meth:`ChainStatus.own_claim`."""
        return self.status.own_claim()

    def auction_status(self, account: str) -> str:
        """:meth:`ChainStatus.auction_status`."""
        return self.status.auction_status(account)


    # -------------------------------------------------------------- events
    def poll_events(self) -> None:
        head = int(self.w3.eth.block_number)
        if head < self.from_block:
            return
        for e in self.auction.events.AuctionStarted().get_logs(from_block=self.from_block, to_block=head):
            a = e["args"]["account"]
            self.running[a] = int(e["args"]["id"])
            self.count("auctions_seen")
            self.emit("auction_seen", auction=int(e["args"]["id"]), account=a, start_price=int(e["args"]["startPrice"]))
        for e in self.auction.events.AuctionEnded().get_logs(from_block=self.from_block, to_block=head):
            self.running.pop(e["args"]["account"], None)
        breached = [e["args"]["account"] for e in
                    self.ch.events.AccountBreached().get_logs(from_block=self.from_block, to_block=head)]
        self.from_block = head + 1
        if self.s.start_auctions:
            for acct in dict.fromkeys(breached):
                self.execution.try_start(acct)

    # -------------------------------------------------------------- claims
    def settle_if_done(self) -> str:
        """With ``settle_claims``: settle the own claim at once (a delivery moves no stateNonce, so an auction still
        running on its source goes on); if that auction's sale is complete, ``finish`` it first. Returns what
        :meth:`BidExecution.settle_claim` returned, or ``none``."""
        if not (self.s.settle_claims and self.status.may_hold_claim):
            return "none"
        claim = self.status.own_claim()
        if claim is None:
            return "none"
        status = self.status.auction_status(claim[0])
        if status == "done":  # the sale is complete: end the auction too
            self.execution.try_finish(claim[0])
        return self.execution.settle_claim("after the bid" if status == "running" else "auction ended")

    def claim_elsewhere(self, account: str) -> str | None:
        """The source of an unsettled own claim on an account other than ``account`` (a bid on ``account`` would
        revert with ``CH_ClaimUnsettled`` until it is settled), else None."""
        if not self.status.may_hold_claim:
            return None
        claim = self.status.own_claim()
        return claim[0] if claim is not None and claim[0].lower() != account.lower() else None

    # -------------------------------------------------------------- auctions
    def evaluate(self, account: str):
        """(quote, decision, valuation) for one running auction, or None when it needs a reset (then it is reset,
        or taken by the buyer of last resort when that is due) or is gone."""

        try:
            price, allowed, _factor, needs_reset = self.auction.functions.quote(account).call()
        except Exception as e:  # noqa: BLE001 - ended meanwhile
            self.running.pop(account, None)
            self.emit("auction_gone", account=account, reason=self.reverts.name(e) or str(e)[:80])
            return None
        if needs_reset:
            if self.s.take_last_resort and self.status.last_resort_due(account):
                self.execution.try_last_resort(account)
            else:
                self.execution.try_redo(account)
            return None
        st = self.status.auction_state(account, int(price), int(allowed))
        if st.remaining <= 0:
            return None
        stance = decide_lot(self.status.lot_status(st), self.valuer, self.strategy)
        return stance.quote, stance.decision, stance.valuation

    def consider(self, account: str) -> str:
        """One auction: value it, ask the strategy, and bid when it says so. An unsettled own claim on another
        account is settled first (then the lot is valued again: the own book and margin record changed). An
        auction whose sale is complete (``done``, by this bot's bid or another's) is finished (``finish``) and the
        own claim then settled at once (:meth:`settle_if_done`). Returns ``filled``, ``lost_race``, ``error``,
        ``no_bid`` or ``skipped``."""
        try:
            if self.status.auction_status(account) == "done":  # another bid completed the sale: only finish is left
                self.execution.try_finish(account)
                self.settle_if_done()
                return "skipped"
            got = self.evaluate(account)
            if got is not None and got[1].bid and self.claim_elsewhere(account):
                if self.execution.settle_claim(f"before bidding on {account}") == "error":
                    return "error"
                got = self.evaluate(account)
        except Exception as e:  # noqa: BLE001 - bad data for one auction must not stop the bot
            self.count("errors")
            self.emit("valuation_error", account=account, error=f"{type(e).__name__}: {e}"[:200])
            return "error"
        if got is None:
            return "skipped"
        quote, decision, _val = got
        if not decision.bid:
            self.count("no_bid")
            return "no_bid"
        self.emit("bidding", auction=quote.auction_id, account=account, price=quote.auction_price,
                  valuation=quote.valuation, risk_charge=quote.risk_charge, fraction=decision.fraction,
                  limit=decision.max_price)
        outcome = self.execution.bid(account, quote, decision)
        if outcome == "filled":
            if self.status.auction_status(account) == "done":  # this bid completed the sale: end the auction now
                self.execution.try_finish(account)
            self.settle_if_done()
        return outcome

    def step(self) -> None:
        """One pass: new events, the own claim settled when its auction is over, other accounts' ended claims this bot
        queued for delivery (the fund's account's after a last-resort take), then every running auction."""
        self.poll_events()
        self.settle_if_done()
        self.execution.deliver_claims()
        for account in list(self.running):
            self.consider(account)

    def run(self, max_seconds: float | None = None) -> None:
        """Loop until :meth:`stop` (or ``max_seconds``)."""
        t0 = time.monotonic()
        self.emit("started", address=self.address, strategy=getattr(self.strategy, "name", "?"),
                  valuation=self.s.valuation)
        if self.s.prime_claim_slot:
            self.execution.prime_claim_slot()
        try:
            while not self._stop and (max_seconds is None or time.monotonic() - t0 < max_seconds):
                try:
                    self.step()
                except Exception as e:  # noqa: BLE001 - RPC hiccups: log, back off, go on
                    self.count("errors")
                    self.emit("step_error", error=f"{type(e).__name__}: {e}"[:200])
                    time.sleep(min(5.0, self.s.poll_s * 4))
                time.sleep(self.s.poll_s)
        finally:
            self.emit("stopped", **self.stats)
            self.close()

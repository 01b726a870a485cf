"""Pluggable bidding strategies for the liquidator.

A strategy sees one :class:`LotQuote` (what an auction offers now, what the liquidator thinks it is worth, what a
bid would cost in gas and in its own margin) and answers a :class:`BidDecision` (bid or not, which fraction of
the lot, the price limit). Two kinds:

* a Python class implementing :class:`Strategy` (``decide(quote) -> BidDecision``); :class:`EdgeStrategy` is the
  default: bid when the auction price is below the risk-adjusted valuation by at least ``edge``, net of gas;
* :class:`ExternalCommandStrategy`: any program, started once and kept running, fed one JSON object per line on
  its stdin and answering one JSON object per line on its stdout (the model-process protocol of MakerDAO's
  auction-keeper). A silent, slow, dead or garbled program means "no bid" (logged), never a crash; a dead program
  is restarted on the next quote.

``python -m keeper.bots.liquidator.strategies --edge 0.05`` runs :class:`EdgeStrategy` as such an external program (the
reference implementation of the protocol, and what the round-trip test drives).

Amounts are integers in quote-asset base units; fractions are floats in [0, 1] (the liquidator converts to WAD).
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import select
import shlex
import subprocess
import sys
import time
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Protocol, Sequence, runtime_checkable

log = logging.getLogger("backstop.liquidator.strategy")


@dataclass(frozen=True)
class LotQuote:
    """What a strategy is asked about: one auction at one moment.

    ``auction_price``: current price of the whole remaining lot (quote units; the Dutch curve's value now).
    ``valuation``: the liquidator's own model value of the whole remaining lot; ``risk_charge``: what its valuation
    deducts for holding it (hedging: hedge and exit spreads plus residual gamma/vega over the hedge horizon;
    conservative: stress loss times aversion; :mod:`keeper.bots.liquidator.model`). ``gas_cost``: cost of one bid transaction in
    quote units. ``free_margin``: the liquidator's own margin headroom before the bid; ``margin_per_lot``: the
    headroom the whole lot would consume (price paid plus initial margin of the positions taken on).
    ``max_fraction``: most the auction lets one bid take now; ``min_fraction``: smallest fill worth a bid.
    """

    auction_id: int
    account: str
    now: int
    auction_price: int
    valuation: int
    risk_charge: int
    gas_cost: int
    free_margin: int
    margin_per_lot: int
    max_fraction: float
    min_fraction: float = 0.01
    next_price: int | None = None

    def to_json(self) -> dict:
        """JSON-ready dict (every field)."""
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> "LotQuote":
        """Build from a dict, ignoring unknown keys; raises ``ValueError`` on a missing field."""
        names = {f.name for f in fields(LotQuote)}
        missing = [f.name for f in fields(LotQuote) if f.name not in d and f.default is MISSING]
        if missing:
            raise ValueError(f"bad lot quote: missing {', '.join(missing)}")
        return LotQuote(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class BidDecision:
    """``bid``: whether to bid now; ``fraction`` of the lot in (0, 1]; ``max_price``: the price limit for the
    whole lot (the contract reverts the bid if the auction price is above it); ``reason`` for the log."""

    bid: bool
    fraction: float = 0.0
    max_price: int = 0
    reason: str = ""

    def to_json(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


NO_BID = BidDecision(False, reason="no bid")


@runtime_checkable
class Strategy(Protocol):
    """The strategy interface: a name and ``decide``."""

    name: str

    def decide(self, quote: LotQuote) -> BidDecision:  # pragma: no cover - protocol
        """Answer one quote."""
        ...


def affordable_fraction(quote: LotQuote) -> float:
    """Largest fraction the liquidator's own margin allows: ``free_margin / margin_per_lot``, capped by the
    auction's ``max_fraction`` and by 1."""
    if quote.margin_per_lot <= 0:
        return min(1.0, quote.max_fraction)
    return max(0.0, min(1.0, quote.max_fraction, quote.free_margin / quote.margin_per_lot))


def decide_on_quote(strategy: Strategy, quote: LotQuote, equity: int, remaining: float) -> BidDecision:
    """``strategy``'s decision on ``quote``, except that an insolvent account (``equity`` < 0, quote base units)
    must be bought whole: no bid while the auction allows less than the ``remaining`` fraction, and a bid takes all
    of it. (:func:`keeper.bots.liquidator.model.decide_lot` values the lot and calls this.)"""
    if equity < 0 and quote.max_fraction < remaining - 1e-12:
        return BidDecision(False, reason="insolvent auction must be bought whole")
    decision = strategy.decide(quote)
    if equity < 0 and decision.bid:
        decision = BidDecision(True, remaining, decision.max_price, decision.reason + " (whole: insolvent)")
    return decision


@dataclass(frozen=True)
class EdgeStrategy:
    """Bid when the auction price is at or below the break-even price at this edge:
    ``limit = A - edge * |A| - gas_cost / fraction`` with ``A = valuation - risk_charge`` (for a positive lot this
    is ``A * (1 - edge)``; for a liability, ``A < 0``, the bidder asks to be paid ``edge`` more than it is worth).

    The fraction is the largest the liquidator's margin and the auction allow. The price limit goes with the bid,
    so a bid mined after the price moved can never pay more than the edge allows.
    """

    edge: float = 0.02
    name: str = "edge"

    def __post_init__(self) -> None:
        if not (0.0 <= self.edge < 1.0):
            raise ValueError(f"edge must be in [0, 1), got {self.edge}")

    def limit_price(self, quote: LotQuote, fraction: float) -> int:
        """Break-even price of the whole lot at this edge for a fill of ``fraction`` (may be <= 0)."""
        a = float(quote.valuation - quote.risk_charge)
        return int(math.floor(a - self.edge * abs(a) - quote.gas_cost / fraction))

    def decide(self, quote: LotQuote) -> BidDecision:
        """Bid the affordable fraction at a limit that keeps the edge, or explain why not."""
        f = affordable_fraction(quote)
        if f < quote.min_fraction or f <= 0:
            return BidDecision(False, reason=f"affordable fraction {f:.4f} below minimum {quote.min_fraction}")
        limit = self.limit_price(quote, f)
        if limit <= 0 and quote.valuation > 0:
            return BidDecision(False, reason=f"lot not worth gas at edge {self.edge}: limit {limit}")
        if quote.auction_price > limit:
            return BidDecision(False, reason=f"price {quote.auction_price} above limit {limit}")
        return BidDecision(True, f, limit, reason=f"price {quote.auction_price} <= limit {limit}")


@dataclass(frozen=True)
class NeverBidStrategy:
    """Never bids (``--strategy none``): the bot still starts auctions, resets them and calls the buyer of last
    resort when one is due, so a run with only such bots is the "no bidder at all" case of issue 14."""

    name: str = "none"

    def decide(self, quote: LotQuote) -> BidDecision:
        """No bid, whatever the price."""
        return BidDecision(False, reason="strategy none: never bids")


def _validate_decision(d: object, quote: LotQuote) -> BidDecision:
    """Turn an external answer into a decision; raises ``ValueError`` naming what is wrong."""
    if not isinstance(d, dict):
        raise ValueError("answer is not a JSON object")
    if not d.get("bid"):
        return BidDecision(False, reason=str(d.get("reason", "external: no bid")))
    frac = d.get("fraction")
    price = d.get("max_price")
    if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not math.isfinite(frac):
        raise ValueError(f"fraction must be a number, got {frac!r}")
    if not 0.0 < float(frac) <= min(1.0, quote.max_fraction) + 1e-12:
        raise ValueError(f"fraction {frac} outside (0, {min(1.0, quote.max_fraction)}]")
    if not isinstance(price, int) or isinstance(price, bool) or price <= 0:
        raise ValueError(f"max_price must be a positive integer (quote base units), got {price!r}")
    return BidDecision(True, float(frac), int(price), str(d.get("reason", "external")))


class ExternalCommandStrategy:
    """Run ``command`` as a long-lived model process speaking line-delimited JSON.

    Request (one line): ``{"type": "quote", ...LotQuote fields...}``. Answer (one line): ``{"bid": false}`` or
    ``{"bid": true, "fraction": 0.5, "max_price": 123456789}``. An answer that is late (``timeout_s``), not JSON
    or out of bounds gives "no bid" and is logged; the process is killed and restarted on the next quote when it
    has died or timed out (a late answer could otherwise be read as the answer to the next quote).
    """

    def __init__(self, command: Sequence[str] | str, timeout_s: float = 2.0, name: str | None = None,
                 env: dict | None = None):
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise ValueError("external strategy command is empty")
        self.timeout_s = timeout_s
        self.name = name or f"external:{os.path.basename(self.argv[0])}"
        self.env = env
        self._proc: subprocess.Popen | None = None
        self._buf = b""
        self.restarts = 0
        self.failures = 0

    def _start(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            self.restarts += 1
            log.warning("strategy %s exited with %s; restarting", self.name, self._proc.returncode)
        self._proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=self.env, bufsize=0
        )
        self._buf = b""
        return self._proc

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._buf = b""

    def _readline(self, proc: subprocess.Popen, deadline: float) -> bytes | None:
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def decide(self, quote: LotQuote) -> BidDecision:
        """Send the quote, wait up to ``timeout_s`` for one answer line, validate it."""
        try:
            proc = self._start()
            proc.stdin.write((json.dumps({"type": "quote", **quote.to_json()}) + "\n").encode())
            proc.stdin.flush()
        except OSError as e:
            self.failures += 1
            log.error("strategy %s: cannot send quote: %s", self.name, e)
            self._kill()
            return BidDecision(False, reason=f"external strategy unavailable: {e}")
        line = self._readline(proc, time.monotonic() + self.timeout_s)
        if line is None:
            self.failures += 1
            log.error("strategy %s: no answer within %.1fs (or it exited); no bid", self.name, self.timeout_s)
            self._kill()
            return BidDecision(False, reason="external strategy timed out or exited")
        try:
            return _validate_decision(json.loads(line), quote)
        except (ValueError, json.JSONDecodeError) as e:
            self.failures += 1
            log.error("strategy %s: bad answer %r: %s; no bid", self.name, line[:200], e)
            return BidDecision(False, reason=f"bad external answer: {e}")

    def close(self) -> None:
        """Stop the model process (closing its stdin first so it can exit cleanly)."""
        if self._proc is None:
            return
        try:
            if self._proc.stdin:
                self._proc.stdin.close()
            self._proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self._kill()
        self._proc = None


def load_strategy(spec: str, edge: float = 0.02, timeout_s: float = 2.0) -> Strategy:
    """Strategy from a spec string: ``edge`` (built-in, with ``edge``), ``edge:0.05``, ``none`` (never bids),
    ``cmd:<shell-quoted command>`` (external program) or ``py:<module>:<Class>`` (a class taking no arguments)."""
    if spec == "edge":
        return EdgeStrategy(edge)
    if spec == "none":
        return NeverBidStrategy()
    if spec.startswith("edge:"):
        return EdgeStrategy(float(spec.split(":", 1)[1]))
    if spec.startswith("cmd:"):
        return ExternalCommandStrategy(spec[4:], timeout_s=timeout_s)
    if spec.startswith("py:"):

        try:
            _, mod, cls = spec.split(":", 2)
            obj = getattr(importlib.import_module(mod), cls)()
        except (ValueError, ImportError, AttributeError) as e:
            raise ValueError(f"cannot load strategy {spec!r}: {e}") from e
        if not isinstance(obj, Strategy):
            raise ValueError(f"{spec!r} has no name/decide: not a strategy")
        return obj
    raise ValueError(f"unknown strategy {spec!r} (use edge, edge:<x>, none, cmd:<command> or py:<module>:<Class>)")


def _serve(edge: float) -> int:
    """Reference external strategy: EdgeStrategy over stdin/stdout, one JSON line each way."""
    strat = EdgeStrategy(edge)
    for raw in sys.stdin:
        raw = raw.strip()
        if not raw:
            continue
        try:
            quote = LotQuote.from_json(json.loads(raw))
            out = strat.decide(quote).to_json()
        except (ValueError, json.JSONDecodeError) as e:
            out = {"bid": False, "reason": f"bad quote: {e}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through a real subprocess in the tests

    ap = argparse.ArgumentParser(description="EdgeStrategy as an external liquidator model process")
    ap.add_argument("--edge", type=float, default=0.02)
    sys.exit(_serve(ap.parse_args().edge))

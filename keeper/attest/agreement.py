"""Keepers agree on one quote set per block (issue 15, item 6).

Keepers that read a live venue at different moments see slightly different quotes, fit slightly different
surfaces and would never sign M identical roots. So each block one keeper, the **proposer** (the first of the
block's rotation order among the keepers that are up, :func:`keeper.exchange.book.rotation_order`), publishes the
market view it read (per asset: the aggregated spot and the option chain) as a :class:`QuoteSet`; every other keeper
fetches it and checks it against its own view with :func:`check_quote_set` before it builds anything on it:

* the spot must be within ``spot_tolerance`` (relative) of its own;
* every option row it also sees (matched by expiry, strike and call/put) must have its bid and its ask within
  ``max(quote_spread_multiple x own bid-ask width, quote_relative x own mid, quote_floor)`` of its own (a missing
  side must be missing on both);
* rows it does not see, and rows it sees that the proposer left out, may each be at most ``max_unmatched_share`` of
  the proposer's rows (a venue lists and delists series between two reads);
* the proposer's chain must not be older than its own by more than ``max_staleness_s``.

Accepted: the keeper uses the proposer's set, so all agreeing keepers fit the same surface and sign the same root.
Rejected: it signs nothing built on that set this block and logs every row that differs (a proposer that fabricated
quotes gets no signature from an honest keeper; the next block has another proposer).

Pure: no network, no files. The exchange carries the documents (:func:`quote_set_document`), the bot decides.
The agreed chain is what the keeper fits and archives (the inputs document's ``quotes``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from keeper.attest.portfolio import chain_from_quotes, quotes_document
from keeper.codec.canonical import canonical_json, inputs_hash
from keeper.errors import BackstopError
from keeper.quant.chains import OptionChain

SCHEMA = "backstop-quote-set/1"


class QuoteSetInvalid(BackstopError, ValueError):
    """A published quote set that cannot be read (wrong schema, missing or malformed fields)."""


@dataclass(frozen=True)
class QuoteSet:
    """One asset's market view for one block: the aggregated spot [quote asset per unit] and, for an option
    underlying, the chain it read."""

    asset: str
    block: int
    spot: float
    chain: Optional[OptionChain] = None


@dataclass(frozen=True)
class AgreementRule:
    """How far a proposer's view may be from a keeper's own (module docstring)."""

    spot_tolerance: float = 0.002  # [fraction of own spot]
    quote_spread_multiple: float = 1.0  # [x own bid-ask width]
    quote_relative: float = 0.02  # [fraction of own mid]
    quote_floor: float = 0.0  # [quote asset per option]
    max_unmatched_share: float = 0.05  # [fraction of the proposer's rows]
    max_staleness_s: float = 60.0  # [seconds]

    def __post_init__(self) -> None:
        for name in ("spot_tolerance", "quote_spread_multiple", "quote_relative", "quote_floor",
                     "max_unmatched_share", "max_staleness_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"AgreementRule.{name} must be a finite number >= 0, got {v!r}")


@dataclass(frozen=True)
class Disagreement:
    """One number the proposer's view has that the keeper's own does not accept."""

    what: str  # "spot", "bid", "ask", "unmatched", "missing", "stale"
    row: Optional[tuple] = None  # (expiry_ts, strike, is_call)
    proposed: Optional[float] = None
    own: Optional[float] = None
    tolerance: Optional[float] = None

    def to_json(self) -> dict:
        return {"what": self.what, "row": list(self.row) if self.row else None, "proposed": self.proposed,
                "own": self.own, "tolerance": self.tolerance}


@dataclass(frozen=True)
class Agreement:
    """The verdict on a proposer's set: ``accepted``, with every disagreement (empty when accepted outright)."""

    accepted: bool
    disagreements: tuple[Disagreement, ...] = field(default_factory=tuple)
    matched: int = 0  # rows compared

    @property
    def reason(self) -> str:
        kinds = sorted({d.what for d in self.disagreements})
        return "agreed" if self.accepted else "quote_set_rejected: " + ",".join(kinds)


# ------------------------------------------------------------------------------------------------------------
# documents
# ------------------------------------------------------------------------------------------------------------
def _num(x: float) -> Optional[float]:
    return float(x) if math.isfinite(float(x)) else None


def quote_set_document(qs: QuoteSet) -> dict:
    """The set as a JSON document (what the proposer publishes); the chain in the inputs document's own ``quotes``
    form (:func:`keeper.attest.portfolio.quotes_document`, NaN as null), so the agreed set is what gets archived."""
    doc: dict[str, Any] = {"schema": SCHEMA, "asset": qs.asset.lower(), "block": int(qs.block),
                           "spot": _num(qs.spot)}
    if qs.chain is not None:
        doc["chain"] = quotes_document(qs.chain)
    return doc


def quote_set_hash(doc: Mapping[str, Any]) -> str:
    """keccak-256 (0x hex) of the canonical serialization of a quote-set document: what the set is known by."""
    return "0x" + inputs_hash(doc).hex()


def quote_set_bytes(doc: Mapping[str, Any]) -> bytes:
    """The canonical serialization (what is hashed)."""
    return canonical_json(doc)


def quote_set_from_document(doc: Mapping[str, Any]) -> QuoteSet:
    """Read a published document back; :class:`QuoteSetInvalid` names what is wrong."""
    if not isinstance(doc, Mapping) or doc.get("schema") != SCHEMA:
        raise QuoteSetInvalid(f"quote set: schema is not {SCHEMA!r}")
    try:
        asset, block = str(doc["asset"]), int(doc["block"])
        spot = float(doc["spot"]) if doc.get("spot") is not None else math.nan
    except (KeyError, TypeError, ValueError) as exc:
        raise QuoteSetInvalid(f"quote set: bad asset, block or spot ({exc})") from None
    chain = None
    if doc.get("chain") is not None:
        try:
            chain = chain_from_quotes(doc["chain"])
        except ValueError as exc:
            raise QuoteSetInvalid(f"quote set: bad chain ({exc})") from None
    return QuoteSet(asset, block, spot, chain)


# ------------------------------------------------------------------------------------------------------------
# the check
# ------------------------------------------------------------------------------------------------------------
def _rows(chain: OptionChain) -> dict[tuple, int]:
    keys = zip(chain.expiry_ts.tolist(), chain.strike.tolist(), chain.is_call.tolist())
    return {(int(e), float(k), bool(c)): i for i, (e, k, c) in enumerate(keys)}


def check_quote_set(proposed: QuoteSet, own: QuoteSet, rule: AgreementRule = AgreementRule()) -> Agreement:
    """Accept the proposer's set only if it is the keeper's own view up to ``rule`` (module docstring)."""
    out: list[Disagreement] = []
    if not (math.isfinite(proposed.spot) and math.isfinite(own.spot) and own.spot > 0):
        out.append(Disagreement("spot", proposed=_num(proposed.spot), own=_num(own.spot)))
    else:
        tol = rule.spot_tolerance * own.spot
        if abs(proposed.spot - own.spot) > tol:
            out.append(Disagreement("spot", proposed=proposed.spot, own=own.spot, tolerance=tol))
    pc, oc = proposed.chain, own.chain
    matched = 0
    if (pc is None) != (oc is None):
        out.append(Disagreement("missing", proposed=None if pc is None else float(len(pc)),
                                own=None if oc is None else float(len(oc))))
    elif pc is not None and oc is not None:
        if oc.asof - pc.asof > rule.max_staleness_s:
            out.append(Disagreement("stale", proposed=pc.asof, own=oc.asof, tolerance=rule.max_staleness_s))
        prow, orow = _rows(pc), _rows(oc)
        common = [k for k in prow if k in orow]
        matched = len(common)
        n = max(len(prow), 1)
        only_p, only_o = len(prow) - matched, len(orow) - matched
        if only_p > rule.max_unmatched_share * n:
            out.append(Disagreement("unmatched", proposed=float(only_p), own=0.0,
                                    tolerance=rule.max_unmatched_share * n))
        if only_o > rule.max_unmatched_share * n:
            out.append(Disagreement("missing", proposed=0.0, own=float(only_o),
                                    tolerance=rule.max_unmatched_share * n))
        if common:
            pi = np.array([prow[k] for k in common])
            oi = np.array([orow[k] for k in common])
            ob, oa = oc.bid[oi], oc.ask[oi]
            width = np.where(np.isfinite(ob) & np.isfinite(oa), oa - ob, 0.0)
            mid = np.where(np.isfinite(ob) & np.isfinite(oa), 0.5 * (ob + oa), np.where(np.isfinite(oa), oa, ob))
            tol = np.maximum.reduce([rule.quote_spread_multiple * width,
                                     rule.quote_relative * np.nan_to_num(mid, nan=0.0),
                                     np.full(len(common), rule.quote_floor)])
            for side, p_side, o_side in (("bid", pc.bid[pi], ob), ("ask", pc.ask[pi], oa)):
                both = np.isfinite(p_side) & np.isfinite(o_side)
                one = np.isfinite(p_side) != np.isfinite(o_side)
                off = both & (np.abs(np.where(both, p_side - o_side, 0.0)) > tol)
                for j in np.flatnonzero(off | one):
                    out.append(Disagreement(side, row=common[j], proposed=_num(p_side[j]), own=_num(o_side[j]),
                                            tolerance=float(tol[j])))
    return Agreement(not out, tuple(out), matched)

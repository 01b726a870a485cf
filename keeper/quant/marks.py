"""Hybrid mark: the market mid where the book is deep and tight and agrees with the model, the model price otherwise.

A thin option book is easy to push around: one fat-finger or manipulated quote can move a last-trade or mid mark
enough to liquidate healthy accounts. :func:`hybrid_marks` therefore trusts the book of a series only when

* both sides are quoted, not crossed and not stale,
* top-of-book depth ``min(bid_size, ask_size)`` is at least a threshold (contracts),
* the relative spread ``(ask - bid) / mid`` is at most a threshold, and
* the mid lies within a band around the model price (``max(rel * model, vol_band * vega, abs)``): even a deep,
  tight book whose mid is far from the fitted surface is not trusted.

Each threshold has an *enter* value (stricter, applied to a series marked to model last time) and a *leave* value
(looser, applied to a series marked to market last time), so a book that hovers around a threshold does not make
the mark flap; and a series on the model switches to the market only once its book has passed the enter tests in
``enter_blocks`` consecutive attested documents (a fake deep, tight book has to be held that long). The function is
pure: the previous state (``market``, ``passes``) goes in and the new state comes out with the marks and a
:class:`MarkReason` per series. The keepers take the previous state from the previous attested inputs document
(:func:`state_from_document`), never from process memory, so every keeper, also a restarted one, decides the same.

:func:`match_quotes` finds the venue quote of each on-chain series (the matching rule, docs/surface.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Mapping, Optional

import numpy as np

from keeper.quant.chains import OptionChain
from keeper.quant.pricing import black76_greeks
from keeper.quant.surface import fitted_forward


class MarkReason(IntEnum):
    """Why a series got the mark it got (the first failing test, in this order)."""

    MARKET_DEEP_TIGHT = 0  # market mid: deep, tight book within the model band
    NO_MARK = 1  # no usable model price: the series must not be marked (nor signed)
    MODEL_NO_QUOTE = 2  # neither side quoted
    MODEL_CROSSED = 3  # bid > ask
    MODEL_ONE_SIDED = 4  # one side missing
    MODEL_STALE = 5  # quote older than the limit
    MODEL_THIN_DEPTH = 6  # top-of-book depth below the threshold (or unknown)
    MODEL_WIDE_SPREAD = 7  # relative spread above the threshold
    MODEL_MID_OUTSIDE_MODEL_BAND = 8  # deep and tight, but the mid disagrees with the model
    MODEL_PENDING = 9  # passes the enter tests, but in fewer than ``enter_blocks`` consecutive attested documents
    MODEL_UNMATCHED = 10  # the block's quotes have no quote of this contract (underlying, strike, expiry, call/put)
    EXPIRED_INTRINSIC = 11  # expired: intrinsic value at its settlement price, no quote used


#: the document's words for a series' branch
MARKET, MODEL = "market", "model"

#: the rule behind each reason, as ``backstop verify`` names it
RULES = {
    MarkReason.MARKET_DEEP_TIGHT: "every test passed (enter thresholds from the model, leave thresholds on the market, "
                                  "enter_blocks consecutive documents): mark = mid",
    MarkReason.NO_MARK: "no finite model price: no mark",
    MarkReason.MODEL_NO_QUOTE: "neither side quoted: model",
    MarkReason.MODEL_CROSSED: "bid > ask: model",
    MarkReason.MODEL_ONE_SIDED: "one side missing: model",
    MarkReason.MODEL_STALE: "quote older than max_quote_age_s: model",
    MarkReason.MODEL_THIN_DEPTH: "min(bid_size, ask_size) below the depth threshold (enter on the model, leave on the "
                                 "market): model",
    MarkReason.MODEL_WIDE_SPREAD: "(ask - bid) / mid above the spread threshold (enter on the model, leave on the "
                                  "market): model",
    MarkReason.MODEL_MID_OUTSIDE_MODEL_BAND: "|mid - model| above max(band_rel * model, band_vol * vega, band_abs): "
                                             "model",
    MarkReason.MODEL_PENDING: "passed the enter tests in fewer than enter_blocks consecutive attested documents: model",
    MarkReason.MODEL_UNMATCHED: "no quote of this contract (strike, expiry, call/put) in the block's quotes: model",
    MarkReason.EXPIRED_INTRINSIC: "expired: intrinsic value at the settlement price",
}


@dataclass(frozen=True)
class MarkConfig:
    """Enter (stricter) and leave (looser) thresholds of the hybrid mark."""

    enter_max_rel_spread: float = 0.05
    leave_max_rel_spread: float = 0.10
    enter_min_depth: float = 5.0  # contracts on the thinner side
    leave_min_depth: float = 2.0
    enter_band_rel: float = 0.05  # |mid - model| <= max(rel * model, vol * vega, abs)
    leave_band_rel: float = 0.10
    enter_band_vol: float = 0.02  # 2 vol points of vega
    leave_band_vol: float = 0.04
    band_abs: float = 0.0  # quote-asset units
    max_quote_age_s: float = 300.0
    #: consecutive attested documents in which a series on the model must pass the enter tests before it is marked
    #: to market (1: at once)
    enter_blocks: int = 1

    def to_document(self) -> dict:
        """The configuration as the inputs document records it (``underlyings[i].hybrid.config``)."""
        return {f: (int(v) if f == "enter_blocks" else float(v)) for f, v in vars(self).items()}

    @classmethod
    def from_document(cls, d) -> "MarkConfig":
        """The configuration an inputs document records (fields this software does not know are ignored; missing
        ones take their defaults); the default configuration when none was recorded."""
        if not d:
            return cls()
        known = set(cls.__dataclass_fields__)
        return cls(**{k: (int(v) if k == "enter_blocks" else float(v)) for k, v in dict(d).items() if k in known})


@dataclass(frozen=True)
class MarkResult:
    """Marks (NaN where :attr:`MarkReason.NO_MARK`), the new state (True = marked to market) and reasons."""

    mark: np.ndarray
    market: np.ndarray  # bool: pass back as ``prev_market`` next time
    reason: np.ndarray  # int8 MarkReason
    mid: np.ndarray
    rel_spread: np.ndarray
    depth: np.ndarray
    #: consecutive attested documents in which the series passed its test, capped at ``enter_blocks``: pass back as
    #: ``prev_passes`` next time
    passes: np.ndarray


def hybrid_marks(bid, ask, bid_size, ask_size, model_price, prev_market=None, *, model_vega=None, quote_age=None,
                 config: MarkConfig = MarkConfig(), prev_passes=None, matched=None) -> MarkResult:
    """Hybrid mark per series (all inputs broadcast to one shape; NaN = missing).

    ``prev_market`` / ``prev_passes`` are the ``market`` / ``passes`` state returned last time (None: all series
    start on the model with no passes, so the stricter enter thresholds apply). A series on the model whose book
    passes the enter tests has ``passes`` one more than before, else 0; it is marked to market once ``passes``
    reaches ``config.enter_blocks`` (before that: :attr:`MarkReason.MODEL_PENDING`). A series on the market stays
    there while its book passes the leave tests; when it fails them it is on the model with ``passes`` 0.
    ``model_vega`` (price per unit of vol) widens the band by ``vol_band * vega``; ``quote_age`` (seconds) marks
    stale books to model; ``matched`` (bool, default all True) False where no venue quote of the series exists
    (:attr:`MarkReason.MODEL_UNMATCHED`)."""
    bid, ask, bid_size, ask_size, model = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (
        bid, ask, bid_size, ask_size, model_price)))
    shape = bid.shape
    prev = np.zeros(shape, dtype=bool) if prev_market is None else np.broadcast_to(
        np.asarray(prev_market, dtype=bool), shape)
    before = np.zeros(shape, dtype=np.int64) if prev_passes is None else np.broadcast_to(
        np.asarray(prev_passes, dtype=np.int64), shape)
    found = np.ones(shape, dtype=bool) if matched is None else np.broadcast_to(np.asarray(matched, dtype=bool), shape)
    vega = np.zeros(shape) if model_vega is None else np.broadcast_to(
        np.nan_to_num(np.asarray(model_vega, dtype=np.float64)), shape)
    age = np.zeros(shape) if quote_age is None else np.broadcast_to(np.asarray(quote_age, dtype=np.float64), shape)

    has_bid = np.isfinite(bid) & (bid > 0.0)
    has_ask = np.isfinite(ask) & (ask > 0.0)
    mid = np.where(has_bid & has_ask, 0.5 * (bid + ask), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_spread = (ask - bid) / mid
    depth = np.fmin(bid_size, ask_size)  # NaN only when both unknown
    depth = np.where(np.isfinite(bid_size) & np.isfinite(ask_size), depth, np.nan)

    max_spread = np.where(prev, config.leave_max_rel_spread, config.enter_max_rel_spread)
    min_depth = np.where(prev, config.leave_min_depth, config.enter_min_depth)
    band = np.maximum.reduce([
        np.where(prev, config.leave_band_rel, config.enter_band_rel) * np.abs(model),
        np.where(prev, config.leave_band_vol, config.enter_band_vol) * vega,
        np.full(shape, config.band_abs),
    ])
    model_ok = np.isfinite(model) & (model >= 0.0)

    tests = (
        (MarkReason.NO_MARK, ~model_ok),
        (MarkReason.MODEL_UNMATCHED, ~found),
        (MarkReason.MODEL_NO_QUOTE, ~has_bid & ~has_ask),
        (MarkReason.MODEL_CROSSED, has_bid & has_ask & (bid > ask)),
        (MarkReason.MODEL_ONE_SIDED, ~(has_bid & has_ask)),
        (MarkReason.MODEL_STALE, ~(age <= config.max_quote_age_s)),
        (MarkReason.MODEL_THIN_DEPTH, ~(depth >= min_depth)),
        (MarkReason.MODEL_WIDE_SPREAD, ~(rel_spread <= max_spread)),
        (MarkReason.MODEL_MID_OUTSIDE_MODEL_BAND, ~(np.abs(mid - model) <= band)),
    )
    reason = np.full(shape, -1, dtype=np.int8)
    for code, failed in tests:
        reason = np.where((reason < 0) & failed, np.int8(code), reason)
    passed = reason < 0  # every test passed (enter thresholds on the model, leave thresholds on the market)
    need = max(int(config.enter_blocks), 1)
    passes = np.where(passed, np.minimum(np.where(prev, need - 1, before) + 1, need), 0).astype(np.int64)
    market = passed & (prev | (passes >= need))
    reason = np.where(market, np.int8(MarkReason.MARKET_DEEP_TIGHT),
                      np.where(passed, np.int8(MarkReason.MODEL_PENDING), reason)).astype(np.int8)
    mark = np.where(market, mid, np.where(model_ok, model, np.nan))
    return MarkResult(mark=mark, market=market, reason=reason, mid=mid, rel_spread=rel_spread, depth=depth,
                      passes=passes)


def match_quotes(chain: Optional[OptionChain], strike, expiry, is_call) -> np.ndarray:
    """The row of ``chain`` quoting each on-chain series, -1 where none does (docs/surface.md, "Matching").

    The rule: the same contract, i.e. call/put equal, expiry equal to the second (the venue's expiry timestamp,
    e.g. Deribit's 08:00 UTC, must be the series' on-chain expiry) and strike equal after rounding both to 1e-6
    of the quote asset (``strike``: the series' strike in quote units per unit of underlying, its WAD / 1e18; the
    chain's strikes are in the same units: the keepers' chains are in USD and the quote asset is a USD stable
    coin). A contract quoted twice matches its first row in chain order. The chain is the asset's own (one
    underlying), so the underlying is equal by construction."""
    strike = np.atleast_1d(np.asarray(strike, dtype=np.float64))
    out = np.full(strike.shape, -1, dtype=np.int64)
    if chain is None or len(chain) == 0:
        return out
    rows: dict = {}
    for j, (k, e, c) in enumerate(zip(chain.strike.tolist(), chain.expiry_ts.tolist(), chain.is_call.tolist())):
        if math.isfinite(k) and math.isfinite(e):
            rows.setdefault((round(k, 6), int(round(e)), bool(c)), j)
    for i, (k, e, c) in enumerate(zip(strike.tolist(), np.atleast_1d(np.asarray(expiry)).tolist(),
                                      np.atleast_1d(np.asarray(is_call, dtype=bool)).tolist())):
        if math.isfinite(k):
            out[i] = rows.get((round(k, 6), int(e), bool(c)), -1)
    return out


def state_from_document(previous: Optional[Mapping], series_ids) -> tuple[np.ndarray, np.ndarray, list]:
    """The hybrid state of each series id in an attested inputs document (``series[i].hybrid``: ``branch`` and
    ``passes``): ``(market, passes, prev)`` with ``prev`` the recorded ``{"branch", "passes"}`` per series, ``None``
    for a series the document does not have (or no document: a cold start, every series on the model)."""
    by_id = {}
    for s in (previous or {}).get("series") or []:
        h = s.get("hybrid") if isinstance(s, Mapping) else None
        if isinstance(h, Mapping) and h.get("branch") in (MARKET, MODEL):
            by_id[int(s["id"])] = {"branch": str(h["branch"]), "passes": int(h.get("passes", 0))}
    prev = [by_id.get(int(i)) for i in series_ids]
    market = np.array([p is not None and p["branch"] == MARKET for p in prev], dtype=bool)
    passes = np.array([p["passes"] if p is not None else 0 for p in prev], dtype=np.int64)
    return market, passes, prev


def branch_counts(document: Optional[Mapping]) -> dict[str, dict[str, int]]:
    """Per underlying asset of an inputs document, how many of its series are marked on each hybrid branch
    (``{asset: {"market": n, "model": m}}``, from ``series[i].hybrid.branch``; series without a hybrid state, e.g.
    expired ones valued at their settlement price, are not counted). What ``keeper status`` and the
    ``backstop_keeper_marks{asset, branch}`` gauge show."""
    doc = document or {}
    assets = [str(u.get("asset", "")).lower() for u in doc.get("underlyings") or []]
    out = {a: {MARKET: 0, MODEL: 0} for a in assets}
    for s in doc.get("series") or []:
        h = s.get("hybrid") if isinstance(s, Mapping) else None
        u = int(s.get("underlying", -1)) if isinstance(s, Mapping) else -1
        if isinstance(h, Mapping) and h.get("branch") in (MARKET, MODEL) and 0 <= u < len(assets):
            out[assets[u]][str(h["branch"])] += 1
    return out


def model_prices(chain: OptionChain, surface) -> tuple[np.ndarray, np.ndarray]:
    """Model price and vega of every series of ``chain`` from a fitted :class:`keeper.quant.surface.VolSurface`
    (Black-76 on the row's forward checked against put-call parity, :meth:`OptionChain.parity_checked_forward`, as
    the surface was fitted on; maturity from the chain's valuation time)."""
    t = chain.expiry_years
    fwd = fitted_forward(chain, surface)
    vol = surface.implied_vol(chain.strike, t, fwd)
    ok = np.isfinite(vol) & (t > 0.0)
    greeks = black76_greeks(fwd, chain.strike, np.where(ok, t, 1.0), np.where(ok, vol, 0.5), chain.is_call)
    price = np.where(ok, np.asarray(greeks.price, dtype=np.float64), np.nan)
    vega = np.where(ok, np.asarray(greeks.vega, dtype=np.float64), np.nan)
    return price, vega


def mark_chain(chain: OptionChain, surface, prev_market=None, config: MarkConfig = MarkConfig()) -> MarkResult:
    """:func:`hybrid_marks` for every series of a chain against a fitted surface."""
    price, vega = model_prices(chain, surface)
    return hybrid_marks(chain.bid, chain.ask, chain.bid_size, chain.ask_size, price, prev_market,
                        model_vega=vega, quote_age=chain.quote_age, config=config)

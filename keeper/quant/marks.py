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
the mark flap. The function is pure: the previous state goes in and the new state comes out with the marks and a
:class:`MarkReason` per series.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

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


@dataclass(frozen=True)
class MarkResult:
    """Marks (NaN where :attr:`MarkReason.NO_MARK`), the new state (True = marked to market) and reasons."""

    mark: np.ndarray
    market: np.ndarray  # bool: pass back as ``prev_market`` next time
    reason: np.ndarray  # int8 MarkReason
    mid: np.ndarray
    rel_spread: np.ndarray
    depth: np.ndarray


def hybrid_marks(bid, ask, bid_size, ask_size, model_price, prev_market=None, *, model_vega=None, quote_age=None,
                 config: MarkConfig = MarkConfig()) -> MarkResult:
    """Hybrid mark per series (all inputs broadcast to one shape; NaN = missing).

    ``prev_market`` is the ``market`` state returned last time (None: all series start on the model, so the
    stricter enter thresholds apply). ``model_vega`` (price per unit of vol) widens the band by
    ``vol_band * vega``; ``quote_age`` (seconds) marks stale books to model."""
    bid, ask, bid_size, ask_size, model = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (
        bid, ask, bid_size, ask_size, model_price)))
    shape = bid.shape
    prev = np.zeros(shape, dtype=bool) if prev_market is None else np.broadcast_to(
        np.asarray(prev_market, dtype=bool), shape)
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
    market = reason < 0
    reason = np.where(market, np.int8(MarkReason.MARKET_DEEP_TIGHT), reason).astype(np.int8)
    mark = np.where(market, mid, np.where(model_ok, model, np.nan))
    return MarkResult(mark=mark, market=market, reason=reason, mid=mid, rel_spread=rel_spread, depth=depth)


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

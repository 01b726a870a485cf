"""Recommended collateral haircuts from EWMA realised vol and liquidity.

For an asset with daily EWMA vol ``sigma`` (RiskMetrics, see :func:`keeper.quant.risk.scenarios.ewma_volatility`),
a held size ``size`` and a book depth ``depth`` (size that can be sold within one day at an acceptable cost, same
units), the liquidation takes ``days = base_days + size / depth`` days and the haircut is

    h = 1 - exp(-z * sigma * sqrt(days)) + impact * sqrt(size / depth)

(price risk over the liquidation at confidence ``z``, plus square-root-law market impact), clipped to
``[min_haircut, max_haircut]``. ``h`` is non-decreasing in ``sigma`` and in ``size`` and non-increasing in
``depth``: each term is a composition of non-decreasing maps of those arguments, and clipping preserves order
(tests/quant/test_haircuts.py checks it on sweeps and random pairs).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from keeper.quant.risk.scenarios import (
    EWMA_LAMBDA,
    ewma_volatility,
    log_returns_from_closes,
)
from keeper.units import WAD


@dataclass(frozen=True)
class HaircutParams:
    """Haircut model parameters.

    Attributes:
        z: confidence multiplier on the liquidation-horizon vol (2.33 ~ 99% one-sided normal).
        base_days: liquidation days even for a size far below depth (auction and settlement delay).
        impact: square-root-law impact coefficient (fraction of price at size = depth).
        min_haircut: floor (the stablecoin's may be 0).
        max_haircut: cap (< 1: collateral always counts for something until it is delisted).
        ewma_lambda: RiskMetrics decay of the daily EWMA vol.
    """

    z: float = 2.33
    base_days: float = 1.0
    impact: float = 0.1
    min_haircut: float = 0.0
    max_haircut: float = 0.9

    ewma_lambda: float = EWMA_LAMBDA

    def __post_init__(self) -> None:
        if self.z < 0 or self.base_days < 0 or self.impact < 0:
            raise ValueError("haircut params: z, base_days and impact must be >= 0")
        if not (0 <= self.min_haircut <= self.max_haircut < 1):
            raise ValueError("haircut params: need 0 <= min_haircut <= max_haircut < 1")
        if not (0 < self.ewma_lambda < 1):
            raise ValueError("haircut params: ewma_lambda must lie in (0, 1)")


def recommended_haircut(daily_vol: np.ndarray | float, size: np.ndarray | float, depth: np.ndarray | float,
                        params: HaircutParams = HaircutParams()) -> np.ndarray:
    """Recommended haircut per asset (vectorized; arguments broadcast), in [min_haircut, max_haircut].

    ``daily_vol`` >= 0 (fraction per day), ``size`` >= 0 (amount held, e.g. the protocol's total of the asset),
    ``depth`` > 0 (amount sellable per day). Raises ValueError on non-finite or out-of-domain input: a haircut
    built on bad data must never be attested.
    """
    vol, q, d = (np.asarray(x, dtype=np.float64) for x in np.broadcast_arrays(daily_vol, size, depth))
    if not (np.all(np.isfinite(vol)) and np.all(np.isfinite(q)) and np.all(np.isfinite(d))):
        raise ValueError("haircut: non-finite vol, size or depth")
    if np.any(vol < 0) or np.any(q < 0) or np.any(d <= 0):
        raise ValueError("haircut: need vol >= 0, size >= 0 and depth > 0")
    ratio = q / d
    days = params.base_days + ratio
    price_risk = -np.expm1(-params.z * vol * np.sqrt(days))
    h = price_risk + params.impact * np.sqrt(ratio)
    return np.clip(h, params.min_haircut, params.max_haircut)


def haircut_from_closes(closes: np.ndarray, size: float, depth: float,
                        params: HaircutParams = HaircutParams()) -> float:
    """Haircut for one asset from its daily closes: today's EWMA vol, then :func:`recommended_haircut`."""
    sigma_today = ewma_volatility(log_returns_from_closes(closes), params.ewma_lambda)[-1]
    return float(recommended_haircut(sigma_today, size, depth, params))


# ---------------------------------------------------------------------------------------------------------------
# Recommendations for the listed collateral (issue 16 item 4)
# ---------------------------------------------------------------------------------------------------------------

SECONDS_PER_DAY = 86_400
#: Haircuts are recommended on a grid of one basis point (1e14 WAD), rounded up: noise below it never moves a
#: listed value, and rounding never favours the depositor.
HAIRCUT_STEP_WAD = 10**14


def daily_closes(timestamps: np.ndarray, prices: np.ndarray, period_seconds: int = SECONDS_PER_DAY
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The last price of each UTC day (or of each ``period_seconds`` bucket) from a price history (e.g. the keepers'
    ``PricesPosted`` attestations of one asset): ``(days, closes)``, days as unix day (bucket) numbers, ascending. Observations need not be sorted; equal
    timestamps keep the later one in the given order. Raises ValueError on non-positive or non-finite prices or
    mismatched lengths."""
    ts = np.asarray(timestamps, dtype=np.int64)
    px = np.asarray(prices, dtype=np.float64)
    if ts.shape != px.shape or ts.ndim != 1:
        raise ValueError("daily closes: timestamps and prices must be equal-length 1-d arrays")
    if not np.all(np.isfinite(px)) or np.any(px <= 0):
        raise ValueError("daily closes: prices must be finite and > 0")
    order = np.argsort(ts, kind="stable")
    ts, px = ts[order], px[order]
    if period_seconds <= 0:
        raise ValueError("daily closes: period_seconds must be > 0")
    day = ts // int(period_seconds)
    last = np.flatnonzero(np.append(day[1:] != day[:-1], True)) if day.size else np.zeros(0, dtype=np.int64)
    return day[last], px[last]


def haircut_wad(h: float) -> int:
    """A haircut fraction as WAD, rounded *up* to :data:`HAIRCUT_STEP_WAD` (exactly, through the float's rational
    value; a value within a millionth of a step of a step is that step)."""
    if not np.isfinite(h) or h < 0 or h >= 1:
        raise ValueError(f"haircut {h!r} must lie in [0, 1)")
    # up to the step, except within 1e-6 of a step (a float such as 0.1 sits a few ulps above its decimal value)
    steps = -(-(Fraction(float(h)) * WAD / HAIRCUT_STEP_WAD - Fraction(1, 10**6)) // 1)
    return max(int(steps), 0) * HAIRCUT_STEP_WAD


@dataclass(frozen=True)
class CollateralMarket:
    """One listed collateral asset as the recommendation sees it.

    Attributes:
        symbol: the asset's name (display only).
        closes: its daily closes, oldest first (at least two; e.g. :func:`daily_closes` of the keepers' prices).
        size: whole units the protocol may come to hold and have to sell (its listed deposit cap).
        depth: whole units sellable per day at an acceptable cost (from the market; not on chain).
        listed_wad: the haircut listed on chain [WAD].
        period_days: days between two closes (1: daily; a shorter sampling is scaled to a daily vol by
            ``1 / sqrt(period_days)``).
    """

    symbol: str
    closes: np.ndarray
    size: float
    depth: float
    listed_wad: int
    period_days: float = 1.0


@dataclass(frozen=True)
class HaircutRecommendation:
    """The model's haircut for one asset against the listed one ([WAD] both; ``daily_vol`` today's EWMA)."""

    symbol: str
    listed_wad: int
    recommended_wad: int
    daily_vol: float
    size: float
    depth: float
    days: int

    @property
    def action(self) -> str:
        """``"raise"`` (the risk admin may act at once), ``"lower"`` (only through the timelock) or ``"keep"``."""
        if self.recommended_wad > self.listed_wad:
            return "raise"
        return "lower" if self.recommended_wad < self.listed_wad else "keep"


def recommend_haircuts(markets: list[CollateralMarket], params: HaircutParams = HaircutParams()
                       ) -> list[HaircutRecommendation]:
    """The recommended haircut of every listed collateral asset: today's EWMA daily vol of its closes, its size
    (the listed cap) over its depth, :func:`recommended_haircut`, rounded up to a basis point (:func:`haircut_wad`).
    Raises ValueError naming the asset on bad data (fewer than two closes, a non-positive price, depth <= 0): a
    recommendation built on it must never be applied."""
    out = []
    for m in markets:
        closes = np.asarray(m.closes, dtype=np.float64)
        if closes.ndim != 1 or closes.size < 2:
            raise ValueError(f"{m.symbol}: need at least two daily closes, got {closes.size}")
        try:
            if not (np.isfinite(m.period_days) and m.period_days > 0):
                raise ValueError(f"period_days must be > 0, got {m.period_days}")
            sigma = float(ewma_volatility(log_returns_from_closes(closes), params.ewma_lambda)[-1]
                          / np.sqrt(m.period_days))
            h = float(recommended_haircut(sigma, m.size, m.depth, params))
        except ValueError as e:
            raise ValueError(f"{m.symbol}: {e}") from None
        out.append(HaircutRecommendation(m.symbol, int(m.listed_wad), haircut_wad(h), sigma, float(m.size),
                                         float(m.depth), int(closes.size)))
    return out

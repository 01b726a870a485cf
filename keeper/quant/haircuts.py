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

import numpy as np

from keeper.quant.risk.scenarios import (
    EWMA_LAMBDA,
    ewma_volatility,
    log_returns_from_closes,
)


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

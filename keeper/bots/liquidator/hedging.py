"""A hedging liquidator's valuation of a lot: it delta-hedges what it buys and charges only for what the hedge leaves.

Pure (numpy; no I/O). Today's conservative liquidator (:func:`keeper.bots.liquidator.valuation.value_portfolio`)
charges ``aversion x`` the worst loss of the *unhedged* lot on a +-25 % spot / +50 % vol grid, so right after a
crash it values a short-put lot at about half its model value. A professional liquidator instead hedges the lot's
delta in the underlying at once and works the options out over a hedge horizon ``h``; what it risks is the residual
of a delta-hedged book over ``h`` and what it pays is the hedge's and the exit's spread:

* model value ``V`` = options at Black-76 on its vols + collateral at spot (no haircut: the collateral is part of
  the delta it hedges and is sold with the hedge) + cash;
* hedge cost ``|delta| S c_spot`` (``delta`` of options plus collateral, ``c_spot`` the spot/perp half spread);
* gamma charge over ``h``: a delta-hedged book loses ``1/2 |Gamma| S^2 (dS/S)^2``; at the ``z`` quantile of a move
  with vol ``sigma`` over ``h`` that is ``1/2 |Gamma| S^2 sigma^2 h z^2`` for net short gamma (``z = 2.33``: 99 %)
  and ``1/2 Gamma S^2 sigma^2 h`` for net long gamma (the carry: theta paid against the expected move);
* vega charge over ``h``: ``|vega| sigma nu sqrt(h) z`` (``nu`` the annualised relative vol of implied vol);
* exit spread: ``sum |n_j| max(exit_vol x vega_j, exit_rel x price_j)`` (closing or offsetting each series).

``risk_charge`` is the sum of those four; ``stress_loss`` (the margin the lot consumes) is the gamma and vega
charges. The result is a :class:`~keeper.bots.liquidator.valuation.LotValuation`, so the same strategies
(:class:`~keeper.bots.liquidator.strategies.EdgeStrategy`) and :func:`~keeper.bots.liquidator.valuation.make_quote`
work on it. Units as :mod:`keeper.bots.liquidator.valuation`: floats in whole units inside, rounded once at the
edge (value down, charges up).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from keeper.bots.liquidator.valuation import LotValuation, MarketView, Portfolio, SeriesSpec
from keeper.quant.pricing import black76_greeks
from keeper.units import SECONDS_PER_YEAR


@dataclass(frozen=True)
class HedgingAppetite:
    """The hedging liquidator's parameters (module docstring).

    ``horizon_s``: time it needs to work the options out (the hedged book's exposure window); ``z``: quantile of
    the charged move (2.33: 99 %); ``vol_of_vol``: annualised relative volatility of implied vol (crypto ATM vol
    moves ~5-10 % of itself a day in a crash, ~1.5 a year); ``spot_spread``: half spread paid on the delta hedge;
    ``exit_vol``/``exit_rel``: half spread paid to close each series (vol points of vega, share of its price)."""

    horizon_s: float = 3600.0
    z: float = 2.33
    vol_of_vol: float = 1.5
    spot_spread: float = 0.0005
    exit_vol: float = 0.0075
    exit_rel: float = 0.01

    def __post_init__(self) -> None:
        if not (self.horizon_s > 0 and self.z >= 0 and self.vol_of_vol >= 0 and self.spot_spread >= 0
                and self.exit_vol >= 0 and self.exit_rel >= 0):
            raise ValueError("hedging appetite: horizon > 0 and every charge >= 0")


@dataclass(frozen=True)
class HedgeCharges:
    """The charges of one valuation, in whole quote units (floats), and the book's Greeks."""

    value: float
    delta: float
    gamma: float
    vega: float
    hedge_cost: float
    gamma_charge: float
    vega_charge: float
    exit_spread: float

    @property
    def total(self) -> float:
        return self.hedge_cost + self.gamma_charge + self.vega_charge + self.exit_spread


def hedge_charges(portfolio: Portfolio, series: Mapping[int, SeriesSpec], market: MarketView,
                  appetite: HedgingAppetite = HedgingAppetite()) -> HedgeCharges:
    """Model value, Greeks and the four charges of ``portfolio`` (module docstring). One underlying per series;
    collateral other than the quote asset moves one for one with its spot."""
    ids = sorted(portfolio.positions)
    missing = [i for i in ids if i not in series]
    if missing:
        raise KeyError(f"unknown series {missing}")
    h = appetite.horizon_s / SECONDS_PER_YEAR
    value = 0.0  # options and collateral in whole units; cash (base units) is added by value_hedged
    delta_by: dict[str, float] = {}
    gamma = vega = 0.0
    gamma_charge = vega_charge = exit_spread = 0.0
    if ids:
        specs = [series[i] for i in ids]
        size = np.array([float(portfolio.positions[i]) for i in ids])
        strike = np.array([s.strike for s in specs])
        t = np.maximum(np.array([float(s.expiry_ts) for s in specs]) - market.now, 0.0) / SECONDS_PER_YEAR
        fwd = np.array([market.spot(s.underlying) for s in specs])
        is_call = np.array([s.is_call for s in specs], dtype=bool)
        vol = market.vols([s.underlying for s in specs], strike, np.maximum(t, 1e-12), fwd)
        if not np.all(np.isfinite(vol) & (vol > 0)):
            raise ValueError("vol surface returned no usable vol for some series")
        g = black76_greeks(fwd, strike, np.maximum(t, 1e-12), vol, is_call)
        px, dl, gm, vg = (np.asarray(x, float) for x in (g.price, g.delta, g.gamma, g.vega))
        value += float(size @ px)
        for u in sorted(set(s.underlying for s in specs)):
            sel = np.array([s.underlying == u for s in specs])
            S = float(fwd[sel][0])
            sig = float(np.average(vol[sel], weights=np.abs(size[sel]) * vg[sel] + 1e-12))
            d = float(size[sel] @ dl[sel])
            gmm = float(size[sel] @ gm[sel])
            veg = float(size[sel] @ vg[sel])
            delta_by[u] = delta_by.get(u, 0.0) + d
            cash_gamma = 0.5 * abs(gmm) * S * S * sig * sig * h
            gamma_charge += cash_gamma * (appetite.z ** 2 if gmm < 0 else 1.0)
            vega_charge += abs(veg) * sig * appetite.vol_of_vol * math.sqrt(h) * appetite.z
            gamma += gmm
            vega += veg
        exit_spread = float(np.abs(size) @ np.maximum(appetite.exit_vol * vg, appetite.exit_rel * px))
    hedge_cost = 0.0
    for asset, amount in portfolio.collateral.items():
        s = market.spot(asset)
        value += float(amount) * s
        if asset.lower() != market.quote_asset.lower():
            delta_by[asset] = delta_by.get(asset, 0.0) + float(amount)
    for u, d in delta_by.items():
        hedge_cost += abs(d) * market.spot(u) * appetite.spot_spread
    return HedgeCharges(value, sum(delta_by.values()), gamma, vega, hedge_cost, gamma_charge, vega_charge,
                        exit_spread)


def value_hedged(portfolio: Portfolio, series: Mapping[int, SeriesSpec], market: MarketView,
                 appetite: HedgingAppetite, quote_decimals: int) -> LotValuation:
    """The hedging liquidator's :class:`LotValuation` of ``portfolio``: ``value`` the model value (collateral at
    spot), ``risk_charge`` hedge cost + gamma + vega charges + exit spread, ``stress_loss`` gamma + vega charges.
    Value rounds down, charges round up (base units)."""
    scale = 10**quote_decimals
    c = hedge_charges(portfolio, series, market, appetite)
    coll = sum(float(a) * market.spot(k) for k, a in portfolio.collateral.items())
    pos_i = math.floor((c.value - coll) * scale)
    coll_i = math.floor(coll * scale)
    return LotValuation(pos_i + coll_i + int(portfolio.cash), pos_i, coll_i, int(portfolio.cash),
                        math.ceil((c.gamma_charge + c.vega_charge) * scale), math.ceil(c.total * scale))

"""Liquidator bot: values what a liquidation auction sells with its own copy of the quant engine and bids when
the price beats that valuation by its edge.

Two layers:

* the **valuation** (pure, numpy; no chain I/O): :func:`value_portfolio` prices a portfolio share (option
  positions, collateral, quote cash) with Black-76 on the liquidator's own vol surface, revalues it on its own
  spot/vol stress grid and turns the worst loss into a risk charge (``aversion * stress loss``) and the margin the
  lot would consume (price paid plus stress loss as initial margin). :func:`make_quote` combines that with the
  auction's state, gas and the liquidator's free margin into the :class:`~keeper.bots.liquidator.strategies.LotQuote` a strategy
  decides on.
* the **bot** (:class:`LiquidatorBot`): follows auction events, asks its strategy, sends bids with the price
  limit set, and treats a bid that reverts because another liquidator filled first as a lost race (logged and
  counted, not raised). A winning bid records a *claim* on the auctioned book (deferred delivery, see
  contracts/LiquidationClaims.sol); the bot settles its own claim (``settleClaim``) right after the bid
  (``settle_claims``, default on), and always before bidding on another account (the core accepts one source per
  holder).

Units follow docs/ARCHITECTURE.md: values in quote-asset base units (int), prices/strikes/sizes WAD on chain;
the valuation works in floats (whole units) and rounds once at the edge, down for what the lot is worth.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from keeper.bots.liquidator.strategies import LotQuote
from keeper.quant.pricing import black76_price
from keeper.units import SECONDS_PER_YEAR, WAD

log = logging.getLogger("backstop.liquidator")

#: vol lookup: (strike, expiry_years, forward) arrays -> Black-76 vols
VolFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SeriesSpec:
    """One option series as the liquidator prices it (floats in whole units)."""

    series_id: int
    underlying: str
    strike: float
    expiry_ts: int
    is_call: bool

    @staticmethod
    def from_chain(series_id: int, underlying: str, strike_wad: int, expiry: int, is_call: bool) -> "SeriesSpec":
        """From the on-chain ``Series`` fields (strike in WAD)."""
        return SeriesSpec(int(series_id), str(underlying), int(strike_wad) / WAD, int(expiry), bool(is_call))


@dataclass(frozen=True)
class Portfolio:
    """A portfolio or a share of one: option sizes in contracts, collateral in whole token units, cash in quote
    base units (signed)."""

    positions: Mapping[int, float] = field(default_factory=dict)
    collateral: Mapping[str, float] = field(default_factory=dict)
    cash: int = 0

    def scaled(self, fraction: float) -> "Portfolio":
        """The share ``fraction`` of this portfolio (what a bid for that fraction receives)."""
        return Portfolio({k: v * fraction for k, v in self.positions.items()},
                         {k: v * fraction for k, v in self.collateral.items()}, int(math.floor(self.cash * fraction)))


@dataclass(frozen=True)
class RiskAppetite:
    """The liquidator's own risk view: stress grid (relative spot and vol shocks), aversion (share of the worst
    stress loss charged against the value) and its own collateral haircuts (asset -> fraction)."""

    spot_shocks: Sequence[float] = (-0.25, -0.15, -0.05, 0.0, 0.05, 0.15, 0.25)
    vol_shocks: Sequence[float] = (-0.3, 0.0, 0.5)
    aversion: float = 0.25
    haircuts: Mapping[str, float] = field(default_factory=dict)
    default_haircut: float = 0.05

    def haircut(self, asset: str, quote_asset: str) -> float:
        """Own haircut of ``asset`` (0 for the quote asset)."""
        if asset.lower() == quote_asset.lower():
            return 0.0
        return float(self.haircuts.get(asset, self.haircuts.get(asset.lower(), self.default_haircut)))


@dataclass(frozen=True)
class MarketView:
    """What the liquidator sees of the market: spot per asset (quote per whole unit; the quote asset is 1),
    a vol lookup (``vol``; ``underlying_vols``: an underlying's own lookup, by address, where it has one) and the
    time."""

    spots: Mapping[str, float]
    vol: VolFn
    now: float
    quote_asset: str
    underlying_vols: Mapping[str, VolFn] = field(default_factory=dict)

    def vols(self, underlyings: Sequence[str], strike, expiry, forward) -> np.ndarray:
        """Black-76 vols of series on ``underlyings`` (one per series) at ``strike``, ``expiry`` [years] and
        ``forward``: each underlying's own lookup when it has one, else ``vol``."""
        strike, expiry, forward = (np.asarray(x, float) for x in np.broadcast_arrays(strike, expiry, forward))
        if not self.underlying_vols:
            return np.asarray(self.vol(strike, expiry, forward), float)
        own = {k.lower(): f for k, f in self.underlying_vols.items()}
        out = np.empty(strike.shape, float)
        keys = np.array([u.lower() for u in underlyings])
        for u in dict.fromkeys(keys):
            sel = keys == u
            out[sel] = np.asarray(own.get(u, self.vol)(strike[sel], expiry[sel], forward[sel]), float)
        return out

    def spot(self, asset: str) -> float:
        if asset.lower() == self.quote_asset.lower():
            return 1.0
        for k, v in self.spots.items():
            if k.lower() == asset.lower():
                return float(v)
        raise KeyError(f"no spot for {asset}")


def flat_vol(sigma: float) -> VolFn:
    """A flat vol surface (fallback when no fitted surface is at hand)."""
    return lambda strike, expiry, forward: np.full(np.broadcast(strike, expiry, forward).shape, float(sigma))


def surface_vol(surface) -> VolFn:
    """Vol lookup from a :class:`keeper.quant.surface.VolSurface` (``implied_vol(strike, expiry, forward)``)."""
    return lambda strike, expiry, forward: surface.implied_vol(strike, expiry, forward)


@dataclass(frozen=True)
class LotValuation:
    """The liquidator's valuation of a portfolio share, all in quote base units (ints)."""

    value: int
    positions_value: int
    collateral_value: int
    cash: int
    stress_loss: int
    risk_charge: int

    @property
    def adjusted(self) -> int:
        """Value after the risk charge."""
        return self.value - self.risk_charge


def _arrays(portfolio: Portfolio, series: Mapping[int, SeriesSpec]):
    ids = sorted(portfolio.positions)
    missing = [i for i in ids if i not in series]
    if missing:
        raise KeyError(f"unknown series {missing}")
    specs = [series[i] for i in ids]
    size = np.array([float(portfolio.positions[i]) for i in ids])
    strike = np.array([s.strike for s in specs])
    expiry = np.array([float(s.expiry_ts) for s in specs])
    is_call = np.array([s.is_call for s in specs], dtype=bool)
    unders = [s.underlying for s in specs]
    return size, strike, expiry, is_call, unders


def _positions_value(size, strike, expiry_ts, is_call, unders, market: MarketView, spot_mult: float,
                     vol_mult: float) -> float:
    if size.size == 0:
        return 0.0
    fwd = np.array([market.spot(u) for u in unders]) * spot_mult
    t = np.maximum(expiry_ts - market.now, 0.0) / SECONDS_PER_YEAR
    base_fwd = fwd / spot_mult
    # smile is sticky-moneyness: the vol is looked up at K relative to the shocked forward
    vol = market.vols(unders, strike * base_fwd / fwd, np.maximum(t, 1e-12), base_fwd) * vol_mult
    vol = np.where(np.isfinite(vol) & (vol > 0), vol, np.nan)
    if np.isnan(vol).any():
        raise ValueError("vol surface returned no usable vol for some series")
    px = black76_price(fwd, strike, t, vol, is_call)
    return float(np.sum(size * px))


def _collateral_value(portfolio: Portfolio, market: MarketView, appetite: RiskAppetite, spot_mult: float) -> float:
    total = 0.0
    for asset, amount in portfolio.collateral.items():
        s = market.spot(asset)
        if asset.lower() != market.quote_asset.lower():
            s *= spot_mult
        total += float(amount) * s * (1.0 - appetite.haircut(asset, market.quote_asset))
    return total


def value_portfolio(portfolio: Portfolio, series: Mapping[int, SeriesSpec], market: MarketView,
                    appetite: RiskAppetite, quote_decimals: int) -> LotValuation:
    """Model value of ``portfolio`` (Black-76 on the liquidator's vols, collateral at its own haircuts, plus cash),
    the worst loss over the stress grid (every risky asset shocked together, vols scaled by ``1 + shock``) and the
    risk charge ``aversion * stress loss``. Value rounds down, the stress loss and charge round up."""
    scale = 10**quote_decimals
    size, strike, expiry, is_call, unders = _arrays(portfolio, series)
    pos = _positions_value(size, strike, expiry, is_call, unders, market, 1.0, 1.0)
    coll = _collateral_value(portfolio, market, appetite, 1.0)
    base = pos + coll
    worst = 0.0
    for s in appetite.spot_shocks:
        for v in appetite.vol_shocks:
            shocked = (_positions_value(size, strike, expiry, is_call, unders, market, 1.0 + s, 1.0 + v)
                       + _collateral_value(portfolio, market, appetite, 1.0 + s))
            worst = max(worst, base - shocked)
    pos_i = math.floor(pos * scale)
    coll_i = math.floor(coll * scale)
    stress = math.ceil(worst * scale)
    return LotValuation(pos_i + coll_i + int(portfolio.cash), pos_i, coll_i, int(portfolio.cash), stress,
                        math.ceil(appetite.aversion * stress))


def make_quote(*, auction_id: int, account: str, now: int, auction_price: int, valuation: LotValuation,
               gas_cost: int, free_margin: int, max_fraction: float, min_fraction: float = 0.01,
               next_price: int | None = None) -> LotQuote:
    """The strategy's input for one auction at one moment. ``valuation`` is of the whole lot on offer (the
    portfolio share the auction's price refers to); the margin the whole lot would consume is the price paid
    (when positive) plus its stress loss."""
    return LotQuote(
        auction_id=int(auction_id), account=str(account), now=int(now), auction_price=int(auction_price),
        valuation=int(valuation.value), risk_charge=int(valuation.risk_charge), gas_cost=int(gas_cost),
        free_margin=int(free_margin), margin_per_lot=max(int(auction_price), 0) + int(valuation.stress_loss),
        max_fraction=float(max_fraction), min_fraction=float(min_fraction), next_price=next_price,
    )


def gas_cost_quote(gas_units: int, gas_price_wei: int, native_spot: float, quote_decimals: int) -> int:
    """Cost of a transaction in quote base units: ``gas * price`` wei at ``native_spot`` quote per ether,
    rounded up."""
    return math.ceil(gas_units * gas_price_wei / 1e18 * native_spot * 10**quote_decimals)


"""The liquidator's model: one lot's status in, a stance out (pure; no chain, network or process).

:class:`LotStatus` is what the bot read for one running auction (its price and allowed fraction, the account's
equity and initial margin at the breach, the part already sold, the account's current holdings, the series it holds,
the market the liquidator sees, gas and its own free margin). :func:`decide_lot` values the original lot with the
configured :class:`LotValuer` and answers the strategy's :class:`~keeper.bots.liquidator.strategies.BidDecision`
(with the contract's rule that an insolvent book is bought whole).

Two valuations (``LiquidatorSettings.valuation``, ``liquidator run --valuation``):

* ``hedging`` (default): :func:`keeper.bots.liquidator.hedging.value_hedged`: the lot's model value (collateral at
  spot) less what a liquidator that delta-hedges it pays and risks over its hedge horizon (hedge and exit spreads,
  residual gamma and vega). It is close to the attested model value the auction starts at, so it bids inside the
  deployed risk-sized span (``min(V, ceil(0.10 MM))``, docs/auctions.md);
* ``conservative``: :func:`keeper.bots.liquidator.valuation.value_portfolio`: collateral at its own haircut and
  ``aversion x`` the worst loss of the unhedged lot on a spot/vol stress grid (the backtest's second liquidator
  model; right after a crash it values a lot far below a 0.1 MM span and does not bid there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from keeper.bots.liquidator.hedging import HedgingAppetite, value_hedged
from keeper.bots.liquidator.strategies import BidDecision, LotQuote, Strategy, decide_on_quote
from keeper.bots.liquidator.valuation import (
    LotValuation,
    MarketView,
    Portfolio,
    RiskAppetite,
    SeriesSpec,
    make_quote,
    value_portfolio,
)
from keeper.units import WAD

#: the valuations a liquidator can be configured with (docstring above)
VALUATIONS = ("hedging", "conservative")


@dataclass(frozen=True)
class LotValuer:
    """How the liquidator values a lot: ``kind`` one of :data:`VALUATIONS`, with the conservative model's
    ``risk`` appetite or the hedging model's ``hedging`` appetite."""

    kind: str = "hedging"
    risk: RiskAppetite = field(default_factory=RiskAppetite)
    hedging: HedgingAppetite = field(default_factory=HedgingAppetite)

    def __post_init__(self) -> None:
        if self.kind not in VALUATIONS:
            raise ValueError(f"valuation must be one of {', '.join(VALUATIONS)}, got {self.kind!r}")

    def value(self, portfolio: Portfolio, series: Mapping[int, SeriesSpec], market: MarketView,
              quote_decimals: int) -> LotValuation:
        """The lot's value, risk charge and stress loss in quote base units."""
        if self.kind == "hedging":
            return value_hedged(portfolio, series, market, self.hedging, quote_decimals)
        return value_portfolio(portfolio, series, market, self.risk, quote_decimals)


@dataclass(frozen=True)
class LotStatus:
    """One running auction and what the liquidator needs to decide on it, as read at one moment.

    ``price``: the auction's price of the whole original portfolio now (signed, quote base units);
    ``allowed_wad``: the most a bid may take now (WAD); ``equity``/``initial``: the account's attested equity and
    initial margin at the (re)start; ``sold_wad``: the part of the original portfolio already sold (WAD);
    ``holdings``: what the account holds now (what is left of it for sale); ``gas_cost``: one bid in quote base
    units; ``free_margin``: the liquidator's own headroom as the auction will check it (after its safety factor)."""

    auction_id: int
    account: str
    now: int
    price: int
    allowed_wad: int
    equity: int
    initial: int
    sold_wad: int
    holdings: Portfolio
    series: Mapping[int, SeriesSpec]
    market: MarketView
    quote_decimals: int
    gas_cost: int
    free_margin: int
    min_fraction: float = 0.01

    @property
    def remaining(self) -> float:
        """The fraction of the original lot still for sale."""
        return (WAD - self.sold_wad) / WAD


@dataclass(frozen=True)
class LotStance:
    """The answer on one lot: the quote the strategy saw, its decision, and the valuation behind both."""

    quote: LotQuote
    decision: BidDecision
    valuation: LotValuation


def lot_quote(status: LotStatus, valuer: LotValuer) -> tuple[LotQuote, LotValuation]:
    """The strategy's input: the original lot (the holdings scaled back by the part already sold: the auction's
    price and fractions refer to it) valued by ``valuer``; ``margin_per_lot`` is the contract's own margin rule for
    the bidder (price paid when positive plus ``IM - E`` of the sold book, both for the whole lot)."""
    if status.remaining <= 0:
        raise ValueError(f"auction {status.auction_id}: nothing left for sale")
    original = status.holdings.scaled(1.0 / status.remaining)
    val = valuer.value(original, status.series, status.market, status.quote_decimals)
    quote = make_quote(auction_id=status.auction_id, account=status.account, now=status.now,
                       auction_price=status.price, valuation=val, gas_cost=status.gas_cost,
                       free_margin=status.free_margin, max_fraction=status.allowed_wad / WAD,
                       min_fraction=status.min_fraction)
    margin = max(status.price, 0) + max(status.initial - status.equity, 0)
    return LotQuote(**{**quote.to_json(), "margin_per_lot": margin}), val


def decide_lot(status: LotStatus, valuer: LotValuer, strategy: Strategy) -> LotStance:
    """The liquidator's stance on one lot: value it (:func:`lot_quote`), ask ``strategy``, and apply the
    contract's rule that an insolvent book (``equity < 0``) is bought whole
    (:func:`keeper.bots.liquidator.strategies.decide_on_quote`)."""
    quote, val = lot_quote(status, valuer)
    return LotStance(quote, decide_on_quote(strategy, quote, status.equity, status.remaining), val)

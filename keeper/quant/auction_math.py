"""Exact reference for Backstop's liquidation auctions (contracts/auction/).

Everything here is pure integer / :class:`fractions.Fraction` arithmetic: prices are computed from the closed-form
curve (``cut ** n`` exactly, not the contract's binary-exponentiation loop) and rounded once, at the end, in the
direction the contracts document. The contracts round every intermediate product, so they may differ from these
values by at most one base unit (the tests check exactly that). Liquidator bots and ``verify`` reuse these functions
to predict what a bid costs and how much of an account it may buy.

Units follow docs/ARCHITECTURE.md: values in quote-asset base units (signed ints), fractions in WAD (1e18 = 100%),
curve factors in RAY (1e27 = 1), time in seconds.

Auction formulas (derivation in docs/auctions.md):

* price of the whole (original) portfolio after ``t`` seconds:
  ``p(t) = top - span * (1 - c(t))`` with ``top = E`` (attested equity), ``span = E`` when ``E >= 0`` and
  ``span = MM`` when ``E < 0``; the discount is rounded up (in the bidder's favour).
* selling fraction ``g`` of the original portfolio at ``p`` with penalty rate ``lam`` moves the account from
  ``(E_cur, MM_cur)`` to ``(E_cur - g*E + g*p*(1-lam), MM_cur - g*MM)``; the target is ``E' >= (1+b) MM'``, so
  the largest fraction a bid may take is ``g* = D / (T - E + p*(1-lam))`` with ``T = (1+b) MM`` and the remaining
  deficit ``D = (1-S)(T-E) - C`` (``S`` sold so far, ``C`` net proceeds so far); computed as
  ``ceil((D + 2) / denominator)`` (2 base units absorb the rounding of amount and penalty), capped at ``1-S``.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from fractions import Fraction

from keeper.units import RAY, WAD

#: base units added to the deficit when sizing a bid: the bid amount is floored and the penalty ceiled, each
#: losing the account less than one unit, so ``D + 2`` guarantees the target despite rounding.
ROUNDING_SLACK = 2


class CurveKind(IntEnum):
    """Shape of the Dutch-auction price decrease (same numbering as ``AuctionCurves.Kind``)."""

    LINEAR = 0
    EXPONENTIAL = 1
    STAIRSTEP = 2


@dataclass(frozen=True)
class Curve:
    """A curve configuration: ``tau`` seconds (linear), ``cut`` RAY per second / per step, ``step`` seconds."""

    kind: CurveKind
    tau: int = 0
    step: int = 0
    cut: int = RAY

    def __post_init__(self) -> None:
        if self.kind == CurveKind.LINEAR and self.tau <= 0:
            raise ValueError(f"linear curve needs tau > 0, got {self.tau}")
        if self.kind != CurveKind.LINEAR and not 0 < self.cut <= RAY:
            raise ValueError(f"cut must be in (0, RAY], got {self.cut}")
        if self.kind == CurveKind.STAIRSTEP and self.step <= 0:
            raise ValueError(f"stairstep curve needs step > 0, got {self.step}")

    def as_tuple(self) -> tuple[int, int, int, int]:
        """(kind, tau, step, cut) as the contracts take them."""
        return (int(self.kind), self.tau, self.step, self.cut)


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def curve_factor(curve: Curve, elapsed: int) -> Fraction:
    """Exact curve factor c(t) as a fraction of 1 (1 at t = 0, non-increasing)."""
    if elapsed < 0:
        raise ValueError(f"elapsed must be >= 0, got {elapsed}")
    if curve.kind == CurveKind.LINEAR:
        return Fraction(max(curve.tau - elapsed, 0), curve.tau)
    n = elapsed if curve.kind == CurveKind.EXPONENTIAL else elapsed // curve.step
    return Fraction(curve.cut, RAY) ** n


def price_exact(curve: Curve, top: int, span: int, elapsed: int) -> Fraction:
    """Exact price ``top - span * (1 - c(t))`` before rounding."""
    if span < 0:
        raise ValueError(f"span must be >= 0, got {span}")
    return top - span * (1 - curve_factor(curve, elapsed))


def price(curve: Curve, top: int, span: int, elapsed: int) -> int:
    """Price rounded down (in the bidder's favour), in quote-asset base units."""
    p = price_exact(curve, top, span, elapsed)
    return p.numerator // p.denominator


def span_for(equity: int, maintenance_margin: int) -> int:
    """How far the price of the whole portfolio may move: ``E`` when solvent, ``MM`` when insolvent."""
    return equity if equity >= 0 else maintenance_margin


def target_margin(maintenance_margin: int, buffer_wad: int) -> int:
    """``T = MM * (1 + buffer)``, rounded up."""
    return _ceil_div(maintenance_margin * (WAD + buffer_wad), WAD)


def remaining_deficit(equity: int, target: int, sold_wad: int, net_proceeds: int) -> int:
    """``D = ceil((1 - S)(T - E)) - C``: how far the account still is below target (<= 0 means restored)."""
    return _ceil_div((WAD - sold_wad) * (target - equity), WAD) - net_proceeds


def net_price(price_per_portfolio: int, penalty_wad: int) -> int:
    """What the account keeps per whole portfolio after the penalty: ``p - ceil(p * lam)`` for ``p > 0``."""
    if price_per_portfolio <= 0:
        return price_per_portfolio
    return price_per_portfolio - _ceil_div(price_per_portfolio * penalty_wad, WAD)


def allowed_fraction(
    equity: int, target: int, sold_wad: int, net_proceeds: int, price_per_portfolio: int, penalty_wad: int
) -> int:
    """Largest fraction (WAD, of the original portfolio) a bid at ``price_per_portfolio`` may buy.

    Solvent auctions only (``equity >= 0``): ``ceil(D * WAD / (T - E + p_net))`` capped at ``WAD - S``; 0 once the
    deficit is gone. Insolvent auctions sell everything that is left (``WAD - S``).
    """
    remaining = WAD - sold_wad
    if equity < 0:
        return remaining
    deficit = remaining_deficit(equity, target, sold_wad, net_proceeds)
    if deficit <= 0:
        return 0
    denom = target - equity + net_price(price_per_portfolio, penalty_wad)
    if denom <= 0:
        return remaining
    return min(remaining, _ceil_div((deficit + ROUNDING_SLACK) * WAD, denom))


def bid_amount(fraction_wad: int, price_per_portfolio: int) -> int:
    """Signed quote amount the bidder pays for ``fraction_wad`` (negative: the bidder is paid), rounded down."""
    return (fraction_wad * price_per_portfolio) // WAD


@dataclass(frozen=True)
class BidSplit:
    """Where the money of one bid goes (all in quote-asset base units)."""

    amount: int  # signed: paid by the bidder (> 0) or to the bidder (< 0)
    penalty: int  # taken from the amount, >= 0
    reward: int  # part of the penalty paid to the auction's starter
    to_fund: int  # penalty - reward
    to_account: int  # amount - penalty (solvent) ; 0 for insolvent auctions
    fund_pays: int  # insolvent: what the fund pays the bidder (<= fund balance)
    bad_debt: int  # insolvent: what the fund could not pay (recorded as deficit)


def split_bid(amount: int, penalty_wad: int, reward_owed: int, fund_balance: int) -> BidSplit:
    """Split a bid's ``amount`` into penalty, starter reward (never more than the penalty), fund and account parts.

    A positive amount is proceeds: the penalty is ``ceil(amount * lam)``, the starter's outstanding reward is paid
    first from it. A negative amount is a payment to the bidder for taking an insolvent book: the fund pays what it
    holds, the rest is bad debt (a protocol deficit repaid first from future penalties).
    """
    if amount > 0:
        penalty = _ceil_div(amount * penalty_wad, WAD)
        reward = min(reward_owed, penalty)
        return BidSplit(amount, penalty, reward, penalty - reward, amount - penalty, 0, 0)
    owed = -amount
    pays = min(owed, fund_balance)
    return BidSplit(amount, 0, 0, 0, 0, pays, owed - pays)


def starter_reward(tip: int, chip_wad: int, maintenance_margin: int) -> int:
    """Reward promised to the starter: flat ``tip`` plus ``chip`` of the attested MM (paid only out of penalties)."""
    return tip + (chip_wad * maintenance_margin) // WAD


def repay_deficit(penalty_to_fund: int, deficit: int) -> tuple[int, int]:
    """Fund rule: incoming penalties repay the recorded deficit first. Returns (repaid, kept_by_fund)."""
    repaid = min(penalty_to_fund, deficit)
    return repaid, penalty_to_fund - repaid


# ---------------------------------------------------------------------------------------------------------------
# Issue 14, section 2: the designs chosen from the backtest (docs/risk-efficacy.md). Additions only: the functions
# above stay the reference of the contracts as deployed today.
# ---------------------------------------------------------------------------------------------------------------

def span_for_risk(equity: int, maintenance_margin: int, span_wad: int) -> int:
    """Risk-sized span: the price of the whole portfolio moves by at most ``ceil(kappa * MM)`` (``kappa =
    span_wad / WAD``), what a hedging bidder needs for the book's risk, never by more than ``E`` for a solvent book
    (never sold below zero). Solvent: ``min(E, ceil(kappa MM))``; insolvent: ``ceil(kappa MM)`` (the bidder is paid
    at most ``|E| + kappa MM``, not ``|E| + MM``)."""
    if span_wad < 0 or maintenance_margin < 0:
        raise ValueError("span_wad and maintenance_margin must be >= 0")
    risk = _ceil_div(maintenance_margin * span_wad, WAD)
    return min(equity, risk) if equity >= 0 else risk


def last_resort_due(resets_done: int, max_resets: int) -> bool:
    """The buyer-of-last-resort rule: once an auction reached its floor (or tail) ``max_resets + 1`` times without
    completing (``resets_done`` resets already made), the insurance fund's account takes what is left at the fresh
    attested value instead of a further reset."""
    if resets_done < 0 or max_resets < 0:
        raise ValueError("resets must be >= 0")
    return resets_done >= max_resets


def last_resort_fraction(equity: int, target: int, net_proceeds: int, penalty_wad: int,
                         price_per_portfolio: int | None = None) -> int:
    """Fraction (WAD) the fund's account buys at the attested value from a fresh record (``S = 0``):
    ``allowed_fraction(E, T, 0, C, p, lam)`` with ``p`` the auction's start price (the attested equity ``E`` by
    default, the attested model value when the auction starts there) for a solvent book (only what restores ``T``),
    everything for an insolvent one."""
    p = equity if price_per_portfolio is None else price_per_portfolio
    return allowed_fraction(equity, target, 0, net_proceeds, p, penalty_wad)

"""keeper/auction_math: the allowed-fraction formula against the direct equity/margin update it is derived from."""
from __future__ import annotations

import random
from fractions import Fraction

import pytest

from keeper.quant import auction_math as am
from keeper.units import WAD


def _equity_after(e: int, mm: int, sold: int, escrow: int, g: int, p: int, lam: int) -> tuple[Fraction, Fraction]:
    """Direct update: the account keeps (1 - S - g) of the portfolio plus escrow plus net proceeds of this bid."""
    keep = Fraction(WAD - sold - g, WAD)
    amount = am.bid_amount(g, p)
    split = am.split_bid(amount, lam, 0, 0)
    return keep * e + escrow + split.to_account, keep * mm


def _cases(n: int = 400):
    rng = random.Random(20261122)
    for _ in range(n):
        mm = rng.randint(1, 10**12)
        e = rng.randint(0, mm - 1)  # breached and solvent
        buffer = rng.choice([0, 5 * 10**16, 2 * 10**17])
        lam = rng.choice([0, 10**16, 5 * 10**16])
        p = rng.randint(0, e)  # a solvent price lies in [0, E]
        yield e, mm, buffer, lam, p


@pytest.mark.parametrize("case", list(_cases()))
def test_allowed_fraction_reaches_target_and_no_more(case):
    e, mm, buffer, lam, p = case
    t = am.target_margin(mm, buffer)
    g = am.allowed_fraction(e, t, 0, 0, p, lam)
    assert 0 < g <= WAD
    eq, m = _equity_after(e, mm, 0, 0, g, p, lam)
    assert eq >= Fraction(WAD + buffer, WAD) * m or g == WAD
    # one part in 1e9 of the portfolio less does not reach the (unrounded) target: the fraction is minimal
    if g < WAD:
        less = g - max(g // 10**9, 2)
        if less > 0:
            eq2, m2 = _equity_after(e, mm, 0, 0, less, p, lam)
            assert eq2 < Fraction(t) * Fraction(WAD - less, WAD) + 1


def test_fair_price_without_penalty_is_one_minus_e_over_t():
    # textbook special case of g* = (T - E) / (T - E + p): at p = E it is 1 - E/T
    e, mm = 600_000, 1_000_000
    g = am.allowed_fraction(e, am.target_margin(mm, 0), 0, 0, e, 0)
    assert g == (WAD * 4) // 10 + 2 * WAD // 1_000_000  # 1 - 0.6, plus the 2-unit rounding slack over T


def test_second_bid_after_partial_sale_uses_remaining_deficit():
    e, mm, lam, p = 500_000, 1_000_000, 0, 400_000
    t = am.target_margin(mm, 0)
    g = am.allowed_fraction(e, t, 0, 0, p, lam)
    half = g // 2
    escrow = am.split_bid(am.bid_amount(half, p), lam, 0, 0).to_account
    g2 = am.allowed_fraction(e, t, half, escrow, p, lam)
    # selling the rest of g* in a second bid at the same price brings the same result
    # ...up to the slack counted twice (2 units / (T - E + p) of the portfolio)
    assert 0 <= (half + g2) - g <= 2 * WAD // (t - e + p) + 2
    assert am.remaining_deficit(e, t, half + g2, escrow + am.bid_amount(g2, p)) <= 0


def test_insolvent_sells_everything_and_fund_then_deficit_pays():
    assert am.allowed_fraction(-5, 100, 0, 0, -50, 0) == WAD
    s = am.split_bid(-1_000, 10**16, 77, fund_balance=600)
    assert (s.penalty, s.reward, s.fund_pays, s.bad_debt) == (0, 0, 600, 400)
    s = am.split_bid(1_000, 5 * 10**16, 77, fund_balance=0)
    assert (s.penalty, s.reward, s.to_fund, s.to_account) == (50, 50, 0, 950)
    assert am.repay_deficit(30, 100) == (30, 0) and am.repay_deficit(130, 100) == (100, 30)


def test_negative_price_moves_towards_more_payment():
    c = am.Curve(am.CurveKind.LINEAR, tau=100)
    assert [am.price(c, -10, 40, t) for t in (0, 50, 100)] == [-10, -30, -50]

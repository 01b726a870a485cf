"""AuctionCurves (Solidity) against the exact closed-form reference in keeper/quant/auction_math.py."""
from __future__ import annotations

import brownie
import pytest

from keeper.quant import auction_math as am
from keeper.units import RAY
from keeper.quant.auction_math import Curve, CurveKind

# cut of 0.9999 per second (about 10% per 17.5 min) and 0.99 per 90-second step, as Maker deployments use.
CURVES = [
    Curve(CurveKind.LINEAR, tau=3600),
    Curve(CurveKind.EXPONENTIAL, cut=999_900_000_000_000_000_000_000_000),
    Curve(CurveKind.STAIRSTEP, step=90, cut=990_000_000_000_000_000_000_000_000),
]
TIMES = [0, 1, 59, 60, 89, 90, 91, 777, 1800, 3599, 3600, 3601, 86_400]
# tops: positive book, liability, zero; spans: |top| (solvent rule) and a larger MM-sized span. One-wei agreement
# holds while span * (error of c(t) in RAY-ulps) < 1e27, i.e. spans up to 1e21 base units (1e15 USD at 6 decimals).
CASES = [(1_234_567_890_123, 1_234_567_890_123), (-987_654_321, 5_000_000_000), (0, 0), (7, 7), (10**21, 10**21), (-(10**21), 10**21)]


@pytest.fixture(scope="module")
def harness(AuctionCurvesHarness, accounts):
    return AuctionCurvesHarness.deploy({"from": accounts[0]})


@pytest.mark.ganache
@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.kind.name)
def test_factor_matches_exact_power_within_rounding(harness, curve):
    for t in TIMES:
        exact = am.curve_factor(curve, t) * RAY
        got = int(harness.factor(*curve.as_tuple(), t))
        # the contract rounds each product down: never above the exact value; each of the <= 2*log2(n) products
        # loses < 1 ulp and squaring doubles earlier losses, so the total is below n + 2*log2(n) + 1 RAY-ulps
        n = t if curve.kind == CurveKind.EXPONENTIAL else t // max(curve.step, 1)
        assert got <= exact
        assert exact - got <= n + 2 * n.bit_length() + 1, (curve.kind, t, got, float(exact))


@pytest.mark.ganache
@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.kind.name)
def test_price_within_one_wei_of_exact(harness, curve):
    for top, span in CASES:
        for t in TIMES:
            expected = am.price(curve, top, span, t)
            got = int(harness.price(*curve.as_tuple(), top, span, t))
            assert abs(got - expected) <= 1, (curve.kind, top, span, t, got, expected)
            # never in the account's favour: at or below the exact price
            assert got <= am.price_exact(curve, top, span, t)


def test_price_moves_in_bidders_favour_for_both_signs(harness):
    lin = CURVES[0]
    # positive book: buyer pays less over time, down to top - span
    pos = [int(harness.price(*lin.as_tuple(), 1_000_000, 1_000_000, t)) for t in (0, 900, 1800, 3600)]
    assert pos == [1_000_000, 750_000, 500_000, 0]
    # liability: the buyer is paid more over time (price more negative), down to top - span
    neg = [int(harness.price(*lin.as_tuple(), -1_000_000, 400_000, t)) for t in (0, 900, 1800, 3600, 99_999)]
    assert neg == [-1_000_000, -1_100_000, -1_200_000, -1_400_000, -1_400_000]


def test_stairstep_is_flat_within_a_step(harness):
    st = CURVES[2]
    prices = [int(harness.price(*st.as_tuple(), 10**12, 10**12, t)) for t in (0, 45, 89, 90, 179, 180)]
    assert prices[0] == prices[1] == prices[2] == 10**12
    assert prices[3] == prices[4] == 99 * 10**10
    assert prices[5] == 9801 * 10**8


def test_invalid_curves_revert(harness):
    with brownie.reverts():
        harness.factor(0, 0, 0, 0, 10)  # linear with tau = 0
    with brownie.reverts():
        harness.factor(1, 0, 0, RAY + 1, 10)  # growing exponential
    with brownie.reverts():
        harness.factor(2, 0, 0, RAY // 2, 10)  # stairstep with step = 0

"""Liquidator valuation of a lot against a second computation (py_vollib's Black-76, a brute-force stress loop)
and the bid decision it leads to."""
from __future__ import annotations

import math

import pytest
from vollib.black import black as vollib_black

from keeper.bots.liquidator.valuation import (
    MarketView,
    Portfolio,
    RiskAppetite,
    SeriesSpec,
    flat_vol,
    gas_cost_quote,
    make_quote,
    value_portfolio,
)
from keeper.bots.liquidator.strategies import EdgeStrategy

QUOTE = "0x" + "aa" * 20
WETH = "0x" + "bb" * 20
NOW = 1_700_000_000
DAY = 86400
SERIES = {
    1: SeriesSpec(1, WETH, 2000.0, NOW + 30 * DAY, True),
    2: SeriesSpec(2, WETH, 1600.0, NOW + 30 * DAY, False),
    3: SeriesSpec(3, WETH, 2400.0, NOW + 90 * DAY, True),
}


def smile(strike, expiry, forward):
    import numpy as np

    k = np.log(np.asarray(strike) / np.asarray(forward))
    return 0.7 - 0.2 * k + 0.5 * k * k + 0.0 * np.asarray(expiry)


def reference_value(pf: Portfolio, spot: float, spot_mult: float, vol_mult: float, haircut: float) -> float:
    total = 0.0
    f = spot * spot_mult
    for sid, size in pf.positions.items():
        s = SERIES[sid]
        t = (s.expiry_ts - NOW) / (365 * DAY)
        k_equiv = s.strike * spot / f  # same moneyness on the unshocked smile
        sigma = float(smile(k_equiv, t, spot)) * vol_mult
        total += size * vollib_black("c" if s.is_call else "p", f, s.strike, t, 0.0, sigma)
    for asset, amt in pf.collateral.items():
        total += amt * (1.0 if asset == QUOTE else f * (1 - haircut))
    return total


def test_value_matches_vollib_and_brute_force_stress():
    pf = Portfolio({1: -3.0, 2: -5.0, 3: 2.0}, {WETH: 1.5, QUOTE: 1000.0}, cash=-250_000_000)
    mkt = MarketView({WETH: 1800.0}, smile, NOW, QUOTE)
    app = RiskAppetite(spot_shocks=(-0.3, -0.1, 0.0, 0.2), vol_shocks=(0.0, 0.5), aversion=0.4,
                       haircuts={WETH: 0.1})
    v = value_portfolio(pf, SERIES, mkt, app, quote_decimals=6)
    ref_pos = reference_value(Portfolio(pf.positions), 1800.0, 1.0, 1.0, 0.1)
    ref_coll = 1.5 * 1800 * 0.9 + 1000
    assert v.positions_value == pytest.approx(ref_pos * 1e6, abs=2)
    assert v.collateral_value == pytest.approx(ref_coll * 1e6, abs=2)
    assert v.value == v.positions_value + v.collateral_value - 250_000_000
    base = reference_value(pf, 1800.0, 1.0, 1.0, 0.1)
    worst = max(base - reference_value(pf, 1800.0, 1 + s, 1 + w, 0.1) for s in app.spot_shocks for w in app.vol_shocks)
    assert v.stress_loss == pytest.approx(worst * 1e6, abs=2)
    assert v.risk_charge == math.ceil(0.4 * v.stress_loss)
    # a book short puts loses most in the down-spot, up-vol corner
    assert worst > 0


def test_share_of_lot_values_proportionally():
    pf = Portfolio({1: -3.0, 2: 4.0}, {WETH: 2.0}, cash=10_000_000)
    mkt = MarketView({WETH: 2000.0}, flat_vol(0.8), NOW, QUOTE)
    app = RiskAppetite()
    whole = value_portfolio(pf, SERIES, mkt, app, 6)
    half = value_portfolio(pf.scaled(0.5), SERIES, mkt, app, 6)
    assert half.value == pytest.approx(whole.value / 2, abs=3)
    assert half.stress_loss == pytest.approx(whole.stress_loss / 2, abs=3)


def test_bid_decision_against_edge_from_a_valuation():
    pf = Portfolio({2: -2.0}, {WETH: 3.0}, cash=0)
    mkt = MarketView({WETH: 1500.0}, flat_vol(1.0), NOW, QUOTE)
    v = value_portfolio(pf, SERIES, mkt, RiskAppetite(aversion=0.1), 6)
    gas = gas_cost_quote(400_000, 2 * 10**9, 1500.0, 6)
    assert gas == math.ceil(400_000 * 2e9 / 1e18 * 1500 * 1e6)
    strat = EdgeStrategy(edge=0.03)
    limit = math.floor((v.value - v.risk_charge) * 0.97 - gas)
    cheap = make_quote(auction_id=1, account="0x1", now=NOW, auction_price=limit, valuation=v, gas_cost=gas,
                       free_margin=10**15, max_fraction=1.0)
    dear = make_quote(auction_id=1, account="0x1", now=NOW, auction_price=limit + 1, valuation=v, gas_cost=gas,
                      free_margin=10**15, max_fraction=1.0)
    assert strat.decide(cheap).bid and strat.decide(cheap).max_price == limit
    assert not strat.decide(dear).bid
    # the margin the lot consumes: price paid plus stress loss
    assert cheap.margin_per_lot == limit + v.stress_loss


def test_unknown_series_is_an_error():
    with pytest.raises(KeyError):
        value_portfolio(Portfolio({99: 1.0}), SERIES, MarketView({WETH: 1.0}, flat_vol(0.5), NOW, QUOTE),
                        RiskAppetite(), 6)

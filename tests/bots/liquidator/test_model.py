"""The liquidator's pure model (keeper/bots/liquidator/model.py): a lot's status in, a stance out. The configured
valuation is the one used (each against py_vollib's Black-76 computed here), the lot is the original portfolio
(holdings scaled back by the part sold), the margin a lot consumes is the contract's rule, and the decision is the
strategy's on that quote, an insolvent book bought whole."""
from __future__ import annotations

import math

import numpy as np
import pytest
from vollib.black import black as vollib_black

from keeper.bots.liquidator.bot import LiquidatorSettings
from keeper.bots.liquidator.model import LotStatus, LotValuer, decide_lot, lot_quote
from keeper.bots.liquidator.status import market_smile
from keeper.bots.liquidator.strategies import EdgeStrategy
from keeper.bots.liquidator.valuation import MarketView, Portfolio, RiskAppetite, SeriesSpec

QUOTE = "0x" + "aa" * 20
WETH = "0x" + "bb" * 20
NOW = 1_700_000_000
DAY = 86400
SPOT = 1500.0
SERIES = {1: SeriesSpec(1, WETH, 1800.0, NOW + 14 * DAY, False), 2: SeriesSpec(2, WETH, 1400.0, NOW + 45 * DAY, False)}
BOOK = Portfolio({1: -4.0, 2: -6.0}, {WETH: 2.0}, cash=1_500_000_000)  # short puts after a crash, WETH and cash


def smile(strike, expiry, forward):
    k = np.log(np.asarray(strike, float) / np.asarray(forward, float))
    return 0.9 * (1 - 0.15 * k + 0.4 * k * k) + 0 * np.asarray(expiry, float)


MARKET = MarketView({WETH: SPOT}, smile, NOW, QUOTE)


def options_by_vollib(pf: Portfolio) -> float:
    total = 0.0
    for sid, size in pf.positions.items():
        s = SERIES[sid]
        t = (s.expiry_ts - NOW) / (365 * DAY)
        total += size * vollib_black("c" if s.is_call else "p", SPOT, s.strike, t, 0.0, float(smile(s.strike, t, SPOT)))
    return total


def status(**kw) -> LotStatus:
    base = dict(auction_id=7, account="0x" + "11" * 20, now=NOW, price=1_000_000_000, allowed_wad=10**18 // 2,
                equity=1_200_000_000, initial=3_000_000_000, sold_wad=0, holdings=BOOK, series=SERIES,
                market=MARKET, quote_decimals=6, gas_cost=3_000, free_margin=10**15)
    base.update(kw)
    return LotStatus(**base)


def test_each_valuation_is_the_configured_one():
    opts = options_by_vollib(BOOK)
    hedging = LotValuer("hedging").value(BOOK, SERIES, MARKET, 6)
    # hedging: collateral at spot (no haircut: it is sold with the hedge), options at Black-76, cash
    assert abs(hedging.value - ((opts + 2.0 * SPOT) * 1e6 + BOOK.cash)) <= 2
    conservative = LotValuer("conservative", RiskAppetite(aversion=0.25, default_haircut=0.10)).value(
        BOOK, SERIES, MARKET, 6)
    assert abs(conservative.value - ((opts + 2.0 * SPOT * 0.9) * 1e6 + BOOK.cash)) <= 2
    # the conservative charge (a quarter of the unhedged worst loss) is several times the hedging one here
    assert conservative.risk_charge > 2 * hedging.risk_charge > 0
    with pytest.raises(ValueError, match="valuation must be one of hedging, conservative"):
        LotValuer("optimistic")


def test_the_lot_is_the_original_portfolio_and_the_margin_the_contracts_rule():
    whole = LotValuer().value(BOOK, SERIES, MARKET, 6)
    # 40 % already sold: the account holds 60 % of the book, the auction's price and fractions refer to all of it
    left = Portfolio({k: 0.6 * v for k, v in BOOK.positions.items()}, {WETH: 1.2}, cash=900_000_000)
    q, val = lot_quote(status(holdings=left, sold_wad=4 * 10**17), LotValuer())
    assert abs(val.value - whole.value) <= 2 and abs(val.risk_charge - whole.risk_charge) <= 2
    assert q.valuation == val.value and q.risk_charge == val.risk_charge
    # the bidder keeps the price paid plus IM - E of the sold book (LiquidationAuction._checkBidder)
    assert q.margin_per_lot == 1_000_000_000 + (3_000_000_000 - 1_200_000_000)
    assert (q.max_fraction, q.auction_price, q.gas_cost) == (0.5, 1_000_000_000, 3_000)


def test_decision_is_the_strategys_on_that_quote_and_an_insolvent_book_is_bought_whole():
    edge = EdgeStrategy(0.01)
    val = LotValuer().value(BOOK, SERIES, MARKET, 6)
    a = val.value - val.risk_charge
    limit = math.floor(a - 0.01 * abs(a) - 3_000 / 0.5)  # the edge rule for a fill of the allowed 0.5
    at_limit = decide_lot(status(price=limit), LotValuer(), edge)
    assert at_limit.decision.bid and at_limit.decision.max_price == limit and at_limit.decision.fraction == 0.5
    assert not decide_lot(status(price=limit + 1), LotValuer(), edge).decision.bid
    # insolvent: the whole rest or nothing
    assert not decide_lot(status(price=limit, equity=-1), LotValuer(), edge).decision.bid
    whole = decide_lot(status(price=limit, equity=-1, allowed_wad=10**18), LotValuer(), edge).decision
    assert whole.bid and whole.fraction == 1.0


def test_settings_default_to_hedging_and_name_a_bad_choice():
    s = LiquidatorSettings(rpc_url="http://127.0.0.1:1", deployment_file="d.json", key="0x01")
    assert s.valuation == "hedging" and s.valuer().kind == "hedging" and s.take_last_resort
    assert s.valuer().hedging.horizon_s == 3600.0
    c = LiquidatorSettings(rpc_url="", deployment_file="", key="", valuation="conservative", aversion=0.3)
    assert c.valuer().risk.aversion == 0.3
    with pytest.raises(ValueError, match="got 'mark'"):
        LiquidatorSettings(rpc_url="", deployment_file="", key="", valuation="mark")
    with pytest.raises(ValueError, match="hedge horizon"):
        LiquidatorSettings(rpc_url="", deployment_file="", key="", hedge_horizon_s=0)


def test_each_underlying_is_priced_on_its_own_smile(tmp_path):
    wbtc = "0x" + "cc" * 20
    series = {**SERIES, 3: SeriesSpec(3, wbtc, 28_000.0, NOW + 14 * DAY, False)}
    book = Portfolio({1: -4.0, 3: -0.5}, {}, cash=0)
    f = tmp_path / "market_WBTC.json"
    f.write_text('{"spot": 30000, "atm_vol": 0.6, "skew": -0.1, "curvature": 0.3}')
    btc_smile = market_smile(f)
    market = MarketView({WETH: SPOT, wbtc: 30_000.0}, smile, NOW, QUOTE, {wbtc: btc_smile})
    t = 14 / 365
    k = math.log(28_000 / 30_000)
    btc_vol = 0.6 * (1 - 0.1 * k + 0.3 * k * k)
    expected = options_by_vollib(Portfolio({1: -4.0})) - 0.5 * vollib_black("p", 30_000.0, 28_000.0, t, 0.0, btc_vol)
    for kind in ("hedging", "conservative"):
        assert abs(LotValuer(kind).value(book, series, market, 6).value - expected * 1e6) <= 2, kind
    # without its own smile the BTC put would be priced on ETH's (a different value: the lookup matters)
    one = MarketView({WETH: SPOT, wbtc: 30_000.0}, smile, NOW, QUOTE)
    assert abs(LotValuer().value(book, series, one, 6).value - expected * 1e6) > 1e6
    f.write_text('{"spot": 30000, "atm_vol": -1}')
    with pytest.raises(ValueError, match="atm_vol must be > 0"):
        market_smile(f)

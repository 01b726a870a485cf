"""Hybrid mark: each reason, hysteresis (no flapping where a single threshold flaps), the fat-finger guard, and the
marks of real Deribit chains against their own fitted surface."""
from __future__ import annotations

import numpy as np
import pytest

from keeper.data.deribit import load_deribit_csv
from keeper.quant.marks import MarkConfig, MarkReason, hybrid_marks, mark_chain, model_prices
from keeper.quant.pricing import black76_price
from keeper.quant.surface import fit_surface, fitted_forward

CFG = MarkConfig()


def one(bid, ask, bid_size=50.0, ask_size=50.0, model=100.0, prev=None, vega=None, age=None, config=CFG):
    r = hybrid_marks(np.array([bid]), np.array([ask]), np.array([bid_size]), np.array([ask_size]), np.array([model]),
                     None if prev is None else np.array([prev]), model_vega=None if vega is None else np.array([vega]),
                     quote_age=None if age is None else np.array([age]), config=config)
    return float(r.mark[0]), bool(r.market[0]), MarkReason(int(r.reason[0]))


def test_each_reason():
    assert one(99.0, 101.0) == (100.0, True, MarkReason.MARKET_DEEP_TIGHT)
    assert one(98.0, 101.0, model=100.0)[:2] == (99.5, True)  # mid 99.5, spread 3 %
    assert one(np.nan, np.nan)[2] == MarkReason.MODEL_NO_QUOTE
    assert one(102.0, 101.0)[2] == MarkReason.MODEL_CROSSED
    assert one(np.nan, 101.0)[2] == MarkReason.MODEL_ONE_SIDED
    assert one(0.0, 101.0)[2] == MarkReason.MODEL_ONE_SIDED  # a zero bid is no bid
    assert one(99.0, 101.0, age=CFG.max_quote_age_s + 1)[2] == MarkReason.MODEL_STALE
    assert one(99.0, 101.0, bid_size=1.0)[2] == MarkReason.MODEL_THIN_DEPTH
    assert one(99.0, 101.0, bid_size=np.nan, ask_size=np.nan)[2] == MarkReason.MODEL_THIN_DEPTH  # unknown depth
    assert one(90.0, 110.0)[2] == MarkReason.MODEL_WIDE_SPREAD
    assert one(119.0, 121.0, model=100.0) == (100.0, False, MarkReason.MODEL_MID_OUTSIDE_MODEL_BAND)
    mark, market, reason = one(99.0, 101.0, model=np.nan)
    assert np.isnan(mark) and not market and reason == MarkReason.NO_MARK
    # model marks are the model price
    assert one(90.0, 110.0, model=97.0)[0] == 97.0


def test_vega_widens_the_model_band():
    # mid 110 vs model 100: outside 5 % (enter), inside 2 vol points when vega = 600 (band 12)
    assert one(109.0, 111.0, model=100.0)[2] == MarkReason.MODEL_MID_OUTSIDE_MODEL_BAND
    assert one(109.0, 111.0, model=100.0, vega=600.0)[2] == MarkReason.MARKET_DEEP_TIGHT


def run_sequence(spreads, depths, config):
    prev = None
    states = []
    for s, d in zip(spreads, depths):
        bid, ask = 100.0 * (1 - s / 2), 100.0 * (1 + s / 2)
        r = hybrid_marks(np.array([bid]), np.array([ask]), np.array([d]), np.array([d]), np.array([100.0]), prev,
                         config=config)
        prev = r.market
        states.append(bool(r.market[0]))
    return states


def flips(states):
    return sum(a != b for a, b in zip(states, states[1:]))


def test_spread_oscillating_around_the_threshold_does_not_flap():
    # relative spread oscillating 4.5 % / 6 % around the 5 % enter threshold, deep book
    spreads = [0.045, 0.06] * 20
    depths = [50.0] * len(spreads)
    with_hysteresis = run_sequence(spreads, depths, CFG)
    assert with_hysteresis[0] is True and flips(with_hysteresis) == 0
    single = MarkConfig(leave_max_rel_spread=CFG.enter_max_rel_spread)  # same enter and leave threshold
    assert flips(run_sequence(spreads, depths, single)) == len(spreads) - 1
    # a real widening beyond the leave threshold still leaves, and re-entry needs the stricter threshold again
    states = run_sequence([0.04, 0.12, 0.07, 0.07, 0.04], [50.0] * 5, CFG)
    assert states == [True, False, False, False, True]


def test_depth_oscillating_around_the_threshold_does_not_flap():
    depths = [6.0, 4.0] * 20  # around the enter depth of 5 contracts, above the leave depth of 2
    states = run_sequence([0.02] * len(depths), depths, CFG)
    assert flips(states) == 0 and all(states)
    single = MarkConfig(leave_min_depth=CFG.enter_min_depth)
    assert flips(run_sequence([0.02] * len(depths), depths, single)) == len(depths) - 1


def test_mid_oscillating_around_the_model_band_does_not_flap():
    # mid alternating 4 % and 6 % above the model: around the 5 % enter band, inside the 10 % leave band
    mids = [104.0, 106.0] * 20
    single = MarkConfig(leave_band_rel=CFG.enter_band_rel)
    for config, expected_flips in ((CFG, 0), (single, len(mids) - 1)):
        prev, states = None, []
        for mid in mids:
            r = hybrid_marks(np.array([mid - 1.0]), np.array([mid + 1.0]), np.array([50.0]), np.array([50.0]),
                             np.array([100.0]), prev, config=config)
            prev = r.market
            states.append(bool(r.market[0]))
        assert flips(states) == expected_flips
        assert states[0] is True
    # a mid that runs away beyond the leave band is dropped, and comes back only inside the enter band
    prev, seen = None, []
    for mid in (104.0, 112.0, 107.0, 104.0):
        r = hybrid_marks(np.array([mid - 1.0]), np.array([mid + 1.0]), np.array([50.0]), np.array([50.0]),
                         np.array([100.0]), prev)
        prev = r.market
        seen.append((bool(r.market[0]), MarkReason(int(r.reason[0]))))
    assert seen == [(True, MarkReason.MARKET_DEEP_TIGHT), (False, MarkReason.MODEL_MID_OUTSIDE_MODEL_BAND),
                    (False, MarkReason.MODEL_MID_OUTSIDE_MODEL_BAND), (True, MarkReason.MARKET_DEEP_TIGHT)]


def test_mark_is_pure():
    args = (np.array([99.0, 90.0]), np.array([101.0, 110.0]), np.array([50.0, 50.0]), np.array([50.0, 50.0]),
            np.array([100.0, 100.0]), np.array([True, False]))
    a, b = hybrid_marks(*args), hybrid_marks(*args)
    assert np.array_equal(a.mark, b.mark) and np.array_equal(a.reason, b.reason)
    assert np.array_equal(args[5], [True, False])  # the previous state is not modified


@pytest.fixture(scope="module")
def btc(shared_data):
    chain = load_deribit_csv(shared_data / "option_chains" / "deribit_BTC_20200514T0541Z.csv").chain
    return chain, fit_surface(chain)


def test_fat_finger_book_is_not_trusted_and_does_not_liquidate_a_healthy_account(btc):
    """Someone shows a deep, tight book at three times the model value of a call that a healthy account is short.
    A naive mark (mid/last trade of that book) liquidates the account; the hybrid mark keeps the model value."""
    chain, surface = btc
    price, vega = model_prices(chain, surface)
    res = mark_chain(chain, surface)
    market_rows = np.flatnonzero(res.market)
    assert market_rows.size > 0
    i = int(market_rows[np.argmax(price[market_rows])])  # the most valuable series marked to market
    model = float(price[i])
    assert res.mark[i] == pytest.approx(res.mid[i])  # before: the real book is trusted
    bid, ask = 2.98 * model, 3.02 * model  # fat finger: 1.3 % wide, 100 contracts a side
    r = hybrid_marks(np.array([bid]), np.array([ask]), np.array([100.0]), np.array([100.0]), np.array([model]),
                     np.array([True]), model_vega=np.array([vega[i]]))
    assert MarkReason(int(r.reason[0])) == MarkReason.MODEL_MID_OUTSIDE_MODEL_BAND
    assert r.mark[0] == model and not r.market[0]
    # the account: short 10 of these calls, collateral = 1.5x their model value, maintenance = 10 % of the short value
    size, collateral = 10.0, 1.5 * 10.0 * model

    def healthy(mark):
        equity = collateral - size * mark
        return equity >= 0.10 * size * mark

    naive_last_trade = 0.5 * (bid + ask)
    assert healthy(model) and healthy(float(r.mark[0]))
    assert not healthy(naive_last_trade)


def test_real_chain_marks(btc):
    chain, surface = btc
    price, vega = model_prices(chain, surface)
    res = mark_chain(chain, surface)
    market = res.market
    # market marks are mids inside the book and inside the model band
    assert np.all(res.mark[market] >= chain.bid[market]) and np.all(res.mark[market] <= chain.ask[market])
    band = np.maximum(CFG.enter_band_rel * price, CFG.enter_band_vol * vega)
    assert np.all(np.abs(res.mid[market] - price[market]) <= band[market])
    assert np.all(res.depth[market] >= CFG.enter_min_depth)
    assert np.all(res.rel_spread[market] <= CFG.enter_max_rel_spread)
    # every other series is marked to the model, and every series has a mark
    assert np.array_equal(res.mark[~market], price[~market])
    assert np.all(np.isfinite(res.mark))
    # reasons agree with an independent count from the raw book
    one_sided = np.isfinite(chain.bid) != np.isfinite(chain.ask)
    assert int(np.sum(res.reason == MarkReason.MODEL_ONE_SIDED)) == int(one_sided.sum())
    # the model price is Black-76 on the surface vol (second computation), as VolSurface.price gives it, on the
    # forward the surface was fitted on (the venue's by default)
    fwd = fitted_forward(chain, surface)
    assert np.array_equal(fwd, chain.forward)
    vol = surface.implied_vol(chain.strike, chain.expiry_years, fwd)
    assert np.allclose(price, black76_price(fwd, chain.strike, chain.expiry_years, vol, chain.is_call),
                       rtol=1e-12, atol=1e-9)
    assert np.array_equal(price, surface.price(chain.strike, chain.expiry_years, fwd, chain.is_call))
    assert np.isnan(surface.price(chain.strike[0], 0.0, chain.forward[0], True))  # expired: no price
    # hysteresis on real data: fed back its own state, a series marked to market stays there
    again = mark_chain(chain, surface, res.market)
    assert np.all(again.market[market])
    assert again.market.sum() >= market.sum()

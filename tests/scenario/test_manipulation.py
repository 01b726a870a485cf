"""Thin-book manipulation: the naive last-trade mark liquidates healthy short holders, the hybrid mark does not."""
from __future__ import annotations

import numpy as np

from keeper.quant.pricing import black76_greeks
from keeper.scenario.manipulation import ThinBook, manipulation_report


def test_fat_finger_on_thin_series():
    # three series: ATM call, 10 % OTM put, 30 % OTM put (the illiquid one)
    F, T = 2000.0, 30 / 365
    K = np.array([2000.0, 1800.0, 1400.0])
    call = np.array([True, False, False])
    g = black76_greeks(F, K, T, 0.7, call)
    model, vega = np.asarray(g.price), np.asarray(g.vega)
    accts = ["a", "b", "c", "d"]
    pos = np.array([[0, 0, -20.0],   # short the thin put, modest cushion
                    [1.0, 0, -10.0],  # short thin put, big cushion
                    [0, -2.0, 0],     # no exposure to the thin series
                    [0, 0, 15.0]])    # long the thin put: gains from the print
    eq_model = pos @ model
    mm = np.array([800.0, 500.0, 300.0, 200.0])
    coll = mm * 1.3 - eq_model  # everyone 30 % above maintenance under the model
    fair = model[2]
    book = ThinBook(trade_price=fair * 8 + 50, bid=fair * 0.9, ask=fair * 8 + 50, bid_size=0.5, ask_size=0.2)
    r = manipulation_report(accts, pos, coll, mm, model, vega, 2, book, "ETH-1400-P")
    # naive: equity drops by 20 * (print - fair) for "a" (about 20 * 7 * fair + 1000): far below MM
    naive_eq_a = coll[0] + pos[0] @ np.where(np.arange(3) == 2, book.trade_price, model)
    assert naive_eq_a < mm[0]
    assert "a" in r["naive_would_liquidate"] and "c" not in r["naive_would_liquidate"]
    assert "d" not in r["naive_would_liquidate"]
    # check "b" independently: 10 contracts x (print - fair) against its cushion 0.3 * 500
    b_loss = 10 * (book.trade_price - fair)
    assert ("b" in r["naive_would_liquidate"]) == (b_loss > 0.3 * 500)
    assert r["hybrid_liquidated"] == []
    assert r["hybrid_mark"] == fair and r["hybrid_reason"] == "MODEL_THIN_DEPTH"
    assert r["healthy_under_model"] == 4


def test_deep_tight_book_near_model_is_marked_to_market():
    F, T = 2000.0, 30 / 365
    g = black76_greeks(F, np.array([1900.0]), T, 0.6, np.array([False]))
    model, vega = np.asarray(g.price), np.asarray(g.vega)
    book = ThinBook(model[0], model[0] * 0.99, model[0] * 1.01, 50, 50)
    r = manipulation_report(["x"], np.array([[-1.0]]), np.array([1000.0]), np.array([10.0]), model, vega, 0, book)
    assert r["hybrid_reason"] == "MARKET_DEEP_TIGHT" and abs(r["hybrid_mark"] - model[0]) < 1e-9 * model[0] + 1e-12

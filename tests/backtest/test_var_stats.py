"""Kupiec POF and Christoffersen independence against independent computations (binomial / Markov likelihoods
written out with scipy.stats), and the VaR backtest's P&L against a hand repricing on real daily closes."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy.stats import bernoulli, binom, chi2

from keeper.backtest.var_backtest import (BOOKS, christoffersen_independence, ewma_vol_daily, kupiec_pof,
                                          var_backtest)
from keeper.quant.pricing import black76_price


def _seq():
    e = np.zeros(250, dtype=bool)
    e[[10, 11, 12, 80, 200, 201]] = True  # 6 exceedances, two clusters
    return e


def test_kupiec_matches_binomial_likelihood_ratio():
    e = _seq()
    n, x = e.size, int(e.sum())
    expected = 2.0 * (binom.logpmf(x, n, x / n) - binom.logpmf(x, n, 0.01))
    got = kupiec_pof(e, 0.01)
    assert got["exceedances"] == 6 and got["n"] == 250
    assert got["lr"] == pytest.approx(expected, rel=1e-12)
    assert got["p_value"] == pytest.approx(chi2.sf(expected, 1), rel=1e-12)
    # hand value: x=6, n=250, p=0.01 -> LR = 2.5 (computed with the closed form)
    hand = -2 * (244 * math.log(0.99) + 6 * math.log(0.01) - 244 * math.log(244 / 250) - 6 * math.log(6 / 250))
    assert got["lr"] == pytest.approx(hand, rel=1e-12)
    assert kupiec_pof(np.zeros(100, bool))["lr"] == pytest.approx(-2 * 100 * math.log(0.99))


def test_christoffersen_matches_markov_likelihood():
    e = _seq().astype(int)
    prev, nxt = e[:-1], e[1:]
    p_all = nxt.mean()
    ll_ind = bernoulli.logpmf(nxt, p_all).sum()
    p0 = nxt[prev == 0].mean()
    p1 = nxt[prev == 1].mean()
    ll_dep = bernoulli.logpmf(nxt[prev == 0], p0).sum() + bernoulli.logpmf(nxt[prev == 1], p1).sum()
    got = christoffersen_independence(e)
    assert (got["n00"], got["n01"], got["n10"], got["n11"]) == (240, 3, 3, 3)  # counted by hand
    assert got["lr"] == pytest.approx(2 * (ll_dep - ll_ind), rel=1e-10)
    # clustered exceedances are rejected at 5 %, spread-out ones are not
    assert got["p_value"] < 0.05
    spread = np.zeros(250, int)
    spread[[10, 60, 110, 160, 210, 240]] = 1
    assert christoffersen_independence(spread)["p_value"] > 0.3


def test_var_backtest_pnl_is_the_repriced_book(shared_data):
    closes = np.array([float(r["close"]) for r in csv.DictReader(open(shared_data / "price_paths" / "ETHUSD_daily.csv"))])
    closes = closes[:130]
    vb = var_backtest("ETH", closes, n_scenarios=1000)
    assert vb.days == 130 - 31
    vol = ewma_vol_daily(closes)
    d = 30 + 17  # row 17
    b = list(BOOKS).index("covered_call")
    S0, S1 = closes[d], closes[d + 1]
    c0 = black76_price(S0, 1.1 * S0, 30 / 365, vol[d], True)
    c1 = black76_price(S1, 1.1 * S0, 29 / 365, vol[d + 1], True)
    assert vb.pnl[17, b] == pytest.approx((S1 - S0) - (c1 - c0), rel=1e-9)
    assert np.array_equal(vb.exceed, -vb.pnl > vb.var)
    assert np.all(vb.var[:, list(BOOKS).index("short_atm_put")] > 0)
    t = vb.tests["short_atm_put"]
    assert t["kupiec"]["exceedances"] == int(vb.exceed[:, list(BOOKS).index("short_atm_put")].sum())

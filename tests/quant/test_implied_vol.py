"""Implied volatility: round trips, independent solvers (QuantLib, Let's Be Rational), reason codes, real chains.

"Carries vega" below means the vol is resolvable in double precision: a price known to its rounding
(``8 eps * price``) moves the vol by less than ``1e-12`` (``8 eps * price / vega <= 1e-12``), 100 times below the
``1e-10`` target. Rows without vega are checked in price space instead (the solved vol reprices the quote).
"""
from __future__ import annotations

import csv
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from scipy.special import ndtr

from keeper.quant.implied_vol import ImpliedVols, IVReason, implied_vol
from keeper.quant.pricing import black76_greeks, black76_price

ql = pytest.importorskip("QuantLib")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    lbr_iv = pytest.importorskip("vollib.black.implied_volatility")

EPS = np.finfo(float).eps
MINUTE = 1.0 / (365.0 * 24 * 60)


def _quotes(n: int, seed: int, z_max: float = 5.0, t_min: float = MINUTE, t_max: float = 10.0):
    """Random quotes: strikes up to z_max standard deviations from the forward, expiries from t_min to t_max."""
    rng = np.random.default_rng(seed)
    fwd = 10.0 ** rng.uniform(-2, 5, n)
    expiry = np.exp(rng.uniform(np.log(t_min), np.log(t_max), n))
    vol = 10.0 ** rng.uniform(-2, np.log10(5.0), n)  # 1 % .. 500 %
    z = rng.uniform(-z_max, z_max, n)
    strike = fwd * np.exp(z * vol * np.sqrt(expiry))
    is_call = rng.random(n) < 0.5
    return fwd, strike, expiry, vol, is_call


def _carries_vega(price, vega):
    return 8.0 * EPS * price <= 1e-12 * vega


def _term_scale(fwd, strike, expiry, vol, w):
    """Size of the two terms of ``w (F N(w d1) - K N(w d2))``: the rounding scale of the textbook formula.

    Far out of the money at tiny ``vol*sqrt(T)`` the two terms nearly cancel, so a price evaluated this way (by
    QuantLib, vollib, or our own out-of-the-money branch) carries an error of a few ``eps`` times this scale.
    """
    dev = vol * np.sqrt(expiry)
    d1 = np.log(fwd / strike) / dev + 0.5 * dev
    return fwd * ndtr(w * d1) + strike * ndtr(w * (d1 - dev))


def test_round_trip_wide_grid_to_1e_10():
    fwd, strike, expiry, vol, is_call = _quotes(50_000, seed=11)
    disc = np.exp(-0.03 * expiry)
    g = black76_greeks(fwd, strike, expiry, vol, is_call, disc)
    res = implied_vol(g.price, fwd, strike, expiry, is_call, disc)
    meaningful = _carries_vega(g.price, g.vega)
    assert meaningful.sum() > 35_000  # the criterion keeps most of the grid
    assert np.all(res.reason[meaningful] == IVReason.OK)
    err = np.abs(res.vol - vol)
    assert err[meaningful].max() <= 1e-10, float(err[meaningful].max())
    # everywhere a vol was returned it reprices the quote to the rounding of the (out-of-the-money) formula
    ok = res.reason == IVReason.OK
    repriced = black76_price(fwd[ok], strike[ok], expiry[ok], res.vol[ok], is_call[ok], disc[ok])
    w_otm = np.where(strike[ok] > fwd[ok], 1.0, -1.0)
    scale = g.price[ok] + disc[ok] * _term_scale(fwd[ok], strike[ok], expiry[ok], vol[ok], w_otm)
    assert np.all(np.abs(repriced - g.price[ok]) <= 64 * EPS * scale)
    # rows refused for lack of time value really have none left in double precision
    refused = ~ok
    assert np.all(res.reason[refused] == IVReason.NO_TIME_VALUE)  # never "out of bounds" for a model price
    assert np.all(np.isnan(res.vol[refused]))
    assert np.all(g.vega[refused] * 1e-3 <= 8 * EPS * g.price[refused] + 1e-300)


@pytest.mark.parametrize("minutes", [1.0, 5.0, 60.0])
def test_short_expiries_and_extreme_strikes(minutes):
    n = 4000
    rng = np.random.default_rng(int(minutes))
    expiry = np.full(n, minutes * MINUTE)
    vol = rng.uniform(0.2, 3.0, n)
    z = np.concatenate([np.linspace(-5, 5, n // 2), rng.choice([-5.0, 5.0], n // 2)])
    fwd = 2000.0
    strike = fwd * np.exp(z * vol * np.sqrt(expiry))
    is_call = np.arange(n) % 2 == 0
    g = black76_greeks(fwd, strike, expiry, vol, is_call)
    res = implied_vol(g.price, fwd, strike, expiry, is_call)
    meaningful = _carries_vega(g.price, g.vega)
    assert meaningful.sum() > n // 2
    err = np.abs(res.vol - vol)[meaningful]
    assert err.max() <= 1e-10, float(err.max())


def test_against_quantlib_prices_and_implied_std_dev():
    fwd, strike, expiry, vol, is_call = _quotes(1500, seed=12, z_max=3.0, t_min=1e-2, t_max=5.0)
    ql_price = np.array(
        [
            ql.blackFormula(ql.Option.Call if c else ql.Option.Put, float(k), float(f), float(v * np.sqrt(t)))
            for f, k, t, v, c in zip(fwd, strike, expiry, vol, is_call)
        ]
    )
    res = implied_vol(ql_price, fwd, strike, expiry, is_call)
    vega = black76_greeks(fwd, strike, expiry, vol, is_call).vega
    # QuantLib evaluates the textbook formula on the quoted side with a normal CDF accurate in absolute (not
    # relative) terms, so its price carries an error of a few eps * (F + K): resolvable rows are those where that
    # moves the vol by < 1e-12 (e.g. F=389, K=3.2e8, vol=499 %: QuantLib's price is off by 5e-10 relative)
    meaningful = 16.0 * EPS * (fwd + strike) <= 1e-12 * vega
    assert meaningful.sum() > 1000
    # QuantLib-priced quotes: recovered to 1e-10 (independent pricer)
    assert np.abs(res.vol - vol)[meaningful].max() <= 1e-10
    # QuantLib's own solver (Newton-safe, asked for 1e-13 in std dev) agrees
    for i in np.flatnonzero(meaningful)[:300]:
        kind = ql.Option.Call if is_call[i] else ql.Option.Put
        std = ql.blackFormulaImpliedStdDev(kind, float(strike[i]), float(fwd[i]), float(ql_price[i]), 1.0, 0.0, 0.5, 1e-13, 200)
        assert abs(res.vol[i] - std / np.sqrt(expiry[i])) <= 1e-10, i


def test_against_lets_be_rational():
    fwd, strike, expiry, vol, is_call = _quotes(3000, seed=13)
    g = black76_greeks(fwd, strike, expiry, vol, is_call)
    res = implied_vol(g.price, fwd, strike, expiry, is_call)
    meaningful = np.flatnonzero(_carries_vega(g.price, g.vega))
    assert meaningful.size > 2000
    worst = 0.0
    for i in meaningful:
        ref = lbr_iv.implied_volatility_of_undiscounted_option_price(
            float(g.price[i]), float(fwd[i]), float(strike[i]), float(expiry[i]), "c" if is_call[i] else "p"
        )
        worst = max(worst, abs(res.vol[i] - ref))
    assert worst <= 1e-10, worst


def test_put_call_parity_and_scale_invariance():
    # a call quote and the put quote implied by parity (P = C - D (F - K)) carry the same vol; quoting everything in
    # cents instead of dollars (price, forward and strike x 100) changes nothing
    fwd, strike, expiry, vol, _ = _quotes(5000, seed=14, z_max=2.5, t_min=1e-3, t_max=5.0)
    disc = np.exp(-0.05 * expiry)
    call = black76_price(fwd, strike, expiry, vol, True, disc)
    put = call - disc * (fwd - strike)
    vc = implied_vol(call, fwd, strike, expiry, True, disc)
    vp = implied_vol(put, fwd, strike, expiry, False, disc)
    g = black76_greeks(fwd, strike, expiry, vol, True, disc)
    # parity moves the rounding of the larger of the two premiums into the smaller one
    both = 8.0 * EPS * np.maximum(call, np.abs(put) + disc * np.abs(fwd - strike)) <= 1e-12 * g.vega
    assert both.sum() > 3000
    assert np.abs(vc.vol - vp.vol)[both].max() <= 1e-10
    scaled = implied_vol(100.0 * call, 100.0 * fwd, 100.0 * strike, expiry, True, disc)
    assert np.abs(scaled.vol - vc.vol)[both].max() <= 1e-12


def test_discounted_premiums():
    disc = np.array([1.0, 0.95, 0.5, 1e-3])
    price = black76_price(100.0, 120.0, 2.0, 0.4, True, disc)
    res = implied_vol(price, 100.0, 120.0, 2.0, True, disc)
    np.testing.assert_allclose(res.vol, 0.4, rtol=0, atol=1e-13)
    assert np.all(res.reason == IVReason.OK)


def test_bad_rows_get_reason_codes_and_never_raise():
    f, k, t = 100.0, 90.0, 0.5
    call = float(black76_price(f, k, t, 0.5, True))
    rows = [
        # (price, forward, strike, expiry, is_call, discount, expected reason)
        (call, f, k, t, True, 1.0, IVReason.OK),
        (9.0, f, k, t, True, 1.0, IVReason.BELOW_INTRINSIC),  # call intrinsic F - K = 10
        (5.0, f, 110.0, t, False, 1.0, IVReason.BELOW_INTRINSIC),  # put intrinsic K - F = 10
        (0.9 * 9.5, f, k, t, True, 0.9, IVReason.BELOW_INTRINSIC),  # 9.5 undiscounted < 10
        (100.5, f, k, t, True, 1.0, IVReason.ABOVE_UPPER_BOUND),  # call above F
        (90.5, f, k, t, False, 1.0, IVReason.ABOVE_UPPER_BOUND),  # put above K
        (10.0, f, k, t, True, 1.0, IVReason.NO_TIME_VALUE),  # exactly intrinsic
        (0.0, f, 110.0, t, True, 1.0, IVReason.NO_TIME_VALUE),  # OTM at zero
        (100.0, f, k, t, True, 1.0, IVReason.NO_TIME_VALUE),  # exactly the upper bound
        (np.nan, f, k, t, True, 1.0, IVReason.INVALID_INPUT),
        (call, np.inf, k, t, True, 1.0, IVReason.INVALID_INPUT),
        (call, -f, k, t, True, 1.0, IVReason.INVALID_INPUT),
        (call, f, 0.0, t, True, 1.0, IVReason.INVALID_INPUT),
        (call, f, k, 0.0, True, 1.0, IVReason.INVALID_INPUT),
        (call, f, k, -1.0, True, 1.0, IVReason.INVALID_INPUT),
        (-1.0, f, k, t, True, 1.0, IVReason.INVALID_INPUT),
        (call, f, k, t, True, 0.0, IVReason.INVALID_INPUT),
        (call, f, k, np.nan, False, 1.0, IVReason.INVALID_INPUT),
    ]
    cols = list(zip(*rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning leaks out of the batch either
        res = implied_vol(*(np.array(c) for c in cols[:6]))
    assert isinstance(res, ImpliedVols) and res.reason.dtype == np.int8
    np.testing.assert_array_equal(res.reason, np.array(cols[6], dtype=np.int8))
    assert abs(res.vol[0] - 0.5) <= 1e-13
    assert np.all(np.isnan(res.vol[1:]))


def test_garbage_batch_never_raises_and_every_row_is_accounted_for():
    rng = np.random.default_rng(15)
    n = 20_000
    pool = np.array([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e-300, 1e-12, 1.0, 100.0, 1e12, 1e300])

    def column(lo, hi):
        vals = 10.0 ** rng.uniform(lo, hi, n)
        wild = rng.random(n) < 0.2
        vals[wild] = rng.choice(pool, wild.sum())
        return vals

    price, fwd, strike, expiry = column(-8, 4), column(-3, 5), column(-3, 5), column(-7, 1.5)
    disc = np.where(rng.random(n) < 0.05, rng.choice(pool, n), 1.0)
    is_call = rng.random(n) < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = implied_vol(price, fwd, strike, expiry, is_call, disc)
    assert set(np.unique(res.reason)) <= {int(r) for r in IVReason}
    ok = res.reason == IVReason.OK
    assert np.all(np.isfinite(res.vol[ok]) & (res.vol[ok] > 0)) and np.all(np.isnan(res.vol[~ok]))
    # the codes agree with an independent classification of each row
    with np.errstate(all="ignore"):
        valid = (np.isfinite(price) & np.isfinite(fwd) & np.isfinite(strike) & np.isfinite(expiry) & np.isfinite(disc)
                 & (fwd > 0) & (strike > 0) & (expiry > 0) & (disc > 0) & (price >= 0))
        und = price / disc
        intrinsic = np.where(is_call, np.maximum(fwd - strike, 0.0), np.maximum(strike - fwd, 0.0))
        upper = np.where(is_call, fwd, strike)
    assert np.all((res.reason == IVReason.INVALID_INPUT) == ~valid)
    far_below = valid & (und < intrinsic * (1 - 1e-12))
    far_above = valid & (und > upper * (1 + 1e-12))
    assert np.all(res.reason[far_below] == IVReason.BELOW_INTRINSIC)
    assert np.all(res.reason[far_above] == IVReason.ABOVE_UPPER_BOUND)
    assert ok.sum() > 1000
    # every solved row reprices its quote
    repriced = black76_price(fwd[ok], strike[ok], expiry[ok], res.vol[ok], is_call[ok])
    assert np.all(np.abs(repriced - und[ok]) <= 1e-9 * np.maximum(und[ok], 1e-300) + 1e-12 * upper[ok])


def test_shapes_broadcast_and_scalars():
    strikes = np.array([[80.0, 100.0, 125.0]])
    expiries = np.array([[0.1], [1.0]])
    price = black76_price(100.0, strikes, expiries, 0.7, False)
    res = implied_vol(price, 100.0, strikes, expiries, False)
    assert res.vol.shape == (2, 3) and res.reason.shape == (2, 3)
    np.testing.assert_allclose(res.vol, 0.7, atol=1e-13)
    scalar = implied_vol(float(price[0, 0]), 100.0, 80.0, 0.1, False)
    assert scalar.vol.shape == () and abs(float(scalar.vol) - 0.7) <= 1e-13


# ---------------------------------------------------------------- real Deribit chains

BTC_FILES = ("deribit_BTC_20200514T0541Z.csv", "deribit_BTC_20200521T2319Z.csv")
SECONDS_PER_YEAR = 365.0 * 86400.0
MARK_PRICE_HALF_TICK = 5e-9  # BTC marks are written with 8 decimals
MARK_IV_HALF_TICK = 5e-5  # mark_iv is in percent with 2 decimals: 0.005 % = 5e-5 in vol


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _load_marks(path: Path):
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    fwd = np.array([float(r["underlying_price"]) for r in rows])
    return {
        "name": [r["instrument_name"] for r in rows],
        "forward": fwd,
        "strike": np.array([float(r["strike"]) for r in rows]),
        "expiry": np.array([(_ts(r["expiry_utc"]) - _ts(r["snapshot_utc"])) / SECONDS_PER_YEAR for r in rows]),
        "is_call": np.array([r["kind"] == "C" for r in rows]),
        "mark_coin": np.array([float(r["mark_price"]) for r in rows]),
        "mark_iv": np.array([float(r["mark_iv"]) / 100.0 if r["mark_iv"] else np.nan for r in rows]),
    }


@pytest.mark.parametrize("filename", BTC_FILES)
def test_deribit_btc_marks_recover_mark_iv(shared_data, filename):
    """Solve each row's mark_iv from mark_price (USD = coin price * underlying_price, forward = underlying_price).

    Tolerance from the file's rounding: a vol that reprices the mark exactly sits within
    ``MARK_PRICE_HALF_TICK * F / vega`` (USD price half-tick over vega) of the vol behind the unrounded mark, and the
    file's ``mark_iv`` is that vol to within ``MARK_IV_HALF_TICK``. Deribit's mark_price and mark_iv are not always
    computed at the same instant (PROVENANCE.md: repricing marks from mark_iv leaves a 4e-6 BTC median error), so
    the vol check applies to the rows whose two numbers agree to their rounding in price space; the others, and
    the rows outside the no-arbitrage bounds, are reported and must carry the right reason code.
    """
    d = _load_marks(shared_data / "option_chains" / filename)
    f, k, t, c = d["forward"], d["strike"], d["expiry"], d["is_call"]
    usd = d["mark_coin"] * f
    res = implied_vol(usd, f, k, t, c)

    # reason codes, recomputed independently of the solver
    intrinsic = np.where(c, np.maximum(f - k, 0.0), np.maximum(k - f, 0.0))
    expected = np.full(f.size, IVReason.OK, dtype=np.int8)
    expected[usd < intrinsic] = IVReason.BELOW_INTRINSIC
    expected[(usd == intrinsic)] = IVReason.NO_TIME_VALUE
    np.testing.assert_array_equal(res.reason, expected)

    ok = res.reason == IVReason.OK
    # exact inversion of real quotes: the solved vol reprices every mark to double precision
    repriced = black76_price(f[ok], k[ok], t[ok], res.vol[ok], c[ok])
    assert np.all(np.abs(repriced - usd[ok]) <= 1e-12 * f[ok])

    g = black76_greeks(f, k, t, d["mark_iv"], c)
    slack = MARK_PRICE_HALF_TICK * f + MARK_IV_HALF_TICK * g.vega  # USD
    consistent = ok & (np.abs(g.price - usd) <= slack)
    tol = MARK_IV_HALF_TICK + MARK_PRICE_HALF_TICK * f / g.vega
    tol = tol * 1.01 + 1e-12  # first-order bound; 1 % for the curvature (volga) over a half tick
    err = np.abs(res.vol - d["mark_iv"])
    assert consistent.sum() >= 80, consistent.sum()
    bad = np.flatnonzero(consistent & (err > tol))
    assert bad.size == 0, [(d["name"][i], res.vol[i], d["mark_iv"][i], tol[i]) for i in bad]

    inconsistent = np.flatnonzero(ok & ~consistent)
    refused = np.flatnonzero(~ok)
    print(
        f"\n{filename}: {f.size} rows, {int(consistent.sum())} recover mark_iv within rounding, "
        f"{inconsistent.size} have mark_price/mark_iv disagreeing beyond rounding "
        f"(median |vol gap| {np.median(err[inconsistent]) if inconsistent.size else 0:.2e}), "
        f"{refused.size} outside bounds: "
        + ", ".join(f"{d['name'][i]}={IVReason(res.reason[i]).name}" for i in refused)
    )


def test_deribit_eth_marks_solve_or_get_reasons(shared_data):
    d = _load_marks(shared_data / "option_chains" / "deribit_ETH_20240108T1119Z.csv")
    f, k, t, c = d["forward"], d["strike"], d["expiry"], d["is_call"]
    usd = d["mark_coin"] * f
    res = implied_vol(usd, f, k, t, c)
    ok = res.reason == IVReason.OK
    assert ok.sum() >= 600
    repriced = black76_price(f[ok], k[ok], t[ok], res.vol[ok], c[ok])
    assert np.all(np.abs(repriced - usd[ok]) <= 1e-12 * f[ok])
    # a crypto surface: vols between 20 % and 300 % on every solved mark
    assert np.all((res.vol[ok] > 0.2) & (res.vol[ok] < 3.0))
    intrinsic = np.where(c, np.maximum(f - k, 0.0), np.maximum(k - f, 0.0))
    assert np.all(res.reason[usd < intrinsic] == IVReason.BELOW_INTRINSIC)
    assert np.all(res.reason[usd == intrinsic] == IVReason.NO_TIME_VALUE)


def test_deep_in_the_money_quotes_at_intrinsic_have_no_identifiable_vol():
    """QuantLib prices of deep in-the-money options whose time value is lost in double precision (the premium equals
    intrinsic value, or exceeds it by a few ulps of rounding): the solver must say NO_TIME_VALUE, not return a vol.
    Independent law: at those rows the price does not determine the vol (QuantLib's own formula gives the same
    double, to 4 ulps, at a quarter of the true vol: every vol below the true one fits the quote), while every row
    the solver does solve has a price that moves with the vol."""
    rng = np.random.default_rng(3)
    n = 400
    fwd = 10.0 ** rng.uniform(0, 4, n)
    expiry = 10.0 ** rng.uniform(-2, 0.5, n)
    vol = 10.0 ** rng.uniform(-2, 0.3, n)
    strike = fwd * np.exp(rng.uniform(-8, 8, n) * vol * np.sqrt(expiry))
    is_call = rng.random(n) < 0.5

    def ql_price(v):
        return np.array([ql.blackFormula(ql.Option.Call if c else ql.Option.Put, float(k), float(f),
                                         float(s * np.sqrt(t)))
                         for f, k, t, s, c in zip(fwd, strike, expiry, v, is_call)])

    price = ql_price(vol)
    res = implied_vol(price, fwd, strike, expiry, is_call)
    intrinsic = np.where(is_call, np.maximum(fwd - strike, 0.0), np.maximum(strike - fwd, 0.0))
    lost = (price >= intrinsic) & (price - intrinsic <= 4.0 * EPS * price)
    # the case exists in this sample, including time values of a few ulps that are not exactly zero
    assert lost.sum() >= 8 and (lost & (price > intrinsic)).sum() >= 3
    assert np.all(res.reason[lost] == IVReason.NO_TIME_VALUE) and np.all(np.isnan(res.vol[lost]))
    unresolved = np.abs(ql_price(vol / 4.0) - price) <= 4.0 * EPS * price
    assert np.all(unresolved[lost & (intrinsic > 0)])  # non-identifiable: the same price at a quarter of the vol
    solved = res.reason == IVReason.OK
    assert solved.sum() > 350
    assert not np.any(unresolved[solved])  # every solved row's price does depend on the vol

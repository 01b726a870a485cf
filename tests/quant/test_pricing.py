"""Black-76 / BSM prices and Greeks against independent references.

References: textbook worked examples (Hull, Haug), QuantLib 1.44 (``blackFormula``, ``BlackCalculator``,
``AnalyticEuropeanEngine``), vollib (``vollib.black``, ``vollib.black_scholes_merton`` and their analytical
greeks; vollib's vega and rho are per 1 %, theta per calendar day), put-call parity and central finite
differences of our own price.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from keeper.quant.pricing import Greeks, black76_greeks, black76_price, bsm_greeks, bsm_price

ql = pytest.importorskip("QuantLib")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    vb = pytest.importorskip("vollib.black")
    vbg = pytest.importorskip("vollib.black.greeks.analytical")
    vm = pytest.importorskip("vollib.black_scholes_merton")
    vmg = pytest.importorskip("vollib.black_scholes_merton.greeks.analytical")

GREEK_NAMES = ("price", "delta", "gamma", "vega", "theta", "rho", "vanna", "volga")


def _grid(n: int, seed: int):
    rng = np.random.default_rng(seed)
    fwd = 10.0 ** rng.uniform(-1, 5, n)
    vol = 10.0 ** rng.uniform(-1.5, 0.5, n)  # 3 % .. 316 %
    expiry = 10.0 ** rng.uniform(-3, 1, n)  # ~9 hours .. 10 years
    z = rng.uniform(-3, 3, n)  # strike within +-3 sd
    strike = fwd * np.exp(z * vol * np.sqrt(expiry))
    rate = rng.uniform(-0.02, 0.1, n)
    is_call = rng.random(n) < 0.5
    return fwd, strike, expiry, vol, rate, is_call


# ---------------------------------------------------------------- textbook values


def test_hull_black_scholes_example():
    # Hull, Options, Futures, and Other Derivatives, 9th ed., ch. 15 (Black-Scholes-Merton), the worked example
    # (Example 15.6; example numbers in this file are cited from memory) S0=42, K=40, r=10 %, sigma=20 %,
    # T=0.5 -> c = 4.76, p = 0.81.
    p = bsm_price(42.0, 40.0, 0.5, 0.2, np.array([True, False]), rate=0.1)
    np.testing.assert_allclose(p, [4.76, 0.81], atol=0.005)


def test_hull_black76_futures_put_example():
    # Hull, 9th ed., ch. 18 (Black's model), worked example (Example 18.8, from memory): European put on
    # crude-oil futures, F0=20, K=20,
    # r=9 %, sigma=25 %, T=4/12 -> p = 1.12.
    p = black76_price(20.0, 20.0, 4.0 / 12.0, 0.25, False, discount=np.exp(-0.09 * 4.0 / 12.0))
    assert abs(float(p) - 1.12) < 0.005


def test_hull_greek_letters_example():
    # Hull, 9th ed., Ch. 19 (The Greek Letters): the 20-week call S0=49, K=50, r=5 %, sigma=20 %, T=0.3846 has
    # delta 0.522 (Example 19.1), theta -4.31 per year (Example 19.2), gamma 0.066 (Example 19.4), vega 12.1
    # (Example 19.6, per 1.0 of vol) and rho 8.91 (Example 19.7, per 1.0 of rate).
    g = bsm_greeks(49.0, 50.0, 0.3846, 0.2, True, rate=0.05)
    assert abs(float(g.delta) - 0.522) < 0.0005
    assert abs(float(g.theta) - (-4.31)) < 0.005
    assert abs(float(g.gamma) - 0.066) < 0.0005
    assert abs(float(g.vega) - 12.1) < 0.05
    assert abs(float(g.rho) - 8.91) < 0.005


def test_haug_black76_example():
    # Haug, The Complete Guide to Option Pricing Formulas, 2nd ed. (2007), ch. 1, Black-76 example: futures
    # option with F=19, K=19, T=0.75, r=10 %, sigma=28 % -> c = p = 1.7011.
    p = black76_price(19.0, 19.0, 0.75, 0.28, np.array([True, False]), discount=np.exp(-0.1 * 0.75))
    np.testing.assert_allclose(p, [1.7011, 1.7011], atol=5e-5)


def test_haug_generalized_bsm_examples():
    # Haug 2nd ed., ch. 1, Black-Scholes (1973) example: S=60, K=65, T=0.25, r=8 %, sigma=30 % -> call 2.1334.
    assert abs(float(bsm_price(60.0, 65.0, 0.25, 0.3, True, rate=0.08)) - 2.1334) < 5e-5
    # Haug 2nd ed., ch. 1, Merton (1973) stock-index example: S=100, K=95, T=0.5, r=10 %, q=5 % (b=5 %),
    # sigma=20 % -> put 2.4648.
    assert abs(float(bsm_price(100.0, 95.0, 0.5, 0.2, False, rate=0.1, carry=0.05)) - 2.4648) < 5e-5
    # Haug 2nd ed., ch. 1, Garman-Kohlhagen currency example: S=1.56, K=1.60, T=0.5, r=6 %, r_f=8 % (b=-2 %),
    # sigma=12 % -> call 0.0291.
    assert abs(float(bsm_price(1.56, 1.60, 0.5, 0.12, True, rate=0.06, carry=-0.02)) - 0.0291) < 5e-5


# ---------------------------------------------------------------- QuantLib


def _ql_vega_fd(kind, strike, fwd, vol, t, disc, h=1e-5):
    def vega(v):
        return ql.BlackCalculator(ql.PlainVanillaPayoff(kind, strike), fwd, v * np.sqrt(t), disc).vega(t)

    return (vega(vol + h) - vega(vol - h)) / (2 * h)


def test_black76_matches_quantlib_black_calculator():
    fwd, strike, expiry, vol, rate, is_call = _grid(400, seed=1)
    disc = np.exp(-rate * expiry)
    g = black76_greeks(fwd, strike, expiry, vol, is_call, discount=disc)
    for i in range(fwd.size):
        kind = ql.Option.Call if is_call[i] else ql.Option.Put
        std = float(vol[i] * np.sqrt(expiry[i]))
        t = float(expiry[i])
        bc = ql.BlackCalculator(ql.PlainVanillaPayoff(kind, float(strike[i])), float(fwd[i]), std, float(disc[i]))
        ref = {
            "price": ql.blackFormula(kind, float(strike[i]), float(fwd[i]), std, float(disc[i])),
            "delta": bc.deltaForward(),
            "gamma": bc.gammaForward(),
            "vega": bc.vega(t),
            # QuantLib's theta(spot, T) assumes F = spot exp((r - q) T); with spot = F it is -dV/dT at fixed F
            "theta": bc.theta(float(fwd[i]), t),
            # QuantLib's rho lets the forward move with r; adding dividendRho holds the forward fixed
            "rho": bc.rho(t) + bc.dividendRho(t),
            "vanna": bc.vanna(float(fwd[i]), t),
            # QuantLib 1.44's BlackCalculator::volga(T) comes out as our d(vega)/d(vol) divided by sqrt(T) (checked
            # against central differences below), so volga is compared with a central difference of QuantLib's
            # own vega instead
            "volga": _ql_vega_fd(kind, float(strike[i]), float(fwd[i]), float(vol[i]), t, float(disc[i])),
        }
        scale = {
            "price": fwd[i],
            "delta": 1.0,
            "gamma": 1.0 / (fwd[i] * vol[i] * np.sqrt(expiry[i])),
            "vega": fwd[i] * np.sqrt(expiry[i]),
            "theta": fwd[i] * (vol[i] / np.sqrt(expiry[i]) + abs(rate[i])),
            "rho": fwd[i] * expiry[i],
            "vanna": 1.0 / vol[i],
            "volga": fwd[i] * np.sqrt(expiry[i]) / vol[i],
        }
        for name, want in ref.items():
            got = float(getattr(g, name)[i])
            tol = 1e-6 if name == "volga" else 1e-11  # finite-difference reference for volga
            assert abs(got - want) <= tol * scale[name] + tol * abs(want), (name, i, got, want)


def test_bsm_matches_quantlib_analytic_european_engine():
    rng = np.random.default_rng(2)
    n = 60
    spot = 10.0 ** rng.uniform(0, 4, n)
    strike = spot * np.exp(rng.uniform(-0.6, 0.6, n))
    expiry = rng.uniform(0.05, 3.0, n)
    vol = rng.uniform(0.05, 1.2, n)
    rate = rng.uniform(-0.01, 0.08, n)
    div = rng.uniform(-0.02, 0.06, n)
    is_call = rng.random(n) < 0.5
    g = bsm_greeks(spot, strike, expiry, vol, is_call, rate=rate, carry=rate - div)

    day_count = ql.Actual365Fixed()
    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    for i in range(n):
        # whole days so that QuantLib's year fraction is exactly expiry
        days = max(int(round(expiry[i] * 365)), 1)
        t = days / 365.0
        gi = bsm_greeks(spot[i], strike[i], t, vol[i], bool(is_call[i]), rate=rate[i], carry=rate[i] - div[i])
        kind = ql.Option.Call if is_call[i] else ql.Option.Put
        option = ql.EuropeanOption(ql.PlainVanillaPayoff(kind, float(strike[i])), ql.EuropeanExercise(today + days))
        process = ql.BlackScholesMertonProcess(
            ql.QuoteHandle(ql.SimpleQuote(float(spot[i]))),
            ql.YieldTermStructureHandle(ql.FlatForward(today, float(div[i]), day_count)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, float(rate[i]), day_count)),
            ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), float(vol[i]), day_count)),
        )
        option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
        s = float(spot[i])
        ref = {
            "price": (option.NPV(), s),
            "delta": (option.delta(), 1.0),
            "gamma": (option.gamma(), 1.0 / s),
            "vega": (option.vega(), s),
            "theta": (option.theta(), s),
            "rho": (option.rho(), s * t),
        }
        for name, (want, scale) in ref.items():
            got = float(getattr(gi, name))
            assert abs(got - want) <= 1e-10 * scale, (name, i, got, want)
    assert g.price.shape == (n,)


# ---------------------------------------------------------------- vollib


def test_matches_vollib_black_and_bsm_over_random_grid():
    fwd, strike, expiry, vol, rate, is_call = _grid(300, seed=3)
    div = np.linspace(-0.03, 0.05, fwd.size)
    g76 = black76_greeks(fwd, strike, expiry, vol, is_call, discount=np.exp(-rate * expiry))
    gm = bsm_greeks(fwd, strike, expiry, vol, is_call, rate=rate, carry=rate - div)
    for i in range(fwd.size):
        flag = "c" if is_call[i] else "p"
        a = (flag, float(fwd[i]), float(strike[i]), float(expiry[i]), float(rate[i]), float(vol[i]))
        s = fwd[i]
        # vollib: vega and rho per 1 % (x100 for per 1.0), theta per calendar day (x365 for per year)
        checks76 = [
            (g76.price[i], vb.black(*a), s),
            (g76.delta[i], vbg.delta(*a), 1.0),
            (g76.gamma[i], vbg.gamma(*a), 1.0 / (s * vol[i] * np.sqrt(expiry[i]))),
            (g76.vega[i], 100.0 * vbg.vega(*a), s * np.sqrt(expiry[i])),
            (g76.theta[i], 365.0 * vbg.theta(*a), s * (vol[i] / np.sqrt(expiry[i]) + abs(rate[i]))),
            (g76.rho[i], 100.0 * vbg.rho(*a), s * expiry[i]),
        ]
        am = a + (float(div[i]),)
        checksm = [
            (gm.price[i], vm.black_scholes_merton(*am), s),
            (gm.delta[i], vmg.delta(*am), 1.0),
            (gm.gamma[i], vmg.gamma(*am), 1.0 / (s * vol[i] * np.sqrt(expiry[i]))),
            (gm.vega[i], 100.0 * vmg.vega(*am), s * np.sqrt(expiry[i])),
            (gm.theta[i], 365.0 * vmg.theta(*am), s * (vol[i] / np.sqrt(expiry[i]) + abs(rate[i]) + abs(div[i]))),
            (gm.rho[i], 100.0 * vmg.rho(*am), s * expiry[i]),
        ]
        for k, (got, want, scale) in enumerate(checks76 + checksm):
            assert abs(float(got) - want) <= 1e-9 * scale, (i, k, float(got), want)


# ---------------------------------------------------------------- laws


def test_put_call_parity_black76_and_bsm():
    fwd, strike, expiry, vol, rate, _ = _grid(2000, seed=4)
    disc = np.exp(-rate * expiry)
    scale = np.maximum(fwd, strike)
    c = black76_price(fwd, strike, expiry, vol, True, disc)
    p = black76_price(fwd, strike, expiry, vol, False, disc)
    assert np.all(np.abs((c - p) - disc * (fwd - strike)) <= 1e-14 * scale)
    carry = rate - 0.03
    c = bsm_price(fwd, strike, expiry, vol, True, rate, carry)
    p = bsm_price(fwd, strike, expiry, vol, False, rate, carry)
    want = fwd * np.exp((carry - rate) * expiry) - strike * np.exp(-rate * expiry)
    assert np.all(np.abs((c - p) - want) <= 1e-14 * scale)


def _fd(fun, x, h):
    return (fun(x + h) - fun(x - h)) / (2 * h)


def _close(got, want, scale, atol, what):
    """|got - want| <= atol in units of ``scale`` (each Greek's natural size), element by element."""
    err = np.abs(got - want) / scale
    assert np.all(err <= atol), (what, float(err.max()), int(err.argmax()))


@pytest.mark.parametrize("is_call", [True, False])
def test_black76_greeks_match_central_differences(is_call):
    fwd, strike, expiry, vol, rate, _ = _grid(500, seed=5)
    disc = np.exp(-rate * expiry)
    dev = vol * np.sqrt(expiry)
    g = black76_greeks(fwd, strike, expiry, vol, is_call, disc)

    def price(f=fwd, t=expiry, v=vol, d=disc):
        return black76_price(f, strike, t, v, is_call, d)

    # steps scaled to the option's own width (F * vol * sqrt(T)) so truncation and rounding both stay small
    hf = 1e-4 * fwd * dev
    _close(g.delta, _fd(lambda f: price(f=f), fwd, hf), 1.0, 1e-7, "delta")
    hg = 1e-3 * fwd * dev
    fd_gamma = (price(f=fwd + hg) - 2 * price() + price(f=fwd - hg)) / hg**2
    _close(g.gamma, fd_gamma, 1.0 / (fwd * dev), 1e-5, "gamma")
    _close(g.vega, _fd(lambda v: price(v=v), vol, 1e-4 * vol), fwd * np.sqrt(expiry), 1e-7, "vega")
    # theta: the discount factor exp(-r T) moves with the expiry at a fixed rate and forward
    ht = 1e-4 * expiry
    fd_theta = -_fd(lambda t: price(t=t, d=np.exp(-rate * t)), expiry, ht)
    _close(g.theta, fd_theta, fwd * (vol / np.sqrt(expiry) + np.abs(rate)), 1e-6, "theta")
    fd_rho = _fd(lambda r: price(d=np.exp(-r * expiry)), rate, 1e-5)
    _close(g.rho, fd_rho, (fwd + strike) * expiry, 1e-7, "rho")
    hv = 1e-4 * vol
    fd_vanna = _fd(lambda v: black76_greeks(fwd, strike, expiry, v, is_call, disc).delta, vol, hv)
    _close(g.vanna, fd_vanna, 1.0 / vol, 1e-6, "vanna")
    fd_volga = _fd(lambda v: black76_greeks(fwd, strike, expiry, v, is_call, disc).vega, vol, hv)
    _close(g.volga, fd_volga, fwd * np.sqrt(expiry) / vol, 1e-6, "volga")


@pytest.mark.parametrize("is_call", [True, False])
def test_bsm_greeks_match_central_differences(is_call):
    spot, strike, expiry, vol, rate, _ = _grid(500, seed=6)
    div = np.linspace(-0.02, 0.06, spot.size)
    carry = rate - div
    dev = vol * np.sqrt(expiry)
    g = bsm_greeks(spot, strike, expiry, vol, is_call, rate, carry)

    def price(s=spot, t=expiry, v=vol, r=rate, b=carry):
        return bsm_price(s, strike, t, v, is_call, r, b)

    _close(g.delta, _fd(lambda s: price(s=s), spot, 1e-4 * spot * dev), 1.0, 1e-7, "delta")
    hg = 1e-3 * spot * dev
    fd_gamma = (price(s=spot + hg) - 2 * price() + price(s=spot - hg)) / hg**2
    _close(g.gamma, fd_gamma, 1.0 / (spot * dev), 1e-5, "gamma")
    _close(g.vega, _fd(lambda v: price(v=v), vol, 1e-4 * vol), spot * np.sqrt(expiry), 1e-7, "vega")
    fd_theta = -_fd(lambda t: price(t=t), expiry, 1e-4 * expiry)
    _close(g.theta, fd_theta, spot * (vol / np.sqrt(expiry) + np.abs(rate) + np.abs(div)), 1e-6, "theta")
    # rho: the dividend yield q = r - b stays fixed, so the carry moves with the rate
    hr = 1e-4 * dev / expiry  # moves the forward by 1e-4 of its width, like the delta step
    fd_rho = (price(r=rate + hr, b=carry + hr) - price(r=rate - hr, b=carry - hr)) / (2 * hr)
    _close(g.rho, fd_rho, (spot + strike) * expiry, 1e-7, "rho")
    hv = 1e-4 * vol
    fd_vanna = _fd(lambda v: bsm_greeks(spot, strike, expiry, v, is_call, rate, carry).delta, vol, hv)
    _close(g.vanna, fd_vanna, 1.0 / vol, 1e-6, "vanna")
    fd_volga = _fd(lambda v: bsm_greeks(spot, strike, expiry, v, is_call, rate, carry).vega, vol, hv)
    _close(g.volga, fd_volga, spot * np.sqrt(expiry) / vol, 1e-6, "volga")


# ---------------------------------------------------------------- edges


def test_at_expiry_gives_intrinsic_and_step_delta():
    fwd = 100.0
    strike = np.array([50.0, 99.0, 100.0, 101.0, 200.0])
    for is_call, w in ((True, 1.0), (False, -1.0)):
        g = black76_greeks(fwd, strike, 0.0, 0.6, is_call, discount=0.9)
        np.testing.assert_array_equal(g.price, 0.9 * np.maximum(w * (fwd - strike), 0.0))
        itm = w * (fwd - strike) > 0
        want_delta = np.where(itm, 0.9 * w, 0.0)
        want_delta[2] = 0.9 * w * 0.5  # the limit of N(w d1) at the money as vol*sqrt(T) -> 0
        np.testing.assert_array_equal(g.delta, want_delta)
        for name in GREEK_NAMES:
            assert np.all(np.isfinite(getattr(g, name))), name
        np.testing.assert_array_equal(g.gamma, 0.0)
        np.testing.assert_array_equal(g.vega, 0.0)


def test_zero_vol_is_discounted_intrinsic_on_the_forward_and_limits_are_continuous():
    strike = np.array([80.0, 100.0, 120.0])
    t, r, b = 0.5, 0.05, 0.02
    for is_call, w in ((True, 1.0), (False, -1.0)):
        g = bsm_greeks(100.0, strike, t, 0.0, is_call, rate=r, carry=b)
        fwd = 100.0 * np.exp(b * t)
        np.testing.assert_allclose(g.price, np.exp(-r * t) * np.maximum(w * (fwd - strike), 0.0), rtol=1e-15)
        near = bsm_greeks(100.0, strike, t, 1e-9, is_call, rate=r, carry=b)  # continuity from the right
        for name in ("price", "delta", "theta", "rho"):
            np.testing.assert_allclose(getattr(g, name), getattr(near, name), rtol=1e-7, atol=1e-9, err_msg=name)
        for name in GREEK_NAMES:
            assert np.all(np.isfinite(getattr(g, name))), name


def test_extreme_inputs_are_finite_and_bounded():
    strike = np.array([1e-300, 1e-12, 1e-3, 1.0, 1e3, 1e12, 1e300])
    vol = np.array([[1e-8], [0.01], [1.0], [10.0]])
    for is_call in (True, False):
        g = black76_greeks(1.0, strike, 1.0, vol, is_call)
        assert g.price.shape == (4, 7)
        for name in GREEK_NAMES:
            assert np.all(np.isfinite(getattr(g, name))), (name, is_call)
        intrinsic = np.maximum((1.0 if is_call else -1.0) * (1.0 - strike), 0.0)
        upper = 1.0 if is_call else strike
        assert np.all(g.price >= intrinsic * (1 - 1e-15)) and np.all(g.price <= upper * (1 + 1e-15))
    # deep OTM prices keep relative accuracy (QuantLib agrees to 1e-12 relative where the price is ~1e-100)
    fwd, k, std = 100.0, 100.0 * np.exp(22.0), 1.0
    want = ql.blackFormula(ql.Option.Call, k, fwd, std)
    got = float(black76_price(fwd, k, 1.0, std, True))
    assert 0 < want < 1e-90 and abs(got - want) <= 1e-12 * want


def _otm_price_by_quadrature(fwd: float, strike: float, dev: float) -> float:
    """Undiscounted out-of-the-money Black price by integrating the payoff against the normal density.

    With ``z0 = -d2`` the call is ``K phi(z0) int_0^inf exp(-z0 u - u^2/2) expm1(dev u) du`` (the put mirrors it):
    no cancellation anywhere, so adaptive quadrature (scipy QUADPACK) gives ~1e-14 relative, independently of the
    closed form.
    """
    from scipy.integrate import IntegrationWarning, quad

    z0 = (np.log1p((strike - fwd) / fwd) + 0.5 * dev * dev) / dev  # log1p: ln(K/F) exact near the money
    if strike > fwd:
        def g(u):
            return np.exp(-z0 * u - 0.5 * u * u) * np.expm1(dev * u)
    else:
        def g(u):
            return np.exp(z0 * u - 0.5 * u * u) * -np.expm1(-dev * u)
    az = abs(z0)
    upper = -az + np.sqrt(az * az + 80.0)  # integrand below e^-40 of its start beyond this
    with warnings.catch_warnings():
        # QUADPACK warns that 1.2e-14 may not be reached; checked offline against 50-digit mpmath: <= 2e-14 here
        warnings.simplefilter("ignore", IntegrationWarning)
        val, _ = quad(g, 0.0, upper, epsabs=0.0, epsrel=1.2e-14, limit=400)
    return strike * np.exp(-0.5 * z0 * z0) / np.sqrt(2.0 * np.pi) * val


def test_far_otm_tiny_deviation_prices_keep_relative_accuracy():
    # 3 to 8 sd out of the money with vol*sqrt(T) from 1e-5 to 0.3 (minutes-to-expiry territory), where the
    # textbook F N(d1) - K N(d2) loses up to ~1e-10 relative to cancellation
    rng = np.random.default_rng(9)
    n = 200
    dev = 10.0 ** rng.uniform(-5, -0.5, n)
    strike = 100.0 * np.exp(rng.uniform(3, 8, n) * rng.choice([-1.0, 1.0], n) * dev)
    is_call = strike > 100.0
    got = black76_price(100.0, strike, 1.0, dev, is_call)
    want = np.array([_otm_price_by_quadrature(100.0, k, s) for k, s in zip(strike, dev)])
    assert np.all(want > 0)
    rel = np.abs(got / want - 1.0)
    assert rel.max() <= 1e-12, (float(rel.max()), int(rel.argmax()))


def test_invalid_rows_are_nan_and_do_not_disturb_the_batch():
    fwd = np.array([100.0, -1.0, 100.0, 100.0, np.nan, 100.0, 100.0])
    strike = np.array([90.0, 90.0, 0.0, 90.0, 90.0, 90.0, 90.0])
    expiry = np.array([0.5, 0.5, 0.5, -1.0, 0.5, 0.5, 0.5])
    vol = np.array([0.3, 0.3, 0.3, 0.3, 0.3, -0.1, 0.3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g76 = black76_greeks(fwd, strike, expiry, vol, True)
        gm = bsm_greeks(fwd, strike, expiry, vol, True, rate=0.02)
    for g in (g76, gm):
        for name in GREEK_NAMES:
            arr = getattr(g, name)
            assert np.all(np.isnan(arr[1:6])), name
            assert np.all(np.isfinite(arr[[0, 6]])), name
    assert g76.price[0] == float(black76_price(100.0, 90.0, 0.5, 0.3, True))
    assert gm.price[6] == float(bsm_price(100.0, 90.0, 0.5, 0.3, True, rate=0.02))


def test_broadcasting_and_return_type():
    g = black76_greeks(np.array([[90.0], [110.0]]), np.array([100.0, 105.0, 95.0]), 0.25, 0.5, np.array([True, False, True]))
    assert isinstance(g, Greeks)
    for name in GREEK_NAMES:
        arr = getattr(g, name)
        assert arr.shape == (2, 3) and arr.dtype == np.float64
    # element (1, 2) equals the scalar call
    assert g.price[1, 2] == float(black76_price(110.0, 95.0, 0.25, 0.5, True))

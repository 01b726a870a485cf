"""Black-76 and Black-Scholes-Merton prices and Greeks, vectorized.

Every argument is numpy-broadcastable; the results have the broadcast shape, float64. Units: ``expiry`` in years
(ACT/365), ``vol`` annualised (0.8 means 80 %), ``rate`` and ``carry`` continuously compounded per year.

Greek conventions (the same for both models unless noted; see ``docs/pricing.md``):

* ``delta``, ``gamma``: first and second derivative of the price with respect to the **forward** (Black-76) or
  the **spot** (BSM).
* ``vega``: derivative with respect to the volatility per **1.0** of vol (not per vol point: divide by 100 for
  "per 1 %").
* ``theta``: ``-dV/dT``, the change of value per **year** of calendar time passing (divide by 365 for per day),
  holding forward and rate fixed (Black-76) or spot, rate and carry fixed (BSM).
* ``rho``: derivative with respect to the continuously compounded **rate**, per 1.0 of rate. Black-76 holds the
  forward fixed (``rho = -T * V``, the discount factor read as ``exp(-r T)``); BSM holds the dividend yield
  ``q = r - b`` fixed, so the carry moves with the rate (``rho = w T K exp(-r T) N(w d2)``).
* ``vanna``: ``d delta / d vol``; ``volga``: ``d vega / d vol`` (per 1.0 of vol each).

Edges give finite limits, never NaN or inf: at expiry or zero volatility (total deviation ``vol*sqrt(T) == 0``)
the price is the discounted intrinsic value on the forward, delta is a step (``D * w`` in the money, ``0`` out of
it, ``D/2`` (times the sign) exactly at the money, the limit of ``N(d1)`` as the deviation goes to zero), and gamma,
vanna, volga and the time-decay part of theta are ``0`` (their distributional limits at the strike are not
representable). Invalid rows (non-positive forward/spot or strike, negative expiry or vol, nan) are ``nan`` in
every output, without warnings. Tails use ``scipy.special.ndtr``, which keeps relative accuracy down to ``1e-300``.

Accuracy: in-the-money options are priced as the out-of-the-money option plus intrinsic value, so their time value
keeps its relative accuracy; far out of the money at tiny ``vol*sqrt(T)``, where ``F N(d1) - K N(d2)`` cancels, a
Taylor series in ``t = vol*sqrt(T)/2`` (with ``scipy.special.erfcx``) takes over (``small_deviation_sum``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erfcx, ndtr

_INV_SQRT_2PI = 0.3989422804014327  # 1/sqrt(2 pi)
_INV_SQRT2 = 0.7071067811865476
_SERIES_MAX_ORDER = 13  # odd Taylor terms up to t^13: converged to eps for t = s/2 < 0.125
_SERIES_TINY_DEV = 1e-3  # ... and wherever s < 1e-3, where N(d1) - N(d2) ~ s phi cancels near the money
# use the series where |x| > 128 s^2 (so s < 0.125 when |x| < 2); 32 would cut the worst far-OTM error ~10x
# (5e-13 -> 5e-14 relative) but costs ~10 ms per 1M options on a book heavy in daily expiries
_SERIES_MIN_LOSS = 128.0
_SQRT_HALF_PI = 1.2533141373155003  # sqrt(pi/2)
# coefficients of u^1 .. u^9 in (1 + h Y(h)) / u - 1, u = 1/h^2: (-1)^k (2k+1)!!
_ASYMPTOTIC_1_PLUS_HY = (-3.0, 15.0, -105.0, 945.0, -10395.0, 135135.0, -2027025.0, 34459425.0, -654729075.0)


@dataclass(frozen=True)
class Greeks:
    """Price and Greeks of a batch of European options (arrays of the broadcast shape; conventions in the module doc)."""

    price: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray
    rho: np.ndarray
    vanna: np.ndarray
    volga: np.ndarray


def _as_f64(*args):
    return [np.asarray(a, dtype=np.float64) for a in args]


def _sign(is_call) -> np.ndarray:
    """+1.0 for calls, -1.0 for puts."""
    c = np.asarray(is_call, dtype=bool)
    return c * 2.0 - 1.0  # arithmetic: several times faster than np.where with scalars


def _log_moneyness(forward: np.ndarray, strike: np.ndarray) -> np.ndarray:
    """ln(F/K); falls back to ln F - ln K where the ratio over- or underflows.

    Near the money ``log(F/K)`` carries the rounding of the ratio (absolute ``eps``). That only matters where the
    price amplifies it, far out of the money at tiny deviations, and those rows are re-evaluated from
    :func:`_log_moneyness_near` by the series branch.
    """
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        x = np.log(forward / strike)
    if not np.isfinite(x).all():
        with np.errstate(divide="ignore", invalid="ignore"):
            alt = np.log(forward) - np.log(strike)
        x = np.where(np.isfinite(x), x, alt)
    return x


def _log_moneyness_near(forward: np.ndarray, strike: np.ndarray) -> np.ndarray:
    """ln(F/K) to an ulp of itself for ``K/2 < F < 2K``: ``log1p((F - K)/K)`` (``F - K`` is exact there)."""
    return np.log1p((forward - strike) / strike)


class _Core:
    """d1/d2, cdfs and the pdf shared between price and Greeks (internal)."""

    __slots__ = (
        "x", "sqrt_t", "dev", "d1", "d2", "nd1", "nd2", "pdf", "w", "zero", "w_otm", "itm", "nd1_otm", "nd2_otm",
        "invalid",
    )

    def __init__(self, forward, strike, expiry, vol, w):
        with np.errstate(invalid="ignore"):
            invalid = ~((forward > 0.0) & (strike > 0.0) & (expiry >= 0.0) & (vol >= 0.0))  # nan compares False
        self.invalid = invalid if np.any(invalid) else None
        x = _log_moneyness(forward, strike)
        with np.errstate(invalid="ignore"):
            sqrt_t = np.sqrt(expiry)
        dev = vol * sqrt_t
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d1 = x / dev + 0.5 * dev
        zero = dev == 0.0
        has_zero = bool(np.any(zero))
        if has_zero:
            # limit of d1 as the deviation goes to zero: sign(x) * inf, and 0 exactly at the money
            with np.errstate(invalid="ignore"):
                d1 = np.where(zero, np.sign(x) * np.inf, d1)
            d1 = np.where(zero & (x == 0.0), 0.0, d1)
            d2 = np.where(zero, d1, d1 - dev)
        else:
            d2 = d1 - dev
        self.x, self.sqrt_t, self.dev, self.d1, self.d2, self.w = x, sqrt_t, dev, d1, d2, w
        # Evaluate the out-of-the-money side (w_otm = -sign(x)) and add the intrinsic value for in-the-money rows:
        # the time value then keeps its relative accuracy instead of drowning in F N(d1) - K N(d2) ~ F - K.
        # (at the money either side is exact: |F - K| = 0 and N(-d) = 1 - N(d))
        w_otm = 1.0 - 2.0 * (x > 0.0)
        itm = (w != w_otm) * 1.0
        nd1o = ndtr(w_otm * d1)
        nd2o = ndtr(w_otm * d2)
        self.w_otm, self.itm, self.nd1_otm, self.nd2_otm = w_otm, itm, nd1o, nd2o
        self.nd1 = nd1o + itm * (1.0 - 2.0 * nd1o)  # N(w d1)
        self.nd2 = nd2o + itm * (1.0 - 2.0 * nd2o)  # N(w d2)
        with np.errstate(under="ignore", over="ignore"):
            self.pdf = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
        self.zero = zero if has_zero else None


def series_applies(ax: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """Rows where :func:`small_deviation_sum` should replace ``N(d1)``/``N(d2)`` differences (internal helper).

    Where ``|x| > 128 s^2`` (far out of the money) or ``s < 1e-3`` (near the money at minutes to expiry) the textbook
    difference loses more than ~2-3 digits; ``|x| < 2`` keeps the series accurate.
    """
    return (ax < 2.0) & (dev > 0.0) & ((ax > _SERIES_MIN_LOSS * dev * dev) | (dev < _SERIES_TINY_DEV))


def small_deviation_sum(ax: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """``S = (Y(h+t) - Y(h-t))/2`` for ``h = -ax/s``, ``t = s/2``, ``Y = N/phi`` (internal helper, also used by
    :mod:`keeper.quant.implied_vol`): the out-of-the-money normalised price is ``b = 2 phi(h) e^{-t^2/2} S``.
    See :func:`_normalised_otm_small_dev`.
    """
    h = -ax / dev
    t = 0.5 * dev
    y0 = _SQRT_HALF_PI * erfcx(-h * _INV_SQRT2)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        # 1 + hY ~ u (1 - 3u + 15u^2 - 105u^3 + ... - 19!! u^9), u = 1/h^2: Horner
        u = 1.0 / (h * h)
        poly = np.zeros_like(u)
        for coef in _ASYMPTOTIC_1_PLUS_HY[::-1]:
            poly = (poly + coef) * u
        asym = u * (1.0 + poly)
    y1 = np.where(h < -20.0, asym, 1.0 + h * y0)
    t2 = t * t
    total = t * y1
    y_prev, y_cur = y0, y1
    term_t = t
    fact = 1.0
    for n in range(1, _SERIES_MAX_ORDER):  # Y^(2) .. Y^(max order)
        y_next = h * y_cur + n * y_prev
        y_prev, y_cur = y_cur, y_next
        if (n + 1) % 2 == 1:
            term_t = term_t * t2
            fact = fact * n * (n + 1)
            total = total + term_t * y_cur / fact
    return total


def _normalised_otm_small_dev(ax: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """Out-of-the-money normalised price ``b = price / sqrt(F K)`` for ``|x| = ax`` and small deviation ``s = dev``.

    With ``h = -ax/s``, ``t = s/2`` and ``Y(z) = N(z)/phi(z)``: ``b = phi(h) e^{-t^2/2} (Y(h+t) - Y(h-t))``, and the
    difference is summed as the odd Taylor series ``2 sum t^k Y^(k)(h)/k!`` with ``Y' = 1 + hY`` (its asymptotic
    series where ``h < -20``, where ``1 + hY`` would cancel) and ``Y^(n+1) = h Y^(n) + n Y^(n-1)``. This removes the
    cancellation of ``F N(d1) - K N(d2)`` when ``s^2 << |x|`` (far out of the money at tiny ``vol sqrt(T)``).
    """
    h = -ax / dev
    t = 0.5 * dev
    total = small_deviation_sum(ax, dev)
    with np.errstate(under="ignore"):
        return 2.0 * _INV_SQRT_2PI * np.exp(-0.5 * (h * h + t * t)) * total


def _nan_where_invalid(c: _Core, *arrays):
    """Invalid rows (non-positive forward or strike, negative expiry or vol, nan) become nan in every output."""
    if c.invalid is None:
        return tuple(np.asarray(a) for a in arrays)
    return tuple(np.where(c.invalid, np.nan, a) for a in arrays)


def _price_from_core(c: _Core, forward, strike, discount):
    otm = c.w_otm * (forward * c.nd1_otm - strike * c.nd2_otm)
    # Far out of the money at tiny deviation the two terms above nearly cancel (relative error ~ eps 2|x|/s^2):
    # re-evaluate those rows with the series, where it is both needed and convergent.
    ax = np.abs(c.x)
    dev = c.dev
    # only where the cancellation costs more than ~64 ulps (2|x|/s^2 > 64) and the series is accurate (|x| < 2)
    series = series_applies(ax, dev)
    if series.any():
        shape = series.shape
        otm = np.array(np.broadcast_to(otm, shape), dtype=np.float64)
        f_s = np.broadcast_to(forward, shape)[series]
        k_s = np.broadcast_to(strike, shape)[series]
        ax_s = np.abs(_log_moneyness_near(f_s, k_s))  # |x| < 2 here, so F/K is within (e^-2, e^2)
        ax_s = np.where(np.abs(ax_s) < 0.5, ax_s, np.broadcast_to(ax, shape)[series])
        otm[series] = np.sqrt(f_s) * np.sqrt(k_s) * _normalised_otm_small_dev(ax_s, np.broadcast_to(dev, shape)[series])
    return discount * (otm + c.itm * np.abs(forward - strike)) + 0.0  # + 0.0 turns -0.0 into 0.0


def _shared_greeks(c: _Core, forward, expiry, vol, discount):
    """Delta, gamma (w.r.t. the forward), vega, vanna, volga and the decay part of theta, -D F phi(d1) vol/(2 sqrt T)."""
    delta = discount * c.w * c.nd1
    df_pdf = discount * c.pdf
    vega = df_pdf * forward * c.sqrt_t
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gamma = df_pdf / (forward * c.dev)
        vanna = -df_pdf * c.d2 / vol
        volga = vega * c.d1 * c.d2 / vol
        decay = -0.5 * vega * vol / expiry
    if c.zero is not None:
        z = c.zero
        gamma = np.where(z, 0.0, gamma)
        vanna = np.where(z, 0.0, vanna)
        volga = np.where(z, 0.0, volga)
        decay = np.where(z, 0.0, decay)
    return delta, gamma, vega, vanna, volga, decay


def black76_price(forward, strike, expiry, vol, is_call, discount=1.0) -> np.ndarray:
    """Black-76 premium ``D * w * (F N(w d1) - K N(w d2))`` of European options on a forward.

    Evaluated as the out-of-the-money option plus the intrinsic value (put-call parity), so that the time value of
    deep in-the-money options keeps its relative accuracy.

    ``discount`` is the discount factor to the payment date (``exp(-r T)``); ``is_call`` is a bool (array).
    At expiry or zero vol the result is ``D * max(w (F - K), 0)``.
    """
    forward, strike, expiry, vol, discount = _as_f64(forward, strike, expiry, vol, discount)
    w = _sign(is_call)
    c = _Core(forward, strike, expiry, vol, w)
    return _nan_where_invalid(c, _price_from_core(c, forward, strike, discount))[0]


def black76_greeks(forward, strike, expiry, vol, is_call, discount=1.0) -> Greeks:
    """Black-76 price and Greeks; delta and gamma are with respect to the forward.

    vega per 1.0 vol; theta = -dV/dT per year with the forward fixed and the discount factor read as
    ``exp(-r T)`` (so theta = r V - D F phi(d1) vol / (2 sqrt T)); rho = dV/dr with the forward fixed = -T V;
    vanna = d delta/d vol; volga = d vega/d vol.
    """
    forward, strike, expiry, vol, discount = _as_f64(forward, strike, expiry, vol, discount)
    w = _sign(is_call)
    c = _Core(forward, strike, expiry, vol, w)
    price = _price_from_core(c, forward, strike, discount)
    delta, gamma, vega, vanna, volga, decay = _shared_greeks(c, forward, expiry, vol, discount)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = -np.log(discount) / expiry  # the discount factor read as exp(-r T)
    if c.zero is not None:
        rate = np.where(expiry == 0.0, 0.0, rate)  # at expiry no rate can be read off D (= 1)
    theta = rate * price + decay
    rho = -expiry * price
    return Greeks(*_nan_where_invalid(c, price, delta, gamma, vega, theta, rho, vanna, volga))


def bsm_price(spot, strike, expiry, vol, is_call, rate=0.0, carry=None) -> np.ndarray:
    """Generalized Black-Scholes-Merton premium (Haug's cost-of-carry form).

    ``carry`` is the cost of carry ``b`` (``b = r`` stock without dividends, ``b = r - q`` with a dividend yield,
    ``b = 0`` futures, ``b = r - r_f`` FX); it defaults to ``rate``. Equals Black-76 on ``F = S exp(b T)`` with
    ``D = exp(-r T)``.
    """
    spot, strike, expiry, vol, rate = _as_f64(spot, strike, expiry, vol, rate)
    carry = rate if carry is None else np.asarray(carry, dtype=np.float64)
    forward = spot * np.exp(carry * expiry)
    discount = np.exp(-rate * expiry)
    w = _sign(is_call)
    c = _Core(forward, strike, expiry, vol, w)
    return _nan_where_invalid(c, _price_from_core(c, forward, strike, discount))[0]


def bsm_greeks(spot, strike, expiry, vol, is_call, rate=0.0, carry=None) -> Greeks:
    """Generalized BSM price and Greeks; delta and gamma with respect to the spot.

    vega per 1.0 vol; theta = -dV/dT per year holding spot, rate and carry fixed; rho = dV/dr holding the dividend
    yield ``q = r - b`` fixed (carry moves with the rate), i.e. ``w T K exp(-rT) N(w d2)``; vanna = d delta/d vol;
    volga = d vega/d vol.
    """
    spot, strike, expiry, vol, rate = _as_f64(spot, strike, expiry, vol, rate)
    carry = rate if carry is None else np.asarray(carry, dtype=np.float64)
    growth = np.exp(carry * expiry)
    forward = spot * growth
    discount = np.exp(-rate * expiry)
    w = _sign(is_call)
    c = _Core(forward, strike, expiry, vol, w)
    price = _price_from_core(c, forward, strike, discount)
    delta_f, gamma_f, vega, vanna_f, volga, decay = _shared_greeks(c, forward, expiry, vol, discount)
    # chain rule dF/dS = exp(bT)
    delta = delta_f * growth
    gamma = gamma_f * (growth * growth)
    vanna = vanna_f * growth
    cash_leg = (strike * discount) * (c.w * c.nd2)  # w K exp(-rT) N(w d2)
    # theta = -S e^{(b-r)T} phi vol/(2 sqrt T) - w (b - r) S e^{(b-r)T} N(w d1) - w r K e^{-rT} N(w d2)
    theta = decay - (carry - rate) * (spot * delta) - rate * cash_leg
    rho = expiry * cash_leg
    return Greeks(*_nan_where_invalid(c, price, delta, gamma, vega, theta, rho, vanna, volga))

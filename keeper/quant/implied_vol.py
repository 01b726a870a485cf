"""Vectorized Black-76 implied volatility with a reason code per row.

Method (in the spirit of Jaeckel, "Let's Be Rational", Wilmott 2015, without his rational-cubic initial guess):

1. Normalise. With ``x = ln(F/K)`` and ``s = vol * sqrt(T)`` the undiscounted Black price divided by ``sqrt(F K)``
   is ``b(x, s) = e^{x/2} N(x/s + s/2) - e^{-x/2} N(x/s - s/2)`` (calls; puts by parity).
2. Work with the out-of-the-money option: an in-the-money quote minus its intrinsic value is the price of the
   opposite, out-of-the-money option (put-call parity on the forward), so every row becomes a call with
   ``x <= 0`` and normalised price ``beta`` in ``(0, b_max)``, ``b_max = e^{x/2}``. The distance to the upper
   bound, ``b_max - beta``, is taken from the original quote (``F - price`` for calls, ``K - price`` for puts),
   never as a difference of normalised numbers.
3. Two regions split at the inflection point ``s_c = sqrt(2|x|)`` of ``b`` in ``s`` (where ``d1 = 0``):
   below it the objective is ``ln b(s) - ln beta``, above it ``ln(b_max - b(s)) - ln(b_max - beta)``. Both
   logarithms are evaluated through ``scipy.special.erfcx`` (``ln b = -(h^2+t^2)/2 + ln((erfcx(..) - erfcx(..))/2)``
   with ``h = x/s``, ``t = s/2``), so nothing underflows even for prices of ``1e-300``, and their first three
   derivatives follow in closed form from ``b' = exp(-(h^2+t^2)/2)/sqrt(2 pi)`` and ``b''/b' = x^2/s^3 - s/4``.
   Where the erfcx difference cancels (far out of the money at tiny ``s``) the Taylor series shared with
   :mod:`keeper.quant.pricing` replaces it; ``x`` comes from ``log1p((F - K)/K)`` near the money (exact to an ulp of x).
4. Initial guesses: below ``s_c`` the small-``t`` expansion ``b ~ s (phi(h) + h N(h))`` makes ``beta/|x|`` a
   monotone function of ``h`` alone, inverted by three Newton steps; above it ``b_max - b ~ 2 cosh(x/2) N(-s/2)``.
   Then Householder(3) iterations on the active rows, each step kept inside a per-row bracket (bisection
   fallback); a row is done after an in-bracket step below ``1e-5 s`` (order-4 convergence leaves nothing to gain),
   a step below ``1e-13 s``, or at the objective's noise floor. Typically 2 iterations.

Rows that cannot be solved get ``nan`` and a reason code; nothing raises mid-batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from scipy.special import erfcx, ndtri

from keeper.quant.pricing import series_applies, small_deviation_sum

_SQRT2 = 1.4142135623730951
_INV_SQRT2 = 0.7071067811865476
_SQRT_HALF_PI = 1.2533141373155003
_LN_SQRT_2PI = 0.9189385332046728
_TWO_INV_SQRT_2PI = 0.7978845608028654  # 2 / sqrt(2 pi)
_MAX_ITER = 60
_BOUND_ULPS = 4.0 * np.finfo(np.float64).eps
_REL_STEP_TOL = 1e-13
_NOISE_STEP_TOL = 1e-9
_QUARTIC_DONE = 1e-5


class IVReason(IntEnum):
    """Why a row did (OK) or did not get an implied vol."""

    OK = 0
    BELOW_INTRINSIC = 1  # undiscounted price < max(w (F - K), 0) by more than 4 ulps
    ABOVE_UPPER_BOUND = 2  # undiscounted price > F (call) or > K (put) by more than 4 ulps
    NO_TIME_VALUE = 3  # price within 4 ulps of a bound (e.g. deep ITM at intrinsic): the vol is not identifiable
    INVALID_INPUT = 4  # nan/inf anywhere, non-positive forward/strike/expiry/discount, negative price


@dataclass(frozen=True)
class ImpliedVols:
    """Implied vols (``nan`` where not solvable) and ``int8`` :class:`IVReason` codes, one per row."""

    vol: np.ndarray
    reason: np.ndarray


def _lower_eval(x, s):
    """ln b(x, s) and r = b'/b for the OTM call with x <= 0 and s <= sqrt(2|x|) (so d1 <= 0)."""
    h = x / s
    t = 0.5 * s
    e1 = erfcx(-(h + t) * _INV_SQRT2)
    e2 = erfcx(-(h - t) * _INV_SQRT2)
    diff = e1 - e2
    # far out of the money at tiny s the erfcx difference cancels: use the Taylor series there (same as pricing)
    series = series_applies(-x, s)
    if series.any():
        diff = np.array(diff)
        diff[series] = 2.0 * _TWO_INV_SQRT_2PI * small_deviation_sum(-x[series], s[series])
    with np.errstate(divide="ignore", invalid="ignore"):
        logv = -0.5 * (h * h + t * t) + np.log(0.5 * diff)
        r = _TWO_INV_SQRT_2PI / diff
    return logv, r


def _upper_eval(x, s):
    """ln(b_max - b(x, s)) and r = d/ds of it, for x <= 0 and s >= sqrt(2|x|) (so d1 >= 0)."""
    h = x / s
    t = 0.5 * s
    g = erfcx((h + t) * _INV_SQRT2) + erfcx((t - h) * _INV_SQRT2)
    logv = -0.5 * (h * h + t * t) + np.log(0.5 * g)
    r = -_TWO_INV_SQRT_2PI / g
    return logv, r


def _householder_step(f, r, x, s):
    """Householder(3) step for f(s) = 0 where f = ln(...) - target, f' = r and b''/b' = x^2/s^3 - s/4."""
    x2 = x * x
    s2 = s * s
    q = x2 / (s2 * s) - 0.25 * s
    h2 = q - r
    h3 = q * q - 3.0 * x2 / (s2 * s2) - 0.25 - 3.0 * r * q + 2.0 * r * r
    nu = -f / r
    return nu * (1.0 + 0.5 * h2 * nu) / (1.0 + nu * (h2 + h3 * nu / 6.0))


def _log_call_h(h):
    """ln(phi(h) + h N(h)) for h < 0 (the normalised Bachelier call), without cancellation, and N(h)/(phi + h N)."""
    y = _SQRT_HALF_PI * erfcx(-h * _INV_SQRT2)  # N(h)/phi(h)
    inv_h2 = 1.0 / (h * h)
    # 1 + h Y(h): direct where stable, asymptotic series 1/h^2 - 3/h^4 + 15/h^6 - 105/h^8 + 945/h^10 for h < -8
    series = inv_h2 * (1.0 + inv_h2 * (-3.0 + inv_h2 * (15.0 + inv_h2 * (-105.0 + inv_h2 * 945.0))))
    one_hy = np.where(h < -8.0, series, 1.0 + h * y)
    log_val = -0.5 * h * h - _LN_SQRT_2PI + np.log(one_hy)
    return log_val, y / one_hy


def _lower_guess(x, log_beta, s_c):
    """Initial s for the lower region.

    For small ``t = s/2`` (relative to ``|h|``, ``h = x/s``), ``b ~ s (phi(h) + h N(h))`` exactly to O(t^2), so
    ``beta/|x| ~ psi(h) = (phi(h) + h N(h))/|h|``, a monotone function of ``h`` alone: a few Newton steps on
    ``ln psi(h) = ln(beta/|x|)`` give ``h`` and ``s = x/h``.
    """
    ax = -x
    with np.errstate(all="ignore"):
        target = log_beta - np.log(ax)
        # start: psi ~ phi(0)/|h| near h = 0, psi ~ phi(h)/|h|^3 far out
        h_near = -np.exp(-_LN_SQRT_2PI - target)
        h_far = -np.sqrt(np.maximum(-2.0 * (target + _LN_SQRT_2PI), 1.0))
        h = np.where(h_near > -1.0, h_near, h_far)
        for _ in range(3):  # converges to the approximation's own accuracy in 3 steps
            log_val, ratio = _log_call_h(h)
            g = log_val - np.log(-h) - target
            dg = ratio - 1.0 / h
            h_new = h - g / dg
            h_new = np.where(h_new >= 0.0, 0.5 * h, h_new)
            h = np.where(np.isfinite(h_new), h_new, h)
        s = x / h
    bad = ~np.isfinite(s) | (s <= 0) | (s >= s_c)
    return np.where(bad, 0.5 * s_c, s)


def _upper_guess(x, log_cstar, s_c):
    """Large-s asymptotic ``b_max - b ~ 2 cosh(x/2) N(-s/2)``."""
    with np.errstate(over="ignore", invalid="ignore"):
        arg = np.exp(log_cstar) / (2.0 * np.cosh(0.5 * x))
        s = -2.0 * ndtri(np.minimum(arg, 0.5))
    bad = ~np.isfinite(s) | (s <= s_c)
    return np.where(bad, np.maximum(s_c, 1e-8) * 1.5 + 0.1, s)


def _solve_region(x, target, s0, lo, hi, lower: bool):
    """Bracketed Householder(3) on one region; returns s (nan where it did not converge)."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    idx = np.arange(n)
    s = s0.copy()
    lo = lo.copy()
    hi = hi.copy()
    ev = _lower_eval if lower else _upper_eval
    # f increasing in s for the lower objective ln b, decreasing for the upper one ln(b_max - b)
    sign = 1.0 if lower else -1.0
    prev = np.full(n, np.inf)
    for _ in range(_MAX_ITER):
        if idx.size == 0:
            break
        with np.errstate(all="ignore"):
            logv, r = ev(x, s)
            f = logv - target
            step = _householder_step(f, r, x, s)
            too_small = sign * f < 0  # s below the root
            lo = np.where(too_small, s, lo)
            hi = np.where(too_small, hi, s)
            s_new = s + step
            a_step = np.abs(step)
            # converged, or at the noise floor of the objective (the step stopped shrinking while tiny)
            converged = (
                (a_step <= _REL_STEP_TOL * s)
                | (f == 0.0)
                | ((a_step >= 0.5 * prev) & (a_step <= _NOISE_STEP_TOL * s))
            )
            ok = np.isfinite(s_new) & (s_new >= lo) & (s_new <= hi)
            bis = np.where(np.isfinite(hi), 0.5 * (lo + hi), 2.0 * s)
            s_new = np.where(ok, s_new, bis)
            s_new = np.where(converged & ~ok, s, s_new)
            # Householder(3) converges with order 4: after an in-bracket step below 1e-5 s the error left is
            # ~ (1e-5)^4, so the row is finished without a confirming iteration
            final_step = ok & (a_step <= _QUARTIC_DONE * s)
            done = converged | final_step | (hi - lo <= 4e-16 * s)
        out[idx[done]] = s_new[done]
        keep = ~done
        idx, x, target, s, lo, hi = idx[keep], x[keep], target[keep], s_new[keep], lo[keep], hi[keep]
        prev = a_step[keep]
    return out


def implied_vol(price, forward, strike, expiry, is_call, discount=1.0) -> ImpliedVols:
    """Black-76 implied volatility of premiums ``price`` (all arguments numpy-broadcastable).

    ``price`` is the premium paid today, ``discount * Black76(F, K, T, vol)``; with the default ``discount=1`` it
    is the undiscounted Black price on the forward. Returns vols annualised (``s / sqrt(T)``) and an ``int8``
    :class:`IVReason` per element; rows outside the no-arbitrage bounds ``max(w(F-K), 0) < price/D < F`` (call)
    or ``< K`` (put) get ``nan`` and the matching code. Never raises for bad rows.
    """
    arrays = np.broadcast_arrays(
        np.asarray(price, dtype=np.float64),
        np.asarray(forward, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(expiry, dtype=np.float64),
        np.asarray(is_call, dtype=bool),
        np.asarray(discount, dtype=np.float64),
    )
    shape = arrays[0].shape
    p, f, k, t, c, d = (a.ravel() for a in arrays)
    n = p.size
    vol = np.full(n, np.nan)
    reason = np.full(n, IVReason.OK, dtype=np.int8)

    with np.errstate(all="ignore"):
        valid = (
            np.isfinite(p) & np.isfinite(f) & np.isfinite(k) & np.isfinite(t) & np.isfinite(d)
            & (f > 0) & (k > 0) & (t > 0) & (d > 0) & (p >= 0)
        )
        reason[~valid] = IVReason.INVALID_INPUT
        und = p / d
        intrinsic = np.where(c, np.maximum(f - k, 0.0), np.maximum(k - f, 0.0))
        upper = np.where(c, f, k)
        # a quote within a few ulps of a bound is "at" the bound (rounding), not outside it
        below = valid & (und < intrinsic * (1.0 - _BOUND_ULPS))
        above = valid & (und > upper * (1.0 + _BOUND_ULPS))
        reason[below] = IVReason.BELOW_INTRINSIC
        reason[above] = IVReason.ABOVE_UPPER_BOUND
        live = valid & ~below & ~above
        time_value = und - intrinsic
        headroom = upper - und
        # a time value (or headroom) within the rounding of the premium itself (4 ulps) is no information: any vol
        # reprices such a quote to the same double (deep in the money: price == intrinsic in double precision)
        at_bound = live & ((time_value <= _BOUND_ULPS * und) | (headroom <= _BOUND_ULPS * und))
        reason[at_bound] = IVReason.NO_TIME_VALUE
        live &= ~at_bound

    idx = np.flatnonzero(live)
    if idx.size:
        fl, kl = f[idx], k[idx]
        with np.errstate(all="ignore"):
            x = np.log(fl) - np.log(kl)
            near = np.abs(x) < 0.5
            # log1p((F - K)/K) is exact to an ulp of x near the money, where ln F - ln K is only exact to eps
            x = -np.abs(np.where(near, np.log1p((fl - kl) / kl), x))
        sqrt_fk = np.sqrt(fl) * np.sqrt(kl)
        with np.errstate(divide="ignore", under="ignore"):
            log_beta = np.log(time_value[idx] / sqrt_fk)  # normalised OTM price
            log_cstar = np.log(headroom[idx] / sqrt_fk)  # b_max - beta
        ok_logs = np.isfinite(log_beta) & np.isfinite(log_cstar)
        s_c = np.sqrt(-2.0 * x)
        # b at the inflection point s_c (d1 = 0): ln b_c via the lower evaluation (finite for x < 0)
        with np.errstate(all="ignore"):
            log_bc, _ = _lower_eval(x, s_c)
        in_lower = ok_logs & (x < 0) & (log_beta < log_bc)
        in_upper = ok_logs & ~in_lower
        s = np.full(idx.size, np.nan)
        if in_lower.any():
            xl, tl, scl = x[in_lower], log_beta[in_lower], s_c[in_lower]
            s0 = _lower_guess(xl, tl, scl)
            s[in_lower] = _solve_region(xl, tl, s0, np.zeros_like(xl), scl, lower=True)
        if in_upper.any():
            xu, tu, scu = x[in_upper], log_cstar[in_upper], s_c[in_upper]
            s0 = _upper_guess(xu, tu, scu)
            s[in_upper] = _solve_region(xu, tu, s0, scu, np.full_like(xu, np.inf), lower=False)
        good = np.isfinite(s) & (s > 0)
        vol[idx[good]] = s[good] / np.sqrt(t[idx[good]])
        reason[idx[~good]] = IVReason.NO_TIME_VALUE
    return ImpliedVols(vol=vol.reshape(shape), reason=reason.reshape(shape))

"""Arbitrage-free SVI volatility surface: quote filters, slice fits, calendar/butterfly checks, hash.

Pipeline (all pure, vectorized numpy/scipy, deterministic: fixed optimizer starts, no randomness):

1. :func:`filter_quotes` drops bad quotes and counts them per reason (no quote, crossed, zero/missing bid,
   one-sided, stale, Deribit's 500 % IV placeholder, outside the no-arbitrage price bounds).
2. :func:`build_slices` turns the clean out-of-the-money quotes of each expiry into a :class:`SliceQuotes`:
   log-moneyness ``k = ln(K/F)``, mid implied vol and a weight ``vega / (ask - bid)`` (the inverse of the
   bid-ask width in vol units).
3. :func:`fit_svi_slice` fits raw SVI ``w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2))`` to a slice with the
   quasi-explicit method of Zeliade (2009): for fixed ``(m, sigma)`` the total variance is linear in
   ``(a, p, q)`` with ``p = b sigma (1 + rho) / 2``, ``q = b sigma (1 - rho) / 2``; the inner weighted least squares
   is solved exactly on the box ``0 <= a <= max w``, ``0 <= p, q <= sigma`` (the box encodes Roger Lee's wing
   bound ``b (1 +- rho) <= 2``), the outer 2-D problem over ``(m, sigma)`` by a fixed grid then Nelder-Mead.
   :func:`robust_fit_slice` makes the slice robust to a few bad quotes: weights capped at the neighbours' median,
   a Cauchy-loss screen from deterministic leave-out starts, outliers against the screen (re-admitted when the fit
   without them agrees with them), a Huber final fit; clean slices skip the screen.
4. :func:`fit_surface` orders the slices by maturity and enforces, from the longest slice to the shortest, no
   butterfly arbitrage (Gatheral-Jacquier ``g(k) >= 0`` on a k-grid) and no calendar arbitrage
   (``w(k, t_i) <= w(k, t_{i+1})`` on the grid and ordered wing slopes): a slice that violates either is refitted
   by SLSQP under those constraints. The :class:`VolSurface` interpolates linearly in total variance between
   slices along constant log-moneyness, scales total variance with ``t`` before the first and after the last
   slice, and its SVI wings are linear with slopes within Lee's bound beyond the data.

``VolSurface.to_canonical()`` / ``.hash()`` give a deterministic dict and its keccak-256 (via
:mod:`keeper.codec.canonical`); ``VolSurface.from_canonical`` restores the identical surface.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.optimize import minimize

from keeper.codec.canonical import inputs_hash
from keeper.errors import SurfaceFitError
from keeper.quant.chains import OptionChain
from keeper.quant.implied_vol import IVReason, implied_vol
from keeper.quant.pricing import black76_greeks, black76_price
from keeper.units import SECONDS_PER_YEAR

log = logging.getLogger(__name__)

#: Version tag of the canonical surface serialization.
CANONICAL_VERSION = 1

#: Filter reasons, in the order they are tested (each row is counted once, under the first reason that applies).
FILTER_REASONS = (
    "no_quote", "crossed", "zero_or_missing_bid", "one_sided", "stale", "iv_cap", "outside_no_arb_bounds",
    "outlier",
)
#: Rows that are clean but not used by the fit (the in-the-money twin of an out-of-the-money quote).
NOT_USED_ITM = "itm_not_used"


@dataclass(frozen=True)
class SurfaceConfig:
    """Knobs of the filters and the fit (defaults suit Deribit BTC/ETH chains)."""

    stale_after_s: float = 300.0  # quote older than this (vs the chain's latest quote) is stale
    iv_cap: float = 4.99  # Deribit writes 500 % for "no IV"; an IV at or above this cap is a placeholder
    min_quotes_per_slice: int = 5  # fewer usable quotes than this: the expiry gets no slice
    min_expiry_years: float = 1.0 / 8760.0  # expiries closer than 1 hour get no slice (constant vol from the nearest)
    vol_width_floor: float = 0.005  # bid-ask width in vol units is floored at 0.5 vol point for the weights
    weight_power: float = 1.0  # a quote weighs width ** -weight_power (width: bid-ask width in vol units)
    outlier_mad: float = 5.0  # robust z-score beyond which a residual is an outlier ...
    outlier_floor: float = 0.03  # ... when it also exceeds 3 vol points and lies outside the quote's bid-ask band
    k_grid_half_width: float = 3.0  # arbitrage checks on k in [-3, 3] plus a dense grid around each slice's m
    k_grid_points: int = 601
    lee_margin: float = 1e-3  # wing slopes b(1 +- rho) <= 2 (1 - lee_margin)
    arb_tolerance: float = 1e-9  # g(k) >= -tol and w(k, t_i) - w(k, t_{i+1}) <= tol count as arbitrage-free
    repair_g_margin: float = 1e-3  # a repaired slice has g >= this margin on the grid (so also between points)
    repair_w_margin: float = 1e-6  # ... and total variance at least this much below the longer slice's
    repair: bool = True  # refit violating slices under no-arbitrage constraints
    outer_xatol: float = 1e-6  # Nelder-Mead stops when the simplex spans < xatol in (m, ln sigma) ...
    outer_frtol: float = 1e-9  # ... and < frtol * (best grid objective) in the objective
    sigma_min_sd: float = 0.5  # SVI sigma >= this times the slice's near-the-money sqrt(total variance)
    # each expiry's forward checked against put-call parity (OptionChain.parity_checked_forward); off: one fake quote
    # at the money could then move the forward and with it in-the-money marks beyond 1 vol pt x vega (docs/surface.md)
    parity_forward: bool = False
    robust: bool = True  # robust slice fit (soft-L1 screen, outliers against the robust fit); False: plain WLS
    weight_cap: float = 1.0  # a quote's weight is capped at this times the median of its neighbours' ...
    weight_cap_neighbours: int = 2  # ... (this many on each side in k)
    robust_skip_z: float = 2.0  # no robust step when every |residual| / scale is within this
    robust_iters: int = 2  # Cauchy reweighting iterations of the screen, from each of ...
    screen_equal_votes: bool = True  # the screen's Cauchy loss counts every quote alike (one quote, one vote)
    screen_starts: int = 3  # ... the least-squares fit and the fits leaving out the most-jumping quotes
    huber_iters: int = 2  # Huber reweighting iterations of the final fit of a screened slice
    outlier_z: float = 3.0  # |residual| / scale beyond which a quote outside its band is an outlier
    # the previous block's surface as a prior (fit_surface(..., prior=)): the fit may leave the prior's vols only
    # as far as at least `prior_support` quotes of the slice demand (each by how far the prior lies outside its
    # bid-ask IV band, in log vol), and never by more than a factor 2 ** (dt / prior_doubling_s) either way
    prior_support: int = 3
    prior_doubling_s: float = 60.0  # vol may double (or halve) within this many seconds: a real crash gets through
    prior_min_dt_s: float = 12.0  # dt of the bound when the prior is younger than this (one block)
    prior_grid_points: int = 41  # target grid of the gated refit over the slice's strikes (+- half the span)


@dataclass(frozen=True)
class SVIParams:
    """Raw SVI parameters of one slice: ``w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2))``."""

    a: float
    b: float
    rho: float
    m: float
    sigma: float

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        return (self.a, self.b, self.rho, self.m, self.sigma)

    def total_variance(self, k: np.ndarray | float) -> np.ndarray:
        """Total implied variance ``w(k)``."""
        return svi_total_variance(self.as_tuple(), k)

    def g(self, k: np.ndarray | float) -> np.ndarray:
        """Gatheral-Jacquier butterfly function ``g(k)`` (the slice is free of butterfly arbitrage iff g >= 0)."""
        return svi_g(self.as_tuple(), k)

    def wing_slopes(self) -> tuple[float, float]:
        """Asymptotic total-variance slopes (left ``b(1-rho)``, right ``b(1+rho)``)."""
        return (self.b * (1.0 - self.rho), self.b * (1.0 + self.rho))


def svi_total_variance(params: Sequence[float], k: np.ndarray | float) -> np.ndarray:
    """Raw SVI total variance for ``params = (a, b, rho, m, sigma)``."""
    a, b, rho, m, sigma = params
    x = np.asarray(k, dtype=np.float64) - m
    return a + b * (rho * x + np.sqrt(x * x + sigma * sigma))


def _svi_w_derivatives(params: Sequence[float], k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, rho, m, sigma = params
    x = k - m
    r = np.sqrt(x * x + sigma * sigma)
    return a + b * (rho * x + r), b * (rho + x / r), b * sigma * sigma / (r * r * r)


def _g_from_w(k: np.ndarray, w: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (1.0 - k * w1 / (2.0 * w)) ** 2 - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
    return np.where(w > 0.0, g, -np.inf)


def interpolated_min_g(shorter: SVIParams, longer: SVIParams, k_grid: np.ndarray,
                       fractions: Sequence[float] = (0.25, 0.5, 0.75)) -> float:
    """Smallest g(k) of the surface between two slices (total variance linear in t, so w, w' and w'' are the same
    convex combinations of the slices') at the given fractions of the way from ``shorter`` to ``longer``."""
    k = np.asarray(k_grid, dtype=np.float64)
    s0 = _svi_w_derivatives(shorter.as_tuple(), k)
    s1 = _svi_w_derivatives(longer.as_tuple(), k)
    out = math.inf
    for lam in fractions:
        w, w1, w2 = ((1.0 - lam) * u + lam * v for u, v in zip(s0, s1))
        out = min(out, float(np.min(_g_from_w(k, w, w1, w2))))
    return out


def svi_g(params: Sequence[float], k: np.ndarray | float) -> np.ndarray:
    """Gatheral-Jacquier (2013) density function of a raw SVI slice:
    ``g = (1 - k w'/(2w))^2 - w'^2/4 (1/w + 1/4) + w''/2``; the risk-neutral density is
    ``g / sqrt(2 pi w) * exp(-d2^2/2)``.
    Non-positive total variance gives ``-inf`` (that is arbitrage too)."""
    k = np.asarray(k, dtype=np.float64)
    return _g_from_w(k, *_svi_w_derivatives(params, k))


# ----------------------------------------------------------------------------------------------------------------
# Quote filters
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuoteIVs:
    """Implied vols of each row's bid, ask and mid (NaN where unsolvable) and Black-76 vega at the mid vol."""

    bid: np.ndarray
    ask: np.ndarray
    mid: np.ndarray
    mid_reason: np.ndarray  # int8 reason code of the IV solver for the mid
    vega: np.ndarray


@dataclass(frozen=True)
class FilterResult:
    """Per-row filter outcome: ``reason`` is '' for a clean row, else one of :data:`FILTER_REASONS`."""

    clean: np.ndarray  # bool mask
    reason: tuple[str, ...]
    report: dict[str, int]  # reason -> count (every reason present, zeros included), plus 'clean' and 'total'
    no_arb_detail: dict[str, int] = field(default_factory=dict)  # why 'outside_no_arb_bounds' rows failed


def quote_ivs(chain: OptionChain) -> QuoteIVs:
    """Solve implied vols of bid, ask and mid at each row's own forward and quote-time maturity (Black-76, r = 0:
    Deribit's coin prices times the forward are undiscounted USD prices)."""
    t = chain.quote_expiry_years
    F, K, c = chain.forward, chain.strike, chain.is_call

    def solve(price: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = np.isfinite(price) & (price > 0.0)
        safe = np.where(ok, price, 1.0)
        res = implied_vol(safe, F, K, t, c)
        vol = np.where(ok, np.asarray(res.vol, dtype=np.float64), np.nan)
        return vol, np.asarray(res.reason, dtype=np.int8)

    iv_bid, _ = solve(chain.bid)
    iv_ask, _ = solve(chain.ask)
    iv_mid, mid_reason = solve(chain.mid)
    vol_for_vega = np.where(np.isfinite(iv_mid), iv_mid, 0.5)
    vega = np.asarray(black76_greeks(F, K, t, vol_for_vega, c).vega, dtype=np.float64)
    vega = np.where(np.isfinite(iv_mid), vega, np.nan)
    return QuoteIVs(bid=iv_bid, ask=iv_ask, mid=iv_mid, mid_reason=mid_reason, vega=vega)


def filter_quotes(chain: OptionChain, config: SurfaceConfig = SurfaceConfig(),
                  ivs: QuoteIVs | None = None) -> FilterResult:
    """Classify every row as clean or bad (first reason of :data:`FILTER_REASONS` that applies, except 'outlier',
    which needs a fit and is applied by :func:`fit_surface`). Counts are returned per reason."""
    if ivs is None:
        ivs = quote_ivs(chain)
    n = len(chain)
    bid, ask = chain.bid, chain.ask
    has_bid = np.isfinite(bid) & (bid > 0.0)
    has_ask = np.isfinite(ask) & (ask > 0.0)
    intrinsic = np.where(chain.is_call, np.maximum(chain.forward - chain.strike, 0.0),
                         np.maximum(chain.strike - chain.forward, 0.0))
    upper = np.where(chain.is_call, chain.forward, chain.strike)
    venue_cap = (np.nan_to_num(chain.bid_iv) >= config.iv_cap) | (np.nan_to_num(chain.ask_iv) >= config.iv_cap)
    own_cap = np.nan_to_num(ivs.mid) >= config.iv_cap
    tests = (
        ("no_quote", ~has_bid & ~has_ask),
        ("crossed", has_bid & has_ask & (bid > ask)),
        ("zero_or_missing_bid", ~has_bid),
        ("one_sided", ~has_ask),
        ("stale", chain.quote_age > config.stale_after_s),
        ("iv_cap", venue_cap | own_cap),
        ("outside_no_arb_bounds", ~np.isfinite(ivs.mid) | (ask < intrinsic) | (bid > upper)),
    )
    reason = np.full(n, "", dtype=object)
    for name, bad in tests:
        reason[(reason == "") & bad] = name
    clean = reason == ""
    report = {name: int(np.sum(reason == name)) for name in FILTER_REASONS}
    report["clean"] = int(np.sum(clean))
    report["total"] = n
    no_arb = reason == "outside_no_arb_bounds"
    detail = {"ask_below_intrinsic": int(np.sum(no_arb & (ask < intrinsic))),
              "bid_above_upper_bound": int(np.sum(no_arb & (bid > upper)))}
    for code in IVReason:
        if code != IVReason.OK:
            detail[f"mid_iv_{code.name.lower()}"] = int(np.sum(no_arb & (ivs.mid_reason == int(code))))
    return FilterResult(clean=clean, reason=tuple(str(r) for r in reason), report=report, no_arb_detail=detail)


# ----------------------------------------------------------------------------------------------------------------
# Slices
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SliceQuotes:
    """The quotes of one expiry, ready to fit: log-moneyness, mid vol (and the bid/ask vols where known), weights.

    ``rows`` are the indices of the quotes in the source chain (empty for synthetic slices)."""

    expiry_ts: float
    t: float
    forward: float
    k: np.ndarray
    iv_mid: np.ndarray
    iv_bid: np.ndarray
    iv_ask: np.ndarray
    weight: np.ndarray  # relative weight of a quote's vol residual (vega / spread, floored)
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def select(self, mask: np.ndarray) -> "SliceQuotes":
        mask = np.asarray(mask, dtype=bool)
        return replace(self, k=self.k[mask], iv_mid=self.iv_mid[mask], iv_bid=self.iv_bid[mask],
                       iv_ask=self.iv_ask[mask], weight=self.weight[mask],
                       rows=self.rows[mask] if self.rows.size else self.rows)


def build_slices(chain: OptionChain, clean: np.ndarray, ivs: QuoteIVs,
                 config: SurfaceConfig = SurfaceConfig()) -> tuple[list[SliceQuotes], dict[str, int]]:
    """Group the clean out-of-the-money quotes by expiry (calls with K >= F, puts with K < F, F the row's forward).

    Returns the slices with enough quotes and counts of what was left out: ``itm_not_used`` (clean in-the-money
    rows), ``expiry_too_short`` and ``expiry_too_few_quotes`` (rows of expiries that get no slice)."""
    otm = np.where(chain.is_call, chain.strike >= chain.forward, chain.strike < chain.forward)
    use = clean & otm
    counts = {NOT_USED_ITM: int(np.sum(clean & ~otm)), "expiry_too_short": 0, "expiry_too_few_quotes": 0}
    t_all = chain.expiry_years
    spread = chain.ask - chain.bid
    slices: list[SliceQuotes] = []
    for expiry in np.unique(chain.expiry_ts[use]):
        rows = np.flatnonzero(use & (chain.expiry_ts == expiry))
        t = float(t_all[rows[0]])
        if t < config.min_expiry_years:
            counts["expiry_too_short"] += rows.size
            continue
        if rows.size < config.min_quotes_per_slice:
            counts["expiry_too_few_quotes"] += rows.size
            continue
        order = np.argsort(np.log(chain.strike[rows] / chain.forward[rows]), kind="stable")
        rows = rows[order]
        k = np.log(chain.strike[rows] / chain.forward[rows])
        width = np.maximum(spread[rows] / ivs.vega[rows], config.vol_width_floor)
        weight = 1.0 / width if config.weight_power == 1.0 else width ** -config.weight_power
        slices.append(SliceQuotes(
            expiry_ts=float(expiry), t=t, forward=float(np.median(chain.forward[rows])), k=k,
            iv_mid=ivs.mid[rows], iv_bid=ivs.bid[rows], iv_ask=ivs.ask[rows], weight=weight, rows=rows))
    return slices, counts


# ----------------------------------------------------------------------------------------------------------------
# Quasi-explicit SVI slice fit
# ----------------------------------------------------------------------------------------------------------------

_FACES = tuple((sa, sp, sq) for sa in range(3) for sp in range(3) for sq in range(3) if (sa, sp, sq) != (0, 0, 0))


def _solve_small(G: list[list[float]], h: list[float]) -> list[float] | None:
    """Solve a 1x1, 2x2 or 3x3 linear system by Cramer's rule (None when singular)."""
    n = len(h)
    if n == 1:
        return [h[0] / G[0][0]] if G[0][0] > 0.0 else None
    if n == 2:
        det = G[0][0] * G[1][1] - G[0][1] * G[1][0]
        if abs(det) <= 1e-300:
            return None
        return [(h[0] * G[1][1] - G[0][1] * h[1]) / det, (G[0][0] * h[1] - h[0] * G[1][0]) / det]
    (a, b, c), (d, e, f), (g, hh, i) = G
    det = a * (e * i - f * hh) - b * (d * i - f * g) + c * (d * hh - e * g)
    if abs(det) <= 1e-300:
        return None
    x0 = (h[0] * (e * i - f * hh) - b * (h[1] * i - f * h[2]) + c * (h[1] * hh - e * h[2])) / det
    x1 = (a * (h[1] * i - f * h[2]) - h[0] * (d * i - f * g) + c * (d * h[2] - h[1] * g)) / det
    x2 = (a * (e * h[2] - h[1] * hh) - b * (d * h[2] - h[1] * g) + h[0] * (d * hh - e * g)) / det
    return [x0, x1, x2]


def _box_qp3(G: np.ndarray | list[list[float]], h: np.ndarray | list[float], lo: Sequence[float],
             hi: Sequence[float]) -> tuple[list[float], float]:
    """Minimise ``x'Gx - 2h'x`` over the box ``lo <= x <= hi`` (3 variables, G positive semi-definite) exactly:
    the unconstrained stationary point if feasible, else the best feasible stationary point over all faces (in the
    order of :data:`_FACES`, the first of equal objectives; the faces unrolled, same arithmetic as the generic
    loop of :func:`_box_qp3_reference`, so the same bits)."""
    Gl = G if isinstance(G, list) else G.tolist()
    hl = h if isinstance(h, list) else h.tolist()
    (g00, g01, g02), (_, g11, g12), (_, _, g22) = Gl
    h0, h1, h2 = hl

    eps = 1e-12
    x = _solve_small(Gl, hl)
    if x is not None and all(lo[i] - eps <= x[i] <= hi[i] + eps for i in range(3)):
        return x, -(h0 * x[0] + h1 * x[1] + h2 * x[2])  # x'Gx - 2h'x at G x = h
    best: list[float] | None = None
    best_f = math.inf
    for free, fixed in _FACE_PLANS:
        xs = [0.0, 0.0, 0.0]
        for i, side in fixed:
            xs[i] = lo[i] if side == 1 else hi[i]
        nf = len(free)
        if nf == 1:
            i = free[0]
            gi = Gl[i]
            (j, _), (l, _) = fixed
            hf = hl[i] - (0 + gi[j] * xs[j] + gi[l] * xs[l])
            gii = gi[i]
            if not gii > 0.0:
                continue
            v = hf / gii
            if not (lo[i] - eps <= v <= hi[i] + eps):
                continue
            xs[i] = min(max(v, lo[i]), hi[i])
        elif nf == 2:
            i, j = free
            ((l, _),) = fixed
            gi, gj = Gl[i], Gl[j]
            hfi = hl[i] - (0 + gi[l] * xs[l])
            hfj = hl[j] - (0 + gj[l] * xs[l])
            det = gi[i] * gj[j] - gi[j] * gj[i]
            if abs(det) <= 1e-300:
                continue
            vi = (hfi * gj[j] - gi[j] * hfj) / det
            vj = (gi[i] * hfj - hfi * gj[i]) / det
            if not (lo[i] - eps <= vi <= hi[i] + eps and lo[j] - eps <= vj <= hi[j] + eps):
                continue
            xs[i] = min(max(vi, lo[i]), hi[i])
            xs[j] = min(max(vj, lo[j]), hi[j])
        x0, x1, x2 = xs
        f = (g00 * x0 * x0 + g11 * x1 * x1 + g22 * x2 * x2 + 2.0 * (g01 * x0 * x1 + g02 * x0 * x2 + g12 * x1 * x2)
             - 2.0 * (h0 * x0 + h1 * x1 + h2 * x2))
        if f < best_f:
            best, best_f = xs, f
    assert best is not None  # the all-fixed faces are always feasible
    return best, best_f


#: per face of :data:`_FACES`: the free variables and the fixed ones with their side (1: lower, 2: upper bound)
_FACE_PLANS = tuple((tuple(i for i in range(3) if face[i] == 0), tuple((i, face[i]) for i in range(3) if face[i]))
                    for face in _FACES)


def _box_qp3_reference(G: np.ndarray, h: np.ndarray, lo: Sequence[float], hi: Sequence[float]
                       ) -> tuple[list[float], float]:
    """The generic face loop :func:`_box_qp3` unrolls (kept as its reference: tests compare the two bit for bit)."""
    Gl = G.tolist()
    hl = h.tolist()

    (g00, g01, g02), (_, g11, g12), (_, _, g22) = Gl

    def objective(x: list[float]) -> float:
        x0, x1, x2 = x
        return (g00 * x0 * x0 + g11 * x1 * x1 + g22 * x2 * x2 + 2.0 * (g01 * x0 * x1 + g02 * x0 * x2 + g12 * x1 * x2)
                - 2.0 * (hl[0] * x0 + hl[1] * x1 + hl[2] * x2))

    eps = 1e-12
    x = _solve_small(Gl, hl)
    if x is not None and all(lo[i] - eps <= x[i] <= hi[i] + eps for i in range(3)):
        return x, -(hl[0] * x[0] + hl[1] * x[1] + hl[2] * x[2])  # x'Gx - 2h'x at G x = h
    best: list[float] | None = None
    best_f = math.inf
    for face in _FACES:
        fixed = [None if s == 0 else (lo[i] if s == 1 else hi[i]) for i, s in enumerate(face)]
        free = [i for i in range(3) if fixed[i] is None]
        xs = [0.0 if v is None else v for v in fixed]
        if free:
            Gf = [[Gl[i][j] for j in free] for i in free]
            hf = [hl[i] - sum(Gl[i][j] * xs[j] for j in range(3) if fixed[j] is not None) for i in free]
            sol = _solve_small(Gf, hf)
            if sol is None:
                continue
            if not all(lo[i] - eps <= v <= hi[i] + eps for i, v in zip(free, sol)):
                continue
            for i, v in zip(free, sol):
                xs[i] = min(max(v, lo[i]), hi[i])
        f = objective(xs)
        if f < best_f:
            best, best_f = xs, f
    assert best is not None  # the all-fixed faces are always feasible
    return best, best_f


@dataclass(frozen=True)
class _SliceProblem:
    k: np.ndarray
    w: np.ndarray  # market total variance
    omega2: np.ndarray  # squared weights of total-variance residuals (sum 1)
    w_max: float
    k_lo: float
    k_hi: float
    lee: float  # p, q <= lee * sigma
    ww: float  # sum omega2 w^2 (the objective's constant)
    xatol: float
    frtol: float
    s_min: float = 0.0  # lower bound on sigma (no smile feature narrower than a fraction of a standard deviation)
    g00: float = 0.0  # sum omega2 (the normal equations' (0, 0) entry: it does not depend on (m, sigma))
    h0: float = 0.0  # sum omega2 w (their right-hand side's first entry, alike)


def _slice_problem(sq: SliceQuotes, config: SurfaceConfig) -> _SliceProblem:
    w = sq.iv_mid ** 2 * sq.t
    # residual in vol ~ dw / (2 sigma t): weight the total-variance residual by weight / (2 sigma t)
    omega = sq.weight / (2.0 * sq.iv_mid * sq.t)
    omega2 = omega ** 2
    omega2 = omega2 / omega2.sum()
    # the total-variance scale of the slice: median market w of the (up to) 5 quotes nearest the money (a few
    # bad quotes cannot move a median of five)
    near = np.argsort(np.abs(sq.k), kind="stable")[:5]
    s_min = config.sigma_min_sd * math.sqrt(max(float(np.median(w[near])), 0.0))
    return _SliceProblem(k=np.asarray(sq.k, dtype=np.float64), w=w, omega2=omega2, w_max=float(w.max()),
                         k_lo=float(sq.k.min()), k_hi=float(sq.k.max()), lee=1.0 - config.lee_margin,
                         ww=float(np.sum(omega2 * w * w)),
                         xatol=config.outer_xatol, frtol=config.outer_frtol, s_min=s_min,
                         g00=float(np.add.reduce(omega2)), h0=float(np.add.reduce(omega2 * w)))


def _normal_equations(prob: _SliceProblem, m: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Normal equations (G, h) of the weighted linear fit of total variance in (a, p, q) for fixed (m, sigma):
    w(k) = a + p (z + y) + q (z - y), y = (k - m) / sigma, z = sqrt(y^2 + 1)."""
    y = (prob.k - m) / sigma
    z = np.sqrt(y * y + 1.0)
    basis = np.empty((3, y.size))
    basis[0] = 1.0
    np.add(z, y, out=basis[1])
    np.subtract(z, y, out=basis[2])
    weighted = basis * prob.omega2
    # elementwise products and numpy's pairwise sums, not BLAS: results must not depend on BLAS threads or kernels
    G = np.sum(weighted[:, None, :] * basis[None, :, :], axis=2)
    h = np.sum(weighted * prob.w, axis=1)
    return G, h


def _normal_lists(prob: _SliceProblem, m: float, sigma: float) -> tuple[list[list[float]], list[float]]:
    """:func:`_normal_equations` as lists, with fewer numpy calls and the same bits: the same elementwise products
    (``weighted[0] = omega2``, so row and column 0 are sums of ``omega2 (z +- y)`` and the (0, 0) entry and
    ``h[0]`` do not depend on (m, sigma): :attr:`_SliceProblem.g00`, ``h0``), each summed along a contiguous row
    by numpy's pairwise sum as before."""
    y = (prob.k - m) / sigma
    z = np.sqrt(y * y + 1.0)
    basis = np.empty((3, y.size))
    np.add(z, y, out=basis[0])
    np.subtract(z, y, out=basis[1])
    basis[2] = prob.w
    prods = np.empty((2, 4, y.size))
    weighted = prods[:, 0, :]
    np.multiply(basis[:2], prob.omega2, out=weighted)
    np.multiply(weighted[:, None, :], basis[None, :, :], out=prods[:, 1:, :])
    (s1, s11, s12, h1), (s2, s21, s22, h2) = np.add.reduce(prods, axis=2).tolist()
    return [[prob.g00, s1, s2], [s1, s11, s12], [s2, s21, s22]], [prob.h0, h1, h2]


def _normal_lists_batch(prob: _SliceProblem, points: Sequence[tuple[float, float]]
                        ) -> list[tuple[list[list[float]], list[float]]]:
    """:func:`_normal_lists` at several ``(m, sigma)`` at once (one set of numpy calls): the same elementwise
    products per point, each summed along its own contiguous row, so each point's bits are those of a lone call."""
    ms = np.array([pt[0] for pt in points], dtype=np.float64)[:, None]
    ss = np.array([pt[1] for pt in points], dtype=np.float64)[:, None]
    n_pts, n = ms.shape[0], prob.k.size
    y = (prob.k - ms) / ss
    z = np.sqrt(y * y + 1.0)
    basis = np.empty((n_pts, 3, n))
    np.add(z, y, out=basis[:, 0])
    np.subtract(z, y, out=basis[:, 1])
    basis[:, 2] = prob.w
    prods = np.empty((n_pts, 2, 4, n))
    weighted = prods[:, :, 0, :]
    np.multiply(basis[:, :2], prob.omega2, out=weighted)
    np.multiply(weighted[:, :, None, :], basis[:, None, :, :], out=prods[:, :, 1:, :])
    out = []
    for (s1, s11, s12, h1), (s2, s21, s22, h2) in np.add.reduce(prods, axis=3).tolist():
        out.append(([[prob.g00, s1, s2], [s1, s11, s12], [s2, s21, s22]], [prob.h0, h1, h2]))
    return out


def _inner_from(prob: _SliceProblem, sigma: float, G: list[list[float]], h: list[float]
                ) -> tuple[float, list[float]]:
    x, f = _box_qp3(G, h, (-prob.w_max, 0.0, 0.0), (prob.w_max, prob.lee * sigma, prob.lee * sigma))
    return f + prob.ww, x


def _inner(prob: _SliceProblem, m: float, sigma: float) -> tuple[float, list[float]]:
    """Best (a, p, q) for fixed (m, sigma) and its weighted sum of squared residuals."""
    G, h = _normal_lists(prob, m, sigma)
    return _inner_from(prob, sigma, G, h)


def _argsort3(f: list[float]) -> list[int]:
    """``np.argsort`` of three objective values: plain comparisons when they are distinct numbers (the order is
    then unique), numpy's own argsort on ties or NaN (so equal values come out in numpy's order)."""
    a, b, c = f
    if a < b:
        if b < c:
            return [0, 1, 2]
        if a < c < b:
            return [0, 2, 1]
        if c < a:
            return [2, 0, 1]
    elif b < a:
        if a < c:
            return [1, 0, 2]
        if b < c < a:
            return [1, 2, 0]
        if c < b:
            return [2, 1, 0]
    return [int(i) for i in np.argsort(np.array(f, dtype=np.float64))]


def _nelder_mead_2d(fun: Any, simplex: list[tuple[float, float]], xatol: float, fatol: float,
                    maxiter: int, prepare: Any = None) -> tuple[float, float]:
    """``scipy.optimize.minimize(method="Nelder-Mead", options={"initial_simplex": simplex, "xatol", "fatol",
    "maxiter"})`` for two variables, in Python floats: the same steps, comparisons and arithmetic as scipy's
    ``_minimize_neldermead`` (reflection 1, expansion 2, contraction 1/2, shrink 1/2; sorted by ``np.argsort``;
    stop when every vertex is within ``xatol`` of the best in each coordinate and every value within ``fatol``,
    or after ``maxiter`` iterations), so the same points, without numpy's per-call cost on 2-vectors. ``fun``
    takes the two coordinates; ``prepare`` (optional) is told the points an iteration may evaluate (reflection,
    expansion, both contractions; the shrunk vertices) before ``fun`` is called on those it needs, so their
    common work can be done at once. Returns the best vertex (tests compare it with scipy's bit for bit)."""
    sim = list(simplex)
    fs = [fun(x0, x1) for x0, x1 in sim]
    order = _argsort3(fs)
    sim = [sim[i] for i in order]
    fs = [fs[i] for i in order]
    iterations = 1
    while iterations < maxiter:
        (a0, a1), (b0, b1), (c0, c1) = sim
        f0, f1, f2 = fs
        # np.max(...) <= tol: False when any difference is NaN, as here
        if (abs(b0 - a0) <= xatol and abs(b1 - a1) <= xatol and abs(c0 - a0) <= xatol and abs(c1 - a1) <= xatol
                and abs(f0 - f1) <= fatol and abs(f0 - f2) <= fatol):
            break
        xb0, xb1 = (a0 + b0) / 2, (a1 + b1) / 2
        xr = (2.0 * xb0 - c0, 2.0 * xb1 - c1)
        xe = (3.0 * xb0 - 2.0 * c0, 3.0 * xb1 - 2.0 * c1)
        xc = (1.5 * xb0 - 0.5 * c0, 1.5 * xb1 - 0.5 * c1)
        xcc = (0.5 * xb0 + 0.5 * c0, 0.5 * xb1 + 0.5 * c1)
        if prepare is not None:
            prepare((xr, xe, xc, xcc))
        fxr = fun(*xr)
        if fxr < f0:
            fxe = fun(*xe)
            if fxe < fxr:
                sim[2], fs[2] = xe, fxe
            else:
                sim[2], fs[2] = xr, fxr
        elif fxr < f1:
            sim[2], fs[2] = xr, fxr
        else:
            shrink = False
            if fxr < f2:
                fxc = fun(*xc)
                if fxc <= fxr:
                    sim[2], fs[2] = xc, fxc
                else:
                    shrink = True
            else:
                fxcc = fun(*xcc)
                if fxcc < f2:
                    sim[2], fs[2] = xcc, fxcc
                else:
                    shrink = True
            if shrink:
                for j in (1, 2):
                    v0, v1 = sim[j]
                    sim[j] = (a0 + 0.5 * (v0 - a0), a1 + 0.5 * (v1 - a1))
                if prepare is not None:
                    prepare((sim[1], sim[2]))
                for j in (1, 2):
                    fs[j] = fun(*sim[j])
        iterations += 1
        order = _argsort3(fs)
        sim = [sim[i] for i in order]
        fs = [fs[i] for i in order]
    return sim[0]


def _raw_from_inner(m: float, sigma: float, x: Sequence[float]) -> SVIParams:
    a, p, q = x
    c = p + q
    b = c / sigma
    rho = (p - q) / c if c > 0.0 else 0.0
    return SVIParams(a=float(a), b=float(b), rho=float(rho), m=float(m), sigma=float(sigma))


def _quasi_explicit(prob: _SliceProblem, start: SVIParams | None = None) -> SVIParams:
    span = max(prob.k_hi - prob.k_lo, 1e-4)
    m_lo, m_hi = prob.k_lo - 0.5 * span, prob.k_hi + 0.5 * span
    s_lo, s_hi = max(1e-3 * span, 1e-5, prob.s_min), 2.0 * span + 0.1
    s_hi = max(s_hi, 2.0 * s_lo)
    # the inner solve is a pure function of (m, sigma): a point met again (Nelder-Mead steps clamped onto the same
    # bound, the final solve at the best vertex) is looked up, not solved again (about a sixth of the solves)
    solved: dict[tuple[float, float], tuple[float, list[float]]] = {}
    # normal equations computed ahead for the points a Nelder-Mead iteration may ask for (one batch of numpy calls;
    # the box QP only for the points it does ask for)
    normals: dict[tuple[float, float], tuple[list[list[float]], list[float]]] = {}

    def inner(m: float, sigma: float) -> tuple[float, list[float]]:
        key = (m, sigma)
        got = solved.get(key)
        if got is None:
            ready = normals.get(key)
            got = solved[key] = (_inner(prob, m, sigma) if ready is None else _inner_from(prob, sigma, *ready))
        return got

    best = (math.inf, 0.0, 0.0)
    if start is not None:  # warm start (reweighting iterations): the previous (m, sigma), no grid
        m0 = min(max(start.m, m_lo), m_hi)
        s0 = min(max(start.sigma, s_lo), s_hi)
        best = (inner(m0, s0)[0], m0, s0)
    else:
        grid = [(float(m), float(s)) for m in np.linspace(prob.k_lo, prob.k_hi, 7)
                for s in np.geomspace(max(0.02 * span, s_lo), max(span, 2.0 * s_lo), 5)]
        normals.update(zip(grid, _normal_lists_batch(prob, grid)))
        for m, s in grid:
            f, _ = inner(m, s)
            if f < best[0]:
                best = (f, m, s)
    ls_lo, ls_hi = math.log(s_lo), math.log(s_hi)

    def outer(m: float, ls: float) -> float:
        m = min(max(m, m_lo), m_hi)
        ls = min(max(ls, ls_lo), ls_hi)
        return inner(m, math.exp(ls))[0]

    def prepare(points: Sequence[tuple[float, float]]) -> None:
        keys = []
        for m, ls in points:  # the same clamping and exp as outer
            key = (min(max(m, m_lo), m_hi), math.exp(min(max(ls, ls_lo), ls_hi)))
            if key not in solved and key not in normals and key not in keys:
                keys.append(key)
        if keys:
            normals.update(zip(keys, _normal_lists_batch(prob, keys)))

    # scipy's Nelder-Mead step for step (_nelder_mead_2d), from the same fixed initial simplex
    ls0 = math.log(best[2])
    x_m, x_ls = _nelder_mead_2d(outer, [(best[1], ls0), (best[1] + 0.1 * span, ls0), (best[1], ls0 + 0.3)],
                                prob.xatol, prob.frtol * max(best[0], 1e-300), 400, prepare)
    m = min(max(x_m, m_lo), m_hi)
    sigma = math.exp(min(max(x_ls, ls_lo), ls_hi))
    _, x = inner(m, sigma)
    return _raw_from_inner(m, sigma, list(x))


def fit_svi_slice(sq: SliceQuotes, config: SurfaceConfig = SurfaceConfig(),
                  start: SVIParams | None = None) -> SVIParams:
    """Quasi-explicit (Zeliade) raw-SVI fit of one slice, weighted by ``sq.weight`` on vol residuals (``start``:
    warm start of the outer search from that slice's ``(m, sigma)`` instead of the fixed grid)."""
    return _quasi_explicit(_slice_problem(sq, config), start)


def slice_vol_errors(params: SVIParams, sq: SliceQuotes) -> np.ndarray:
    """Model minus market mid implied vol per quote (vol units)."""
    w = np.maximum(params.total_variance(sq.k), 0.0)
    return np.sqrt(w / sq.t) - sq.iv_mid


def quote_half_widths(sq: SliceQuotes, config: SurfaceConfig = SurfaceConfig()) -> np.ndarray:
    """Half the bid-ask width of each quote in vol units: from the bid and ask IVs where both are known, else from
    the weight (``1 / width``); floored at half of ``config.vol_width_floor``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        from_band = 0.5 * (sq.iv_ask - sq.iv_bid)
        from_weight = 0.5 / sq.weight
    h = np.where(np.isfinite(from_band) & (from_band > 0.0), from_band, from_weight)
    return np.maximum(np.where(np.isfinite(h), h, np.inf), 0.5 * config.vol_width_floor)


def capped_weights(sq: SliceQuotes, config: SurfaceConfig = SurfaceConfig()) -> np.ndarray:
    """Quote weights capped at ``config.weight_cap`` times the median weight of its neighbours in k (up to
    ``config.weight_cap_neighbours`` on each side): a quote that claims a much tighter market than the quotes around
    it (a fake tight quote) cannot get more leverage than a few of its neighbours together."""
    w = np.asarray(sq.weight, dtype=np.float64)
    n = w.size
    if n < 3 or config.weight_cap <= 0.0:
        return w
    order = np.argsort(sq.k, kind="stable")
    ws = w[order]
    j = config.weight_cap_neighbours
    cap = np.empty(n)
    for i in range(n):
        nb = np.concatenate([ws[max(0, i - j):i], ws[i + 1:i + 1 + j]])
        cap[i] = config.weight_cap * float(np.median(nb))
    out = np.empty(n)
    out[order] = np.minimum(ws, cap)
    return out


def local_jumps(sq: SliceQuotes, two_sided: bool = False) -> np.ndarray:
    """How far each quote's mid vol lies from what its neighbours predict (no fit involved).

    Default: the smallest of the distances to the line through its two nearest neighbours (one each side), to the
    line through the two nearest on its left and to the line through the two nearest on its right (a genuine quote
    next to one or two bad ones agrees with at least one side). ``two_sided``: the median distance to the lines
    through one of the two nearest on the left and one of the two nearest on the right (a pair of bad quotes that
    agree with each other still stands out)."""
    order = np.argsort(sq.k, kind="stable")
    k, v = sq.k[order], sq.iv_mid[order]
    n = k.size
    out = np.zeros(n)
    for i in range(n):
        if two_sided:
            pairs = [(a, b) for a in (i - 1, i - 2) for b in (i + 1, i + 2) if 0 <= a and b < n]
        else:
            pairs = [(a, b) for a, b in ((i - 1, i + 1), (i - 2, i - 1), (i + 1, i + 2)) if 0 <= a and b < n]
        d = [abs(v[i] - (v[a] + (v[b] - v[a]) * (k[i] - k[a]) / (k[b] - k[a]))) for a, b in pairs if k[b] != k[a]]
        out[i] = (float(np.median(d)) if two_sided else min(d)) if d else 0.0
    res = np.empty(n)
    res[order] = out
    return res


def robust_fit_slice(sq: SliceQuotes, config: SurfaceConfig = SurfaceConfig()
                     ) -> tuple[SliceQuotes, SVIParams, np.ndarray]:
    """Fit one slice so that a few bad quotes cannot move it: returns the quotes kept (with the weights used),
    the SVI parameters and the outlier mask over ``sq``.

    1. Weights capped against each quote's neighbours (:func:`capped_weights`); weighted least-squares fit.
    2. Residuals are scaled by ``c = max(own half-width, median half-width of the slice)`` (a fake tight quote
       cannot claim a tighter scale than a typical quote). If every ``|r| / c <= config.robust_skip_z`` the
       least-squares fit is kept (nothing to screen: on clean quotes the robust steps cost nothing).
    3. Otherwise a robust screen: the Cauchy loss ``sum u_i ln(1 + z_i^2)`` with ``u = 1`` (one quote, one vote;
       ``screen_equal_votes=False``: weights capped at the neighbours' median), minimised by iteratively reweighted least
       squares from several deterministic starts (the least-squares fit, and the fits leaving out each of the
       ``config.screen_starts`` quotes that jump most from their neighbours, and the two most-jumping together);
       the start with the lowest Cauchy loss wins. A fit bent through a bad quote pays for every good quote it
       misses, so the screen follows the majority of the quotes, not the loudest one.
    4. Quotes with ``|r| > config.outlier_z * c`` against the screen and outside their own bid-ask IV band are
       suspects; the slice is refitted without them, and a suspect that this fit (its leave-out fit) prices within
       ``outlier_z * c`` is re-admitted; the others are outliers (at least ``min_quotes_per_slice`` must remain)."""
    w = capped_weights(sq, config)
    sq_w = replace(sq, weight=w)
    p = fit_svi_slice(sq_w, config)
    none = np.zeros(sq.k.size, dtype=bool)
    if not config.robust:
        return sq_w, p, none
    h = quote_half_widths(sq, config)
    jumps = local_jumps(sq)
    # robust noise scale of the quotes, from no fit (a fit may already have bent towards a bad quote): the median
    # jump of a quote from its neighbours
    spread_r = 1.4826 * float(np.median(jumps))
    c = np.maximum(h, max(spread_r, 0.5 * config.vol_width_floor))
    z = np.abs(slice_vol_errors(p, sq)) / c
    jumps = jumps / c
    if float(np.max(z)) <= config.robust_skip_z and float(np.max(jumps)) <= config.outlier_z:
        return sq_w, p, none
    u = np.ones(sq.k.size) if config.screen_equal_votes else capped_weights(sq, replace(config, weight_cap=1.0))
    n = sq.k.size

    def outside_band(q: SVIParams) -> np.ndarray:
        model = slice_vol_errors(q, sq) + sq.iv_mid
        return ~((model >= np.nan_to_num(sq.iv_bid, nan=-np.inf)) & (model <= np.nan_to_num(sq.iv_ask, nan=np.inf)))

    def cauchy(q: SVIParams) -> tuple[float, np.ndarray]:
        zz = slice_vol_errors(q, sq) / c
        return float(np.sum(u * u * np.log1p(zz * zz))), zz

    jumps2 = local_jumps(sq, two_sided=True) / c
    top: list[int] = []
    for jj in (jumps, jumps2):
        top += [int(i) for i in np.argsort(-jj, kind="stable")[:config.screen_starts]
                if jj[i] > config.outlier_z and int(i) not in top]
    # starts: leave out each candidate alone, and each candidate with its neighbour on either side in k
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(sq.k, kind="stable")] = np.arange(n)
    by_rank = np.argsort(sq.k, kind="stable")
    drops = [[i] for i in top]
    for i in top:
        for nb in (rank[i] - 1, rank[i] + 1):
            if 0 <= nb < n:
                pair = sorted([i, int(by_rank[nb])])
                if pair not in drops:
                    drops.append(pair)
    starts = [p]
    suspect = np.zeros(n, dtype=bool)
    for d in drops:
        keep = np.ones(n, dtype=bool)
        keep[d] = False
        if int(keep.sum()) >= config.min_quotes_per_slice:
            q = fit_svi_slice(replace(sq, weight=u).select(keep), config, start=p)
            starts.append(q)
    best_f, best = math.inf, p
    for q in starts:
        for _ in range(config.robust_iters):
            _, zz = cauchy(q)
            q = fit_svi_slice(replace(sq, weight=u / np.sqrt(1.0 + zz * zz)), config, start=q)
        f, _ = cauchy(q)
        if f < best_f:
            best_f, best = f, q
    suspect |= (np.abs(slice_vol_errors(best, sq)) > config.outlier_z * c) & outside_band(best)
    out = none
    q = best
    if suspect.any() and int((~suspect).sum()) >= config.min_quotes_per_slice:
        p_out = fit_svi_slice(sq_w.select(~suspect), config, start=best)
        readmit = suspect & ((np.abs(slice_vol_errors(p_out, sq)) <= config.outlier_z * c) | ~outside_band(p_out))
        out = suspect & ~readmit
        if out.any():
            q = p_out
    # final: Huber reweighting (weights unchanged within one scale of the fit, bounded pull beyond)
    kept = sq_w.select(~out)
    ck = c[~out]
    wk = kept.weight
    for _ in range(config.huber_iters):
        zz = np.abs(slice_vol_errors(q, kept)) / ck
        wk = kept.weight * np.sqrt(1.0 / np.maximum(zz, 1.0))
        q = fit_svi_slice(replace(kept, weight=wk), config, start=q)
    return replace(kept, weight=wk), q, out


def _outliers(params: SVIParams, sq: SliceQuotes, config: SurfaceConfig) -> np.ndarray:
    r = slice_vol_errors(params, sq)
    med = float(np.median(r))
    mad = 1.4826 * float(np.median(np.abs(r - med)))
    model = r + sq.iv_mid
    outside_band = ~((model >= np.nan_to_num(sq.iv_bid, nan=-np.inf)) & (model <= np.nan_to_num(sq.iv_ask, nan=np.inf)))
    big = np.abs(r - med) > max(config.outlier_mad * mad, config.outlier_floor)
    return big & outside_band


# ----------------------------------------------------------------------------------------------------------------
# No-arbitrage checks and repair
# ----------------------------------------------------------------------------------------------------------------

def check_grid(params: Iterable[SVIParams], config: SurfaceConfig = SurfaceConfig(),
               extra: np.ndarray | None = None, coarse: bool = False) -> np.ndarray:
    """The k-grid the arbitrage checks use: a uniform grid on [-H, H] plus a dense grid around each slice's m
    (and the ``extra`` points), all clipped to [-H, H], H = ``config.k_grid_half_width``. ``coarse`` gives the
    fifth as many points (the constraint grid of the SLSQP repair, whose result is then checked on the fine one)."""
    h = config.k_grid_half_width
    n_uniform = config.k_grid_points // 5 + 1 if coarse else config.k_grid_points
    n_dense = 25 if coarse else 97
    parts = [np.linspace(-h, h, n_uniform)]
    for p in params:
        parts.append(p.m + p.sigma * np.linspace(-6.0, 6.0, n_dense))
    if extra is not None:
        parts.append(np.asarray(extra, dtype=np.float64))
    return np.unique(np.clip(np.concatenate(parts), -h, h))


def butterfly_min_g(params: SVIParams, k_grid: np.ndarray) -> float:
    """Smallest Gatheral-Jacquier g(k) of a slice on the grid (negative: butterfly arbitrage)."""
    return float(np.min(params.g(k_grid)))


def calendar_min_gap(shorter: SVIParams, longer: SVIParams, k_grid: np.ndarray) -> float:
    """min over the grid of ``w_longer(k) - w_shorter(k)`` (negative: calendar arbitrage on the grid)."""
    return float(np.min(longer.total_variance(k_grid) - shorter.total_variance(k_grid)))


def _solve_dense(M: list[list[float]], r: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting in pure Python (tiny systems; None when singular)."""
    n = len(r)
    A = [row[:] + [r[i]] for i, row in enumerate(M)]
    for col in range(n):
        piv = max(range(col, n), key=lambda i: abs(A[i][col]))
        if abs(A[piv][col]) <= 1e-300:
            return None
        A[col], A[piv] = A[piv], A[col]
        for i in range(col + 1, n):
            f = A[i][col] / A[col][col]
            if f != 0.0:
                for j in range(col, n + 1):
                    A[i][j] -= f * A[col][j]
    x = [0.0] * n
    for i in range(n - 1, -1, -1):
        x[i] = (A[i][n] - sum(A[i][j] * x[j] for j in range(i + 1, n))) / A[i][i]
    return x


def _active_set_qp3(G: list[list[float]], h: list[float], C: np.ndarray, d: np.ndarray,
                    x0: list[float], max_iter: int = 60) -> list[float]:
    """Minimise ``x'Gx - 2h'x`` (3 variables, G positive definite) subject to ``C x <= d`` from the feasible point
    ``x0``: the primal active-set method (Nocedal & Wright, Algorithm 16.3), pure Python and elementwise numpy."""
    x = list(x0)
    work: list[int] = []
    H = [[2.0 * G[i][j] for j in range(3)] for i in range(3)]
    for _ in range(max_iter):
        grad = [sum(H[i][j] * x[j] for j in range(3)) - 2.0 * h[i] for i in range(3)]
        k = len(work)
        M = [H[i][:] + [-float(C[w][i]) for w in work] for i in range(3)]
        M += [[float(C[w][j]) for j in range(3)] + [0.0] * k for w in work]
        sol = _solve_dense(M, [-g for g in grad] + [0.0] * k)
        if sol is None:  # degenerate working set: drop the newest constraint
            work.pop()
            continue
        p, mu = sol[:3], sol[3:]
        if max(abs(v) for v in p) <= 1e-14 * (1.0 + max(abs(v) for v in x)):
            # stationary on the working set: constraints C x <= d have multipliers -mu >= 0 at the optimum
            if not work or min(-m for m in mu) >= -1e-12:
                return x
            work.pop(int(np.argmin([-m for m in mu])))
            continue
        cp = C[:, 0] * p[0] + C[:, 1] * p[1] + C[:, 2] * p[2]
        slack = d - (C[:, 0] * x[0] + C[:, 1] * x[1] + C[:, 2] * x[2])
        blocking = cp > 0.0
        if work:
            blocking[work] = False
        alpha, hit = 1.0, -1
        if blocking.any():
            ratios = np.where(blocking, np.maximum(slack, 0.0) / np.where(blocking, cp, 1.0), np.inf)
            j = int(np.argmin(ratios))
            if ratios[j] < 1.0:
                alpha, hit = float(ratios[j]), j
        x = [x[i] + alpha * p[i] for i in range(3)]
        if hit >= 0:
            work.append(hit)
    return x


def _repair(sq: SliceQuotes, start: SVIParams, longer: SVIParams | None, config: SurfaceConfig) -> SVIParams:
    """Refit a slice under the no-arbitrage constraints, keeping the quasi-explicit structure: for each (m, sigma)
    the inner problem in (a, p, q) is a convex QP whose constraints are the Lee box and, when ``longer`` is given,
    ``w(k) <= w_longer(k) - margin`` on a coarse k-grid (linear in (a, p, q)), solved exactly by an active-set
    method; the outer Nelder-Mead over (m, ln sigma) adds a penalty for ``g(k) < margin`` on the grid. Any
    calendar excess left on the fine grid is removed by lowering ``a``. Pure Python and elementwise numpy: no BLAS,
    so the result does not depend on BLAS threading (SLSQP's did)."""
    prob = _slice_problem(sq, config)
    grid = check_grid([start] + ([longer] if longer else []), config, extra=sq.k, coarse=True)
    w_cap = longer.total_variance(grid) - config.repair_w_margin if longer else None
    span = max(prob.k_hi - prob.k_lo, 1e-4)
    m_lo, m_hi = prob.k_lo - 1.0, prob.k_hi + 1.0
    ls_lo, ls_hi = math.log(max(1e-4, 0.01 * span, prob.s_min)), math.log(5.0)  # no V-shaped (kinked) slices
    f_ref = max(prob.ww, 1e-300)  # the data term is the relative weighted squared error
    penalty = 1e6

    def inner(m: float, sigma: float) -> SVIParams:
        G, h = _normal_equations(prob, m, sigma)
        G, h = G.tolist(), h.tolist()
        hi_pq = prob.lee * sigma
        rows = [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0],
                [0.0, 0.0, -1.0]]
        rhs = [prob.w_max, prob.w_max, hi_pq, 0.0, hi_pq, 0.0]
        a0 = 0.0
        if w_cap is not None:
            yg = (grid - m) / sigma
            zg = np.sqrt(yg * yg + 1.0)
            C = np.concatenate([np.array(rows), np.stack([np.ones_like(yg), zg + yg, zg - yg], axis=1)])
            d = np.concatenate([np.array(rhs), w_cap])
            a0 = max(min(float(np.min(w_cap)), 0.0), -prob.w_max)
        else:
            C, d = np.array(rows), np.array(rhs)
        x = _active_set_qp3(G, h, C, d, [a0, 0.0, 0.0])
        return _raw_from_inner(m, sigma, x)

    def objective(params: SVIParams) -> float:
        r = params.total_variance(prob.k) - prob.w
        f = float(np.sum(prob.omega2 * r * r)) / f_ref
        g = params.g(grid)
        short = np.where(np.isfinite(g), np.maximum(config.repair_g_margin - g, 0.0), 1.0)
        return f + penalty * float(np.sum(short * short))

    def outer(xv: np.ndarray) -> float:
        m = min(max(float(xv[0]), m_lo), m_hi)
        ls = min(max(float(xv[1]), ls_lo), ls_hi)
        return objective(inner(m, math.exp(ls)))

    x0 = np.array([min(max(start.m, m_lo), m_hi), min(max(math.log(start.sigma), ls_lo), ls_hi)])
    res = minimize(outer, x0, method="Nelder-Mead",
                   options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 600,
                            "initial_simplex": np.array([x0, x0 + [0.1 * span, 0.0], x0 + [0.0, 0.3]])})
    m = min(max(float(res.x[0]), m_lo), m_hi)
    p = inner(m, math.exp(min(max(float(res.x[1]), ls_lo), ls_hi)))
    log.debug("svi repair t=%.6f: objective %.6g, min g on the grid %.3g", sq.t, float(res.fun),
              float(np.min(p.g(grid))))
    if float(np.min(p.g(grid))) < 0.5 * config.repair_g_margin:
        # (m, sigma) alone could not remove the butterfly arbitrage (the inner least squares does not see g):
        # Nelder-Mead over all five parameters (a, ln b, atanh rho, m, ln sigma), penalising g and calendar.
        lee = 2.0 * prob.lee

        def unpack(v: np.ndarray) -> SVIParams:
            return SVIParams(a=float(v[0]), b=math.exp(min(float(v[1]), 5.0)), rho=math.tanh(float(v[2])),
                             m=min(max(float(v[3]), m_lo), m_hi), sigma=math.exp(min(max(float(v[4]), ls_lo), ls_hi)))

        def full(v: np.ndarray) -> float:
            q = unpack(v)
            extra = max(q.b * (1.0 + abs(q.rho)) - lee, 0.0) ** 2
            if w_cap is not None:
                over = np.maximum(q.total_variance(grid) - w_cap, 0.0) / max(float(np.max(w_cap)), 1e-12)
                extra += float(np.sum(over * over))
            return objective(q) + penalty * extra

        v0 = np.array([p.a, math.log(max(p.b, 1e-8)), math.atanh(max(min(p.rho, 0.999), -0.999)), p.m,
                       math.log(p.sigma)])
        steps = np.diag([0.1 * max(prob.w_max, 1e-8), 0.2, 0.2, 0.1 * span, 0.2])
        res5 = minimize(full, v0, method="Nelder-Mead",
                        options={"xatol": 1e-7, "fatol": 1e-10, "maxiter": 4000, "maxfev": 8000,
                                 "initial_simplex": np.vstack([v0, v0 + steps])})
        p = unpack(res5.x)
        log.debug("svi repair t=%.6f (5 parameters): objective %.6g, min g on the grid %.3g", sq.t,
                  float(res5.fun), float(np.min(p.g(grid))))
    if longer is not None:
        # the QP meets the calendar constraints on the coarse grid: remove any excess between its points
        hw = config.k_grid_half_width
        fine = check_grid([p, longer], config, extra=np.concatenate([sq.k, np.linspace(-hw, hw, 6001)]))
        excess = float(np.max(p.total_variance(fine) - longer.total_variance(fine)))
        if excess > 0.0:
            p = replace(p, a=p.a - excess - config.repair_w_margin)
    return p


# ----------------------------------------------------------------------------------------------------------------
# The surface
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SliceFit:
    """One fitted expiry: maturity, forward and SVI parameters (what the hash covers)."""

    expiry_ts: float
    t: float
    forward: float
    params: SVIParams


@dataclass(frozen=True)
class VolSurface:
    """SVI slices ordered by maturity plus the fit report; interpolation in total variance (see module doc)."""

    underlying: str
    asof: float
    slices: tuple[SliceFit, ...]
    fit_report: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def times(self) -> np.ndarray:
        return np.array([s.t for s in self.slices])

    def total_variance(self, k: np.ndarray | float, t: np.ndarray | float) -> np.ndarray:
        """Total implied variance at log-moneyness ``k`` and maturity ``t`` (years); broadcasts.

        Between slices: linear in ``t`` at constant ``k``; before the first slice and after the last:
        ``w(k, t_edge) * t / t_edge`` (constant implied vol in ``k``)."""
        if not self.slices:
            raise ValueError("surface has no slices")
        k, t = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(t, dtype=np.float64))
        ts = self.times
        w_slices = np.stack([s.params.total_variance(k) for s in self.slices])  # (n_slices, ...)
        n = len(self.slices)
        if n == 1:
            return w_slices[0] * t / ts[0]
        idx = np.clip(np.searchsorted(ts, t, side="right") - 1, 0, n - 2)
        t0, t1 = ts[idx], ts[idx + 1]
        w0 = np.take_along_axis(w_slices, idx[None, ...], axis=0)[0]
        w1 = np.take_along_axis(w_slices, (idx + 1)[None, ...], axis=0)[0]
        lam = (t - t0) / (t1 - t0)
        inner = w0 + lam * (w1 - w0)
        before = w_slices[0] * t / ts[0]
        after = w_slices[-1] * t / ts[-1]
        return np.where(t <= ts[0], before, np.where(t >= ts[-1], after, inner))

    def implied_vol(self, strike: np.ndarray | float, expiry: np.ndarray | float,
                    forward: np.ndarray | float) -> np.ndarray:
        """Black-76 implied vol for ``strike`` at maturity ``expiry`` (years) given the ``forward`` of that maturity."""
        strike, expiry, forward = np.broadcast_arrays(np.asarray(strike, dtype=np.float64),
                                                      np.asarray(expiry, dtype=np.float64),
                                                      np.asarray(forward, dtype=np.float64))
        k = np.log(strike / forward)
        w = self.total_variance(k, expiry)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((expiry > 0.0) & (w > 0.0), np.sqrt(w / expiry), np.nan)

    def price(self, strike: np.ndarray | float, expiry: np.ndarray | float, forward: np.ndarray | float,
              is_call: np.ndarray | bool) -> np.ndarray:
        """Undiscounted Black-76 price on the surface vol (NaN where the surface gives no vol, e.g. expiry <= 0)."""
        vol = self.implied_vol(strike, expiry, forward)
        ok = np.isfinite(vol)
        price = black76_price(forward, strike, np.where(ok, expiry, 1.0), np.where(ok, vol, 0.5), is_call)
        return np.where(ok, price, np.nan)

    def forward(self, expiry: np.ndarray | float) -> np.ndarray:
        """Forward at a maturity: the slices' forwards interpolated linearly in ``t`` (flat outside)."""
        return np.interp(np.asarray(expiry, dtype=np.float64), self.times, [s.forward for s in self.slices])

    def to_canonical(self) -> dict[str, Any]:
        """Deterministic dict of everything that defines the surface (not the fit report)."""
        return {
            "version": CANONICAL_VERSION,
            "underlying": self.underlying,
            "asof": float(self.asof),
            "slices": [
                {"expiry_ts": float(s.expiry_ts), "t": float(s.t), "forward": float(s.forward),
                 "a": s.params.a, "b": s.params.b, "rho": s.params.rho, "m": s.params.m, "sigma": s.params.sigma}
                for s in self.slices
            ],
        }

    def hash(self) -> bytes:
        """keccak-256 (bytes32) of the canonical serialization."""
        return inputs_hash(self.to_canonical())

    @classmethod
    def from_canonical(cls, d: dict[str, Any]) -> "VolSurface":
        """Inverse of :meth:`to_canonical`; also accepts floats in canonical-JSON form ``{"f": hex}``."""
        def f(v: Any) -> float:
            return float.fromhex(v["f"]) if isinstance(v, dict) else float(v)

        if int(d.get("version", -1)) != CANONICAL_VERSION:
            raise ValueError(f"unsupported surface version {d.get('version')!r}")
        slices = tuple(
            SliceFit(expiry_ts=f(s["expiry_ts"]), t=f(s["t"]), forward=f(s["forward"]),
                     params=SVIParams(a=f(s["a"]), b=f(s["b"]), rho=f(s["rho"]), m=f(s["m"]), sigma=f(s["sigma"])))
            for s in d["slices"])
        return cls(underlying=str(d["underlying"]), asof=f(d["asof"]), slices=slices)

    def arbitrage_report(self, config: SurfaceConfig = SurfaceConfig()) -> dict[str, Any]:
        """Butterfly (min g per slice), calendar (min gap per adjacent pair) and, between adjacent slices, the min g
        of the linearly interpolated total variance, all on the k-grid of :func:`check_grid`."""
        params = [s.params for s in self.slices]
        grid = check_grid(params, config)
        min_g = [butterfly_min_g(p, grid) for p in params]
        gaps = [calendar_min_gap(params[i], params[i + 1], grid) for i in range(len(params) - 1)]
        between = [interpolated_min_g(params[i], params[i + 1], grid) for i in range(len(params) - 1)]
        return {
            "min_g": min_g,
            "calendar_min_gap": gaps,
            "interpolated_min_g": between,  # not enforced: reported (the fit leaves it to the slices)
            "butterfly_ok": bool(all(g >= -config.arb_tolerance for g in min_g)),
            "calendar_ok": bool(all(g >= -config.arb_tolerance for g in gaps)),
        }


def _fit_slices(slices: Sequence[SliceQuotes], config: SurfaceConfig,
                remove_outliers: bool) -> tuple[list[SliceQuotes], list[SVIParams], list[int]]:
    fitted: list[SliceQuotes] = []
    params: list[SVIParams] = []
    outlier_rows: list[int] = []
    for sq in slices:
        if remove_outliers and not config.robust:  # the previous rule: MAD of the residuals of a first fit
            p = fit_svi_slice(sq, config)
            out = _outliers(p, sq, config)
            if out.any() and int((~out).sum()) >= config.min_quotes_per_slice:
                outlier_rows.extend(int(r) for r in sq.rows[out]) if sq.rows.size else outlier_rows.extend(
                    [-1] * int(out.sum()))
                sq = sq.select(~out)
                p = fit_svi_slice(sq, config)
        elif remove_outliers:
            sq_fit, p, out = robust_fit_slice(sq, config)
            if out.any():
                outlier_rows.extend(int(r) for r in sq.rows[out]) if sq.rows.size else outlier_rows.extend(
                    [-1] * int(out.sum()))
            sq = sq_fit
        else:
            p = fit_svi_slice(sq, config)
        fitted.append(sq)
        params.append(p)
    return fitted, params, outlier_rows


def _usable(sq: SliceQuotes, config: SurfaceConfig) -> SliceQuotes | None:
    """The slice restricted to finite quotes with positive vol and weight; None if too few remain."""
    ok = np.isfinite(sq.k) & np.isfinite(sq.iv_mid) & (sq.iv_mid > 0.0) & np.isfinite(sq.weight) & (sq.weight > 0.0)
    if not (math.isfinite(sq.t) and sq.t > 0.0) or int(ok.sum()) < config.min_quotes_per_slice:
        return None
    return sq if ok.all() else sq.select(ok)


@dataclass(frozen=True)
class PriorGate:
    """How far one slice may leave the prior (log vol): the largest ``up``/``down`` the quotes support anywhere on
    the slice, ``cap`` the per-block bound, and whether the free fit had to be pulled back (``gated``)."""

    up: float
    down: float
    cap: float
    gated: bool


def prior_gate(sq: SliceQuotes, p_free: SVIParams, prior: "VolSurface", elapsed_s: float,
               config: SurfaceConfig = SurfaceConfig(), extra_k: np.ndarray | None = None
               ) -> tuple[SVIParams, SliceQuotes | None, PriorGate]:
    """Bound a freshly fitted slice by the previous block's surface.

    The prior's vol at each log-moneyness of this expiry (the prior evaluated at this expiry's maturity when the
    prior was fitted, ``t + elapsed``, and today's ``k = ln(K/F)``: sticky moneyness) is ``v0(k)``. Quote ``i``
    *demands* an up-move when the prior lies below its bid-ask IV band and accepts one up to
    ``ln(iv_ask_i / v0(k_i))`` (a down-move to ``ln(v0 / iv_bid)`` when above); a quote whose band holds the prior
    and whose mid is more than half its half-width from it accepts a move towards its mid, up to its mid, and none
    away from it (one closer to the prior accepts none). At each ``k`` the slice may move up
    by ``up(k)`` = the ``n = config.prior_support``-th largest up-demand among the ``2 n - 1`` quotes nearest to
    ``k`` (down alike: a majority of the neighbourhood must agree) and never by more than
    ``cap = ln 2 * max(elapsed, prior_min_dt_s) / prior_doubling_s`` (vol doubles within a minute at most): one or
    two quotes alone cannot move it at all; a crash, where every quote demands the move, passes within the cap.
    If the free fit stays inside ``[v0 e^-min(down, cap), v0 e^min(up, cap)]`` on the slice's strikes it is kept;
    otherwise the slice is refitted (equal weights) to the free fit clipped into that envelope on a grid over the
    quoted range +- half its span plus ``extra_k`` (the listed strikes). Returns the parameters, the target slice of
    the refit (None when not gated: the arbitrage repair then works on the quotes) and the gate."""
    t_prior = sq.t + max(elapsed_s, 0.0) / SECONDS_PER_YEAR
    span = max(float(sq.k.max() - sq.k.min()), 1e-3)
    parts = [sq.k, np.linspace(float(sq.k.min()) - 0.5 * span, float(sq.k.max()) + 0.5 * span,
                                config.prior_grid_points)]
    if extra_k is not None and extra_k.size:
        parts.append(np.clip(extra_k, float(sq.k.min()) - span, float(sq.k.max()) + span))
    grid = np.unique(np.concatenate(parts))
    w0 = prior.total_variance(np.concatenate([sq.k, grid]), t_prior)
    with np.errstate(invalid="ignore", divide="ignore"):
        v0 = np.sqrt(np.maximum(w0, 0.0) / t_prior)
    v0_q, v0_g = v0[:sq.k.size], v0[sq.k.size:]
    cap = math.log(2.0) * max(elapsed_s, config.prior_min_dt_s) / config.prior_doubling_s
    if not (np.all(np.isfinite(v0)) and np.all(v0 > 0.0)):
        return p_free, None, PriorGate(up=math.inf, down=math.inf, cap=cap, gated=False)  # no usable prior here
    with np.errstate(invalid="ignore", divide="ignore"):
        # how far a quote that wants the move accepts it: to the far edge of its band (its mid if one-sided in IV)
        far_up = np.where(np.isfinite(sq.iv_ask), sq.iv_ask, sq.iv_mid)
        far_down = np.where(np.isfinite(sq.iv_bid) & (sq.iv_bid > 0.0), sq.iv_bid, sq.iv_mid)
        # a quote whose band holds the prior accepts a move towards its mid, up to its mid (a fake can then only
        # pull the surface towards the real quotes, and after a market move the surface keeps catching up)
        # (only a quote whose mid is more than half its half-width from the prior: near it, it accepts nothing)
        half = np.where(np.isfinite(sq.iv_ask) & np.isfinite(sq.iv_bid), 0.5 * (sq.iv_ask - sq.iv_bid), 0.0)
        to_mid = np.where(np.abs(sq.iv_mid - v0_q) > 0.5 * half, np.log(sq.iv_mid / v0_q), 0.0)
        up = np.where(np.isfinite(sq.iv_bid) & (sq.iv_bid > v0_q), np.log(far_up / v0_q), np.maximum(to_mid, 0.0))
        down = np.where(np.isfinite(sq.iv_ask) & (sq.iv_ask < v0_q), np.log(v0_q / far_down),
                        np.maximum(-to_mid, 0.0))
    n_sup = config.prior_support
    n_loc = 2 * n_sup - 1
    if sq.k.size < n_sup:
        u = dn = np.zeros(grid.size)
    else:
        # at each grid point, the n_sup-th largest demand among its 2 n_sup - 1 nearest quotes in k
        near = np.argsort(np.abs(grid[:, None] - sq.k[None, :]), axis=1, kind="stable")[:, :n_loc]
        u = np.sort(up[near], axis=1)[:, -n_sup]
        dn = np.sort(down[near], axis=1)[:, -n_sup]
    gate = PriorGate(up=float(np.max(u)), down=float(np.max(dn)), cap=cap, gated=False)
    free = np.sqrt(np.maximum(p_free.total_variance(grid), 0.0) / sq.t)
    lo, hi = v0_g * np.exp(-np.minimum(dn, cap)), v0_g * np.exp(np.minimum(u, cap))
    target = np.minimum(np.maximum(free, lo), hi)
    if float(np.max(np.abs(target - free))) <= 1e-9:  # inside the envelope (to rounding: the prior's interpolation)
        return p_free, None, gate
    target_sq = SliceQuotes(expiry_ts=sq.expiry_ts, t=sq.t, forward=sq.forward, k=grid, iv_mid=target,
                            iv_bid=target, iv_ask=target, weight=np.ones(grid.size))
    return fit_svi_slice(target_sq, config), target_sq, replace(gate, gated=True)


def fit_surface(chain_or_slices: OptionChain | Sequence[SliceQuotes],
                config: SurfaceConfig = SurfaceConfig(), *, underlying: str = "", asof: float = 0.0,
                prior: VolSurface | None = None) -> VolSurface:
    """Fit an arbitrage-free SVI surface to an :class:`OptionChain` (filters, slices, outliers, fit, repair) or to
    ready :class:`SliceQuotes` (fit and repair only; ``underlying``/``asof`` label the result).

    ``prior``: the previous block's surface (the one the keeper attested last). Each slice may then leave the prior
    only as far as at least ``config.prior_support`` of its quotes demand and within the per-block bound
    (:func:`prior_gate`); ``prior.asof`` and this fit's ``asof`` give the elapsed time. Without a prior (cold start)
    the slices are the free robust fits.

    ``fit_report`` holds the filter counts (chain input), per-slice RMSE and max error in vol points against the
    mid implied vols, the number of quotes per slice, which slices were repaired (and gated by the prior), and
    the arbitrage checks."""
    report: dict[str, Any] = {"config": asdict(config)}
    extra_k: dict[float, np.ndarray] = {}
    if isinstance(chain_or_slices, OptionChain):
        # each expiry's forward checked against put-call parity on its quotes (the venue's unless they contradict it)
        chain = chain_or_slices.with_parity_checked_forward() if config.parity_forward else chain_or_slices
        ivs = quote_ivs(chain)
        filt = filter_quotes(chain, config, ivs)
        slices, unused = build_slices(chain, filt.clean, ivs, config)
        underlying, asof = chain.underlying, chain.asof
        filters = dict(filt.report)
        if prior is not None:  # the listed strikes of each expiry: the prior bounds the marks there too
            for sq in slices:
                extra_k[sq.expiry_ts] = np.log(np.unique(chain.strike[chain.expiry_ts == sq.expiry_ts]) / sq.forward)
        log.info("vol surface %s: quote filters %s, not used %s", underlying, filters, unused)
    else:
        slices, unused, filters = list(chain_or_slices), {}, None
    usable = [u for u in (_usable(s, config) for s in slices) if u is not None]
    if len(usable) < len(slices):
        log.warning("vol surface %s: %d slices with too few usable quotes skipped", underlying,
                    len(slices) - len(usable))
    slices = sorted(usable, key=lambda s: s.t)
    if not slices:
        raise SurfaceFitError(f"vol surface {underlying or '?'}: no expiry has {config.min_quotes_per_slice} "
                              "usable quotes")
    if any(b.t <= a.t for a, b in zip(slices, slices[1:])):
        raise SurfaceFitError("vol surface: two slices share a maturity")
    slices, params, outlier_rows = _fit_slices(slices, config, remove_outliers=True)
    if filters is not None:
        filters["outlier"] = len(outlier_rows)
        filters["clean"] -= len(outlier_rows)
        report["filters"] = filters
        report["not_used"] = unused
        report["outlier_rows"] = sorted(outlier_rows)
    else:
        report["outliers"] = len(outlier_rows)
    # the prior: each slice within what its quotes support and the per-block bound; a gated slice's repair works on
    # its target (the clipped free fit), not on the quotes
    repair_data = list(slices)
    gates: list[PriorGate | None] = [None] * len(params)
    if prior is not None and prior.slices:
        elapsed = float(asof) - float(prior.asof)
        for i, sq in enumerate(slices):
            params[i], target, gates[i] = prior_gate(sq, params[i], prior, elapsed, config, extra_k.get(sq.expiry_ts))
            if target is not None:
                repair_data[i] = target
    # no-arbitrage: from the longest slice down, each slice butterfly-free and below the next longer one
    repaired = [False] * len(params)
    if config.repair:
        for i in range(len(params) - 1, -1, -1):
            longer = params[i + 1] if i + 1 < len(params) else None
            grid = check_grid([params[i]] + ([longer] if longer else []), config, extra=slices[i].k)
            bad = butterfly_min_g(params[i], grid) < -config.arb_tolerance
            if longer is not None:
                bad = bad or calendar_min_gap(params[i], longer, grid) < -config.arb_tolerance
            if bad:
                params[i] = _repair(repair_data[i], params[i], longer, config)
                repaired[i] = True
    surface = VolSurface(underlying=underlying, asof=float(asof), slices=tuple(
        SliceFit(expiry_ts=s.expiry_ts, t=s.t, forward=s.forward, params=p) for s, p in zip(slices, params)))
    per_slice = []
    for s, p, rep, gate in zip(slices, params, repaired, gates):
        model = np.sqrt(np.maximum(p.total_variance(s.k), 0.0) / s.t)
        err = (model - s.iv_mid) * 100.0
        lo = np.where(np.isfinite(s.iv_bid), s.iv_bid, -np.inf)
        hi = np.where(np.isfinite(s.iv_ask), s.iv_ask, np.inf)
        outside = np.maximum(lo - model, 0.0) + np.maximum(model - hi, 0.0)
        wn = s.weight / s.weight.sum()
        per_slice.append({
            "expiry_ts": s.expiry_ts, "t": s.t, "n_quotes": int(s.k.size),
            "rmse_vol_pts": float(np.sqrt(np.mean(err ** 2))),
            "weighted_rmse_vol_pts": float(np.sqrt(np.sum(wn * err ** 2))),
            "max_abs_err_vol_pts": float(np.max(np.abs(err))),
            "within_spread_frac": float(np.mean(outside == 0.0)),
            "rms_outside_spread_vol_pts": float(np.sqrt(np.mean((outside * 100.0) ** 2))),
            "repaired": rep,
            "prior": None if gate is None else asdict(gate),
        })
    report["slices"] = per_slice
    report["arbitrage"] = surface.arbitrage_report(config)
    if not (report["arbitrage"]["butterfly_ok"] and report["arbitrage"]["calendar_ok"]):
        log.warning("vol surface %s: arbitrage checks failed after repair: %s", underlying, report["arbitrage"])
    return replace(surface, fit_report=report)



#: The fit before the robust slice fit (MAD outliers on a least-squares first pass, uncapped weights, no sigma
#: floor): for before/after comparisons (benchmarks/bench_surface.py).
LEGACY_CONFIG = SurfaceConfig(robust=False, weight_cap=0.0, sigma_min_sd=0.0, min_expiry_years=0.5 / 365.0,
                              parity_forward=False)


def fitted_forward(chain: OptionChain, surface: Any) -> np.ndarray:
    """Each row's forward as ``surface`` was fitted on it: checked against put-call parity
    (:meth:`OptionChain.parity_checked_forward`) when the fit's config turned that on, else the venue's; a surface
    restored from its canonical form (no fit report) was fitted with the default config."""
    report = getattr(surface, "fit_report", None)
    cfg = report.get("config", {}) if isinstance(report, dict) else {}
    on = cfg.get("parity_forward", SurfaceConfig.parity_forward)
    return chain.parity_checked_forward() if on else np.asarray(chain.forward)

"""The slice fit's fast path computes the same bits as the generic code it replaced (docs/surface.md, speed).

The quasi-explicit slice fit was made several times faster without changing its result: scipy's Nelder-Mead is run
step for step in Python floats (``_nelder_mead_2d``), the 3-variable box QP's faces are unrolled (``_box_qp3``),
the normal equations are built with fewer numpy calls (``_normal_lists``) and an inner solve met again is looked
up. Each test compares with a second computation: scipy's own ``minimize(method="Nelder-Mead")``, the generic face
loop (``_box_qp3_reference``) plus the KKT conditions of the box QP, the (3, 3, n) normal equations
(``_normal_equations``), and the previous slice fit written out here (scipy Nelder-Mead over the generic pieces)
on every slice of the three real chains and of the keeper benchmark's simulated chains: equal bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy.optimize import minimize

from keeper.data.deribit import load_deribit_csv
from keeper.quant.surface import (
    SurfaceConfig,
    SVIParams,
    _box_qp3,
    _box_qp3_reference,
    _inner,
    _nelder_mead_2d,
    _normal_equations,
    _normal_lists,
    _raw_from_inner,
    _slice_problem,
    build_slices,
    capped_weights,
    filter_quotes,
    fit_svi_slice,
    quote_ivs,
)

CHAINS = ("deribit_BTC_20200514T0541Z.csv", "deribit_BTC_20200521T2319Z.csv", "deribit_ETH_20240108T1119Z.csv")


def _scipy_nm(fun2, simplex, xatol, fatol, maxiter):
    """scipy's Nelder-Mead on the same simplex; returns the best vertex and every point it evaluated."""
    seen = []

    def f(x):
        seen.append((float(x[0]), float(x[1])))
        return fun2(float(x[0]), float(x[1]))

    res = minimize(f, np.array(simplex[0]), method="Nelder-Mead",
                   options={"xatol": xatol, "fatol": fatol, "maxiter": maxiter, "initial_simplex": np.array(simplex)})
    return (float(res.x[0]), float(res.x[1])), seen


def _ours_nm(fun2, simplex, xatol, fatol, maxiter):
    seen = []

    def f(a, b):
        seen.append((a, b))
        return fun2(a, b)

    return tuple(_nelder_mead_2d(f, simplex, xatol, fatol, maxiter)), seen


def _plateau(a, b):  # clamped like the slice fit's outer objective: equal values on the clamped region (ties)
    a, b = min(max(a, -0.3), 0.4), min(max(b, -1.0), 0.2)
    return (a - 0.35) ** 2 + 3.0 * (b + 0.9) ** 2


@pytest.mark.parametrize("fun2,simplex,xatol,fatol,maxiter", [
    (lambda a, b: (1.0 - a) ** 2 + 100.0 * (b - a * a) ** 2, [(-1.2, 1.0), (-1.1, 1.0), (-1.2, 1.3)], 1e-8, 1e-12, 400),
    (lambda a, b: (1.0 - a) ** 2 + 100.0 * (b - a * a) ** 2, [(-1.2, 1.0), (-1.1, 1.0), (-1.2, 1.3)], 1e-8, 1e-12, 17),
    (_plateau, [(0.0, 0.0), (0.1, 0.0), (0.0, 0.3)], 1e-6, 1e-9, 400),
    (lambda a, b: abs(a) + abs(b - 0.5), [(2.0, 2.0), (2.1, 2.0), (2.0, 2.3)], 1e-10, 1e-12, 400),
    (lambda a, b: 1.0, [(0.0, 0.0), (0.1, 0.0), (0.0, 0.3)], 1e-6, 1e-9, 400),  # all ties from the start
])
def test_nelder_mead_2d_takes_scipys_steps(fun2, simplex, xatol, fatol, maxiter):
    ref_x, ref_seen = _scipy_nm(fun2, simplex, xatol, fatol, maxiter)
    x, seen = _ours_nm(fun2, simplex, xatol, fatol, maxiter)
    assert len(seen) == len(ref_seen) > 3
    assert seen == ref_seen  # the same points, evaluated in the same order, to the bit
    assert x == ref_x


def _random_qp(rng, n):
    basis = rng.normal(size=(3, n))
    wts = rng.uniform(0.1, 1.0, n)
    G = (basis * wts) @ basis.T
    h = rng.normal(size=3) * rng.choice([0.1, 1.0, 10.0])
    lo = list(-rng.uniform(0.0, 2.0, 3))
    hi = list(rng.uniform(0.0, 2.0, 3))
    if rng.uniform() < 0.3:
        lo[1] = lo[2] = 0.0
    return G, h, lo, hi


def test_box_qp3_unrolled_faces_equal_the_generic_loop_and_meet_kkt():
    rng = np.random.default_rng(7)
    n_faces = 0
    for trial in range(3000):
        G, h, lo, hi = _random_qp(rng, int(rng.integers(3, 12)))
        x_ref, f_ref = _box_qp3_reference(G, h, lo, hi)
        x, f = _box_qp3(G, h, lo, hi)
        assert (x, f) == (x_ref, f_ref)  # same bits
        x_l, f_l = _box_qp3(G.tolist(), h.tolist(), lo, hi)  # list input: same again
        assert (x_l, f_l) == (x_ref, f_ref)
        # KKT of min x'Gx - 2h'x on the box: gradient 2(Gx - h) >= 0 at a lower bound, <= 0 at an upper, 0 inside
        grad = 2.0 * (G @ np.array(x) - h)
        scale = 1e-7 * (1.0 + float(np.abs(G).max()) + float(np.abs(h).max()))
        inside = all(lo[i] + 1e-9 < x[i] < hi[i] - 1e-9 for i in range(3))
        n_faces += not inside
        for i in range(3):
            if x[i] <= lo[i] + 1e-12:
                assert grad[i] >= -scale
            elif x[i] >= hi[i] - 1e-12:
                assert grad[i] <= scale
            else:
                assert abs(grad[i]) <= scale
    assert n_faces > 1000  # the face enumeration was exercised, not only interior optima


@pytest.mark.parametrize("n", [5, 7, 8, 9, 16, 31, 64, 127, 128, 129, 257, 600])
def test_normal_lists_equal_the_generic_normal_equations(n):
    rng = np.random.default_rng(n)
    k = np.sort(rng.normal(0.0, 0.3, n))
    iv = 0.6 + 0.2 * k * k + rng.normal(0.0, 0.01, n)
    from keeper.quant.surface import SliceQuotes
    sq = SliceQuotes(expiry_ts=0.0, t=0.1, forward=100.0, k=k, iv_mid=iv, iv_bid=iv - 0.01, iv_ask=iv + 0.01,
                     weight=rng.uniform(1.0, 50.0, n))
    prob = _slice_problem(sq, SurfaceConfig())
    for m, sigma in [(0.0, 0.1), (-0.2, 0.03), (0.31, 1.7), (float(k[3]), 0.2)]:
        G, h = _normal_equations(prob, m, sigma)
        Gl, hl = _normal_lists(prob, m, sigma)
        assert Gl == G.tolist() and hl == h.tolist()


def _previous_fit(sq, config, start=None):
    """The slice fit as it was written before the fast path: scipy Nelder-Mead over the generic pieces."""
    prob = _slice_problem(sq, config)

    def inner(m, sigma):
        G, h = _normal_equations(prob, m, sigma)
        x, f = _box_qp3_reference(G, h, (-prob.w_max, 0.0, 0.0), (prob.w_max, prob.lee * sigma, prob.lee * sigma))
        return f + prob.ww, x

    span = max(prob.k_hi - prob.k_lo, 1e-4)
    m_lo, m_hi = prob.k_lo - 0.5 * span, prob.k_hi + 0.5 * span
    s_lo, s_hi = max(1e-3 * span, 1e-5, prob.s_min), 2.0 * span + 0.1
    s_hi = max(s_hi, 2.0 * s_lo)
    best = (math.inf, 0.0, 0.0)
    if start is not None:
        m0 = min(max(start.m, m_lo), m_hi)
        s0 = min(max(start.sigma, s_lo), s_hi)
        best = (inner(m0, s0)[0], m0, s0)
    else:
        for m in np.linspace(prob.k_lo, prob.k_hi, 7):
            for s in np.geomspace(max(0.02 * span, s_lo), max(span, 2.0 * s_lo), 5):
                f, _ = inner(float(m), float(s))
                if f < best[0]:
                    best = (f, float(m), float(s))
    ls_lo, ls_hi = math.log(s_lo), math.log(s_hi)

    def outer(xv):
        m = min(max(float(xv[0]), m_lo), m_hi)
        ls = min(max(float(xv[1]), ls_lo), ls_hi)
        return inner(m, math.exp(ls))[0]

    res = minimize(outer, np.array([best[1], math.log(best[2])]), method="Nelder-Mead",
                   options={"xatol": prob.xatol, "fatol": prob.frtol * max(best[0], 1e-300), "maxiter": 400,
                            "initial_simplex": np.array([[best[1], math.log(best[2])],
                                                         [best[1] + 0.1 * span, math.log(best[2])],
                                                         [best[1], math.log(best[2]) + 0.3]])})
    m = min(max(float(res.x[0]), m_lo), m_hi)
    sigma = math.exp(min(max(float(res.x[1]), ls_lo), ls_hi))
    _, x = inner(m, sigma)
    return _raw_from_inner(m, sigma, x)


def _chain_slices(chain, config):
    ivs = quote_ivs(chain)
    slices, _ = build_slices(chain, filter_quotes(chain, config, ivs).clean, ivs, config)
    return slices


def _check_slices(slices, config):
    n = 0
    for sq in slices:
        sq = replace(sq, weight=capped_weights(sq, config))
        cold = fit_svi_slice(sq, config)
        assert cold == _previous_fit(sq, config)  # every parameter to the bit
        # warm start from a nearby (m, sigma), as the robust screen's reweighting steps do; and with uniform weights
        start = SVIParams(a=cold.a, b=cold.b, rho=cold.rho, m=cold.m + 0.01, sigma=cold.sigma * 1.1)
        assert fit_svi_slice(sq, config, start=start) == _previous_fit(sq, config, start=start)
        even = replace(sq, weight=np.ones(sq.k.size))
        assert fit_svi_slice(even, config, start=cold) == _previous_fit(even, config, start=cold)
        n += 1
    return n


@pytest.mark.parametrize("name", CHAINS)
def test_slice_fit_equals_the_previous_fit_on_the_real_chains(shared_data, name):
    chain = load_deribit_csv(shared_data / "option_chains" / name).chain
    config = SurfaceConfig()
    assert _check_slices(_chain_slices(chain, config), config) >= 6


def test_slice_fit_equals_the_previous_fit_on_the_benchmark_chains():
    from benchmarks.bench_keeper import UNDERLYINGS
    from keeper.data.sources import BlockRef, SimulatedMarket
    from keeper.ops.config import parse_config

    cfg = parse_config({"market": {"simulated": {"seed": 3, "jump_intensity": 0.0}}})
    n = 0
    for _, _, spot, seed in UNDERLYINGS:
        sim = SimulatedMarket(cfg.market.simulated.model_copy(update={"seed": seed, "spot0": spot}))
        chain = sim.chain(BlockRef(1000, "0x" + f"{7:064x}", 1_700_000_000), spot)
        n += _check_slices(_chain_slices(chain, SurfaceConfig()), SurfaceConfig())
    assert n >= 4


def test_inner_solve_is_a_pure_function_of_m_and_sigma():
    """The look-up of a point met again is sound only if a second solve gives the same bits."""
    rng = np.random.default_rng(3)
    k = np.sort(rng.normal(0.0, 0.2, 25))
    iv = 0.5 + 0.3 * k * k
    from keeper.quant.surface import SliceQuotes
    prob = _slice_problem(SliceQuotes(expiry_ts=0.0, t=0.05, forward=1.0, k=k, iv_mid=iv, iv_bid=iv - 0.02,
                                      iv_ask=iv + 0.02, weight=np.ones(25)), SurfaceConfig())
    for m, s in [(0.0, 0.1), (0.5, 0.01), (-1.0, 2.0)]:
        assert _inner(prob, m, s) == _inner(prob, m, s)


def test_batched_normal_equations_equal_lone_calls():
    """Nelder-Mead's candidate points (and the cold start's grid) get their normal equations in one batch: each
    point's bits must be those of a lone call, whatever the batch size and the row length."""
    from keeper.quant.surface import SliceQuotes, _normal_lists_batch
    rng = np.random.default_rng(11)
    for n in (5, 8, 13, 128, 129, 300):
        k = np.sort(rng.normal(0.0, 0.3, n))
        iv = 0.6 + 0.2 * k * k
        prob = _slice_problem(SliceQuotes(expiry_ts=0.0, t=0.2, forward=1.0, k=k, iv_mid=iv, iv_bid=iv - 0.01,
                                          iv_ask=iv + 0.01, weight=rng.uniform(1.0, 9.0, n)), SurfaceConfig())
        for size in (1, 2, 4, 35):
            pts = [(float(rng.normal(0.0, 0.3)), float(rng.uniform(0.01, 2.0))) for _ in range(size)]
            assert _normal_lists_batch(prob, pts) == [_normal_lists(prob, m, s) for m, s in pts]

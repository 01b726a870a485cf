"""SVI surface: recovery of known parameters, arbitrage detection and repair (checked against option-price laws),
interpolation rules, the fit on the three real Deribit chains (filter counts recounted independently with the csv
module and a pure-Python Black-76 bisection), and hash determinism (in-process, round trip, subprocess)."""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from keeper.codec.canonical import canonical_json
from keeper.data.deribit import load_deribit_csv
from keeper.quant.implied_vol import implied_vol
from keeper.errors import SurfaceFitError
from keeper.quant.surface import (
    SliceQuotes,
    SurfaceConfig,
    SVIParams,
    VolSurface,
    build_slices,
    butterfly_min_g,
    calendar_min_gap,
    check_grid,
    filter_quotes,
    fit_surface,
    fit_svi_slice,
    quote_ivs,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHAINS = ["deribit_BTC_20200514T0541Z.csv", "deribit_BTC_20200521T2319Z.csv", "deribit_ETH_20240108T1119Z.csv"]
# Gatheral & Jacquier (2013), "Arbitrage-free SVI volatility surfaces", example 3.1 (Axel Vogt), t = 1.
VOGT = SVIParams(a=-0.0410, b=0.1331, rho=0.3060, m=0.3586, sigma=0.4153)


def synthetic_slice(params: SVIParams, t: float, k: np.ndarray, noise_vol: float = 0.0, seed: int = 0,
                    half_width: float = 0.01) -> SliceQuotes:
    iv = np.sqrt(params.total_variance(k) / t)
    iv_mid = iv + np.random.default_rng(seed).normal(0.0, noise_vol, k.size) if noise_vol else iv
    return SliceQuotes(expiry_ts=round(t * 365 * 86400.0), t=t, forward=100.0, k=k, iv_mid=iv_mid,
                       iv_bid=iv_mid - half_width, iv_ask=iv_mid + half_width, weight=np.ones_like(k))


def black_call_undiscounted(k: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Call price / forward at log-moneyness k and total variance w (scipy's norm: independent of keeper.quant.pricing)."""
    s = np.sqrt(w)
    d1 = -k / s + 0.5 * s
    return norm.cdf(d1) - np.exp(k) * norm.cdf(d1 - s)


def butterfly_density(k: np.ndarray, w: np.ndarray) -> np.ndarray:
    """d2C/dK2 (F = 1, K = e^k) by finite differences on the (non-uniform) strike grid, at the inner points."""
    K = np.exp(k)
    C = black_call_undiscounted(k, w)
    slope = np.diff(C) / np.diff(K)
    return 2.0 * np.diff(slope) / (K[2:] - K[:-2])


# ---------------------------------------------------------------------------------------------------------------
# Slice fit
# ---------------------------------------------------------------------------------------------------------------

def test_noise_free_quotes_recover_the_parameters():
    true = SVIParams(a=0.02, b=0.15, rho=-0.4, m=0.05, sigma=0.2)
    k = np.linspace(-0.8, 0.6, 40)
    fitted = fit_svi_slice(synthetic_slice(true, 0.5, k))
    assert np.allclose(fitted.as_tuple(), true.as_tuple(), atol=1e-5)
    assert np.max(np.abs(fitted.total_variance(k) - true.total_variance(k))) < 1e-7  # optimizer tolerance


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noisy_quotes_recover_total_variance_within_the_noise(seed):
    """Least squares with p = 5 parameters on n quotes with iid vol noise s: the fitted curve's error at the quotes
    has RMS about s * sqrt(p / n); allow twice that."""
    true = SVIParams(a=0.02, b=0.15, rho=-0.4, m=0.05, sigma=0.2)
    t, n, noise = 0.5, 40, 0.005  # 0.5 vol point
    k = np.linspace(-0.8, 0.6, n)
    fitted = fit_svi_slice(synthetic_slice(true, t, k, noise_vol=noise, seed=seed))
    err = np.sqrt(fitted.total_variance(k) / t) - np.sqrt(true.total_variance(k) / t)
    assert np.sqrt(np.mean(err ** 2)) < 2.0 * noise * math.sqrt(5 / n)
    # a noise-free fit is far better: the bound above is not loose enough to pass anything
    assert np.max(np.abs(err)) > 1e-6
    # the parameters that are well identified: ATM total variance and the two wing slopes
    assert fitted.total_variance(0.0) == pytest.approx(true.total_variance(0.0), rel=0.03)
    for got, want in zip(fitted.wing_slopes(), true.wing_slopes()):
        assert got == pytest.approx(want, abs=0.05)


def test_outlier_quote_is_removed_and_does_not_bend_the_fit():
    true = SVIParams(a=0.02, b=0.15, rho=-0.4, m=0.05, sigma=0.2)
    k = np.linspace(-0.8, 0.6, 30)
    clean = synthetic_slice(true, 0.5, k, noise_vol=0.002, seed=4)
    bad_iv = clean.iv_mid.copy()
    bad_iv[12] += 0.15  # a 15 vol point fat finger inside a 2 point wide market
    dirty = SliceQuotes(expiry_ts=clean.expiry_ts, t=clean.t, forward=clean.forward, k=k, iv_mid=bad_iv,
                        iv_bid=bad_iv - 0.01, iv_ask=bad_iv + 0.01, weight=clean.weight,
                        rows=np.arange(k.size))
    surface = fit_surface([dirty])
    assert surface.fit_report["outliers"] == 1
    ref = fit_surface([clean])
    assert ref.fit_report["outliers"] == 0
    diff = surface.slices[0].params.total_variance(k) - ref.slices[0].params.total_variance(k)
    assert np.max(np.abs(diff)) < 1e-4  # ~0.01 vol point: the bad quote no longer matters


def test_unusable_inputs_raise_a_clear_error_and_nan_quotes_are_skipped():
    true = SVIParams(a=0.02, b=0.15, rho=-0.4, m=0.05, sigma=0.2)
    k = np.linspace(-0.8, 0.6, 20)
    with pytest.raises(SurfaceFitError, match="usable quotes"):
        fit_surface([synthetic_slice(true, 0.5, k[:3])])
    s = synthetic_slice(true, 0.5, k)
    iv = s.iv_mid.copy()
    iv[[2, 7]] = np.nan
    holes = SliceQuotes(expiry_ts=s.expiry_ts, t=s.t, forward=s.forward, k=k, iv_mid=iv, iv_bid=iv, iv_ask=iv,
                        weight=s.weight)
    fitted = fit_surface([holes])
    assert fitted.fit_report["slices"][0]["n_quotes"] == 18
    assert np.allclose(fitted.slices[0].params.total_variance(k), true.total_variance(k), atol=1e-6)
    with pytest.raises(SurfaceFitError, match="maturity"):
        fit_surface([s, s])


def test_ssvi_surface_recovered_within_the_noise_and_arbitrage_free():
    """20 expiries x 40 strikes from an arbitrage-free SSVI surface (Gatheral-Jacquier power law, eta (1+|rho|) < 2)
    with 0.3 vol point noise: the fitted surface is within 2 s sqrt(p/n) RMS of the truth at the quotes, free of
    arbitrage, and needs no repair (the truth has none)."""
    rng = np.random.default_rng(11)
    rho, eta, gamma, noise, n = -0.35, 1.2, 0.45, 0.003, 40
    slices, truth = [], []
    for t in np.geomspace(7 / 365, 2.0, 20):
        theta = 0.36 * t + 0.05 * (1 - math.exp(-4 * t))
        phi = eta / (theta ** gamma * (1 + theta) ** (1 - gamma))
        p = SVIParams(0.5 * theta * (1 - rho ** 2), 0.5 * theta * phi, rho, -rho / phi, math.sqrt(1 - rho ** 2) / phi)
        k = np.linspace(-2.5, 2.0, n) * math.sqrt(theta)
        iv = np.sqrt(p.total_variance(k) / t) + rng.normal(0.0, noise, n)
        slices.append(SliceQuotes(expiry_ts=round(t * 365 * 86400.0), t=float(t), forward=100.0, k=k, iv_mid=iv,
                                  iv_bid=iv - 0.01, iv_ask=iv + 0.01, weight=np.ones(n)))
        truth.append(p)
    surface = fit_surface(slices)
    assert surface.fit_report["arbitrage"]["butterfly_ok"] and surface.fit_report["arbitrage"]["calendar_ok"]
    assert not any(s["repaired"] for s in surface.fit_report["slices"])
    errs = [np.sqrt(f.params.total_variance(q.k) / q.t) - np.sqrt(p.total_variance(q.k) / q.t)
            for f, q, p in zip(surface.slices, slices, truth)]
    assert np.sqrt(np.mean(np.concatenate(errs) ** 2)) < 2.0 * noise * math.sqrt(5 / n)


# ---------------------------------------------------------------------------------------------------------------
# Arbitrage: detection (checked against price laws) and repair
# ---------------------------------------------------------------------------------------------------------------

def test_vogt_example_has_butterfly_arbitrage_and_negative_density():
    k = np.linspace(-1.5, 1.5, 3001)
    assert butterfly_min_g(VOGT, k) < -1e-3
    # independent: the density d2C/dK2 of the call prices from the same total variance turns negative
    density = butterfly_density(k, VOGT.total_variance(k))
    assert density.min() < 0.0
    # and where g is clearly positive the density is positive too (same sign, two computations)
    g = VOGT.g(k[1:-1])
    assert np.all(density[g > 0.05] > 0.0)
    assert np.all(density[g < -0.01] < 0.0)


def test_fit_repairs_butterfly_arbitrage_in_quotes():
    k = np.linspace(-1.0, 1.5, 40)
    surface = fit_surface([synthetic_slice(VOGT, 1.0, k)])
    params = surface.slices[0].params
    report = surface.fit_report
    assert report["slices"][0]["repaired"] is True
    assert report["arbitrage"]["butterfly_ok"]
    grid = np.linspace(-3.0, 3.0, 6001)
    assert butterfly_min_g(params, grid) >= -1e-9
    assert np.min(butterfly_density(grid, params.total_variance(grid))) > -1e-9  # call prices convex in strike
    # the repair stays close to the quotes (a few vol points at most)
    assert report["slices"][0]["rmse_vol_pts"] < 3.0


def test_strong_butterfly_arbitrage_is_repaired_too(caplog):
    """A slice whose total variance dips to ~0 with steep wings (g ~ -0.14; the (m, sigma) repair cannot fix it
    and the five-parameter fallback runs): the fit is arbitrage-free and still close to the quotes."""
    bad = SVIParams(a=-0.02, b=0.5, rho=-0.5, m=0.1, sigma=0.1)
    k = np.linspace(-1.0, 1.0, 30)
    w = bad.total_variance(k)
    assert butterfly_min_g(bad, np.linspace(-3.0, 3.0, 601)) < -0.1
    iv = np.sqrt(w / 1.0)
    with caplog.at_level(logging.DEBUG, logger="keeper.quant.surface"):
        surface = fit_surface([SliceQuotes(expiry_ts=1.0, t=1.0, forward=100.0, k=k, iv_mid=iv, iv_bid=iv - 0.01,
                                           iv_ask=iv + 0.01, weight=np.ones_like(k))])
    assert any("(5 parameters)" in r.getMessage() for r in caplog.records)
    params = surface.slices[0].params
    grid = np.linspace(-3.0, 3.0, 60001)
    assert surface.fit_report["slices"][0]["repaired"] and surface.fit_report["arbitrage"]["butterfly_ok"]
    assert butterfly_min_g(params, grid) >= 0.0
    assert np.min(butterfly_density(grid[::10], params.total_variance(grid[::10]))) > -1e-9
    assert surface.fit_report["slices"][0]["rmse_vol_pts"] < 3.0


def test_calendar_crossing_pair_is_flagged_and_the_fit_removes_it():
    short = SVIParams(a=0.01, b=0.25, rho=-0.2, m=0.0, sigma=0.15)  # steep wings ...
    long_ = SVIParams(a=0.04, b=0.08, rho=-0.2, m=0.0, sigma=0.3)  # ... flatter, higher ATM
    grid = np.linspace(-3.0, 3.0, 601)
    assert calendar_min_gap(short, long_, grid) < 0.0
    # independent: at fixed k the shorter call is worth more than the longer one somewhere (calendar arbitrage)
    assert np.any(black_call_undiscounted(grid, short.total_variance(grid))
                  > black_call_undiscounted(grid, long_.total_variance(grid)) + 1e-12)
    k = np.linspace(-1.0, 1.0, 30)
    surface = fit_surface([synthetic_slice(short, 0.25, k), synthetic_slice(long_, 0.5, k)])
    arb = surface.fit_report["arbitrage"]
    assert arb["calendar_ok"] and arb["butterfly_ok"]
    assert surface.fit_report["slices"][0]["repaired"] is True
    s0, s1 = (s.params for s in surface.slices)
    assert calendar_min_gap(s0, s1, grid) >= -1e-9
    # prices non-decreasing in maturity at every k of the grid, on the surface between and before the slices
    ts = np.array([0.1, 0.25, 0.3, 0.4, 0.5, 0.7])
    prices = np.stack([black_call_undiscounted(grid, surface.total_variance(grid, t)) for t in ts])
    assert np.all(np.diff(prices, axis=0) >= -1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Interpolation
# ---------------------------------------------------------------------------------------------------------------

def test_interpolation_rules():
    p1 = SVIParams(a=0.01, b=0.1, rho=-0.3, m=0.0, sigma=0.2)
    p2 = SVIParams(a=0.03, b=0.12, rho=-0.3, m=0.0, sigma=0.25)
    surface = fit_surface([synthetic_slice(p1, 0.25, np.linspace(-1, 1, 25)),
                           synthetic_slice(p2, 1.0, np.linspace(-1, 1, 25))])
    q1, q2 = surface.slices[0].params, surface.slices[1].params
    k = np.linspace(-2.0, 2.0, 41)
    assert np.array_equal(surface.total_variance(k, 0.25), q1.total_variance(k))
    assert np.array_equal(surface.total_variance(k, 1.0), q2.total_variance(k))
    lam = (0.55 - 0.25) / 0.75
    assert np.allclose(surface.total_variance(k, 0.55), (1 - lam) * q1.total_variance(k) + lam * q2.total_variance(k),
                       rtol=1e-14, atol=0)
    assert np.allclose(surface.total_variance(k, 0.1), q1.total_variance(k) * 0.1 / 0.25, rtol=1e-14, atol=0)
    assert np.allclose(surface.total_variance(k, 2.0), q2.total_variance(k) * 2.0, rtol=1e-14, atol=0)
    strike, fwd = 120.0, 100.0
    assert surface.implied_vol(strike, 0.55, fwd) == pytest.approx(
        math.sqrt(float(surface.total_variance(math.log(1.2), 0.55)) / 0.55), rel=1e-14)
    # beyond the data the wings grow at most linearly with slope within Lee's bound 2
    far = np.array([-50.0, 50.0])
    assert np.all(surface.total_variance(far, 1.0) / np.abs(far) <= 2.0)


# ---------------------------------------------------------------------------------------------------------------
# Real Deribit chains
# ---------------------------------------------------------------------------------------------------------------

def _iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _black76_usd(F: float, K: float, t: float, vol: float, call: bool) -> float:
    s = vol * math.sqrt(t)
    d1 = math.log(F / K) / s + 0.5 * s
    ncdf = lambda x: 0.5 * math.erfc(-x / math.sqrt(2.0))  # noqa: E731
    c = F * ncdf(d1) - K * ncdf(d1 - s)
    return c if call else c - (F - K)


def recount_filters(path: Path, stale_after_s: float, cap: float) -> Counter:
    """Independent recount of the filter reasons with the csv module and a pure-Python Black-76 bisection."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    asof = max(_iso(r["snapshot_utc"]) for r in rows)
    out: Counter = Counter()
    for r in rows:
        F = float(r["underlying_price"])
        bid = float(r["bid"]) * F if r["bid"] and float(r["bid"]) > 0 else None
        ask = float(r["ask"]) * F if r["ask"] and float(r["ask"]) > 0 else None
        K, call = float(r["strike"]), r["kind"] == "C"
        t = (_iso(r["expiry_utc"]) - _iso(r["snapshot_utc"])) / (365 * 86400.0)
        if bid is None and ask is None:
            out["no_quote"] += 1
            continue
        if bid is not None and ask is not None and bid > ask:
            out["crossed"] += 1
            continue
        if bid is None:
            out["zero_or_missing_bid"] += 1
            continue
        if ask is None:
            out["one_sided"] += 1
            continue
        if asof - _iso(r["snapshot_utc"]) > stale_after_s:
            out["stale"] += 1
            continue
        mid = 0.5 * (bid + ask)
        intrinsic = max(F - K, 0.0) if call else max(K - F, 0.0)
        upper = F if call else K
        mid_iv = None
        if intrinsic < mid < upper:
            if _black76_usd(F, K, t, cap, call) <= mid:
                mid_iv = cap
            else:
                mid_iv = brentq(lambda v: _black76_usd(F, K, t, v, call) - mid, 1e-6, cap, xtol=1e-12)
        venue_cap = any(r[c] and float(r[c]) >= cap * 100.0 for c in ("bid_iv", "ask_iv"))
        if venue_cap or (mid_iv is not None and mid_iv >= cap):
            out["iv_cap"] += 1
        elif mid_iv is None or ask < intrinsic or bid > upper:
            out["outside_no_arb_bounds"] += 1
            out["detail_mid_below_intrinsic"] += int(mid < intrinsic)
        else:
            out["clean"] += 1
    return out


@pytest.fixture(scope="module")
def real_fits(shared_data):
    fits = {}
    for name in CHAINS:
        chain = load_deribit_csv(shared_data / "option_chains" / name).chain
        fits[name] = (chain, fit_surface(chain))
    return fits


@pytest.mark.parametrize("name", CHAINS)
@pytest.mark.parametrize("stale_after_s", [300.0, 60.0])
def test_filter_counts_match_an_independent_recount(shared_data, name, stale_after_s):
    path = shared_data / "option_chains" / name
    chain = load_deribit_csv(path).chain
    config = SurfaceConfig(stale_after_s=stale_after_s)
    result = filter_quotes(chain, config)
    report = result.report
    expected = recount_filters(path, stale_after_s, config.iv_cap)
    assert result.no_arb_detail["mid_iv_below_intrinsic"] == expected["detail_mid_below_intrinsic"]
    for reason in ("no_quote", "crossed", "zero_or_missing_bid", "one_sided", "stale", "iv_cap",
                   "outside_no_arb_bounds", "clean"):
        assert report[reason] == expected.get(reason, 0), reason
    assert report["total"] == len(chain)
    # plausibility against PROVENANCE: no row is crossed; the BTC files carry Deribit's 500 % cap
    assert report["crossed"] == 0
    if "BTC" in name and stale_after_s == 300.0:
        assert report["iv_cap"] > 20
    if stale_after_s == 60.0 and "BTC" in name:  # BTC snapshots span 2.5 minutes
        assert report["stale"] > 0


@pytest.mark.parametrize("name", CHAINS)
def test_real_chain_fit_quality_and_no_arbitrage(real_fits, name):
    chain, surface = real_fits[name]
    report = surface.fit_report
    assert len(surface.slices) >= 6
    assert report["arbitrage"]["butterfly_ok"] and report["arbitrage"]["calendar_ok"]
    assert min(report["arbitrage"]["interpolated_min_g"]) > 0.0  # reported, not enforced: holds on these chains
    assert report["filters"]["outlier"] <= 0.02 * len(chain)
    n_quotes = sum(s["n_quotes"] for s in report["slices"])
    assert n_quotes >= 0.35 * len(chain)
    for s in report["slices"]:
        assert s["weighted_rmse_vol_pts"] < 3.5, s  # stated bound: 3.5 vol points (vega/spread weighted)
        assert s["rmse_vol_pts"] < 5.0, s  # and 5 vol points unweighted (far wings have 10-20 point spreads)
    inside = sum(s["n_quotes"] * s["within_spread_frac"] for s in report["slices"]) / n_quotes
    assert inside > 0.9  # the model vol lies within the bid-ask IV band for > 90 % of the quotes
    # independent arbitrage checks on the whole surface: call prices convex in K and non-decreasing in t
    grid = np.linspace(-1.5, 1.5, 1201)
    ts = np.concatenate([[s.t * 0.5 for s in surface.slices[:1]],
                         np.sort(np.concatenate([surface.times, 0.5 * (surface.times[1:] + surface.times[:-1])]))])
    prices = np.stack([black_call_undiscounted(grid, surface.total_variance(grid, t)) for t in ts])
    assert np.all(np.diff(prices, axis=0) >= -1e-12)
    for sl in surface.slices:
        assert np.min(butterfly_density(grid, sl.params.total_variance(grid))) > -1e-9
    for t in 0.5 * (surface.times[1:] + surface.times[:-1]):  # between slices too (second computation of
        assert np.min(butterfly_density(grid, surface.total_variance(grid, t))) > -1e-9  # interpolated_min_g)
        assert butterfly_min_g(sl.params, check_grid([sl.params])) >= -1e-9


@pytest.mark.parametrize("name", CHAINS)
def test_fitted_vols_near_deribit_marks(real_fits, name):
    """Within each fitted expiry's quoted strike range the surface agrees with Deribit's mark IV (BTC files) or
    with the IV of Deribit's mark price (ETH file, which has no IVs)."""
    chain, surface = real_fits[name]
    ref = chain.mark_iv
    if not np.isfinite(ref).any():
        has = chain.mark > 0
        ref = np.where(has, implied_vol(np.where(has, chain.mark, 1.0), chain.forward, chain.strike,
                                        chain.quote_expiry_years, chain.is_call).vol, np.nan)
    ivs = quote_ivs(chain)
    slices, _ = build_slices(chain, filter_quotes(chain, SurfaceConfig(), ivs).clean, ivs)
    k = np.log(chain.strike / chain.forward)
    in_range = np.zeros(len(chain), dtype=bool)
    for q in slices:
        in_range |= (chain.expiry_ts == q.expiry_ts) & (k >= q.k.min()) & (k <= q.k.max())
    ok = in_range & np.isfinite(ref)
    assert ok.sum() > 200
    diff = np.abs(surface.implied_vol(chain.strike, chain.expiry_years, chain.forward) - ref)[ok] * 100.0
    assert np.median(diff) < 1.0  # vol points
    assert np.percentile(diff, 90) < 4.0
    assert diff.max() < 15.0


# ---------------------------------------------------------------------------------------------------------------
# Determinism and serialization
# ---------------------------------------------------------------------------------------------------------------

def test_hash_is_deterministic_and_round_trips(real_fits, shared_data):
    name = CHAINS[0]
    chain, surface = real_fits[name]
    again = fit_surface(load_deribit_csv(shared_data / "option_chains" / name).chain)
    assert again.hash() == surface.hash() and len(surface.hash()) == 32
    assert again.to_canonical() == surface.to_canonical()
    restored = VolSurface.from_canonical(surface.to_canonical())
    via_json = VolSurface.from_canonical(json.loads(canonical_json(surface.to_canonical())))
    k = np.linspace(-2.0, 2.0, 81)
    for t in (0.001, surface.times[0], 0.05, 0.2, surface.times[-1], 2.0):
        assert np.array_equal(restored.total_variance(k, t), surface.total_variance(k, t))
        assert np.array_equal(via_json.total_variance(k, t), surface.total_variance(k, t))
    assert restored.hash() == via_json.hash() == surface.hash()
    # one ulp in one parameter changes the hash
    d = surface.to_canonical()
    d["slices"][2]["rho"] = math.nextafter(d["slices"][2]["rho"], 1.0)
    assert VolSurface.from_canonical(d).hash() != surface.hash()


def test_hash_identical_in_a_fresh_process(real_fits, shared_data):
    """The ETH chain needs arbitrage repairs; the fresh process runs single-threaded BLAS while this one runs with
    the default (one thread per core): the fit must not depend on BLAS threading (an SLSQP repair did)."""
    name = CHAINS[2]
    _, surface = real_fits[name]
    code = ("import sys; from keeper.data.deribit import load_deribit_csv; from keeper.quant.surface import fit_surface; "
            "print(fit_surface(load_deribit_csv(sys.argv[1]).chain).hash().hex())")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONHASHSEED": "12345", "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code, str(shared_data / "option_chains" / name)],
                         capture_output=True, text=True, env=env, cwd=str(PROJECT_ROOT), timeout=120, check=True)
    assert out.stdout.strip() == surface.hash().hex()


def test_from_canonical_rejects_unknown_version(real_fits):
    d = real_fits[CHAINS[0]][1].to_canonical()
    d["version"] = 99
    with pytest.raises(ValueError, match="version"):
        VolSurface.from_canonical(d)


def test_active_set_qp_matches_brute_force_enumeration():
    """The repair's inner QP solver against exhaustive enumeration of active sets (convex QP: the optimum is the
    best feasible stationary point of some set of at most 3 active constraints)."""
    from itertools import combinations

    from keeper.quant.surface import _active_set_qp3

    rng = np.random.default_rng(5)
    for _ in range(40):
        A = rng.normal(size=(3, 3))
        G = A @ A.T + 0.1 * np.eye(3)
        h = rng.normal(size=3) * 3.0
        C = rng.normal(size=(10, 3))
        d = rng.uniform(0.1, 1.0, size=10)  # x = 0 is feasible
        x = np.array(_active_set_qp3(G.tolist(), h.tolist(), C, d, [0.0, 0.0, 0.0]))
        assert np.all(C @ x <= d + 1e-9)

        def f(v):
            return v @ G @ v - 2.0 * h @ v

        best = np.inf
        for size in range(4):
            for S in combinations(range(10), size):
                S = list(S)
                K = np.block([[2 * G, C[S].T], [C[S], np.zeros((size, size))]]) if size else 2 * G
                rhs = np.concatenate([2 * h, d[S]])
                try:
                    sol = np.linalg.solve(K, rhs)
                except np.linalg.LinAlgError:
                    continue
                v = sol[:3]
                if np.all(C @ v <= d + 1e-9):
                    best = min(best, f(v))
        assert f(x) <= best + 1e-9 * (1 + abs(best))

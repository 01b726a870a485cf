"""Benchmark: vectorized Black-76 Greeks and implied vols against public peers, in the same run.

Run from the repository root (either form)::

    python -m benchmarks.bench_pricing
    python benchmarks/bench_pricing.py [--repeats 15] [--sample 2000]

Ours is timed on the full batch (1,000,000 options for Greeks, 100,000 quotes for implied vols), best of
``--repeats`` runs because the machine is shared. vollib (py_vollib / lets_be_rational) and QuantLib are scalar
Python APIs: a random sample of ``--sample`` rows is timed (best of 3) and extrapolated linearly to the full batch;
the table says so. py_vollib_vectorized is tried in-process and its failure, if any, is reported.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

try:
    from keeper.quant.implied_vol import IVReason, implied_vol
    from keeper.quant.pricing import black76_greeks, bsm_greeks
except ImportError:  # run as a script from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from keeper.quant.implied_vol import IVReason, implied_vol
    from keeper.quant.pricing import black76_greeks, bsm_greeks

GREEKS_TARGET_S = 0.15
IV_TARGET_S = 0.10


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _book(n: int, seed: int = 7):
    """A realistic keeper batch: strikes within +-3 sd, expiries 1 day .. 2 years, vols 20 % .. 150 %."""
    rng = np.random.default_rng(seed)
    fwd = rng.uniform(1_500.0, 70_000.0, n)
    expiry = np.exp(rng.uniform(np.log(1.0 / 365.0), np.log(2.0), n))
    vol = rng.uniform(0.2, 1.5, n)
    strike = fwd * np.exp(rng.uniform(-3.0, 3.0, n) * vol * np.sqrt(expiry))
    is_call = rng.random(n) < 0.5
    disc = np.exp(-0.04 * expiry)
    return fwd, strike, expiry, vol, is_call, disc


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import scipy

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (
        f"{cpu}, {os.cpu_count()} logical cores, load avg {load[0]:.2f}; Python {platform.python_version()}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}"
    )


def _vollib_greeks_time(book, sample: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from vollib.black import black
        from vollib.black.greeks.analytical import delta, gamma, rho, theta, vega
    fwd, strike, expiry, vol, is_call, disc = (a[:sample] for a in book)
    rate = -np.log(disc) / expiry
    rows = [("c" if c else "p", float(f), float(k), float(t), float(r), float(v))
            for f, k, t, r, v, c in zip(fwd, strike, expiry, rate, vol, is_call)]

    def run():
        for a in rows:
            black(*a), delta(*a), gamma(*a), vega(*a), theta(*a), rho(*a)

    return _best_of(run, 3)


def _quantlib_greeks_time(book, sample: int) -> float:
    import QuantLib as ql

    fwd, strike, expiry, vol, is_call, disc = (a[:sample] for a in book)
    rows = [(ql.Option.Call if c else ql.Option.Put, float(k), float(f), float(v * np.sqrt(t)), float(d), float(t))
            for f, k, t, v, c, d in zip(fwd, strike, expiry, vol, is_call, disc)]

    def run():
        for kind, k, f, std, d, t in rows:
            bc = ql.BlackCalculator(ql.PlainVanillaPayoff(kind, k), f, std, d)
            bc.value(), bc.deltaForward(), bc.gammaForward(), bc.vega(t), bc.theta(f, t)
            bc.rho(t), bc.vanna(f, t), bc.volga(t)

    return _best_of(run, 3)


def _vollib_iv_time(prices, book, sample: int) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from vollib.black.implied_volatility import implied_volatility_of_undiscounted_option_price as lbr
    fwd, strike, expiry, vol, is_call, _ = (a[:sample] for a in book)
    rows = [(float(p), float(f), float(k), float(t), "c" if c else "p")
            for p, f, k, t, c in zip(prices[:sample], fwd, strike, expiry, is_call)]
    out = np.empty(len(rows))

    def run():
        for i, a in enumerate(rows):
            out[i] = lbr(*a)

    best = _best_of(run, 3)
    return best, float(np.nanmax(np.abs(out - vol)))


def _quantlib_iv_time(prices, book, sample: int) -> tuple[float, float, int]:
    import QuantLib as ql

    fwd, strike, expiry, vol, is_call, _ = (a[:sample] for a in book)
    rows = [(ql.Option.Call if c else ql.Option.Put, float(k), float(f), float(p))
            for p, f, k, c in zip(prices[:sample], fwd, strike, is_call)]
    out = np.full(len(rows), np.nan)

    def run():
        for i, (kind, k, f, p) in enumerate(rows):
            try:
                out[i] = ql.blackFormulaImpliedStdDev(kind, k, f, p, 1.0, 0.0, 0.5, 1e-12, 100)
            except RuntimeError:
                out[i] = np.nan

    best = _best_of(run, 3)
    failures = int(np.isnan(out).sum())
    return best, float(np.nanmax(np.abs(out / np.sqrt(expiry) - vol))), failures


def _py_vollib_vectorized_status() -> str:
    """Try py_vollib_vectorized 0.1.1 (numba); return 'runs' or the first line of its error."""
    try:
        import py_vollib_vectorized  # noqa: F401
        from py_vollib_vectorized import vectorized_implied_volatility
    except Exception as exc:  # ImportError (not installed, numba missing) or numba errors at import
        return f"import failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    try:
        vectorized_implied_volatility(
            np.array([10.0]), np.array([100.0]), np.array([100.0]), np.array([0.5]), 0.0, np.array(["c"]),
            model="black", return_as="numpy",
        )
    except Exception as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "Untyped" in ln or "Cannot" in ln or "recursion" in ln), lines[0] if lines else "")
        return f"call failed: {type(exc).__name__}: {detail.strip()}"
    return "runs"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-greeks", type=int, default=1_000_000)
    parser.add_argument("--n-iv", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=15, help="best of this many runs for the vectorized code")
    parser.add_argument("--sample", type=int, default=2000, help="rows timed for the scalar peers")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    book = _book(args.n_greeks)
    fwd, strike, expiry, vol, is_call, disc = book

    t_b76 = _best_of(lambda: black76_greeks(fwd, strike, expiry, vol, is_call, disc), args.repeats)
    rate = -np.log(disc) / expiry
    t_bsm = _best_of(lambda: bsm_greeks(fwd, strike, expiry, vol, is_call, rate, rate - 0.01), args.repeats)
    scale_g = args.n_greeks / args.sample
    t_vollib_g = _vollib_greeks_time(book, args.sample) * scale_g
    t_ql_g = _quantlib_greeks_time(book, args.sample) * scale_g

    iv_book = tuple(a[: args.n_iv] for a in _book(args.n_iv, seed=8))
    f_i, k_i, t_i, v_i, c_i, _ = iv_book
    prices = black76_greeks(f_i, k_i, t_i, v_i, c_i).price  # undiscounted
    res = implied_vol(prices, f_i, k_i, t_i, c_i)
    t_iv = _best_of(lambda: implied_vol(prices, f_i, k_i, t_i, c_i), args.repeats)
    ok = res.reason == IVReason.OK
    our_err = float(np.max(np.abs(res.vol[ok] - v_i[ok])))
    scale_i = args.n_iv / args.sample
    t_lbr_raw, lbr_err = _vollib_iv_time(prices, iv_book, args.sample)
    t_lbr = t_lbr_raw * scale_i
    t_ql_iv_raw, ql_err, ql_fail = _quantlib_iv_time(prices, iv_book, args.sample)
    t_ql_iv = t_ql_iv_raw * scale_i
    pvv = _py_vollib_vectorized_status()

    table = Table(title=f"Backstop pricing benchmark (ours: best of {args.repeats}; peers: {args.sample}-row sample, best of 3, extrapolated)")
    for col in ("task", "ours [s]", "target [s]", "peer", "peer [s]", "ours / peer"):
        table.add_column(col, justify="right" if "[s]" in col or "/" in col else "left")

    def row(task, ours, target, peer, peer_s):
        table.add_row(task, f"{ours:.4f}", f"{target:.2f}" if target else "-", peer, f"{peer_s:.3f}", f"{ours / peer_s:.5f}")

    n_g = f"{args.n_greeks:,}"
    row(f"Black-76 price + 7 Greeks, {n_g}", t_b76, GREEKS_TARGET_S, "vollib black: price+5 greeks (extrap.)", t_vollib_g)
    row(f"Black-76 price + 7 Greeks, {n_g}", t_b76, GREEKS_TARGET_S, "QuantLib BlackCalculator, 8 (extrap.)", t_ql_g)
    row(f"BSM price + 7 Greeks, {n_g}", t_bsm, GREEKS_TARGET_S, "vollib black: price+5 greeks (extrap.)", t_vollib_g)
    n_i = f"{args.n_iv:,}"
    row(f"implied vol, {n_i} quotes", t_iv, IV_TARGET_S, "vollib lets_be_rational (extrap.)", t_lbr)
    row(f"implied vol, {n_i} quotes", t_iv, IV_TARGET_S, "QuantLib blackFormulaImpliedStdDev (extrap.)", t_ql_iv)
    console.print(table)
    console.print(f"implied vol max |error| on the batch: ours {our_err:.2e} ({int(ok.sum()):,} of {args.n_iv:,} solved), "
                  f"lets_be_rational {lbr_err:.2e} (sample), QuantLib at accuracy 1e-12 {ql_err:.2e} "
                  f"({ql_fail} failures in the sample)")
    console.print(f"py_vollib_vectorized: {pvv}")
    console.print(f"machine: {_machine()}")
    console.print(f"command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    met = t_b76 <= GREEKS_TARGET_S and t_bsm <= GREEKS_TARGET_S and t_iv <= IV_TARGET_S
    console.print("targets met" if met else "[bold red]targets missed[/]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

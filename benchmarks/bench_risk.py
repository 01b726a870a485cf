"""Benchmark: full portfolio risk run (keeper.quant.risk.engine) against a naive numpy version.

Run from the project root:  python benchmarks/bench_risk.py [--repeats N] [--positions P]

Book: ``keeper.quant.risk.synthetic.synthetic_book(seed=1, 10,000 accounts, 200 series, P positions per account on
average (Poisson, default 8), 2 underlyings)`` plus stablecoin/BTC/ETH collateral. Scenarios: 10,000 Merton
jump-diffusion Monte Carlo draws (seeded from a block hash) plus the SPAN-like grid (48 scenarios).

Timed (each in its own subprocess so that its peak RSS is its own; best of N repeats, the machine is shared):

* ``fast``: ``monte_carlo_scenarios`` + ``grid_scenarios`` + ``compute_account_risk`` (revalue 200 series x 10,048
  scenarios once, sparse CSR (accounts x series) @ dense (series x scenarios) in chunks of 256 accounts into one
  reused buffer, in-place partition for the 251 worst P&Ls, margins, Greeks, inputs/scenario hashes).
  Target: <= 1.0 s and <= 2 GB peak RSS.
* ``fast-mc``: the Monte Carlo part alone (revaluation + aggregation + VaR/ES), for a like-for-like ratio.
* ``naive-mc``: the naive numpy Monte Carlo part: reprice the same (series x scenario) matrix, densify the
  positions, BLAS product in chunks of 1,000 accounts, ``np.quantile`` + full ``np.sort`` for VaR/ES.

The naive and fast VaR/ES are compared (max relative difference printed) so the speed-up is not bought with
wrong numbers.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keeper.quant.risk.engine import (  # noqa: E402
    compute_account_risk,
    exposure_matrix,
    model_values,
    revalue,
    tail_stats,
)
from keeper.quant.risk.scenarios import grid_scenarios, monte_carlo_scenarios, seed_from_block_hash  # noqa: E402
from keeper.quant.risk.synthetic import synthetic_book  # noqa: E402

N_ACCOUNTS, N_SERIES, N_SCENARIOS = 10_000, 200, 10_000
BLOCK_HASH = "0x" + "9e" * 32


SOURCES = ("keeper/quant/pricing.py", "keeper/quant/risk/engine.py", "keeper/quant/risk/scenarios.py", "keeper/codec/fast_json.py")


def _sources_digest() -> str:
    """Digest of the engine's source files, to detect a working tree edited while the benchmark runs."""
    import hashlib

    return hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in SOURCES)).hexdigest()[:16]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def naive_mc(inputs, scen):
    """Straightforward numpy: dense positions, BLAS product, np.quantile and a full sort per account."""
    dv = revalue(inputs, scen)
    dense = exposure_matrix(inputs).toarray()
    var, es = np.empty(inputs.n_accounts), np.empty(inputs.n_accounts)
    m = N_SCENARIOS - int(np.floor(0.975 * N_SCENARIOS + 1e-9))
    for a in range(0, inputs.n_accounts, 1000):
        losses = -(dense[a:a + 1000] @ dv)
        var[a:a + 1000] = np.quantile(losses, 0.99, axis=1, method="inverted_cdf")
        es[a:a + 1000] = np.sort(losses, axis=1)[:, -m:].mean(axis=1)
    return var, es


def fast_mc(inputs, scen):
    """The engine's Monte Carlo part alone."""
    stats = tail_stats(exposure_matrix(inputs), revalue(inputs, scen, None, model_values(inputs)), 0.99, 0.975)
    return stats.var, stats.es


def run_mode(mode: str, repeats: int, positions: float) -> dict:
    digest = _sources_digest()
    inputs = synthetic_book(1, N_ACCOUNTS, N_SERIES, positions_per_account=positions)
    rss_before = _peak_rss_mb()
    seed = seed_from_block_hash(BLOCK_HASH)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        if mode == "fast":
            mc = monte_carlo_scenarios(seed, N_SCENARIOS, inputs.n_underlyings)
            grid = grid_scenarios([0.15, 0.2])
            result = compute_account_risk(inputs, mc, grid)
            out = (result.var, result.es)
        else:
            mc = monte_carlo_scenarios(seed, N_SCENARIOS, inputs.n_underlyings)
            out = fast_mc(inputs, mc) if mode == "fast-mc" else naive_mc(inputs, mc)
        times.append(time.perf_counter() - t0)
    np.save(f"/tmp/bench_risk_{mode}.npy", np.vstack(out))
    return {"mode": mode, "best_s": min(times), "median_s": float(np.median(times)), "repeats": repeats,
            "peak_rss_mb": _peak_rss_mb(), "rss_after_book_mb": rss_before, "nnz": int(inputs.positions.nnz),
            "sources": digest if digest == _sources_digest() else "changed-during-run"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--positions", type=float, default=8.0, help="mean positions per account")
    parser.add_argument("--mode", choices=["fast", "fast-mc", "naive-mc"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.repeats, args.positions)))
        return
    rows = {}
    for mode in ("fast", "fast-mc", "naive-mc"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--repeats", str(args.repeats),
                              "--positions", str(args.positions)], capture_output=True, text=True, check=True)
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    fast_out = np.load("/tmp/bench_risk_fast-mc.npy")
    naive_out = np.load("/tmp/bench_risk_naive-mc.npy")
    full_out = np.load("/tmp/bench_risk_fast.npy")
    rel = np.max(np.abs(fast_out - naive_out) / np.maximum(np.abs(naive_out), 1.0))
    print(f"book: {N_ACCOUNTS} accounts x {N_SERIES} series, {rows['fast']['nnz']} positions "
          f"(mean {args.positions}/account) + collateral; {N_SCENARIOS} MC scenarios + 48 grid; "
          f"best of {args.repeats}")
    for mode, label in (("fast", "full risk run (MC + grid + margins + hashes)"),
                        ("fast-mc", "MC part, engine"), ("naive-mc", "MC part, naive numpy")):
        r = rows[mode]
        print(f"  {label:46s} best {r['best_s']:.3f} s  median {r['median_s']:.3f} s  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB (book built: {r['rss_after_book_mb']:.0f} MB)")
    print(f"  speed-up MC part naive/engine: {rows['naive-mc']['best_s'] / rows['fast-mc']['best_s']:.2f}x")
    print(f"  VaR/ES engine vs naive: max relative difference {rel:.2e}; full run equals MC part: "
          f"{bool(np.array_equal(full_out, fast_out))}")
    sources = {r["sources"] for r in rows.values()}
    if len(sources) != 1 or "changed-during-run" in sources:
        print(f"  WARNING: engine sources changed between runs ({sorted(sources)}): figures are not comparable")
    ok = rows["fast"]["best_s"] <= 1.0 and rows["fast"]["peak_rss_mb"] <= 2048
    print(f"  target (<= 1.0 s, <= 2 GB): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()

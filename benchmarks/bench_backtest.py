"""Benchmark: ``backstop backtest`` replay speed, paths x policies x accounts, and the cadence check.

Run from the project root:
    python benchmarks/bench_backtest.py [--accounts 1000] [--workers 2] [--path NAME ...] [--out FILE]
    python benchmarks/bench_backtest.py --cadence-check ETHUSD_2022-06-13_15m --accounts 200

* main mode: replays every path (default: synthetic + the 10 crash paths) under the three policies, ``--workers``
  paths at a time, and prints per path the bars, margin runs, surface fits, risk runs and seconds, then the total
  against the target (all 11 paths x 1,000 accounts in <= 15 minutes on the 2-core machine; every policy of
  ``keeper.backtest.engine.POLICIES``: the chosen design and today's with each liquidator model, no bidder, and
  the two market baselines, 7 in all, where the issue counts 3).
  Baseline measured in the same run: the first ``--baseline-bars`` bars of the first path with the full margin run
  and surface fit at *every* bar (cadence = one bar), against the documented cadence on the same bars; the ratio is
  printed with ``uptime``'s load averages (the machine is shared).
* ``--cadence-check PATH``: the outcome table of PATH at the documented 15-minute cadence and at a finer one
  (``--fine-minutes``, default 5), side by side, with the largest relative difference per figure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keeper.backtest.engine import POLICIES, BacktestConfig  # noqa: E402
from keeper.backtest.io import crash_path_names, load_path, shared_dir_default  # noqa: E402
from keeper.backtest.runner import TABLE, run_path  # noqa: E402


def _load():
    return os.getloadavg()


def _one(args):
    name, accounts, cfg, *rest = args
    policies = rest[0] if rest else POLICIES
    p = load_path(name, shared_dir_default())
    t0, c0 = time.perf_counter(), time.process_time()
    r = run_path(p, accounts, cfg, policies=policies)
    r["wall"] = time.perf_counter() - t0
    r["cpu"] = time.process_time() - c0  # this process's CPU seconds: the load-independent cost of the path
    for pol in r["policies"].values():
        for k in ("fund_series", "liq_series", "fill_list"):
            pol.pop(k, None)
    return r


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--path", action="append", default=None)
    ap.add_argument("--baseline-bars", type=int, default=96)
    ap.add_argument("--cadence-check", default=None)
    ap.add_argument("--fine-minutes", type=float, default=5.0)
    ap.add_argument("--out", default=None, help="write the JSON result here")
    ap.add_argument("--baseline-only", action="store_true", help="only the every-bar vs documented cadence ratio")
    ap.add_argument("--policy", action="append", default=None,
                    help="policy to replay, repeatable (default: all 7; the issue's benchmark: backstop:hedging, "
                         "mark_to_market, static)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the every-bar vs documented cadence ratio")
    a = ap.parse_args()
    cfg = BacktestConfig()
    print(f"load average at start: {_load()}")
    if a.cadence_check:
        res = {}
        for minutes in (15.0, a.fine_minutes):
            res[minutes] = _one((a.cadence_check, a.accounts, replace(cfg, cadence_s=minutes * 60)))
            print(f"cadence {minutes:g} min: {res[minutes]['wall']:.1f}s, margin runs {res[minutes]['margin_runs']}, "
                  f"surface fits {res[minutes]['surface_fits']}")
        print(f"{'policy':16s} {'figure':32s} {'15 min':>14s} {f'{a.fine_minutes:g} min':>14s} {'rel diff':>9s}")
        out = {"path": a.cadence_check, "accounts": a.accounts, "rows": []}
        for pol in res[15.0]["policies"]:
            for key in TABLE:
                x, y = res[15.0]["policies"][pol][key], res[a.fine_minutes]["policies"][pol][key]
                x = 0.0 if x is None else float(x)
                y = 0.0 if y is None else float(y)
                rel = abs(x - y) / max(abs(x), abs(y), 1e-9)
                out["rows"].append([pol, key, x, y, rel])
                print(f"{pol:16s} {key:32s} {x:14,.3f} {y:14,.3f} {rel:9.3%}")
        if a.out:
            Path(a.out).write_text(json.dumps(out, indent=1))
        return 0

    names = a.path or (["synthetic"] + crash_path_names(shared_dir_default()))
    policies = tuple(a.policy) if a.policy else POLICIES
    t_every = t_doc = None
    if not a.no_baseline:
        t_every, t_doc = _baseline(a, cfg, names)
    if a.baseline_only:
        return 0
    t0 = time.perf_counter()
    results = []
    with ProcessPoolExecutor(max_workers=a.workers) as ex:
        futs = [ex.submit(_one, (n, a.accounts, cfg, policies)) for n in names]
        for f in as_completed(futs):
            r = f.result()
            results.append(r)
            print(f"{r['path']:26s} bars {r['bars']:6d} margin runs {r['margin_runs']:4d} fits {r['surface_fits']:4d} "
                  f"risk runs {r['risk_runs']:5d} {r['wall']:7.1f}s cpu {r['cpu']:7.1f}s load {_load()[0]:.1f}",
                  flush=True)
            if a.out:  # written as paths complete, so a long run leaves usable partial results
                Path(a.out).write_text(json.dumps({"accounts": a.accounts, "workers": a.workers, "partial": True,
                                                   "policies": policies,
                                                   "baseline": {"every_bar_s": t_every, "documented_s": t_doc},
                                                   "paths": results}, indent=1, default=float))
    total = time.perf_counter() - t0
    cpu = sum(r["cpu"] for r in results)
    print(f"total: {len(names)} paths x {len(policies)} policies x {a.accounts} accounts in {total:.1f}s with "
          f"{a.workers} workers (target 900 s: {total / 900:.2f}x of it); CPU {cpu:.1f}s (on {a.workers} free cores "
          f"at least {cpu / a.workers:.0f}s); load average at end: {_load()}")
    if a.out:
        Path(a.out).write_text(json.dumps({"accounts": a.accounts, "workers": a.workers, "total_s": total,
                                           "cpu_s": cpu, "policies": policies,
                                           "baseline": {"every_bar_s": t_every, "documented_s": t_doc},
                                           "load_end": _load(), "paths": results}, indent=1, default=float))
    return 0


def _baseline(a, cfg, names):
    # baseline in the same run: margin + refit at every bar vs the documented cadence, first bars of the first path
    first = load_path(names[0], shared_dir_default())
    short = replace(first, times=first.times[:a.baseline_bars], close=first.close[:a.baseline_bars])
    run_path(replace(first, times=first.times[:8], close=first.close[:8]), 20, cfg)  # warm-up (imports, caches)
    t0 = time.perf_counter()
    r_doc = run_path(short, a.accounts, cfg)
    t_doc = time.perf_counter() - t0
    t0 = time.perf_counter()
    r_every = run_path(short, a.accounts, replace(cfg, cadence_s=min(first.bar_seconds, cfg.cadence_s)))
    t_every = time.perf_counter() - t0
    print(f"baseline ({names[0]}, first {a.baseline_bars} bars, {a.accounts} accounts): margin every bar "
          f"{t_every:.1f}s ({r_every['margin_runs']} margin runs, {r_every['risk_runs']} risk runs), documented "
          f"cadence {t_doc:.1f}s ({r_doc['margin_runs']} margin runs, {r_doc['risk_runs']} risk runs), "
          f"ratio {t_every / t_doc:.2f}x")
    return t_every, t_doc


if __name__ == "__main__":
    sys.exit(main())

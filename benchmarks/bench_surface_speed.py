"""Benchmark: the default (robust) ``fit_surface`` of this tree against an earlier commit's, same run, same chains.

Run from the project root:
    python benchmarks/bench_surface_speed.py [--before a07e2f7] [--repeats 3]

Chains: the keeper benchmark's two simulated chains (``benchmarks/bench_keeper.py``: WETH and WBTC, round 0) and
the three real Deribit chains in ``shared/data/option_chains`` (skipped, with a note, where absent). For each, the
cold fit and the fit with a prior (the cold fit, 12 s older: the keeper's running case). ``--before`` is checked
out with ``git worktree add --detach`` (removed afterwards); each repeat runs one fresh process of each tree, in
alternating order, and each figure is the best over the repeats of the process CPU time (``time.process_time``:
on the shared machine wall time mostly measures the other sessions) and of the wall time. The surface hashes of
both trees are printed: the speed-up is only claimed where they are equal.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys, time
from dataclasses import replace
from pathlib import Path
sys.path.insert(0, ".")
from benchmarks.bench_keeper import UNDERLYINGS
from keeper.data.sources import BlockRef, SimulatedMarket
from keeper.ops.config import parse_config
from keeper.quant.surface import fit_surface

chains = []
cfg = parse_config({"market": {"simulated": {"seed": 3, "jump_intensity": 0.0}}})
for label, _, spot, seed in UNDERLYINGS:
    sim = SimulatedMarket(cfg.market.simulated.model_copy(update={"seed": seed, "spot0": spot}))
    chains.append((f"simulated {label} (bench_keeper)", sim.chain(BlockRef(1000, "0x" + f"{7:064x}", 1_700_000_000), spot)))
data = Path(sys.argv[1])
if data.is_dir():
    from keeper.data.deribit import load_deribit_csv
    for f in sorted(data.glob("deribit_*.csv")):
        chains.append((f.stem, load_deribit_csv(f).chain))
out = {}
for name, chain in chains:
    c0, w0 = time.process_time(), time.perf_counter()
    cold = fit_surface(chain)
    c1, w1 = time.process_time(), time.perf_counter()
    warm = fit_surface(chain, prior=replace(cold, asof=cold.asof - 12.0))
    c2, w2 = time.process_time(), time.perf_counter()
    out[name] = {"cpu": [c1 - c0, c2 - c1], "wall": [w1 - w0, w2 - w1],
                 "hash": [cold.hash().hex(), warm.hash().hex()]}
print(json.dumps(out))
'''


def run_tree(tree: Path, data: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(data)], cwd=tree, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"fit failed in {tree}:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="a07e2f7", help="the commit to compare with (default: before the fast path)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=os.environ.get("BACKSTOP_SHARED_DATA", "/work/shared/data"))
    args = ap.parse_args()
    data = Path(args.data) / "option_chains"
    if not data.is_dir():
        print(f"note: {data} absent: the simulated chains only")
    tmp = Path(tempfile.mkdtemp(prefix="surf-before-"))
    tree = tmp / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.before], cwd=ROOT, check=True,
                   capture_output=True)
    load0 = os.getloadavg()
    best: dict[str, dict[str, list[float]]] = {"before": {}, "this": {}}
    hashes: dict[str, dict[str, list[str]]] = {"before": {}, "this": {}}
    try:
        for r in range(args.repeats):
            order = [("before", tree), ("this", ROOT)]
            for tag, path in (order if r % 2 == 0 else order[::-1]):
                for name, v in run_tree(path, data).items():
                    b = best[tag].setdefault(name, [float("inf")] * 4)
                    for i, x in enumerate(v["cpu"] + v["wall"]):
                        b[i] = min(b[i], x)
                    hashes[tag][name] = v["hash"]
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()
    print(f"fit_surface, {args.before} vs this tree, best of {args.repeats} fresh processes each (alternating); "
          f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, after {load1[0]:.2f} {load1[1]:.2f} "
          f"{load1[2]:.2f}")
    print(f"{'chain':36s} {'cold: before':>12s} {'this':>7s} {'x':>5s}   {'prior: before':>13s} {'this':>7s} {'x':>5s}"
          f"   {'wall x cold/prior':>17s}  same hashes")
    for name, b in best["before"].items():
        t = best["this"][name]
        same = hashes["before"][name] == hashes["this"][name]
        print(f"{name:36s} {b[0]:11.3f}s {t[0]:6.3f}s {b[0] / t[0]:5.2f}   {b[1]:12.3f}s {t[1]:6.3f}s {b[1] / t[1]:5.2f}"
              f"   {b[2] / t[2]:8.2f} {b[3] / t[3]:8.2f}  {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

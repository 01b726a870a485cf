"""Old engine against the current one on a small case: the same figures (with the old breach rules) and the CPU cost.

    # the previous engine in a worktree, then the current one; then compare
    git worktree add /tmp/bt_old f4d480d
    PYTHONPATH=/tmp/bt_old python benchmarks/bench_backtest_same.py run /tmp/same_old.json
    python benchmarks/bench_backtest_same.py run /tmp/same_new.json
    python benchmarks/bench_backtest_same.py compare /tmp/same_old.json /tmp/same_new.json

``run`` replays the first 240 bars of the synthetic crash, 150 accounts, 5 policies, with ``fresh_breach=False`` and
``margin_move=None`` where the engine has them (the rules of the previous engine), and writes the result and the
process's CPU seconds. ``compare`` checks every figure and every fill field (the "healthy" yardstick aside, which
changed by design) and prints the CPU ratio. Imports ``keeper`` from ``PYTHONPATH`` first, so the same file runs the
old tree.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

POLICIES = ("backstop:hedging", "backstop:none", "today:conservative", "mark_to_market", "static")
YARDSTICK = {"healthy", "fair_equity", "fair_mm", "keeper_equity", "keeper_mm"}


def run(out: str) -> None:
    from keeper.backtest import engine as E
    from keeper.backtest import runner
    from keeper.backtest.io import load_path, shared_dir_default
    from keeper.backtest.market import PricePath

    p = load_path("synthetic", shared_dir_default())
    p = PricePath(p.name, p.underlying, p.times[:240], p.close[:240], p.bar_seconds)
    fields = E.BacktestConfig.__dataclass_fields__
    cfg = E.BacktestConfig(**({"fresh_breach": False, "margin_move": None} if "fresh_breach" in fields else {}))
    t = time.process_time()
    r = runner.run_path(p, 150, cfg, policies=POLICIES)
    r["cpu"] = time.process_time() - t
    r["engine"] = E.__file__
    Path(out).write_text(json.dumps(r, default=float))
    print(f"{E.__file__}: {r['cpu']:.1f} CPU-s")


def compare(old: str, new: str) -> int:
    a, b = json.loads(Path(old).read_text()), json.loads(Path(new).read_text())
    worst, n, bad = 0.0, 0, []
    for p in POLICIES:
        pa, pb = a["policies"][p], b["policies"][p]
        for k in pa:
            if k not in ("fill_list", "healthy_liquidated") and pa[k] != pb[k]:
                bad.append((p, k))
        if len(pa["fill_list"]) != len(pb["fill_list"]):
            bad.append((p, "fills"))
            continue
        for x, y in zip(pa["fill_list"], pb["fill_list"]):
            for k in x:
                if k in YARDSTICK:
                    continue
                n += 1
                if x[k] != y[k]:
                    if isinstance(x[k], float):
                        worst = max(worst, abs(x[k] - y[k]) / max(abs(x[k]), 1e-9))
                    else:
                        bad.append((p, k))
    print(f"{n} fill fields compared, largest relative difference {worst:.3g}, other differences {bad[:5]}")
    print(f"CPU: {a['cpu']:.1f} s ({a.get('engine', old)}) vs {b['cpu']:.1f} s ({b.get('engine', new)}): {a['cpu'] / b['cpu']:.2f}x")
    return 0 if not bad and worst <= 1e-9 else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)

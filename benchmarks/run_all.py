"""Run every Python benchmark in turn (`make bench`), each in its own process so that one's memory and warm
caches do not colour the next. Gas figures come from `brownie run scripts/gas_report.py` (`make gas`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = ("bench_pricing.py", "bench_surface.py", "bench_risk.py", "bench_keeper.py")


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        if subprocess.call([sys.executable, str(here / name)], cwd=here.parent) != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

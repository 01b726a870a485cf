"""Run the whole test suite as parallel jobs: the Anvil suite in shards, the Ganache subset and slither.

``make test`` calls this after set-up. The machines have two cores and much of a real-chain test is waiting for a
chain or a keeper process, so two jobs at a time finish the suite in a little over half the serial time.

* The contracts are compiled once first (``brownie compile``), and a brownie job starts only once the one before
  it has loaded the project (:func:`wait_until_loaded`), so no two jobs race on ``build/``.
* Each Anvil shard is one ``brownie test <files>`` process with its own chain on its own free port
  (``BACKSTOP_CHAIN_PORT=free``, scripts/toolchain). Test files are dealt to shards longest first by the per-file
  times in ``tests/durations.json`` (a file not listed there counts ``DEFAULT_FILE_SECONDS``); a whole file always
  stays in one shard, so module fixtures are built once.
* The Ganache subset (``-m ganache --network ganache-cli``) and ``scripts/slither_check.py`` are two more jobs.
* At most ``--jobs`` run at once (default 2, one per core). Each job's output goes to ``build/test-logs/<job>.log``
  and is printed whole when the job ends, with its time. The exit status is non-zero when any job failed; the
  summary names them.
* ``--record`` rewrites ``tests/durations.json`` from the JUnit reports of the Anvil shards of this run.

Extra arguments after ``--`` go to every ``brownie test`` (``make test PYTEST_ARGS=...``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DURATIONS = ROOT / "tests" / "durations.json"
LOGS = ROOT / "build" / "test-logs"
DEFAULT_FILE_SECONDS = 8.0
GANACHE_SECONDS = 350.0  # the Ganache subset and slither as measured on a fresh clone (README)
SLITHER_SECONDS = 70.0
LOAD_TIMEOUT_S = 300.0


@dataclass
class Job:
    name: str
    argv: list[str]
    weight: float
    log: Path = field(init=False)
    proc: subprocess.Popen | None = None
    started: float = 0.0
    seconds: float = 0.0
    status: int | None = None

    def __post_init__(self) -> None:
        self.log = LOGS / f"{self.name}.log"


def test_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py"))


def file_weights(files: list[str]) -> dict[str, float]:
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    return {f: float(known.get(f, DEFAULT_FILE_SECONDS)) for f in files}


def deal(weights: dict[str, float], shards: int, after_last: float = 0.0) -> list[list[str]]:
    """Longest-processing-time-first: each file to the shard with the least work so far (ties by order).
    ``after_last``: seconds of other jobs that will run in the last shard's slot once it ends (the Ganache subset and
    slither), so that both slots end together."""
    bins: list[list[str]] = [[] for _ in range(shards)]
    loads = [0.0] * shards
    loads[-1] = after_last
    for f in sorted(weights, key=lambda f: (-weights[f], f)):
        i = min(range(shards), key=lambda k: (loads[k], k))
        bins[i].append(f)
        loads[i] += weights[f]
    return [sorted(b) for b in bins if b]


def record(shards: int) -> None:
    """Per-file seconds (setup + call + teardown) from the shards' JUnit reports, merged into tests/durations.json."""
    times: dict[str, float] = {}
    for i in range(shards):
        report = LOGS / f"anvil-{i + 1}.xml"
        if not report.exists():
            continue
        for case in ET.parse(report).getroot().iter("testcase"):
            f = case.get("file") or (case.get("classname", "").replace(".", "/") + ".py")
            if not f.startswith("tests/"):
                f = "tests/" + f
            times[f] = times.get(f, 0.0) + float(case.get("time", 0.0))
    if times:
        known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
        known.update({f: round(s, 1) for f, s in times.items()})
        live = set(test_files())
        DURATIONS.write_text(json.dumps({f: known[f] for f in sorted(known) if f in live}, indent=1) + "\n")
        print(f"[tests] recorded {len(times)} file times in {DURATIONS.relative_to(ROOT)}", flush=True)


def start(job: Job) -> None:
    job.started = time.monotonic()
    out = job.log.open("w")
    job.proc = subprocess.Popen(job.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    out.close()
    print(f"[tests] started {job.name}: {' '.join(job.argv[:3])} ... ({job.weight:.0f} s expected)", flush=True)
    if job.argv[0] == "brownie":
        wait_until_loaded(job)


def wait_until_loaded(job: Job, timeout: float = LOAD_TIMEOUT_S) -> None:
    """Return once brownie has loaded the project (it prints ``Launching`` as it starts the chain), or the job
    ended. Loading deletes build files of contracts outside the project's sources (the OpenZeppelin ones a fresh
    compile writes), so a second brownie starting meanwhile can list a file the first then deletes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and job.proc.poll() is None:
        if "Launching" in job.log.read_text(errors="replace"):
            return
        time.sleep(0.5)


def finish(job: Job) -> None:
    job.seconds = time.monotonic() - job.started
    sys.stdout.write(f"\n{'=' * 30} {job.name} {'=' * 30}\n")
    sys.stdout.write(job.log.read_text(errors="replace"))
    verdict = "passed" if job.status == 0 else f"FAILED (exit {job.status})"
    print(f"[tests] {job.name} {verdict} in {job.seconds:.0f} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=2, help="Anvil shards (default 2)")
    ap.add_argument("--jobs", type=int, default=2, help="jobs running at once (default 2)")
    ap.add_argument("--record", action="store_true", help="rewrite tests/durations.json from this run")
    ap.add_argument("--only", metavar="TEXT", help="only the test files whose path contains TEXT (Anvil shards)")
    ap.add_argument("--no-ganache", action="store_true")
    ap.add_argument("--no-slither", action="store_true")
    ap.add_argument("pytest_args", nargs="*", help="passed to every brownie test (after --)")
    a = ap.parse_args()
    if a.shards < 1 or a.jobs < 1:
        print("run_tests: --shards and --jobs must be at least 1", file=sys.stderr)
        return 2
    LOGS.mkdir(parents=True, exist_ok=True)

    compiled = subprocess.run(["brownie", "compile"], cwd=ROOT, capture_output=True, text=True)
    if compiled.returncode != 0:
        sys.stdout.write(compiled.stdout + compiled.stderr)
        print("[tests] brownie compile failed", flush=True)
        return 1

    files = [f for f in test_files() if not a.only or a.only in f]
    if not files:
        print(f"run_tests: no test file matches {a.only!r}", file=sys.stderr)
        return 2
    weights = file_weights(files)
    extras = []
    if not a.no_ganache:
        extras.append(Job("ganache", ["brownie", "test", "-m", "ganache", "--network", "ganache-cli",
                                      *a.pytest_args], GANACHE_SECONDS))
    if not a.no_slither:
        extras.append(Job("slither", [sys.executable, "scripts/slither_check.py"], SLITHER_SECONDS))
    after = sum(j.weight for j in extras) if a.jobs <= a.shards else 0.0
    jobs = [
        Job(f"anvil-{i + 1}", ["brownie", "test", *shard, f"--junitxml={LOGS / f'anvil-{i + 1}.xml'}", *a.pytest_args],
            sum(weights[f] for f in shard))
        for i, shard in enumerate(deal(weights, a.shards, after))
    ] + extras

    t0 = time.monotonic()
    waiting = list(jobs)  # the shards first (the extras fill the slot of the shorter one)
    running: list[Job] = []
    while waiting or running:
        while waiting and len(running) < a.jobs:
            running.append(waiting.pop(0))
            start(running[-1])
        time.sleep(1.0)
        for job in list(running):
            status = job.proc.poll()
            if status is not None:
                job.status = status
                running.remove(job)
                finish(job)

    if a.record:
        record(a.shards)
    failed = [j.name for j in jobs if j.status != 0]
    summary = ", ".join(f"{j.name} {j.seconds:.0f} s" for j in jobs)
    print(f"[tests] {len(jobs) - len(failed)} of {len(jobs)} jobs passed in {time.monotonic() - t0:.0f} s "
          f"({summary}){'; failed: ' + ', '.join(failed) if failed else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

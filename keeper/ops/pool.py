"""The risk run's workers: :class:`RiskPool` runs blocks of accounts on threads (``risk.workers`` in the keeper's
configuration, docs/keeper.md). keeper/quant and keeper/attest own no threads or processes: they take the pool as a
:class:`keeper.quant.risk.engine.AccountMap` and split the accounts themselves.

Threads, not processes: the work of a block is scipy's CSR product and numpy's partition and sort, which release
the GIL (measured in benchmarks/bench_keeper.py), so two threads use two cores without copying the book or the
scenario matrices into another process. The worker count is not part of the inputs document and changes no bit of
the leaves (tests/attest/test_workers_identical.py).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence


class RiskPool:
    """``workers`` threads for the blocks of one risk run (1: everything runs in the caller's thread).

    Usable as a context manager; :meth:`close` stops the threads. One pool per keeper, shared by its cycles."""

    def __init__(self, workers: int = 1) -> None:
        if int(workers) < 1:
            raise ValueError(f"risk workers must be >= 1, got {workers!r}")
        self.workers = int(workers)
        self._executor = (ThreadPoolExecutor(self.workers, thread_name_prefix="risk-block")
                          if self.workers > 1 else None)

    def map(self, fn: Callable, items: Sequence) -> Iterable:
        """``fn`` of each item, in order (the first item in this thread, the rest on the pool's threads)."""
        if self._executor is None or len(items) <= 1:
            return [fn(x) for x in items]
        futures = [self._executor.submit(fn, x) for x in items[1:]]
        first = fn(items[0])
        return [first] + [f.result() for f in futures]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __enter__(self) -> "RiskPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Prometheus metrics of one keeper, on its own registry (no module-level state).

Names (all prefixed ``backstop_keeper_``): ``cycle_seconds{stage}`` histogram, ``accounts``, ``breaches``,
``near_margin``, ``last_block``, ``signatures_held``, ``peers_up`` gauges, ``marks{asset, branch}`` (series
marked on the market or the model side of the hybrid mark in the last document), ``skipped_inputs_total{reason}``,
``submissions_total{outcome}``, ``rpc_errors_total``, ``reorgs_total``, ``disagreements_total`` counters.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Optional

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class KeeperMetrics:
    """The keeper's metrics; pass ``registry`` to share one, else a private registry is made."""

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = registry or CollectorRegistry()
        p = "backstop_keeper_"
        r = self.registry
        self.cycle_seconds = Histogram(p + "cycle_seconds", "Time per cycle stage", ["stage"], registry=r,
                                       buckets=_STAGE_BUCKETS)
        self.accounts = Gauge(p + "accounts", "Accounts priced in the last cycle", registry=r)
        self.breaches = Gauge(p + "breaches", "Accounts below maintenance margin in the last cycle", registry=r)
        self.near_margin = Gauge(p + "near_margin", "Accounts near maintenance margin", registry=r)
        self.last_block = Gauge(p + "last_block", "Latest block the keeper processed", registry=r)
        self.signatures_held = Gauge(p + "signatures_held", "Signatures held over the latest root", registry=r)
        self.peers_up = Gauge(p + "peers_up", "Peers that answered the last poll", registry=r)
        self.marks = Gauge(p + "marks", "Series marked on each hybrid branch in the last document",
                           ["asset", "branch"], registry=r)
        self.skipped_inputs = Counter(p + "skipped_inputs", "Inputs skipped as bad", ["reason"], registry=r)
        self.submissions = Counter(p + "submissions", "Attestation submissions", ["outcome"], registry=r)
        self.rpc_errors = Counter(p + "rpc_errors", "Failed RPC attempts", registry=r)
        self.reorgs = Counter(p + "reorgs", "Reorgs detected", registry=r)
        self.disagreements = Counter(p + "disagreements", "Peers that signed a different root", registry=r)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a cycle stage into ``cycle_seconds{stage=name}``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.cycle_seconds.labels(stage=name).observe(time.perf_counter() - t0)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int):
        """Start the Prometheus HTTP endpoint; returns (server, thread)."""
        return start_http_server(port, addr=host, registry=self.registry)

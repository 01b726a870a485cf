"""The scenario's child processes: three ``keeper run`` (2-of-3, their own HTTP signature exchange) and the
``liquidator run`` bots; started with their configs and logs under the output folder, watched, stopped. Also what
the scenario reads back from them: the margin roots the keepers post, their leaves, the liquidators' decisions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from keeper.chain.local import free_port
from keeper.codec.merkle import MarginLeaf
from keeper.errors import ScenarioError
from keeper.exchange.client import PeerClient
from keeper.scenario.config import market_files
from keeper.scenario.world import Actor, World

#: the folder the child processes run in (the repository, so ``keeper`` imports as in this process)
PROJECT_DIR = Path(__file__).resolve().parents[2]


class Processes:
    """The keeper and liquidator processes of one run; ``keeper_urls`` is where the keepers serve their API."""

    def __init__(self, out: Path, say: Callable[[str], None]):
        self.out = out
        self.say = say
        self.procs: list[subprocess.Popen] = []
        self.keepers: list[subprocess.Popen] = []
        self.keeper_urls: list[str] = []

    def _spawn(self, argv: list[str], env: dict, log: Path, mode: str) -> subprocess.Popen:
        p = subprocess.Popen(argv, env=env, stdout=log.open(mode), stderr=subprocess.STDOUT, cwd=PROJECT_DIR)
        self.procs.append(p)
        return p

    def start_keepers(self, chain_url: str, keeper_keys: Sequence[str], threshold: int, spots0: dict[str, float],
                      seed: int, mc_paths: int, archive_dir: Path) -> None:
        """Three ``keeper run`` processes (2-of-3) with their own HTTP signature exchange, pricing every underlying
        of ``spots0`` (symbol -> spot at the start; the first one first) with its own market sources
        (``market.assets.<SYMBOL>``, docs/keeper.md): the spot the scenario writes to its spot file and an option
        chain drawn each cycle around the smile in its market file (chain source ``market_file``;
        :func:`keeper.scenario.config.market_files`), so each fitted surface follows its path's vol; archives go to
        ``archive_dir``."""
        kdir = self.out / "keepers"
        kdir.mkdir(exist_ok=True)
        ports: list[int] = []
        for _ in keeper_keys:
            ports.append(free_port(avoid=set(ports)))
        addrs = [Account.from_key(k).address for k in keeper_keys]
        self.keeper_urls = [f"http://127.0.0.1:{p}" for p in ports]
        assets = {}
        for n, (sym, spot0) in enumerate(spots0.items()):
            market, spot_file = market_files(self.out, sym, n == 0)
            assets[sym] = {"spot_sources": [{"name": f"scenario-{sym}", "kind": "file", "path": str(spot_file)}],
                           "chain": {"kind": "market_file", "path": str(market)},
                           "simulated": {"seed": seed + n, "spot0": spot0}}  # grid, spread, depth, noise seed
        for i, (key, port) in enumerate(zip(keeper_keys, ports)):
            conf = {
                "chain": {"rpc_url": chain_url, "deployment_file": str(self.out / "deployment.json"),
                          "poll_interval_s": 0.3},
                "keys": {"env_var": "BACKSTOP_KEEPER_KEY"},
                "market": {"assets": assets},
                "risk": {"mc_paths": max(mc_paths, 100)},
                "exchange": {"host": "127.0.0.1", "port": port,
                             "peers": [{"name": f"keeper-{j + 1}", "url": self.keeper_urls[j], "address": addrs[j]}
                                       for j in range(len(ports)) if j != i]},
                "thresholds": {"quorum": threshold},
                "metrics": {"enabled": False},
                "archive_dir": str(archive_dir),
            }
            path = kdir / f"keeper-{i + 1}.json"
            path.write_text(json.dumps(conf, indent=2))
            env = dict(os.environ, BACKSTOP_KEEPER_KEY=key, PYTHONUNBUFFERED="1")
            argv = [sys.executable, "-c", "from keeper.cli.keeper import keeper_main; keeper_main()", "run", "--config",
                    str(path)]
            self.keepers.append(self._spawn(argv, env, self.out / "logs" / f"keeper-{i + 1}.log", "ab"))
        (kdir / "urls.json").write_text(json.dumps(self.keeper_urls))
        self.say(f"started 3 keeper processes ({threshold}-of-3) at {', '.join(self.keeper_urls)}")

    def start_liquidators(self, chain_url: str, liquidators: Sequence[Actor], edges: Sequence[float],
                          model: str = "hedging") -> None:
        """One ``liquidator run`` per liquidator actor, with its edge, reading ``market.json`` and the keepers'
        URLs; decisions go to ``<role>.events.jsonl``. ``model``: ``hedging`` or ``conservative`` (the bots'
        ``--valuation``), or ``none`` (``--strategy none``: no bids, only starts, resets and last-resort takes)."""
        if model not in ("hedging", "conservative", "none"):
            raise ValueError(f"unknown liquidator model {model!r} (hedging, conservative or none)")
        for a, edge in zip(liquidators, edges):
            env = dict(os.environ, BACKSTOP_LIQUIDATOR_KEY=a.key, PYTHONUNBUFFERED="1")
            events = self.out / f"{a.role}.events.jsonl"
            argv = [sys.executable, "-m", "keeper.cli.liquidator", "run", "--deployment",
                    str(self.out / "deployment.json"), "--rpc", chain_url, "--edge", str(edge), "--name", a.role,
                    "--events-file", str(events), "--market-file", str(self.out / "market.json"), "--poll", "0.2",
                    "--aversion", "0.15", "--own-haircut", "0.10", "--keeper-urls-file",
                    str(self.out / "keepers" / "urls.json"),
                    *(["--strategy", "none"] if model == "none" else ["--valuation", model])]
            self._spawn(argv, env, self.out / "logs" / f"{a.role}.log", "wb")
        self.say(f"started {len(liquidators)} liquidator processes ({model}; edges {', '.join(map(str, edges))})")

    def check_keepers(self) -> None:
        """Raise :class:`ScenarioError` when a keeper process has exited."""
        for p in self.keepers:
            if p.poll() is not None:
                raise ScenarioError(f"a keeper process exited with code {p.returncode} (see {self.out}/logs)")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []
        self.keepers = []


def liquidator_events(out: Path) -> list[dict]:
    """Every decision the liquidator bots logged (``*.events.jsonl`` in ``out``); unreadable lines are skipped."""
    events = []
    for f in sorted(out.glob("*.events.jsonl")):
        for line in f.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


@dataclass
class ProcessKeepers:
    """The keeper processes as the driver sees them: every block mined must be attested; their leaves come from
    their HTTP API."""

    world: World
    processes: Processes
    timeout_s: float
    say: Callable[[str], None]

    def wait_for_root(self, min_sequence: int, timeout: float | None = None) -> int | None:
        """Wait until the keepers posted a margin root of at least ``min_sequence``; returns it (None on timeout)."""
        deadline = time.monotonic() + (timeout or self.timeout_s)
        while time.monotonic() < deadline:
            self.processes.check_keepers()
            seq = int(self.world.ch.functions.lastMarginAttestation().call()[0])
            if seq >= min_sequence:
                return seq
            time.sleep(0.2)
        return None

    def leaves(self, seq: int) -> list[MarginLeaf]:
        """The leaves a keeper published for ``seq`` (its HTTP API), for the margin-ratio record."""
        for u in self.processes.keeper_urls:
            att = PeerClient("k", u, timeout=3.0).attestation(seq)
            if att and att.get("leaves"):
                return [MarginLeaf(x["account"], int(x["stateNonce"]), int(x["equity"]), int(x["maintenance"]),
                                   int(x["initial"]), int(x["modelValue"])) for x in att["leaves"]]
        return []

    def step(self) -> list[MarginLeaf]:
        """The block just mined must be attested by the keepers; returns its leaves."""
        head = int(self.world.w3.eth.block_number)
        seq = self.wait_for_root(head)
        if seq is None:
            self.say(f"keepers posted no root for block {head} within {self.timeout_s:.0f}s")
            return []
        return self.leaves(seq)

"""The end-to-end crash scenario (``backstop scenario``, what ``make scenario`` runs).

On a fresh local chain: deploy; fund a market maker, a few dozen traders (short vol near and far from margin, long
vol) and two liquidators; attest prices and margins; trade; then drive a market path with a crash (a synthetic
jump with a vol spike, or a real crash replayed from ``../shared/data/price_paths``) one step at a time. Every step
the keepers attest spot and every account's margin (breaches are registered on chain), the liquidator processes
start auctions and bid; between steps the chain clock moves in small ticks so the Dutch auctions decay. Before the
crash a fat-finger trade on a thin series shows what a naive last-trade mark would have liquidated and that the
hybrid mark did not. A bid records a claim on the auctioned book; the liquidators settle their own claims when the
auction ends, and any claim still pending at the end is settled by the scenario (``settleClaim`` is open to anyone)
before the checks. At the end the report is computed from chain events and archived inputs, with independent
checks of the protocol's invariants (no healthy account sold from, token conservation, insurance-fund arithmetic,
every auction preceded by an M-of-N attestation), and written as JSON and PNG plots.

Keepers: ``inline`` (default) runs the keepers' attestation work inside the scenario process with the three
keeper keys (each attestation signed by M of them, the same quant engine, inputs archived by hash); liquidators
always run as separate processes (``liquidator run``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
from eth_account import Account
from rich.console import Console
from rich.live import Live
from rich.table import Table

from keeper.attest.engine import (
    Attestation,
    EngineSettings,
    MarketState,
    compute_attestation,
    quantize,
    smile_from,
)
from keeper.chain.deploy import (
    DeployConfig,
    Sender,
    deploy,
    derive_keys,
    load_artifacts,
    web3_for,
)
from keeper.chain.local import LocalChain, ensure_chain, free_port
from keeper.codec.merkle import MarginLeaf
from keeper.data.archive import InputsArchive
from keeper.data.paths import (
    CrashConfig,
    MarketPath,
    crash_path,
    read_price_bars,
    replay_path,
    resolve_price_path,
)
from keeper.errors import DeployError, ScenarioError
from keeper.exchange.client import PeerClient
from keeper.quant.pricing import black76_greeks, black76_price
from keeper.quant.surface import VolSurface
from keeper.scenario.checks import run_checks
from keeper.scenario.keepers import InlineKeepers, read_book
from keeper.scenario.manipulation import ThinBook, manipulation_report
from keeper.scenario.report import (
    AuctionTrace,
    BidTrace,
    ScenarioRecord,
    SurfaceSnapshot,
    render_summary,
    summarize,
    write_report,
)
from keeper.units import SECONDS_PER_YEAR, WAD, to_wad

log = logging.getLogger("backstop.scenario")
@dataclass
class ScenarioConfig:
    """Everything that shapes a run (see docs/scenario.md)."""

    out_dir: str | None = None
    rpc_url: str | None = None  # None: start a fresh local chain on a free port
    backend: str = "anvil"
    n_short_vol: int = 18
    n_long_vol: int = 12
    crash: CrashConfig = field(default_factory=lambda: CrashConfig(n_steps=16, crash_step=5, jump=-0.30,
                                                                   vol_spike=2.0, step_seconds=3600.0))
    replay: str | None = None
    replay_window_bars: int | None = 600
    shared_dir: str | None = None
    chain_step_seconds: int = 900
    auction_tick_seconds: int = 30
    auction_ticks: int = 14
    idle_ticks: int = 4  # stop ticking a step after this many ticks without any auction event
    tick_wait_s: float = 0.6
    edges: tuple[float, ...] = (0.02, 0.025)
    #: the auction's floor (cusp) and linear descent time, passed to the deployment (``DeployConfig``)
    auction_floor: float = 0.4
    auction_tau: int = 600
    manipulation: bool = True
    manipulation_step: int | None = None
    mc_paths: int = 1000
    seed: int = 11
    live: bool = True
    keep_chain: bool = False
    keepers: str = "process"  # "process": three `keeper run` processes (2-of-3); "inline": in this process
    keeper_timeout_s: float = 40.0


@dataclass
class Actor:
    """A participant: role, key, address, sender."""

    role: str
    kind: str
    key: str
    address: str
    sender: Sender


def default_out_dir() -> Path:
    return Path("out") / f"scenario-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def build_path(cfg: ScenarioConfig) -> MarketPath:
    """The market path: a replayed real crash when ``cfg.replay`` names one, else the synthetic crash."""
    if cfg.replay:
        shared = Path(cfg.shared_dir) if cfg.shared_dir else Path(__file__).resolve().parents[3] / "shared" / "data"
        f = resolve_price_path(cfg.replay, shared)
        return replay_path(read_price_bars(f), cfg.crash.n_steps, spot0=cfg.crash.spot0,
                           base_vol=cfg.crash.base_vol, window_bars=cfg.replay_window_bars,
                           step_seconds=cfg.crash.step_seconds)
    return crash_path(cfg.crash)


class Scenario:
    """One run. ``run()`` returns the summary dict and writes the report files."""

    def __init__(self, cfg: ScenarioConfig, console=None):
        self.cfg = cfg
        self.path = build_path(cfg)  # bad path settings fail before anything is created
        # absolute: the keeper processes' config files resolve relative paths against their own folder
        self.out = (Path(cfg.out_dir) if cfg.out_dir else default_out_dir()).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.console = console
        self.chain: LocalChain | None = None
        self.procs: list[subprocess.Popen] = []
        self.rec = ScenarioRecord()
        self.step_index = 0
        self.status: dict[str, Any] = {"phase": "start"}
        self.last_att: Attestation | None = None
        self.atts: dict[str, Attestation] = {}  # inputs hash hex -> attestation (for the report's checks)
        self.archive_dir = self.out / "archive"
        self.inline = cfg.keepers == "inline"
        self.keeper_urls: list[str] = []
        self.keeper_procs: list[subprocess.Popen] = []

    # ------------------------------------------------------------------ utilities
    def say(self, msg: str) -> None:
        self.status["note"] = msg
        log.info(msg)
        if self.console is not None and not self.cfg.live:
            self.console.print(f"[dim]{msg}[/dim]")

    def rpc(self, method: str, params: list) -> Any:
        return self.w3.provider.make_request(method, params)

    def advance(self, seconds: int) -> None:
        """Move the chain clock and mine one block."""
        self.rpc("evm_increaseTime", [int(seconds)])
        self.rpc("evm_mine", [])

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    # ------------------------------------------------------------------ set-up
    def start_chain_and_deploy(self) -> None:
        url = self.cfg.rpc_url or f"http://127.0.0.1:{free_port()}"
        self.say(f"starting {self.cfg.backend} at {url}")
        self.chain = ensure_chain(url, self.cfg.backend, accounts=8 + self.cfg.n_short_vol + self.cfg.n_long_vol,
                                  log_dir=self.out / "logs")
        self.w3 = web3_for(self.chain.url)
        n = 7 + self.cfg.n_short_vol + self.cfg.n_long_vol
        keys = derive_keys(self.chain.mnemonic, n)

        addr = [Account.from_key(k).address for k in keys]
        self.keeper_keys = keys[1:4]
        # the minimum short-leg headroom (5 % of notional), so that set-up can place some traders close to margin
        self.dcfg = DeployConfig(spot0=float(self.path.spot[0]), short_margin_fraction=0.05,
                                 auction_floor=self.cfg.auction_floor, auction_tau=self.cfg.auction_tau)
        self.dep = deploy(self.w3, keys[0], addr[1:4], self.dcfg, rpc_url=self.chain.url,
                          deployment_file=self.out / "deployment.json", progress=self.say)
        dep_json = json.loads((self.out / "deployment.json").read_text())
        self.ch = self.w3.eth.contract(address=self.dep.clearinghouse, abi=dep_json["abi"]["clearinghouse"])
        self.auction = self.w3.eth.contract(address=self.dep.auction, abi=dep_json["abi"]["auction"])
        token_abi = load_artifacts(["TestERC20"])["TestERC20"].abi
        self.tokens = {s: self.w3.eth.contract(address=t["address"], abi=token_abi) for s, t in self.dep.tokens.items()}
        self.owner = Sender(self.w3, keys[0])
        self.actors: list[Actor] = []
        roles = ([("liquidator-1", "liquidator"), ("liquidator-2", "liquidator"), ("maker", "maker")]
                 + [(f"short-{i + 1:02d}", "short_vol") for i in range(self.cfg.n_short_vol)]
                 + [(f"long-{i + 1:02d}", "long_vol") for i in range(self.cfg.n_long_vol)])
        for (role, kind), k, a in zip(roles, keys[4:], addr[4:]):
            self.actors.append(Actor(role, kind, k, a, Sender(self.w3, k)))

        self.archive = InputsArchive(self.archive_dir)
        self.keepers = InlineKeepers(self.w3, self.ch, self.keeper_keys, self.dep.threshold, self.owner,
                                     self.archive)
        self.rec.chain = {"url": self.chain.url, "backend": self.chain.backend, "chain_id": self.dep.chain_id,
                          "clearinghouse": self.dep.clearinghouse, "auction": self.dep.auction,
                          "deploy_block": self.dep.block, "keepers": self.dep.keepers,
                          "threshold": self.dep.threshold}
        self.rec.account_kind = {a.address: a.kind for a in self.actors}
        self.rec.quote_decimals = self.dep.quote_decimals

    def actor(self, role: str) -> Actor:
        return next(a for a in self.actors if a.role == role)

    @property
    def usdc(self):
        return self.tokens[self.dcfg.quote_symbol]

    @property
    def weth(self):
        return self.tokens[self.dcfg.underlying_symbol]

    def fund(self, a: Actor, symbol: str, amount_units: float) -> None:
        """Mint ``amount_units`` of ``symbol`` to the actor and deposit it into the clearinghouse."""
        tok = self.tokens[symbol]
        amt = int(round(amount_units * 10 ** self.dep.tokens[symbol]["decimals"]))
        if amt <= 0:
            return
        a.sender.call(tok.functions.mint(a.address, amt), f"mint {symbol}")
        a.sender.call(tok.functions.approve(self.ch.address, amt), f"approve {symbol}")
        a.sender.call(self.ch.functions.deposit(tok.address, amt), f"deposit {symbol}")

    def spots(self, spot: float) -> dict[str, float]:
        """Attested spots: the underlying follows the path, WBTC keeps its ratio to it (a correlated crash)."""
        out = {}
        for c in self.dcfg.collateral:
            addr = self.dep.tokens[c.symbol]["address"]
            out[addr] = quantize(c.spot * spot / self.dcfg.spot0) if c.symbol != self.dcfg.underlying_symbol \
                else quantize(spot)
        return out

    def accounts(self) -> list[str]:
        return [a.address for a in self.actors]

    def series_map(self) -> dict[int, dict]:
        return {int(s["id"]): s for s in self.dep.series}

    def haircuts(self) -> dict[str, float]:
        return {self.dep.tokens[c.symbol]["address"]: c.haircut for c in self.dcfg.collateral}

    def risky_assets(self) -> list[str]:
        return [self.dep.tokens[c.symbol]["address"] for c in self.dcfg.collateral]

    def attest(self, spot: float, vol: float, marks: dict[int, float] | None = None, post_prices: bool = True
               ) -> Attestation:
        """Keepers' work for the current block: prices, then every account's leaf in one batch."""
        head = self.w3.eth.get_block("latest")
        ts = int(head["timestamp"])
        if post_prices:
            self.keepers.post_prices(self.spots(spot), ts)
        book = read_book(self.ch, self.accounts(), [int(s["id"]) for s in self.dep.series], self.risky_assets(),
                         {self.dep.tokens[c.symbol]["address"]: c.decimals for c in self.dcfg.collateral})
        head = self.w3.eth.get_block("latest")
        market = MarketState(self.spots(spot), smile_from(vol), int(head["timestamp"]), bytes(head["hash"]), marks)
        att = compute_attestation(book, self.series_map(), market, self.haircuts(), self.dep.underlying,
                                  EngineSettings(mc_paths=self.cfg.mc_paths, quote_decimals=self.dep.quote_decimals),
                                  sequence=int(head["number"]), timestamp=int(head["timestamp"]))
        self.keepers.post_batch(att)
        self.last_att = att
        self.atts["0x" + att.inputs_hash.hex()] = att
        return att

    def write_market_file(self, spot: float, vol: float) -> None:
        """What the liquidators read as public market data (spot, ATM vol and the smile's shape)."""
        p = self.out / "market.json"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps({"spot": spot, "atm_vol": vol, "skew": -0.15, "curvature": 0.4}))
        os.replace(tmp, p)
        q = self.out / "spot.json"
        tmp = q.with_suffix(".tmp")
        tmp.write_text(json.dumps({"price": round(spot, 2), "volume": 1.0}))
        os.replace(tmp, q)

    # ------------------------------------------------------------------ the book
    def model_price(self, sid: int, spot: float, vol: float) -> float:
        s = self.series_map()[sid]
        t = max(s["expiry"] - self.now(), 1) / SECONDS_PER_YEAR
        v = float(smile_from(vol)(np.array([s["strike"]]), np.array([t]), np.array([spot]))[0])
        return float(black76_price(spot, s["strike"], t, v, s["is_call"]))

    def find_series(self, strike_pct: float, days: float, is_call: bool) -> int:
        best = min(self.dep.series, key=lambda s: (abs(s["strike"] / self.dcfg.spot0 - strike_pct)
                                                    + abs((s["expiry"] - self.dep.timestamp) / 86400 - days) / 100
                                                    + (0 if s["is_call"] == is_call else 10)))
        return int(best["id"])

    def sign_quote(self, maker: Actor, sid: int, size_contracts: float, price: float, nonce: int) -> tuple:

        q = (maker.address, sid, to_wad(size_contracts), to_wad(round(price, 6)), nonce, self.now() + 3600)
        digest = bytes(self.ch.functions.hashQuote(q).call())
        sig = Account.from_key(maker.key).unsafe_sign_hash(digest).signature
        return q, sig

    def trade(self, maker: Actor, taker: Actor, sid: int, maker_size: float, price: float, nonce: int,
              att: Attestation) -> None:
        """Taker fills the maker's signed quote; both legs carry their proofs from ``att``."""
        q, sig = self.sign_quote(maker, sid, maker_size, price, nonce)
        taker.sender.call(self.ch.functions.trade(q, sig, att.proof_for(maker.address), att.proof_for(taker.address)),
                          f"trade {taker.role}<-{maker.role}")

    def setup_book(self) -> None:
        """Deposits, genesis attestation, trades between short-vol and long-vol traders and with the maker,
        then top-ups that put every trader at its target margin ratio (a few just above maintenance)."""
        rng = np.random.default_rng(self.cfg.seed)
        spot, vol = float(self.path.spot[0]), float(self.path.atm_vol[0])
        self.say("funding the market maker, traders and liquidators")
        shorts = [a for a in self.actors if a.kind == "short_vol"]
        longs = [a for a in self.actors if a.kind == "long_vol"]
        maker = self.actor("maker")
        for a in self.actors:
            if a.kind == "liquidator":
                self.fund(a, self.dcfg.quote_symbol, 400_000)
            elif a.kind == "maker":
                self.fund(a, self.dcfg.quote_symbol, 2_000_000)
                self.fund(a, self.dcfg.underlying_symbol, 200)
        # short-vol books: puts (crash-exposed) and some straddles; sizes in contracts
        plans = []
        for i, a in enumerate(shorts):
            put = self.find_series(0.9 if i % 3 else 0.8, 14 if i % 2 else 45, False)
            size = float(rng.choice([10, 15, 20, 30]))
            plans.append((a, put, size))
        reqs = {}
        for a, sid, size in plans:
            prem = self.model_price(sid, spot, vol) * size
            need = (prem + self.dcfg.short_margin_fraction * spot * size) * 1.05 + 50
            reqs[a.address] = need
            if a.role.endswith(("03", "07")):  # two shorts post WETH collateral: wrong-way risk in a crash
                self.fund(a, self.dcfg.underlying_symbol, need / spot / (1 - 0.15) * 1.02)
            else:
                self.fund(a, self.dcfg.quote_symbol, need)
        for a in longs:
            self.fund(a, self.dcfg.quote_symbol, 20_000)
        # risky collateral carries its own margin (IM > 0): top up so that equity - IM covers the trade's need
        att = self.attest(spot, vol)
        d = 10**self.dep.quote_decimals
        for a, _sid, _size in plans:
            lf = att.leaf_of(a.address)
            short = reqs[a.address] - (lf.equity - lf.initial) / d
            if short > 0:
                self.fund(a, self.dcfg.quote_symbol, short * 1.05 + 10)
        self.say("genesis attestation (prices and every account's margin)")
        att = self.attest(spot, vol)
        # round 1: each short sells its puts to a long trader or, when longs run out, to the maker
        self.say("trading: short-vol traders sell puts to long-vol traders and the market maker")
        nonce = 1
        counterparties = list(longs)
        maker_used = False
        pending = []
        for a, sid, size in plans:
            if counterparties:
                buyer = counterparties.pop(0)
            elif not maker_used:
                buyer, maker_used = maker, True
            else:
                pending.append((a, sid, size))
                continue
            price = self.model_price(sid, spot, vol)
            # the short trader is the maker of the quote (signs size < 0: sells), the buyer takes it
            self.trade(a, buyer, sid, -size, price, nonce, att)
            nonce += 1
        # further rounds: remaining shorts sell to the maker, one per fresh attestation
        for a, sid, size in pending:
            att = self.attest(spot, vol, post_prices=False)
            self.trade(a, maker, sid, -size, self.model_price(sid, spot, vol), nonce, att)
            nonce += 1
        # longs who bought also buy a call from the maker in one more round (a long-vol book)
        att = self.attest(spot, vol, post_prices=False)
        self.say("top-ups to each trader's target margin ratio")
        leaves = {x.account: x for x in att.leaves}
        targets = {}
        for i, a in enumerate(shorts):
            # a third of the shorts just above maintenance, the rest comfortably above
            r = float(rng.uniform(1.08, 1.25)) if i % 3 == 0 else float(rng.uniform(1.6, 3.5))
            targets[a.address] = r
            lf = leaves[a.address]
            gap = (r * lf.maintenance - lf.equity) / 10**self.dep.quote_decimals
            if gap > 0:
                self.fund(a, self.dcfg.quote_symbol, gap)
        att = self.attest(spot, vol)
        self.rec.config["target_ratios"] = {k: round(v, 3) for k, v in targets.items()}
        breached = [x.account for x in att.leaves if x.equity < x.maintenance]
        if breached:
            self.say(f"warning: {len(breached)} account(s) below maintenance after set-up")
        self.status["accounts"] = len(att.leaves)

    # ------------------------------------------------------------------ keeper processes
    def start_keepers(self) -> None:
        """Three ``keeper run`` processes (2-of-3) with their own HTTP signature exchange, reading the spot the
        scenario writes to ``spot.json`` and an option chain drawn each cycle around the smile in ``market.json``
        (chain source ``market_file``), so their fitted surface follows the path's vol; archives go to ``archive/``."""

        kdir = self.out / "keepers"
        kdir.mkdir(exist_ok=True)
        self.keeper_procs: list[subprocess.Popen] = []
        ports = [free_port() for _ in self.keeper_keys]
        addrs = [Account.from_key(k).address for k in self.keeper_keys]
        self.keeper_urls = [f"http://127.0.0.1:{p}" for p in ports]
        sim = {"seed": self.cfg.seed, "spot0": float(self.path.spot[0])}  # grid, spread, depth and noise seed
        for i, (key, port) in enumerate(zip(self.keeper_keys, ports)):
            conf = {
                "chain": {"rpc_url": self.chain.url, "deployment_file": str(self.out / "deployment.json"),
                          "poll_interval_s": 0.3},
                "keys": {"env_var": "BACKSTOP_KEEPER_KEY"},
                "market": {"underlying": self.dcfg.underlying_symbol,
                           "spot_sources": [{"name": "scenario", "kind": "file", "path": str(self.out / "spot.json")}],
                           "chain": {"kind": "market_file", "path": str(self.out / "market.json")},
                           "simulated": sim},
                "risk": {"mc_paths": max(self.cfg.mc_paths, 100)},
                "exchange": {"host": "127.0.0.1", "port": port,
                             "peers": [{"name": f"keeper-{j + 1}", "url": self.keeper_urls[j], "address": addrs[j]}
                                       for j in range(len(ports)) if j != i]},
                "thresholds": {"quorum": self.dep.threshold},
                "metrics": {"enabled": False},
                "archive_dir": str(self.archive_dir),
            }
            path = kdir / f"keeper-{i + 1}.json"
            path.write_text(json.dumps(conf, indent=2))
            env = dict(os.environ, BACKSTOP_KEEPER_KEY=key, PYTHONUNBUFFERED="1")
            logf = (self.out / "logs" / f"keeper-{i + 1}.log").open("ab")
            argv = [sys.executable, "-c", "from keeper.cli.main import keeper_main; keeper_main()", "run", "--config",
                    str(path)]
            p = subprocess.Popen(argv, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                 cwd=Path(__file__).resolve().parents[2])
            self.procs.append(p)
            self.keeper_procs.append(p)
        (kdir / "urls.json").write_text(json.dumps(self.keeper_urls))
        self.say(f"started 3 keeper processes ({self.dep.threshold}-of-3) at {', '.join(self.keeper_urls)}")

    def wait_for_root(self, min_sequence: int, timeout: float | None = None) -> int | None:
        """Wait until the keepers posted a margin root of at least ``min_sequence``; returns it (None on timeout)."""
        deadline = time.monotonic() + (timeout or self.cfg.keeper_timeout_s)
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None and p.args and "keeper_main" in " ".join(map(str, p.args)):
                    raise ScenarioError(f"a keeper process exited with code {p.returncode} (see {self.out}/logs)")
            seq = int(self.ch.functions.lastMarginAttestation().call()[0])
            if seq >= min_sequence:
                return seq
            time.sleep(0.2)
        return None

    def keeper_leaves(self, seq: int) -> list[MarginLeaf]:
        """The leaves a keeper published for ``seq`` (its HTTP API), for the margin-ratio record."""

        for u in self.keeper_urls:
            att = PeerClient("k", u, timeout=3.0).attestation(seq)
            if att and att.get("leaves"):
                return [MarginLeaf(x["account"], int(x["stateNonce"]), int(x["equity"]), int(x["maintenance"]),
                                   int(x["initial"]), int(x["modelValue"])) for x in att["leaves"]]
        return []

    def keeper_step(self) -> list[MarginLeaf]:
        """Process mode: the block just mined must be attested by the keepers; returns its leaves."""
        head = int(self.w3.eth.block_number)
        seq = self.wait_for_root(head)
        if seq is None:
            self.say(f"keepers posted no root for block {head} within {self.cfg.keeper_timeout_s:.0f}s")
            return []
        return self.keeper_leaves(seq)

    # ------------------------------------------------------------------ liquidators
    def start_liquidators(self) -> None:
        liqs = [a for a in self.actors if a.kind == "liquidator"]
        for a, edge in zip(liqs, self.cfg.edges):
            env = dict(os.environ, BACKSTOP_LIQUIDATOR_KEY=a.key, PYTHONUNBUFFERED="1")
            events = self.out / f"{a.role}.events.jsonl"
            argv = [sys.executable, "-m", "keeper.cli.liquidator", "run", "--deployment",
                    str(self.out / "deployment.json"), "--rpc", self.chain.url, "--edge", str(edge), "--name", a.role,
                    "--events-file", str(events), "--market-file", str(self.out / "market.json"), "--poll", "0.2",
                    "--aversion", "0.15", "--own-haircut", "0.10", "--keeper-urls-file",
                    str(self.out / "keepers" / "urls.json")]
            logf = (self.out / "logs" / f"{a.role}.log").open("wb")
            self.procs.append(subprocess.Popen(argv, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                               cwd=Path(__file__).resolve().parents[2]))
        self.say(f"started {len(liqs)} liquidator processes (edges {', '.join(map(str, self.cfg.edges))})")

    def stop_processes(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []

    def liquidator_events(self) -> list[dict]:
        out = []
        for f in sorted(self.out.glob("*.events.jsonl")):
            for line in f.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    # ------------------------------------------------------------------ manipulation
    def fat_finger(self, spot: float, vol: float) -> None:
        """A fat-finger buy of a thin series far above fair value; compare the naive and hybrid marks."""
        att = self.attest(spot, vol, post_prices=False)
        book0 = read_book(self.ch, self.accounts(), [int(s["id"]) for s in self.dep.series], self.risky_assets(),
                          {self.dep.tokens[c.symbol]["address"]: c.decimals for c in self.dcfg.collateral})
        near = np.array([0 < x.maintenance and x.equity < 1.5 * x.maintenance for x in att.leaves])
        short_near = np.where(near[:, None], np.maximum(-book0.positions, 0), 0).sum(axis=0)
        j0 = int(np.argmax(short_near)) if short_near.max() > 0 else 0
        sid = book0.series_ids[j0]
        fair = self.model_price(sid, spot, vol)
        px = fair + 0.05 * spot
        buyer = self.actor("long-01") if any(a.role == "long-01" for a in self.actors) else self.actor("maker")
        maker = self.actor("maker")
        self.trade(maker, buyer, sid, -0.1, px, 10_000, att)
        self.say(f"fat-finger trade: 0.1 x series {sid} at {px:.2f} (model {fair:.2f})")
        # every account's exposure, and the naive vs hybrid comparison on the last attested margins
        book = read_book(self.ch, self.accounts(), [int(s["id"]) for s in self.dep.series], self.risky_assets(),
                         {self.dep.tokens[c.symbol]["address"]: c.decimals for c in self.dcfg.collateral})
        att2 = self.attest(spot, vol, post_prices=False)  # hybrid mark: the thin book is marked to model
        leaves = {x.account: x for x in att2.leaves}
        sids = book.series_ids
        s_all = self.series_map()
        t = np.array([max(s_all[s]["expiry"] - self.now(), 1) / SECONDS_PER_YEAR for s in sids])
        strikes = np.array([s_all[s]["strike"] for s in sids])
        vols = smile_from(vol)(strikes, t, np.full(len(sids), spot))
        g = black76_greeks(spot, strikes, t, vols, np.array([s_all[s]["is_call"] for s in sids]))
        d = 10**self.dep.quote_decimals
        mm = np.array([leaves[a].maintenance / d for a in book.accounts])
        eq = np.array([leaves[a].equity / d for a in book.accounts])
        pos_val = book.positions @ np.asarray(g.price)
        coll = eq - pos_val  # everything but the option positions, as attested
        j = sids.index(sid)
        rep = manipulation_report(book.accounts, book.positions, coll, mm, np.asarray(g.price), np.asarray(g.vega), j,
                                  ThinBook(px, fair * 0.9, px, 0.5, 0.1), f"series {sid} (K={s_all[sid]['strike']:.0f}"
                                  f" {'C' if s_all[sid]['is_call'] else 'P'})")
        breached_now = sorted(x.account for x in att2.leaves if x.equity < x.maintenance)
        rep["attested_breaches_after_trade"] = breached_now
        rep["block"] = int(self.w3.eth.block_number)
        self.rec.manipulation = rep
        self.status["manipulation"] = f"naive {len(rep['naive_would_liquidate'])} / hybrid {len(rep['hybrid_liquidated'])}"

    # ------------------------------------------------------------------ the path
    def record_step(self, leaves: list[MarginLeaf], spot: float, vol: float) -> None:
        self.rec.times.append(float(self.now()))
        self.rec.blocks.append(int(self.w3.eth.block_number))
        self.rec.spot.append(spot)
        self.rec.atm_vol.append(vol)
        n = len(self.rec.spot)
        for x in leaves:
            r = x.equity / x.maintenance if x.maintenance > 0 else float("inf")
            lst = self.rec.margin_ratios.setdefault(x.account, [])
            lst.extend([lst[-1] if lst else r] * (n - 1 - len(lst)))
            lst.append(r)

    def surface_snapshot(self, label: str, vol: float, spot: float) -> SurfaceSnapshot:
        ks = list(np.linspace(-0.4, 0.4, 17))
        expiries = sorted({round((s["expiry"] - self.now()) / SECONDS_PER_YEAR, 4) for s in self.dep.series})
        f = smile_from(vol)
        vols = [[float(v) for v in f(spot * np.exp(np.array(ks)), np.full(len(ks), T), np.full(len(ks), spot))]
                for T in expiries]
        return SurfaceSnapshot(label, expiries, ks, vols)

    def keeper_surfaces(self) -> list[SurfaceSnapshot]:
        """The keepers' own fitted surfaces (from their archived inputs): the first and the last of the path."""

        docs = []
        for f in self.archive_dir.glob("0x*.json"):
            try:
                d = json.loads(f.read_bytes())
            except ValueError:
                continue
            if d.get("schema") == "backstop-inputs/1" and d.get("surface"):
                docs.append((int(d["block"]["number"]), d))
        if len(docs) < 2:
            return []
        docs.sort(key=lambda x: x[0])
        out = []
        ks = np.linspace(-0.4, 0.4, 17)
        for label, (blk, d) in (("keepers' fit, first", docs[0]), ("keepers' fit, last", docs[-1])):
            try:
                surf = VolSurface.from_canonical(d["surface"])
            except (ValueError, KeyError):
                continue
            vols = []
            ts = [float(t) for t in surf.times]
            for t in ts:
                w = surf.total_variance(ks, np.full(ks.shape, t))
                vols.append([float(v) for v in np.sqrt(np.maximum(w, 0.0) / t)])
            out.append(SurfaceSnapshot(f"{label} (block {blk})", ts, [float(k) for k in ks], vols))
        return out

    def auction_activity(self) -> int:
        """Number of auction starts, bids and ends so far (resets do not count: an unsold auction being reset
        again and again is no progress)."""
        A, fb = self.auction.events, self.dep.block
        return sum(len(getattr(A, n)().get_logs(from_block=fb)) for n in ("AuctionStarted", "Bid", "AuctionEnded"))

    def auctions_running(self) -> int:
        started = len(self.auction.events.AuctionStarted().get_logs(from_block=self.dep.block))
        ended = len(self.auction.events.AuctionEnded().get_logs(from_block=self.dep.block))
        return started - ended

    def run_path(self, live_update: Callable[[], None]) -> None:
        n = len(self.path)
        for k in range(n):
            self.step_index = k
            spot, vol = float(self.path.spot[k]), float(self.path.atm_vol[k])
            # the step's market data is written before its block is mined, so the keepers' cycle on that block
            # reads this step's spot and smile (they re-read both files every cycle)
            self.write_market_file(spot, vol)
            if k > 0:
                self.advance(self.cfg.chain_step_seconds)
            self.status.update(phase="path", step=k, spot=spot, vol=vol)
            leaves = self.attest(spot, vol).leaves if self.inline else self.keeper_step()
            self.record_step(leaves, spot, vol)
            self.status["breached"] = sum(1 for x in leaves if x.equity < x.maintenance)
            live_update()
            # let auctions run: small clock ticks; the keepers re-attest so bidders' margin records stay fresh
            ticks = 0
            time.sleep(self.cfg.tick_wait_s)
            idle, last = 0, self.auction_activity()
            while ticks < self.cfg.auction_ticks and idle < self.cfg.idle_ticks and \
                    (self.auctions_running() > 0 or self.status["breached"]):
                self.advance(self.cfg.auction_tick_seconds)
                leaves = self.attest(spot, vol, post_prices=False).leaves if self.inline else self.keeper_step()
                self.status["breached"] = sum(1 for x in leaves if x.equity < x.maintenance)
                live_update()
                time.sleep(self.cfg.tick_wait_s)
                ticks += 1
                now = self.auction_activity()
                idle = idle + 1 if now == last else 0
                last = now
            if k == 0:
                self.rec.surfaces.append(self.surface_snapshot("market before", vol, spot))
        peak = int(np.argmax(self.path.atm_vol))
        self.rec.surfaces.append(self.surface_snapshot("market after (peak vol)", float(self.path.atm_vol[peak]),
                                                       float(self.path.spot[peak])))

    def finish_completed_auctions(self) -> int:
        """End every auction whose sale is complete but which nobody finished yet (``finish``, anyone may; on an
        auction module where the completing bid leaves that to a separate call). Returns how many were ended."""
        if not any(i.get("name") == "finish" for i in self.auction.abi):
            return 0
        comps = next(i["outputs"][0]["components"] for i in self.auction.abi if i.get("name") == "auctionOf")
        k = next((j for j, c in enumerate(comps) if c["name"] == "done"), None)
        n = 0
        for acct in dict.fromkeys(e["args"]["account"] for e in
                                  self.auction.events.AuctionStarted().get_logs(from_block=self.dep.block)):
            a = self.auction.functions.auctionOf(acct).call()
            if int(a[1]) != 0 and k is not None and a[k]:
                try:
                    self.owner.call(self.auction.functions.finish(acct), f"finish {acct[:10]}")
                    n += 1
                except DeployError as e:
                    self.rec.notes.append(f"auction of {acct} not finished at the end: {e}")
        return n

    def settle_pending_claims(self) -> int:
        """Deliver every liquidation claim still pending (holders from ``ClaimRecorded`` events, pending per
        ``claimOf``) with ``settleClaim`` from the owner's key (anyone may call it), so that the report's books are
        the accounts' own storage. Returns how many were settled; a failure is noted, not raised (the checks read
        raw storage and the claim ledger, so they stay exact and show it)."""
        holders = dict.fromkeys(e["args"]["holder"] for e in
                                self.ch.events.ClaimRecorded().get_logs(from_block=self.dep.block))
        n = 0
        for h in holders:
            if int(self.ch.functions.claimOf(h).call()[1]) == 0:
                continue
            try:
                self.owner.call(self.ch.functions.settleClaim(h), f"settleClaim {h[:10]}")
                n += 1
            except DeployError as e:
                self.rec.notes.append(f"claim of {h} not settled at the end: {e}")
        if n:
            self.say(f"settled {n} liquidation claim(s) still pending")
        return n

    # ------------------------------------------------------------------ report
    def collect(self) -> None:
        """Fill the record from chain events and run the independent invariant checks."""

        fb = self.dep.block
        A = self.auction.events
        starts = {int(e["args"]["id"]): e for e in A.AuctionStarted().get_logs(from_block=fb)}
        ends = {int(e["args"]["id"]): e for e in A.AuctionEnded().get_logs(from_block=fb)}
        bids = A.Bid().get_logs(from_block=fb)
        resets = A.AuctionReset().get_logs(from_block=fb)
        t0 = self.rec.times[0] if self.rec.times else 0.0
        curve = self.dep.params["auction_config"]
        tau = int(curve[1])
        lost = [e for e in self.liquidator_events() if e.get("event") == "lost_race"]
        checks = run_checks(self)
        healthy_at = checks.pop("_healthy_at_start", {})
        self.rec.auctions = []
        for aid, e in sorted(starts.items()):
            a = e["args"]
            st = int(self.w3.eth.get_block(e["blockNumber"])["timestamp"])
            tr = AuctionTrace(aid, a["account"], float(st - t0), int(a["startPrice"]), int(a["equity"]))
            end_t = int(self.w3.eth.get_block(ends[aid]["blockNumber"])["timestamp"]) if aid in ends \
                else max(self.now(), st + 1)
            # the price curve, restarted by every reset (redo) from its fresh record
            segs = [(st, int(a["startPrice"]), int(a["span"]))]
            for r in resets:
                if int(r["args"]["id"]) == aid:
                    segs.append((int(self.w3.eth.get_block(r["blockNumber"])["timestamp"]), int(r["args"]["startPrice"]),
                                 int(r["args"]["span"])))
            for i, (s0, top, span) in enumerate(segs):
                s1 = segs[i + 1][0] if i + 1 < len(segs) else end_t
                s1 = min(s1, s0 + tau + 60)
                for dt in range(0, max(s1 - s0, 1) + 1, max(1, (s1 - s0) // 40 or 1)):
                    c = max(tau - dt, 0) / tau
                    tr.prices.append((float(s0 - t0 + dt), int(top - math.ceil(span * (1 - c)))))
            my_resets = [r for r in resets if int(r["args"]["id"]) == aid]
            for b in [b for b in bids if int(b["args"]["id"]) == aid]:
                bt = int(self.w3.eth.get_block(b["blockNumber"])["timestamp"])
                before = [r for r in my_resets if (r["blockNumber"], r["logIndex"]) < (b["blockNumber"], b["logIndex"])]
                attested = int(before[-1]["args"]["equity"]) if before else int(a["equity"])
                tr.bids.append(BidTrace(float(bt - t0), int(b["args"]["price"]), b["args"]["bidder"],
                                        int(b["args"]["fractionWad"]) / WAD, "filled", b["transactionHash"].hex(),
                                        attested_value=attested))
                tr.penalty += int(b["args"]["penalty"])
            for ev in lost:
                if int(ev.get("auction", -1)) == aid:
                    tr.bids.append(BidTrace(float(ev["t"] - time.time() + self.now() - t0), int(ev.get("price", 0)),
                                            ev.get("bot", "?"), 0.0, "lost_race", ev.get("tx", ""), ev.get("reason", "")))
            if aid in ends:
                ea = ends[aid]["args"]
                tr.sold_fraction = int(ea["soldWad"]) / WAD
                tr.to_fund = int(ea["penalty"]) - int(ea["reward"])
                tr.ended = ["Restored", "SoldOut", "Cured", "CuredByDeposit"][int(ea["reason"])]
            else:
                tr.sold_fraction = max((int(b["args"]["soldWad"]) for b in bids if int(b["args"]["id"]) == aid),
                                       default=0) / WAD
            tr.bad_debt = sum(int(x["args"]["amount"]) for x in A.BadDebtRecorded().get_logs(from_block=fb)
                              if int(x["args"]["auctionId"]) == aid)
            tr.healthy_at_start = bool(healthy_at.get(aid, False))
            self.rec.auctions.append(tr)
        self.rec.breaches = [{"account": e["args"]["account"], "equity": int(e["args"]["equity"]),
                              "maintenance": int(e["args"]["maintenance"]), "block": int(e["blockNumber"])}
                             for e in self.ch.events.AccountBreached().get_logs(from_block=fb)]
        self.rec.attestations = [{"sequence": int(e["args"]["sequence"]), "root": "0x" + bytes(e["args"]["root"]).hex(),
                                  "inputs_hash": "0x" + bytes(e["args"]["inputsHash"]).hex()}
                                 for e in self.ch.events.MarginRootPosted().get_logs(from_block=fb)]
        fund_in = sum(int(x["args"]["amount"]) for x in A.FundReceived().get_logs(from_block=fb))
        self.rec.fund_payouts = sum(int(x["args"]["paid"]) for x in A.ShortfallPaid().get_logs(from_block=fb))
        self.rec.insurance_fund_after = int(self.auction.functions.fundBalance().call())
        self.rec.insurance_fund_before = self.fund_before
        # the seed deposit happened before the path: penalties into the fund are the FundReceived of auctions
        self.rec.notes.append(f"fund income from events (incl. seed): {fund_in}")
        recorded = self.ch.events.ClaimRecorded().get_logs(from_block=fb)
        settled = self.ch.events.ClaimSettled().get_logs(from_block=fb)
        at_end = int(self.rec.claims.get("settled_at_end", 0))
        self.rec.claims.update({
            "recorded": len(recorded), "settled": len(settled),
            # by the bidders themselves (the liquidator bots settle their own claims)
            "settled_by_liquidators": sum(1 for e in settled if self.w3.eth.get_transaction(
                e["transactionHash"])["from"] == e["args"]["holder"]),
            "settled_at_end": at_end,
            "pending": sum(1 for h in {e["args"]["holder"] for e in recorded}
                           if int(self.ch.functions.claimOf(h).call()[1]) != 0)})
        self.rec.invariants = checks
        self.rec.crash_step = self.path.crash_step
        if not self.inline:
            try:
                self.rec.surfaces.extend(self.keeper_surfaces())
            except Exception as e:  # noqa: BLE001 - a plot input, not a result
                self.rec.notes.append(f"keeper surfaces not plotted: {e}")
        self.rec.config.update({
            "path": self.path.source, "steps": len(self.path), "jump": self.cfg.crash.jump if not self.cfg.replay
            else None, "worst_step_return": self.path.worst_return,
            "keepers": ("inline (3 keys, 2-of-3 signatures)" if self.inline else
                        f"3 keeper processes, {self.dep.threshold}-of-3, set-up attested inline"),
            "liquidators": len(self.cfg.edges), "edges": list(self.cfg.edges), "traders":
            self.cfg.n_short_vol + self.cfg.n_long_vol, "chain_step_seconds": self.cfg.chain_step_seconds,
            "out_dir": str(self.out)})

    # ------------------------------------------------------------------ run
    def run(self) -> dict:

        con = self.console or Console()
        self.console = con
        t_start = time.time()

        def table() -> Table:
            t = Table(title=f"Backstop scenario ({self.path.source})", show_header=False)
            t.add_column("k")
            t.add_column("v")
            try:
                blk = int(self.w3.eth.block_number)
            except Exception:  # noqa: BLE001
                blk = -1
            ev = self.liquidator_events() if self.procs else []
            t.add_row("phase", str(self.status.get("phase")))
            t.add_row("block", str(blk))
            t.add_row("step", f"{self.status.get('step', '-')}/{len(self.path) - 1}")
            t.add_row("spot / ATM vol", f"{self.status.get('spot', float('nan')):,.2f} / "
                                        f"{self.status.get('vol', float('nan')):.0%}")
            t.add_row("accounts below MM", str(self.status.get("breached", 0)))
            try:  # from chain events: keepers and liquidators both start auctions
                A = self.auction.events
                started = len(A.AuctionStarted().get_logs(from_block=self.dep.block))
                ended = len(A.AuctionEnded().get_logs(from_block=self.dep.block))
                filled = len(A.Bid().get_logs(from_block=self.dep.block))
            except Exception:  # noqa: BLE001 - before deployment
                started = ended = filled = 0
            t.add_row("auctions started / ended", f"{started} / {ended}")
            t.add_row("bids filled / lost races",
                      f"{filled} / {sum(1 for e in ev if e.get('event') == 'lost_race')}")
            t.add_row("claims settled by liquidators", str(sum(1 for e in ev if e.get("event") == "claim_settled")))
            if "manipulation" in self.status:
                t.add_row("fat finger: naive/hybrid liquidations", self.status["manipulation"])
            t.add_row("note", str(self.status.get("note", ""))[:70])
            t.add_row("elapsed", f"{time.time() - t_start:.0f}s")
            return t

        live = Live(table(), console=con, refresh_per_second=4, transient=False) if self.cfg.live else None
        update = (lambda: live.update(table())) if live else (lambda: None)
        try:
            if live:
                live.start()
            self.status["phase"] = "deploy"
            self.start_chain_and_deploy()
            update()
            self.status["phase"] = "set-up"
            self.setup_book()
            self.fund_before = int(self.auction.functions.fundBalance().call())
            self.write_market_file(float(self.path.spot[0]), float(self.path.atm_vol[0]))
            if self.cfg.manipulation:
                self.fat_finger(float(self.path.spot[0]), float(self.path.atm_vol[0]))
            if not self.inline:
                self.start_keepers()
                self.status["phase"] = "keepers warming up"
                update()
                if self.wait_for_root(int(self.w3.eth.block_number), timeout=max(60.0, self.cfg.keeper_timeout_s)) is None:
                    # do not leave the user with nothing: say so loudly, stop them and attest inline
                    msg = (f"the keeper processes posted no margin root within 60s (see {self.out}/logs); "
                           f"falling back to inline keepers")
                    self.rec.notes.append(msg)
                    self.say(msg)
                    self.stop_processes()
                    self.inline = True
            self.start_liquidators()
            update()
            self.run_path(update)
            self.status["phase"] = "settling"
            for _ in range(self.cfg.auction_ticks):
                if self.auctions_running() == 0:
                    break
                self.advance(self.cfg.auction_tick_seconds)
                if self.inline:
                    self.attest(float(self.path.spot[-1]), float(self.path.atm_vol[-1]), post_prices=False)
                else:
                    self.keeper_step()
                update()
                time.sleep(self.cfg.tick_wait_s)
            self.stop_processes()
            self.status["phase"] = "settling claims"
            update()
            finished = self.finish_completed_auctions()
            if finished:
                self.rec.notes.append(f"{finished} auction(s) whose sale was complete finished by the scenario")
            self.rec.claims["settled_at_end"] = self.settle_pending_claims()
            self.status["phase"] = "report"
            update()
        except BaseException:
            if self.chain is not None:
                self.stop_processes()
                self.chain.stop()
            raise
        finally:
            if live:
                live.stop()
            self.stop_processes()
        self.collect()
        paths = write_report(self.rec, self.out)
        summary = summarize(self.rec)
        summary["files"] = {k: str(v) for k, v in paths.items()}
        summary["elapsed_s"] = round(time.time() - t_start, 1)
        (self.out / "report.json").write_text(json.dumps({"summary": summary, "record": asdict(self.rec)}, indent=2,
                                                         default=str))
        render_summary(summary, con)
        con.print(f"report and plots in [bold]{self.out}[/bold] ({summary['elapsed_s']}s)")
        if not self.cfg.keep_chain and self.chain is not None:
            self.chain.stop()
        return summary

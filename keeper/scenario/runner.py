"""The end-to-end crash scenario (``backstop scenario``, what ``make scenario`` runs): :class:`Scenario` runs the
phases in order.

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

Keepers: ``process`` (default) runs three ``keeper run`` processes (2-of-3); ``inline`` runs the keepers'
attestation work inside the scenario process with the three keeper keys (each attestation signed by M of them, the
same quant engine, inputs archived by hash). The set-up phase is always attested inline. Liquidators always run as
separate processes (``liquidator run``).

The phases live in their own modules: :mod:`~keeper.scenario.config` (what shapes a run, the market path),
:mod:`~keeper.scenario.setup` (chain, deployment, actors, the book), :mod:`~keeper.scenario.world` (the deployment
as the phases see it), :mod:`~keeper.scenario.keepers` (inline attestation), :mod:`~keeper.scenario.processes`
(keeper and liquidator processes), :mod:`~keeper.scenario.driver` (fat finger, the path, settling),
:mod:`~keeper.scenario.collect` (the record from chain events), :mod:`~keeper.scenario.checks` (invariants),
:mod:`~keeper.scenario.report` and :mod:`~keeper.scenario.plots` (results), :mod:`~keeper.scenario.progress`
(status and the live table).
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from keeper.attest.engine import Attestation
from keeper.chain.local import LocalChain
from keeper.scenario.collect import collect, haircut_rows, keeper_surfaces, run_description, step_documents
from keeper.scenario.config import ScenarioConfig, build_path, default_out_dir
from keeper.scenario.driver import (
    Driver,
    fat_finger,
    finish_completed_auctions,
    settle_pending_claims,
    write_world_market,
)
from keeper.scenario.netting import netting_of_documents
from keeper.scenario.plots import write_plots
from keeper.scenario.processes import Processes, ProcessKeepers, liquidator_events
from keeper.scenario.progress import Progress
from keeper.scenario.report import (
    ScenarioRecord,
    render_summary,
    summarize,
    write_report_json,
)
from keeper.scenario.setup import (
    Deployed,
    deploy_world,
    deployment_record,
    setup_book,
    start_chain,
)
from keeper.scenario.world import World

__all__ = ["Scenario", "ScenarioConfig", "build_path", "default_out_dir"]


def _from_world(name: str) -> property:
    """``Scenario.<name>`` is the deployed world's ``<name>`` (an attribute, or a bound method)."""
    return property(lambda self: getattr(self.world, name), doc=f"the world's ``{name}``")


class Scenario:
    """One run. ``run()`` returns the summary dict and writes the report files.

    The phases can also be driven one by one (the liquidator tests do): :meth:`start_chain_and_deploy`,
    :meth:`setup_book`, then :meth:`attest`, :meth:`advance` and :meth:`write_market_file` on the world
    (``w3``, ``ch``, ``auction``, ``dep``, ``tokens``, :meth:`actor`, :meth:`accounts`)."""

    def __init__(self, cfg: ScenarioConfig, console=None):
        self.cfg = cfg
        self.path = build_path(cfg)  # bad path settings fail before anything is created
        # absolute: the keeper processes' config files resolve relative paths against their own folder
        self.out = (Path(cfg.out_dir) if cfg.out_dir else default_out_dir()).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress = Progress(cfg.live, console)
        self.chain: LocalChain | None = None
        self.deployed: Deployed | None = None
        self.rec = ScenarioRecord()
        self.archive_dir = self.out / "archive"
        self.inline = cfg.keepers == "inline"
        self.processes = Processes(self.out, self.say)
        self.fund_before = 0  # the insurance fund before the path (set after the set-up)
        self._live: Live | None = None
        self._t_start = time.time()

    # ------------------------------------------------------------------ the world, for callers and tests
    @property
    def world(self) -> World:
        if self.deployed is None:
            raise AttributeError("the scenario has not deployed yet (start_chain_and_deploy)")
        return self.deployed.world

    # the world's handles and primitives, as the tests and the CLI use them on the scenario
    w3 = _from_world("w3")
    ch = _from_world("ch")
    auction = _from_world("auction")
    dep = _from_world("dep")
    tokens = _from_world("tokens")
    rpc = _from_world("rpc")
    advance = _from_world("advance")
    now = _from_world("now")
    actor = _from_world("actor")
    accounts = _from_world("accounts")
    risky_assets = _from_world("risky_assets")

    @property
    def archive(self):
        return self.deployed.archive

    def say(self, msg: str) -> None:
        self.progress.say(msg)

    def attest(self, spot: float, vol: float, marks: dict[int, float] | None = None, post_prices: bool = True
               ) -> Attestation:
        """Keepers' work for the current block, done here: prices, then every account's leaf in one batch."""
        return self.deployed.attestor.attest(spot, vol, marks, post_prices)

    def write_market_file(self, spot: float, vol: float) -> None:
        """What the bots read as public market data (spot, ATM vol and the smile's shape) of both underlyings, when
        the first is at ``spot`` and ``vol``."""
        write_world_market(self.world, self.out, spot, vol)

    # ------------------------------------------------------------------ phases
    def start_chain_and_deploy(self) -> None:
        self.chain = start_chain(self.cfg, self.out, self.say)
        self.deployed = deploy_world(self.chain, self.cfg, self.path, self.out, self.archive_dir, self.say)
        w = self.world
        self.rec.chain = deployment_record(self.chain, w)
        self.rec.account_kind = {a.address: a.kind for a in w.actors}
        self.rec.quote_decimals = w.dep.quote_decimals

    def setup_book(self) -> None:
        """Deposits, genesis attestation, trades, top-ups to each trader's target margin ratio."""
        book = setup_book(self.world, self.deployed.attestor, self.path, self.cfg.seed, self.say)
        self.rec.config["target_ratios"] = {k: round(v, 3) for k, v in book.target_ratios.items()}
        self.progress.status["accounts"] = book.accounts

    def start_keepers(self) -> ProcessKeepers | None:
        """Three keeper processes, awaited until they post a root; ``None`` (and inline keepers from here on, said
        loudly) when they post nothing in time."""
        w = self.world
        m0 = w.market(float(self.path.spot[0]), float(self.path.atm_vol[0]))
        self.processes.start_keepers(self.chain.url, self.deployed.keeper_keys, w.dep.threshold,
                                     {sym: m0[sym][0] for sym in w.underlyings()}, self.cfg.seed,
                                     self.cfg.mc_paths, self.archive_dir)
        keepers = ProcessKeepers(w, self.processes, self.cfg.keeper_timeout_s, self.say)
        self.progress.status["phase"] = "keepers warming up"
        self.update()
        warm_up = max(120.0, self.cfg.keeper_timeout_s)  # the first cycle fits both surfaces from cold
        if keepers.wait_for_root(int(w.w3.eth.block_number), timeout=warm_up) is None:
            # do not leave the user with nothing: say so loudly, stop them and attest inline
            msg = (f"the keeper processes posted no margin root within {warm_up:.0f}s (see {self.out}/logs); "
                   f"falling back to inline keepers")
            self.rec.notes.append(msg)
            self.say(msg)
            self.processes.stop()
            self.deployed.attestor.keepers.sync_sequences()  # continue after whatever they did post
            self.inline = True
            return None
        return keepers

    def finish_record(self) -> None:
        """The record from chain events and archives, the invariants, the surfaces and the run's description."""
        w = self.world
        lost = [e for e in liquidator_events(self.out) if e.get("event") == "lost_race"]
        collect(w, self.rec, self.archive, self.fund_before, lost)
        self.rec.crash_step = self.path.crash_step
        try:
            self.rec.haircuts = haircut_rows(w, self.rec, self.path, self.cfg.collateral_depth)
        except ValueError as e:  # a price history the model cannot use: say so, recommend nothing
            self.rec.notes.append(f"haircut recommendation skipped: {e}")
        self.rec.cross_asset_netting = netting_of_documents(step_documents(self.rec, self.archive))
        if not self.inline:
            try:
                self.rec.surfaces.extend(keeper_surfaces(self.archive_dir, w.dep.underlying))  # ETH's, as the plot
            except Exception as e:  # noqa: BLE001 - a plot input, not a result
                self.rec.notes.append(f"keeper surfaces not plotted: {e}")
        self.rec.config.update(run_description(self.cfg, self.path, self.inline, w.dep.threshold, self.out))

    # ------------------------------------------------------------------ run
    def _table(self):
        events = liquidator_events(self.out) if self.processes.procs else []
        world = self.deployed.world if self.deployed is not None else None
        return self.progress.table(f"Backstop scenario ({self.path.source})", len(self.path), world, events,
                                   time.time() - self._t_start)

    def update(self) -> None:
        """Refresh the live table (nothing without one)."""
        if self._live is not None:
            self._live.update(self._table())

    def run(self) -> dict:
        con = self.progress.console = self.progress.console or Console()
        self._t_start = t_start = time.time()
        status = self.progress.status
        live = self._live = Live(self._table(), console=con, refresh_per_second=4, transient=False) \
            if self.cfg.live else None
        try:
            if live:
                live.start()
            status["phase"] = "deploy"
            self.start_chain_and_deploy()
            self.update()
            status["phase"] = "set-up"
            self.setup_book()
            w = self.world
            self.fund_before = int(w.auction.functions.fundBalance().call())
            write_world_market(w, self.out, float(self.path.spot[0]), float(self.path.atm_vol[0]))
            if self.cfg.manipulation:
                rep = fat_finger(w, self.deployed.attestor, float(self.path.spot[0]), float(self.path.atm_vol[0]),
                                 self.say)
                self.rec.manipulation = rep
                status["manipulation"] = (f"naive {len(rep['naive_would_liquidate'])} / "
                                          f"hybrid {len(rep['hybrid_liquidated'])}")
            keepers = None if self.inline else self.start_keepers()
            self.processes.start_liquidators(self.chain.url, [a for a in w.actors if a.kind == "liquidator"],
                                             self.cfg.edges, self.cfg.liquidators)
            self.update()
            driver = Driver(w, self.cfg, self.path, self.rec, self.out, status, self.deployed.attestor, keepers,
                            self.inline)
            driver.run_path(self.update)
            driver.settle(self.update)
            self.processes.stop()
            status["phase"] = "settling claims"
            self.update()
            finished = finish_completed_auctions(w, self.rec.notes)
            if finished:
                self.rec.notes.append(f"{finished} auction(s) whose sale was complete finished by the scenario")
            self.rec.claims["settled_at_end"] = settle_pending_claims(w, self.rec.notes, self.say)
            status["phase"] = "report"
            self.update()
        except BaseException:
            if self.chain is not None:
                self.processes.stop()
                self.chain.stop()
            raise
        finally:
            if live:
                live.stop()
                self._live = None
            self.processes.stop()
        self.finish_record()
        paths = {"report": self.out / "report.json", **write_plots(self.rec, self.out)}
        summary = summarize(self.rec)
        summary["files"] = {k: str(v) for k, v in paths.items()}
        summary["elapsed_s"] = round(time.time() - t_start, 1)
        write_report_json(self.out, summary, self.rec)
        render_summary(summary, con)
        con.print(f"report and plots in [bold]{self.out}[/bold] ({summary['elapsed_s']}s)")
        if not self.cfg.keep_chain and self.chain is not None:
            self.chain.stop()
        return summary

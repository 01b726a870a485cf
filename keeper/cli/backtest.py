"""``backstop backtest``: offline replay of real crash paths under the liquidation policies (auction designs x liquidator
models, and the market baselines), plus the VaR backtest.

Heavy imports happen inside the command so that ``backstop --help`` stays fast. Bad input (unknown path, empty or
malformed CSV, gaps, non-positive prices, bad options) prints one line on stderr and exits 2 before anything is
written."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from keeper.backtest import plots as pl
from keeper.backtest.engine import DESIGNS, POLICIES, BacktestConfig, parse_policy
from keeper.backtest.io import (
    crash_path_names,
    load_path,
    read_daily,
    shared_dir_default,
)
from keeper.backtest.report import (
    outcome_markdown,
    paths_markdown,
    summary_markdown,
    targets_markdown,
    var_markdown,
)
from keeper.backtest.runner import TABLE, outcome_table, run_path
from keeper.backtest.var_backtest import var_backtest
from keeper.cli.common import fail
from keeper.errors import BadInput


def _run_one(args):

    path, n, cfg_kwargs, seed, policies = args
    return run_path(path, n, BacktestConfig(**cfg_kwargs), seed=seed, policies=policies)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) < 10 and v != 0 and not float(v).is_integer():
            return f"{v:.3f}"
        return f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


@click.command(name="backtest")
@click.option("--path", "paths", multiple=True, help="crash path name in <shared>/price_paths, a CSV in that format, "
              "or 'synthetic'; repeatable (default: synthetic + every crash path)")
@click.option("--accounts", type=int, default=1000, show_default=True, help="accounts in the population")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="output folder (default ./out/backtest-<UTC timestamp>)")
@click.option("--shared-data", type=click.Path(file_okay=False), default=None,
              help="folder with price_paths/ (default ../shared/data or $BACKSTOP_SHARED_DATA)")
@click.option("--cadence-minutes", type=float, default=15.0, show_default=True,
              help="full margin run and surface refit cadence in path time (<= 15; every bar where bars are coarser)")
@click.option("--scenarios", type=int, default=2000, show_default=True, help="Monte Carlo scenarios per margin run")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--var/--no-var", "do_var", default=True, show_default=True, help="VaR backtest on *_daily.csv")
@click.option("--plots/--no-plots", default=True, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True,
              help="processes: paths replayed in parallel (several paths), or one replay plus a helper fitting its "
                   "surfaces ahead (one path, or --workers 1 gives no helper); the figures are the same either way")
@click.option("--policy", "policy_names", multiple=True,
              help="policy to replay, repeatable: mark_to_market, static or <design>:<liquidator> with design "
                   "backstop (chosen) or today and liquidator hedging, conservative or none (default: all of "
                   + ", ".join(POLICIES) + ")")
def backtest(paths, accounts, out_dir, shared_data, cadence_minutes, scenarios, seed, do_var, plots, workers,
             policy_names):
    """Replay a population of accounts through real crash paths: Backstop vs last-trade mark-to-market vs static
    margin (docs/risk-efficacy.md)."""

    if accounts < 1:
        fail("backstop backtest", f"--accounts must be >= 1, got {accounts}")
    if not 0 < cadence_minutes <= 15:
        fail("backstop backtest", f"--cadence-minutes must be in (0, 15], got {cadence_minutes}")
    if scenarios < 100:
        fail("backstop backtest", f"--scenarios must be >= 100, got {scenarios}")
    if workers < 1:
        fail("backstop backtest", f"--workers must be >= 1, got {workers}")
    policies = tuple(policy_names) or POLICIES
    try:
        for name in policies:
            parse_policy(name)
    except ValueError as e:
        fail("backstop backtest", str(e))
    shared = Path(shared_data) if shared_data else shared_dir_default()
    names = list(paths) or (["synthetic"] + crash_path_names(shared))
    if len(names) == 1 and not paths:
        fail("backstop backtest", f"no crash paths found in {shared / 'price_paths'} (give --path or --shared-data)")
    try:
        loaded = [load_path(n, shared) for n in names]
        daily = []
        if do_var:
            folder = shared / "price_paths"
            files = sorted(folder.glob("*_daily.csv")) if folder.is_dir() else []
            if not files:
                raise BadInput(f"no *_daily.csv in {folder} for the VaR backtest (or pass --no-var)")
            daily = [(f.stem, read_daily(f)) for f in files]
    except BadInput as e:
        fail("backstop backtest", str(e))
    except OSError as e:
        fail("backstop backtest", f"cannot read input: {e}")




    cfg_kwargs = {"cadence_s": cadence_minutes * 60.0, "n_scenarios": scenarios, "seed": seed}
    cfg = BacktestConfig(**cfg_kwargs)
    console = Console(stderr=True)
    out = Path(out_dir) if out_dir else Path("out") / f"backtest-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    t_start = time.perf_counter()
    results: list[dict] = []
    vbs = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as prog:
        total = sum(len(p) for p in loaded)
        task = prog.add_task("replaying bars", total=total)
        if workers > 1 and len(loaded) > 1:

            with ProcessPoolExecutor(max_workers=workers) as ex:
                futs = {ex.submit(_run_one, (p, accounts, cfg_kwargs, seed, policies)): p for p in loaded}
                by_name = {}

                for f in as_completed(futs):
                    r = f.result()
                    by_name[r["path"]] = r
                    prog.advance(task, r["bars"])
                results = [by_name[p.name] for p in loaded]
        else:
            for p in loaded:
                prog.update(task, description=f"replaying {p.name}")
                results.append(run_path(p, accounts, cfg, seed=seed, policies=policies,
                                        progress=lambda k: prog.advance(task, k),
                                        fit_workers=1 if workers > 1 else 0))
        if daily:
            vtask = prog.add_task("VaR backtest", total=sum(len(c) - 31 for _, c in daily))
            for name, closes in daily:
                vbs.append(var_backtest(name, closes, progress=lambda k: prog.advance(vtask, k)))
    elapsed = time.perf_counter() - t_start

    term = Console()
    table = Table(title=f"Backstop backtest: {accounts} accounts, cadence {cadence_minutes:g} min")
    table.add_column("path")
    table.add_column("policy")
    for title in TABLE.values():
        table.add_column(title, justify="right")
    for r in results:
        for k, row in enumerate(outcome_table(r)):
            table.add_row(r["path"] if k == 0 else "", row[0], *[_fmt(v) for v in row[1:]],
                          end_section=(k == len(r["policies"]) - 1))
    term.print(table)
    if vbs:
        vt = Table(title="VaR99 backtest (1-day, non-overlapping): exceedances, Kupiec POF, Christoffersen independence")
        for c in ("closes", "book", "days", "exceed.", "rate", "Kupiec LR", "p", "Christ. LR", "p"):
            vt.add_column(c, justify="right")
        for vb in vbs:
            for book, t in vb.tests.items():
                k, c = t["kupiec"], t["christoffersen"]
                vt.add_row(vb.name, book, str(k["n"]), str(k["exceedances"]), f"{k['rate']:.4f}", f"{k['lr']:.2f}",
                           f"{k['p_value']:.4f}", f"{c['lr']:.2f}", f"{c['p_value']:.4f}")
        term.print(vt)

    out.mkdir(parents=True, exist_ok=True)
    report = {
        "command": "backstop backtest " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "backstop backtest",
        "config": asdict(cfg), "designs": {k: asdict(d) for k, d in DESIGNS.items()}, "policies": list(policies),
        "accounts": accounts, "seconds": elapsed,
        "paths": results, "var_backtest": [vb.to_json() for vb in vbs],
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))

    md = [f"# {report['command']}", "", paths_markdown(results), "", outcome_markdown(results), "",
          summary_markdown(results), "", targets_markdown(results)]
    if vbs:
        md += ["", var_markdown(report["var_backtest"])]
    (out / "report.md").write_text("\n".join(md) + "\n")
    if plots and results:

        pl.fund_balance(results, out)
        pl.liquidations(results, out)
        if vbs:
            pl.var_exceedances(vbs, out)
    term.print(f"report and plots in {out} ({elapsed:.1f}s)")

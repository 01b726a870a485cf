"""``keeper`` (console script, also ``backstop keeper``): ``run``, ``status``, ``check-config``, ``keystore``,
``recompute``. Bad input exits with status 2 and a readable message (one line, or one line per bad config value).
"""
from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Optional

import click
import requests
from rich.console import Console
from rich.table import Table

from keeper.attest.leaves import recompute_from_archive
from keeper.bots.keeper.bot import build_keeper
from keeper.bots.keeper.scheduler import run_scheduler
from keeper.chain.deployment import load_deployment
from keeper.cli.common import fail
from keeper.errors import ConfigError, KeyLoadError, RpcUnavailable
from keeper.ops.config import load_config, parse_config
from keeper.ops.keys import key_from_env, load_key, write_keystore
from keeper.ops.logging import configure_logging, get_logger


@click.group(name="keeper")
def keeper_main() -> None:
    """Backstop keeper: prices every account each block, signs margin attestations, gathers M signatures."""


@keeper_main.command("run")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="keeper config file (.toml, .yaml or .json)")
@click.option("--rpc-url", default=None, help="override chain.rpc_url (default http://127.0.0.1:8545)")
@click.option("--deployment", default=None, help="override chain.deployment_file")
@click.option("--port", type=int, default=None, help="override exchange.port (HTTP API)")
@click.option("--metrics-port", type=int, default=None, help="override metrics.port")
def run_cmd(config_path: str, rpc_url: Optional[str], deployment: Optional[str], port: Optional[int],
            metrics_port: Optional[int]) -> None:
    """Run the keeper until SIGINT/SIGTERM."""

    try:
        cfg = load_config(config_path)
        upd = {}
        if rpc_url or deployment:
            upd["chain"] = cfg.chain.model_copy(update={k: v for k, v in (("rpc_url", rpc_url),
                                                                          ("deployment_file", deployment and Path(deployment)))
                                                        if v})
        if port is not None:
            upd["exchange"] = cfg.exchange.model_copy(update={"port": port})
        if metrics_port is not None:
            upd["metrics"] = cfg.metrics.model_copy(update={"port": metrics_port})
        if upd:
            cfg = parse_config(json.loads(cfg.model_copy(update=upd).model_dump_json()), source=config_path)
    except ConfigError as exc:
        fail("keeper", str(exc))
    configure_logging(cfg.logging.level)
    try:
        key = load_key(cfg.keys)
    except KeyLoadError as exc:
        fail("keeper", str(exc))
    log = get_logger("keeper", address=key.address)

    try:
        bot, server = build_keeper(cfg, key, log=log)
    except (ConfigError, ValueError) as exc:
        fail("keeper", str(exc))
    except OSError as exc:
        fail("keeper", f"cannot listen on {cfg.exchange.host}:{cfg.exchange.port}: {exc}")
    try:
        bot.chain.check_chain_id()
    except RpcUnavailable as exc:
        log.warning("rpc_unavailable_at_start", error=str(exc)[:200])  # keep going: the cycle retries
    except ConfigError as exc:
        fail("keeper", str(exc))
    server.start()
    if cfg.metrics.enabled:
        try:
            bot.metrics.serve(cfg.metrics.host, cfg.metrics.port)
        except OSError as exc:
            server.stop()
            fail("keeper", f"cannot serve metrics on {cfg.metrics.host}:{cfg.metrics.port}: {exc}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("keeper_started", api=server.url, rpc=cfg.chain.rpc_url, peers=[p.name for p in cfg.exchange.peers],
             quorum=cfg.thresholds.quorum)
    try:
        run_scheduler(bot, cfg.chain.poll_interval_s, stop)
    finally:
        server.stop()
        log.info("keeper_stopped")


@keeper_main.command("status")
@click.option("--url", default="http://127.0.0.1:8600", show_default=True, help="the keeper's HTTP API")
@click.option("--json", "as_json", is_flag=True, help="print the raw JSON instead of tables")
def status_cmd(url: str, as_json: bool) -> None:
    """Print the keeper's view (block, spot, assets, surface fit, solvency index, accounts near margin, peers)."""

    try:
        r = requests.get(url.rstrip("/") + "/status", timeout=5)
        r.raise_for_status()
        st = r.json()
    except (requests.RequestException, ValueError) as exc:
        fail("keeper", f"cannot reach the keeper at {url}: {exc}")
    if as_json:
        click.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    render_status(st)


def render_status(st: dict, console=None) -> None:
    """Rich tables of a ``GET /status`` document."""

    console = console or Console()
    t = Table(title=f"keeper {st.get('address', '?')}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    surface = st.get("surface") or {}
    fit = surface.get("fit") or {}
    rows = [
        ("block", str(st.get("block"))),
        ("rpc", str(st.get("rpc"))),
        ("spot", str(st.get("spot"))),
        ("spot sources", ", ".join(st.get("spot_sources") or []) +
         (f"  (rejected: {', '.join(st['spot_rejected'])})" if st.get("spot_rejected") else "")),
        ("surface", f"{surface.get('slices', '-')} slices, hash {str(surface.get('hash', '-'))[:18]}…, "
                    f"max RMSE {fit.get('max_rmse_vol_pts', float('nan')):.3f} vol pts" if surface else "-"),
        ("accounts", str(st.get("accounts"))),
        ("breaches", str(len(st.get("breaches") or []))),
        ("root", str(st.get("root"))),
        ("inputs hash", str(st.get("inputs_hash"))),
        ("note", str(st.get("note"))),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    assets = st.get("assets") or {}
    if assets:
        at = Table(title="assets")
        marks = {k.lower(): v for k, v in (st.get("marks") or {}).items()}
        for c in ("asset", "spot", "sources", "surface", "marks market/model", "state"):
            at.add_column(c, no_wrap=True)
        for sym, a in sorted(assets.items()):
            srf = a.get("surface") or {}
            state = ("fallback: " + str((a.get("fallback") or {}).get("reason")) if a.get("fallback") else
                     ("rejected: " + str(a["rejected"]) if a.get("rejected") else "ok"))
            mk = marks.get(str(a.get("asset", "")).lower())
            at.add_row(sym, str(a.get("spot")), ", ".join(a.get("spot_sources") or []) or "-",
                       f"{srf.get('slices')} slices, {str(srf.get('hash', ''))[:12]}…" if srf else "-",
                       f"{mk.get('market', 0)}/{mk.get('model', 0)}" if mk else "-", state)
        console.print(at)
    sv = st.get("solvency")
    if sv:
        def q(x):
            return "-" if x is None else f"{float(x):,.2f}"

        reasons = ", ".join(f"{k}: {v}" for k, v in sorted((sv.get("excluded_reasons") or {}).items())) or "none"
        cov = sv.get("coverage")
        srows = [("accounts attested", str(sv.get("accounts"))), ("total equity", q(sv.get("total_equity"))),
                 ("total maintenance / initial", f"{q(sv.get('total_maintenance'))} / {q(sv.get('total_initial'))}"),
                 ("shortfall now", q(sv.get("shortfall_now"))),
                 ("shortfall at risk VaR 99 / ES 97.5",
                  f"{q(sv.get('shortfall_var99'))} / {q(sv.get('shortfall_es975'))}"),
                 ("insurance fund", q(sv.get("fund"))),
                 ("coverage fund / ES", "no shortfall at risk" if cov is None else f"{float(cov):,.2f}x"),
                 ("left out", f"{sv.get('excluded_accounts')} accounts, equity {q(sv.get('excluded_equity'))} "
                              f"({reasons})")]
        stt = Table(title="solvency index", show_header=False)
        stt.add_column("figure", style="bold")
        stt.add_column("value")
        for k, v in srows:
            stt.add_row(k, v)
        console.print(stt)
    near = st.get("near_margin") or []
    nt = Table(title="accounts near margin")
    for c in ("account", "equity", "maintenance", "initial", "headroom"):
        nt.add_column(c, justify="right" if c != "account" else "left")
    for l in near:
        nt.add_row(l["account"], str(l["equity"]), str(l["maintenance"]), str(l["initial"]),
                   str(int(l["equity"]) - int(l["maintenance"])))
    console.print(nt)
    pt = Table(title="peers")
    pt.add_column("peer")
    pt.add_column("up")
    for name, up in sorted((st.get("peers") or {}).items()):
        pt.add_row(name, "[green]up[/green]" if up else "[red]down[/red]")
    console.print(pt)


@keeper_main.command("check-config")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
def check_config_cmd(config_path: str) -> None:
    """Validate a config file (and its deployment file when present); prints the effective config."""

    try:
        cfg = load_config(config_path)
        if Path(cfg.chain.deployment_file).exists():
            load_deployment(cfg.chain.deployment_file)
    except ConfigError as exc:
        fail("keeper", str(exc))
    click.echo(cfg.model_dump_json(indent=2))


@keeper_main.command("keystore")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="keystore file to write (mode 0600)")
@click.option("--key-env", default="BACKSTOP_KEEPER_KEY", show_default=True,
              help="environment variable holding the hex key to encrypt")
@click.option("--password-env", default="BACKSTOP_KEYSTORE_PASSWORD", show_default=True)
def keystore_cmd(out: str, key_env: str, password_env: str) -> None:
    """Encrypt the key held in an environment variable into a keystore file (prints the address only)."""

    try:
        key = key_from_env(key_env)
    except KeyLoadError as exc:
        fail("keeper", str(exc))
    password = os.environ.get(password_env)
    if not password:
        fail("keeper", f"environment variable {password_env} (keystore password) is not set")
    addr = write_keystore(Path(out), key.account.key.hex(), password)
    click.echo(addr)


@keeper_main.command("recompute")
@click.argument("source")
def recompute_cmd(source: str) -> None:
    """Recompute root and leaves from an archived inputs file, or from ``URL`` + ``/archive/<inputsHash>``."""

    if source.startswith(("http://", "https://")):

        try:
            r = requests.get(source, timeout=10)
            r.raise_for_status()
            blob = r.content
        except requests.RequestException as exc:
            fail("keeper", f"cannot fetch {source}: {exc}")
    else:
        try:
            blob = Path(source).read_bytes()
        except OSError as exc:
            fail("keeper", f"cannot read {source}: {exc}")
    try:
        root, leaves = recompute_from_archive(blob)
    except (ValueError, KeyError) as exc:
        fail("keeper", f"not a keeper inputs file: {exc}")
    click.echo(json.dumps({"root": "0x" + root.hex(), "leaves": [l.to_json() for l in leaves]}, indent=2))

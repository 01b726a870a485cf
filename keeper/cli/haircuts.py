"""``backstop haircuts recommend`` and ``backstop haircuts apply``: the risk admin's tool for live collateral haircuts
(issue 16 item 4).

``recommend`` prints, for every listed collateral asset of the deployment, the listed haircut against the model's
(keeper/quant/haircuts.py: today's EWMA daily vol of the asset's daily closes, its listed deposit cap over the depth
given here, square-root impact), and what ``apply`` would do. The closes are the last keeper-attested price of each
UTC day (``PricesPosted`` events), or a CSV (``timestamp_utc,close``) given with ``--closes SYMBOL=PATH``.

``apply`` raises a haircut at once with the risk-admin key and schedules a lowering on the timelock that owns the
deployment (a proposer key); run it again after the delay and it executes the ready lowering
(keeper/chain/haircuts.py). Bad input exits 2 with one line.
"""
from __future__ import annotations

import csv
import json

import click
import numpy as np

from keeper.chain.client import make_web3
from keeper.chain.deployment import load_abi, load_deployment
from keeper.chain.haircuts import apply_all, market_from_chain, read_listed
from keeper.chain.sender import Sender
from keeper.cli.common import fail
from keeper.errors import BackstopError
from keeper.ops.config import DEFAULT_RPC_URL
from keeper.ops.keys import key_from_env
from keeper.quant.haircuts import HaircutParams, recommend_haircuts
from keeper.units import WAD

PROG = "backstop haircuts"


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for v in values:
        sym, sep, rest = v.partition("=")
        if not sep or not sym or not rest:
            fail(PROG, f"{option} takes SYMBOL=VALUE, got {v!r}")
        out[sym] = rest
    return out


def _read_closes(path: str, symbol: str) -> np.ndarray:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        closes = np.array([float(r["close"]) for r in rows])
    except FileNotFoundError:
        fail(PROG, f"--closes {symbol}: file not found: {path}")
    except (KeyError, ValueError, TypeError, csv.Error) as e:
        fail(PROG, f"--closes {symbol}: {path} is not a timestamp_utc,close CSV ({e})")
    return closes


def _setup(deployment_file: str, rpc_url: str, depth: tuple[str, ...], closes: tuple[str, ...], from_block: int):
    """(w3, clearinghouse, listed assets, recommendations) or exit 2 with one line."""
    try:
        dep = load_deployment(deployment_file)
    except BackstopError as e:
        fail(PROG, " ".join(str(e).split()))
    depths_raw, closes_paths = _pairs(depth, "--depth"), _pairs(closes, "--closes")
    unknown = sorted((set(depths_raw) | set(closes_paths)) - set(dep.collateral))
    if unknown:
        fail(PROG, f"not listed collateral of this deployment: {', '.join(unknown)} "
                   f"(listed: {', '.join(sorted(dep.collateral))})")
    missing = sorted(set(dep.collateral) - set(depths_raw))
    if missing:
        fail(PROG, f"--depth SYMBOL=UNITS_PER_DAY needed for every listed collateral; missing: {', '.join(missing)}")
    depths = {}
    for sym, raw in depths_raw.items():
        try:
            depths[sym] = float(raw)
        except ValueError:
            fail(PROG, f"--depth {sym}: not a number: {raw!r}")
        if not np.isfinite(depths[sym]) or depths[sym] <= 0:
            fail(PROG, f"--depth {sym}: must be a positive number of whole units per day, got {raw}")
    try:
        w3 = make_web3(rpc_url, timeout=30)
        if int(w3.eth.chain_id) != dep.chain_id:
            fail(PROG, f"the RPC at {rpc_url} is chain {int(w3.eth.chain_id)}, the deployment is on {dep.chain_id}")
        ch = w3.eth.contract(address=dep.clearinghouse, abi=load_abi("clearinghouse", dep))
        listed = read_listed(ch, dep.collateral)
        markets = [market_from_chain(w3, ch, a, depths[a.symbol], from_block,
                                     _read_closes(closes_paths[a.symbol], a.symbol) if a.symbol in closes_paths
                                     else None) for a in listed]
        recs = recommend_haircuts(markets, HaircutParams())
    except SystemExit:
        raise
    except (ValueError, BackstopError) as e:
        fail(PROG, str(e))
    except Exception as e:  # noqa: BLE001 - RPC down and the like: one line, not a traceback
        fail(PROG, f"cannot read the deployment's chain at {rpc_url}: {type(e).__name__}: {str(e)[:200]}")
    return w3, ch, listed, recs


def _table(recs) -> list[str]:
    lines = [f"{'asset':8} {'listed':>8} {'recommended':>12} {'daily vol':>10} {'cap/depth':>10} {'days':>5}  action"]
    for r in recs:
        lines.append(f"{r.symbol:8} {r.listed_wad / WAD:8.2%} {r.recommended_wad / WAD:12.2%} {r.daily_vol:10.2%} "
                     f"{r.size / r.depth:10.2f} {r.days:5d}  {r.action}")
    return lines


_common = [
    click.option("--deployment", "deployment_file", default="deployment.json", show_default=True),
    click.option("--rpc", "rpc_url", default=DEFAULT_RPC_URL, show_default=True),
    click.option("--depth", multiple=True, metavar="SYMBOL=UNITS",
                 help="whole units of the asset sellable per day; one per listed collateral"),
    click.option("--closes", multiple=True, metavar="SYMBOL=CSV",
                 help="daily closes (timestamp_utc,close) instead of the keepers' attested prices"),
    click.option("--from-block", type=int, default=0, show_default=True, help="first block of the price history"),
    click.option("--json", "as_json", is_flag=True, help="print JSON"),
]


def _with_common(f):
    for opt in reversed(_common):
        f = opt(f)
    return f


@click.group("haircuts")
def haircuts() -> None:
    """Collateral haircuts from data: recommend, and apply as the contracts allow."""


@haircuts.command("recommend")
@_with_common
def recommend_cmd(deployment_file, rpc_url, depth, closes, from_block, as_json) -> None:
    """Print the listed and the recommended haircut of every listed collateral asset."""
    _, _, _, recs = _setup(deployment_file, rpc_url, depth, closes, from_block)
    if as_json:
        click.echo(json.dumps([{"asset": r.symbol, "listed_wad": r.listed_wad, "recommended_wad": r.recommended_wad,
                                "daily_vol": r.daily_vol, "size": r.size, "depth": r.depth, "days": r.days,
                                "action": r.action} for r in recs], indent=2))
        return
    for line in _table(recs):
        click.echo(line)


@haircuts.command("apply")
@_with_common
@click.option("--risk-admin-key-env", default="BACKSTOP_RISK_ADMIN_KEY", show_default=True,
              help="environment variable holding the risk admin's private key (raises)")
@click.option("--proposer-key-env", default=None,
              help="environment variable holding a timelock proposer's key (lowerings); default: the risk admin's")
def apply_cmd(deployment_file, rpc_url, depth, closes, from_block, as_json, risk_admin_key_env,
              proposer_key_env) -> None:
    """Raise haircuts at once (risk admin); schedule lowerings on the timelock, execute them once ready."""
    try:
        admin_key = key_from_env(risk_admin_key_env)
        proposer_key = key_from_env(proposer_key_env) if proposer_key_env else admin_key
    except BackstopError as e:
        fail(PROG, str(e))
    w3, ch, listed, recs = _setup(deployment_file, rpc_url, depth, closes, from_block)
    try:
        admin = Sender(w3, admin_key.account)
        proposer = Sender(w3, proposer_key.account) if proposer_key is not admin_key else admin
        done = apply_all(w3, ch, listed, recs, admin, proposer)
    except (ValueError, BackstopError) as e:
        fail(PROG, str(e))
    if as_json:
        click.echo(json.dumps([d.__dict__ for d in done], indent=2))
        return
    for d in done:
        extra = f" (executable from unix time {d.eta})" if d.outcome in ("scheduled", "pending") else ""
        click.echo(f"{d.symbol}: {d.outcome} {d.listed_wad / WAD:.2%} -> {d.target_wad / WAD:.2%}{extra}")


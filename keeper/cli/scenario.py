"""``backstop deploy``, ``backstop scenario`` and ``backstop verify`` (click commands; ``keeper/cli/main.py`` adds
them to the ``backstop`` group). Bad input exits non-zero with one readable line."""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import click
from eth_account import Account

from keeper.chain.deploy import DeployConfig, derive_keys, resolve_fund_account, web3_for
from keeper.chain.deploy import deploy as deploy_protocol
from keeper.chain.local import DEFAULT_MNEMONIC, ensure_chain
from keeper.cli.common import fail
from keeper.data.paths import CrashConfig
from keeper.errors import DeployError, ScenarioError, VerifyError
from keeper.ops.config import DEFAULT_RPC_URL
from keeper.scenario.replay_all import failed_row, real_path_names, render_replay_table, replay_row, write_summary
from keeper.scenario.runner import Scenario, ScenarioConfig
from keeper.verify.liquidation import verify_liquidation

#: the auction floor (cusp) option of `deploy` and `scenario`, checked by :func:`_check_auction_floor`
_auction_floor_option = click.option(
    "--auction-floor", type=float, default=ScenarioConfig.auction_floor, show_default=True,
    help="auction floor (cusp): below this share of the start price an auction must be reset; at least 0.1 "
         "(the contract's MIN_CUSP)")


def _check_auction_floor(value: float) -> None:
    """Exit with one line unless the floor is a fraction in [0.1, 1) (the contract's `setConfig` bound: MIN_CUSP)."""
    if not 0.1 <= value < 1:
        fail("backstop", f"--auction-floor must be in [0.1, 1), got {value}")


@click.command("deploy")
@click.option("--rpc", "rpc_url", default=DEFAULT_RPC_URL, show_default=True,
              help="JSON-RPC URL; a local Anvil (or Ganache) is started there when nothing answers")
@click.option("--backend", type=click.Choice(["anvil", "ganache"]), default="anvil", show_default=True)
@click.option("--out", "deployment_file", default="deployment.json", show_default=True,
              help="deployment file to write (a .full.json with keepers, tokens and series goes beside it)")
@click.option("--mnemonic", default=None, help="mnemonic of the chain's accounts (default: the local test one)")
@click.option("--threshold", type=int, default=2, show_default=True)
@click.option("--keepers", "n_keepers", type=int, default=3, show_default=True)
@click.option("--spot", type=float, default=2000.0, show_default=True, help="spot the series grid is built around")
@click.option("--auction-tau", type=int, default=600, show_default=True,
              help="seconds for the linear auction price to fall from the attested value to zero (the floor must "
                   "not be reached within 300 s: tau x (1 - floor) >= 300)")
@click.option("--auction-floor", type=float, default=DeployConfig.auction_floor, show_default=True,
              help="auction floor (cusp): below this share of the span an auction must be reset (or, after "
                   "--last-resort-after resets, taken by the fund's account); at least 0.1 (the contract's MIN_CUSP)")
@click.option("--auction-span", type=float, default=DeployConfig.auction_span, show_default=True,
              help="spanWad: the price moves at most ceil(span x MM) below the attested model value; (0, 1]")
@click.option("--last-resort-after", type=int, default=DeployConfig.last_resort_after, show_default=True,
              help="resets after which the fund's account takes the book at the floor (0-16)")
@click.option("--fund-account", default=DeployConfig.fund_account, show_default=True,
              help="the buyer of last resort's account: 'owner' (the deployer's address, which stays guardian, risk "
                   "admin and timelock proposer), a 0x address (a dedicated key or multisig), or 'none' (no buyer "
                   "of last resort: auctions reset for ever)")
@click.option("--keep-running/--stop-chain", default=True, show_default=True,
              help="leave a chain started here running (in the foreground until Ctrl-C)")
def deploy_cmd(rpc_url, backend, deployment_file, mnemonic, threshold, n_keepers, spot, auction_tau, auction_floor,
               auction_span, last_resort_after, fund_account, keep_running) -> None:
    """Deploy Backstop (tokens, Clearinghouse, keeper set, collateral, series, auction, fund) and write the
    deployment file the bots read."""

    logging.basicConfig(level=logging.WARNING)
    _check_auction_floor(auction_floor)
    if auction_tau <= 0:
        fail("backstop", f"--auction-tau must be > 0 seconds, got {auction_tau}")
    if auction_tau * (1 - auction_floor) < 300:
        fail("backstop", f"--auction-tau {auction_tau} s with floor {auction_floor} reaches the floor in "
              f"{auction_tau * (1 - auction_floor):.0f} s; the contract needs at least 300 s (MIN_DESCENT)")
    if not 0 < auction_span <= 1:
        fail("backstop", f"--auction-span must be in (0, 1], got {auction_span}")
    if not 0 <= last_resort_after <= 16:
        fail("backstop", f"--last-resort-after must be in [0, 16], got {last_resort_after}")
    try:
        resolve_fund_account(fund_account, "0x" + "00" * 19 + "01")
    except DeployError as e:
        fail("backstop", str(e))
    try:
        chain = ensure_chain(rpc_url, backend, mnemonic=mnemonic or DEFAULT_MNEMONIC)
    except DeployError as e:
        fail("backstop", str(e))
    try:
        keys = derive_keys(chain.mnemonic, 1 + n_keepers)
        cfg = DeployConfig(n_keepers=n_keepers, threshold=threshold, spot0=spot, auction_tau=auction_tau,
                           auction_floor=auction_floor, auction_span=auction_span,
                           last_resort_after=last_resort_after, fund_account=fund_account)
        res = deploy_protocol(web3_for(chain.url), keys[0], [Account.from_key(k).address for k in keys[1:]], cfg,
                     rpc_url=chain.url, deployment_file=deployment_file, progress=lambda m: click.echo(f"  {m}"))
    except DeployError as e:
        chain.stop()
        fail("backstop", str(e))
    click.echo(f"deployed on chain {res.chain_id} at block {res.block}: Clearinghouse {res.clearinghouse}, "
               f"auction {res.auction}, fund's account {res.fund_account or 'none'}; wrote {res.deployment_file}")
    if chain.started_here:
        if keep_running:
            click.echo(f"{backend} is running at {chain.url} (pid {chain.process.pid}); Ctrl-C stops it")
            try:
                chain.process.wait()
            except KeyboardInterrupt:
                pass
        chain.stop()


@click.command("scenario")
@click.option("--out", "out_dir", default=None, help="output folder (default ./out/scenario-<timestamp>/)")
@click.option("--rpc", "rpc_url", default=None, help="use this node instead of starting a fresh local chain")
@click.option("--backend", type=click.Choice(["anvil", "ganache"]), default="anvil", show_default=True)
@click.option("--jump", type=float, default=-0.30, show_default=True, help="crash jump (simple return)")
@click.option("--vol-spike", type=float, default=2.0, show_default=True, help="ATM vol multiplier at the crash")
@click.option("--base-vol", type=float, default=0.60, show_default=True)
@click.option("--steps", type=int, default=16, show_default=True)
@click.option("--crash-step", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--replay", default=None,
              help="replay a real path: a CSV file, or a name in ../shared/data/price_paths (e.g. ETHUSD_2022-06-13); "
                   "'all': every crash path there, one after another, with one summary table")
@click.option("--shared-data", default=None, help="folder holding price_paths/ (default ../shared/data)")
@click.option("--short-vol", "n_short", type=int, default=18, show_default=True)
@click.option("--long-vol", "n_long", type=int, default=12, show_default=True)
@click.option("--keepers", "keeper_mode", type=click.Choice(["process", "inline"]), default="process",
              show_default=True, help="three `keeper run` processes, or the keepers' work inside this process")
@click.option("--no-manipulation", is_flag=True, help="skip the fat-finger experiment")
@click.option("--liquidators", "liquidator_model", type=click.Choice(["hedging", "conservative", "none"]),
              default="hedging", show_default=True,
              help="the liquidator processes' model: hedging or conservative valuation, or none (no bidder at all: "
                   "they only start and reset auctions and call the buyer of last resort)")
@click.option("--fund-seed", type=float, default=DeployConfig.fund_seed, show_default=True,
              help="the insurance fund's deposit at deployment [quote units]")
@click.option("--no-live", is_flag=True, help="plain log lines instead of the live table")
@_auction_floor_option
@click.option("--small", is_flag=True, help="small, fast configuration (tests, CI)")
@click.option("--keep-chain", is_flag=True,
              help="after the report keep the chain running (Ctrl-C stops it), e.g. to run `backstop verify`")
def scenario_cmd(out_dir, rpc_url, backend, jump, vol_spike, base_vol, steps, crash_step, seed, replay, shared_data,
                 n_short, n_long, keeper_mode, no_manipulation, liquidator_model, fund_seed, no_live, auction_floor,
                 small, keep_chain) -> None:
    """Run the end-to-end crash scenario on a fresh local chain and write the report and plots."""

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    _check_auction_floor(auction_floor)
    if not fund_seed >= 0:
        fail("backstop", f"--fund-seed must be >= 0 quote units, got {fund_seed}")
    if small:
        steps, crash_step, n_short, n_long = min(steps, 8), min(crash_step, 3), min(n_short, 6), min(n_long, 4)
    try:
        crash = CrashConfig(n_steps=steps, crash_step=crash_step, jump=jump, vol_spike=vol_spike, base_vol=base_vol,
                            seed=seed)
        crash.validate()
        cfg = ScenarioConfig(out_dir=out_dir, rpc_url=rpc_url, backend=backend, n_short_vol=n_short,
                             n_long_vol=n_long, crash=crash, replay=replay, shared_dir=shared_data,
                             manipulation=not no_manipulation, live=not no_live, seed=seed, keepers=keeper_mode,
                             keep_chain=keep_chain, auction_floor=auction_floor, liquidators=liquidator_model,
                             fund_seed=fund_seed)
        if small:
            cfg.auction_ticks, cfg.auction_tick_seconds, cfg.mc_paths = 10, 60, 400
        if replay is not None and replay.lower() == "all":
            return _replay_all(cfg)
        scn = Scenario(cfg)
        summary = scn.run()
    except (ValueError, ScenarioError) as e:
        fail("backstop", str(e))
    except Exception as e:  # noqa: BLE001 - DeployError, RPC failures: one line, not a traceback
        fail("backstop", f"{type(e).__name__}: {e}")
    if keep_chain and scn.chain is not None:
        click.echo(f"chain kept at {scn.chain.url}; try: backstop verify --auction 1 --rpc {scn.chain.url} "
                   f"--deployment {scn.out / 'deployment.json'} --archive {scn.archive_dir}   (Ctrl-C stops)")
        try:
            if scn.chain.process is not None:
                scn.chain.process.wait()
        except KeyboardInterrupt:
            pass
        scn.chain.stop()
    bad = [k for k, v in (summary.get("invariants") or {}).items() if not v.get("ok")]
    if summary.get("healthy_accounts_liquidated") or bad:
        fail("backstop", f"scenario finished but invariants failed: {', '.join(bad) or 'healthy account liquidated'}", 1)


def _replay_all(base: ScenarioConfig) -> None:
    """Every real crash path, one after another, each on its own fresh chain in ``<out>/<path>/``; one table."""
    names = real_path_names(Path(base.shared_dir) if base.shared_dir else None)
    out = Path(base.out_dir) if base.out_dir else Path("out") / f"replay-all-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, name in enumerate(names, 1):
        click.echo(f"[{i}/{len(names)}] {name}")
        cfg = dataclasses.replace(base, replay=name, out_dir=str(out / name), live=False, keep_chain=False)
        try:
            scn = Scenario(cfg)
            scn.run()
            rows.append(replay_row(name, json.loads((scn.out / "report.json").read_text())))
        except Exception as e:  # noqa: BLE001 - one path failing must not stop the others; its row says why
            rows.append(failed_row(name, f"{type(e).__name__}: {e}"))
    render_replay_table(rows)
    path = write_summary(out, rows)
    click.echo(f"wrote {path}")
    bad = [r["path"] for r in rows if not r.get("invariants_ok") or r.get("healthy_liquidated")]
    if bad:
        fail("backstop", f"--replay all: invariants failed or healthy accounts liquidated on {', '.join(bad)}", 1)


@click.command("verify")
@click.option("--account", default=None, help="verify the latest liquidation of this account")
@click.option("--auction", "auction_id", type=int, default=None, help="verify this auction id")
@click.option("--deployment", "deployment_file", default="deployment.json", show_default=True)
@click.option("--rpc", "rpc_url", default=DEFAULT_RPC_URL, show_default=True)
@click.option("--archive", "archive_dirs", multiple=True,
              help="folder of archived inputs (<inputsHash>.json); may repeat")
@click.option("--keeper-url", "keeper_urls", multiple=True, help="keeper HTTP API serving /archive/<hash>")
@click.option("--json", "as_json", is_flag=True, help="print the full result as JSON")
def verify_cmd(account, auction_id, deployment_file, rpc_url, archive_dirs, keeper_urls, as_json) -> None:
    """Check a liquidation against the protocol's rules: attestation signatures, Merkle proof, the archive's hash,
    equity and margins recomputed and the marks re-derived from the archived raw quotes, the auction's start price
    and every bid (docs/verify.md). Exit 0: rules followed; 1: a rule broken (named); 2: bad input (one line)."""

    if (account is None) == (auction_id is None):
        fail("backstop", "give exactly one of --account or --auction")
    try:
        result = verify_liquidation(rpc_url=rpc_url, deployment_file=deployment_file, account=account,
                                    auction_id=auction_id, archive_dirs=[Path(d) for d in archive_dirs],
                                    keeper_urls=list(keeper_urls))
    except VerifyError as e:
        fail("backstop", str(e))
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        for line in result["lines"]:
            click.echo(line)
    sys.exit(0 if result["followed_rules"] else 1)


#: the names ``keeper/cli/main.py`` looks up (PLUGIN_COMMANDS)
deploy = deploy_cmd
scenario = scenario_cmd
verify = verify_cmd

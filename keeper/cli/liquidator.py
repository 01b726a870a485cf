"""``liquidator run``: the liquidator bot's command line (wired into ``keeper/cli/main.py`` as ``liquidator_main``).

    liquidator run --deployment deployment.json [--rpc URL] [--key-env BACKSTOP_LIQUIDATOR_KEY]
                   [--strategy edge|edge:0.05|cmd:'<command>'|py:module:Class] [--edge 0.02]
                   [--valuation hedging|conservative] [--hedge-horizon 3600] [--no-last-resort] ...

The private key is read from the environment variable named by ``--key-env`` (never from the command line).
Bad input exits with status 2 and one readable line.
"""
from __future__ import annotations

import logging
import os
import signal

import click

from keeper.bots.liquidator.bot import LiquidatorBot, LiquidatorSettings
from keeper.cli.common import fail
from keeper.ops.config import DEFAULT_RPC_URL


@click.group(name="liquidator")
def liquidator_main() -> None:
    """Backstop liquidator: values auction lots with its own model and bids when they pay."""


@liquidator_main.command("run")
@click.option("--deployment", "deployment_file", default="deployment.json", show_default=True,
              help="deployment file written by `backstop deploy`")
@click.option("--rpc", "rpc_url", default=DEFAULT_RPC_URL, show_default=True)
@click.option("--key-env", default="BACKSTOP_LIQUIDATOR_KEY", show_default=True,
              help="environment variable holding the hex private key")
@click.option("--strategy", default="edge", show_default=True,
              help="edge | edge:<x> | none (never bids: starts, resets, buyer of last resort only) | "
                   "cmd:<command> (JSON lines on stdin/stdout) | py:<module>:<Class>")
@click.option("--edge", type=float, default=0.02, show_default=True, help="required discount to own valuation")
@click.option("--valuation", type=click.Choice(["hedging", "conservative"]), default="hedging", show_default=True,
              help="hedging: model value less hedge/exit spreads and residual gamma/vega over the hedge horizon; "
                   "conservative: aversion x worst stress loss of the unhedged lot, collateral at own haircut")
@click.option("--hedge-horizon", "hedge_horizon_s", type=float, default=3600.0, show_default=True,
              help="hedging valuation: seconds to work the options out (the residual risk's window)")
@click.option("--aversion", type=float, default=0.25, show_default=True,
              help="conservative valuation: share of the lot's worst stress loss charged against its value")
@click.option("--own-haircut", type=float, default=0.10, show_default=True,
              help="conservative valuation: own haircut of risky collateral")
@click.option("--vol", type=float, default=0.8, show_default=True, help="flat vol when no market file is given")
@click.option("--market-file", default=None, help="JSON {spot, atm_vol, skew, curvature} re-read every pass")
@click.option("--poll", "poll_s", type=float, default=0.5, show_default=True)
@click.option("--min-fraction", type=float, default=0.01, show_default=True)
@click.option("--margin-safety", type=float, default=0.8, show_default=True,
              help="use at most this share of own headroom for one bid")
@click.option("--gas-price-gwei", type=float, default=1.0, show_default=True)
@click.option("--no-start", is_flag=True, help="do not start auctions for breached accounts")
@click.option("--no-settle-claims", is_flag=True,
              help="do not settle own liquidation claims when their auction ends (still settled before bidding on "
                   "another account, which the core requires)")
@click.option("--no-prime-claim-slot", is_flag=True,
              help="do not write the own claim slot at start (primeClaimSlot); the first bid then costs ~17k gas more")
@click.option("--no-last-resort", is_flag=True,
              help="do not call takeAsLastResort when an auction is due for the buyer of last resort (leave it to "
                   "others, e.g. the fund's operator)")
@click.option("--keeper-url", "keeper_urls", multiple=True,
              help="keeper HTTP API (for recordMargin proofs of its own account and of expired breaches); repeatable")
@click.option("--keeper-urls-file", default=None, help="JSON list of keeper URLs, re-read when needed")
@click.option("--name", default="liquidator", show_default=True)
@click.option("--events-file", default=None, help="append every decision and outcome as JSON lines")
@click.option("--metrics-port", type=int, default=0, help="Prometheus metrics on 127.0.0.1:<port> (0: off)")
@click.option("--max-seconds", type=float, default=None, help="stop after this long (default: until signalled)")
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def run_cmd(deployment_file, rpc_url, key_env, strategy, edge, valuation, hedge_horizon_s, aversion, own_haircut, vol,
            market_file, poll_s, min_fraction, margin_safety, gas_price_gwei, no_start, no_settle_claims,
            no_prime_claim_slot, no_last_resort, keeper_urls, keeper_urls_file, name, events_file, metrics_port,
            max_seconds, log_level) -> None:
    """Watch breaches and auctions; start auctions, bid when the price beats the valuation by the edge, and call
    the buyer of last resort when an auction is due for it."""

    logging.basicConfig(level=getattr(logging, log_level), format=f"%(asctime)s {name} %(levelname)s %(message)s")
    key = os.environ.get(key_env, "").strip()
    if not key:
        fail("liquidator", f"no private key: set the environment variable {key_env}")
    if not os.path.isfile(deployment_file):
        fail("liquidator", f"deployment file not found: {deployment_file}")
    if not 0 <= edge < 1:
        fail("liquidator", f"--edge must be in [0, 1), got {edge}")
    if not hedge_horizon_s > 0:
        fail("liquidator", f"--hedge-horizon must be > 0 seconds, got {hedge_horizon_s}")
    settings = LiquidatorSettings(
        rpc_url=rpc_url, deployment_file=deployment_file, key=key, strategy=strategy, edge=edge, valuation=valuation,
        hedge_horizon_s=hedge_horizon_s, take_last_resort=not no_last_resort, aversion=aversion,
        own_haircut=own_haircut, vol=vol, market_file=market_file, poll_s=poll_s, min_fraction=min_fraction,
        margin_safety=margin_safety, gas_price_gwei=gas_price_gwei, start_auctions=not no_start,
        settle_claims=not no_settle_claims, prime_claim_slot=not no_prime_claim_slot, name=name,
        keeper_urls=tuple(keeper_urls), keeper_urls_file=keeper_urls_file,
        events_file=events_file, metrics_port=metrics_port)
    try:
        bot = LiquidatorBot(settings)
    except (ValueError, KeyError, OSError) as e:
        fail("liquidator", f"cannot start: {e}")
    except Exception as e:  # noqa: BLE001 - RPC down, bad key, ...
        fail("liquidator", f"cannot start: {type(e).__name__}: {e}")
    signal.signal(signal.SIGTERM, lambda *_: bot.stop())
    signal.signal(signal.SIGINT, lambda *_: bot.stop())
    bot.run(max_seconds)


if __name__ == "__main__":  # pragma: no cover
    liquidator_main()

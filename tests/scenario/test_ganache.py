"""Deploy and one liquidation auction on Ganache (the deploy code starts its own Ganache on a free port):
deployment, set-up attestation, a crash attestation, an auction started and a bid filled by the bot, then
``backstop verify`` agrees with it."""
from __future__ import annotations

import pytest

from keeper.bots.liquidator.bot import LiquidatorBot, LiquidatorSettings
from keeper.scenario.runner import Scenario, ScenarioConfig
from keeper.data.paths import CrashConfig
from keeper.bots.liquidator.strategies import EdgeStrategy
from keeper.verify.liquidation import verify_liquidation


@pytest.mark.ganache
def test_deploy_and_one_auction_on_ganache(tmp_path):
    cfg = ScenarioConfig(out_dir=str(tmp_path), backend="ganache", n_short_vol=3, n_long_vol=2, live=False,
                         mc_paths=300, manipulation=False, crash=CrashConfig(n_steps=3, crash_step=1),
                         auction_floor=0.1)  # the lowest floor allowed: the price falls until the bot valuation takes it
    scn = Scenario(cfg)
    scn.start_chain_and_deploy()
    try:
        assert scn.chain.backend == "ganache"
        assert scn.ch.functions.threshold().call() == 2 and len(scn.ch.functions.keepers().call()) == 3
        assert scn.ch.functions.liquidationModule().call() == scn.dep.auction
        scn.setup_book()
        breached = []
        for spot, vol in ((1800.0, 0.8), (1700.0, 0.9), (1600.0, 1.0), (1500.0, 1.1), (1400.0, 1.2)):
            scn.advance(60)
            att = scn.attest(spot, vol)
            breached = [x.account for x in att.leaves if 0 < x.equity < x.maintenance]
            if breached:
                scn.write_market_file(spot, vol)
                break
        assert breached
        a = scn.actor("liquidator-1")
        bot = LiquidatorBot(LiquidatorSettings(rpc_url=scn.chain.url, deployment_file=str(scn.out / "deployment.json"),
                                               key=a.key, market_file=str(scn.out / "market.json")),
                            strategy=EdgeStrategy(0.0))
        bot.poll_events()
        acct = breached[0]
        assert acct in bot.running
        outcome = None
        for _ in range(20):  # let the Dutch price fall until the bot's valuation covers it
            scn.advance(30)
            got = bot.evaluate(acct)
            if got and got[1].bid:
                outcome = bot.bid(acct, got[0], got[1])
                break
        assert outcome == "filled"
        aid = bot.running.get(acct) or scn.auction.events.Bid().get_logs(from_block=scn.dep.block)[-1]["args"]["id"]
        r = verify_liquidation(rpc_url=scn.chain.url, deployment_file=scn.out / "deployment.json", auction_id=aid,
                               archive_dirs=[scn.archive_dir])
        assert r["followed_rules"], r["lines"]
    finally:
        scn.chain.stop()

"""The liquidator tests' small crash-scenario chain (tests/bots/liquidator/conftest.py): Anvil on a free port, the
protocol deployed, the book set up, 15 minutes on the clock."""
from __future__ import annotations

from keeper.data.paths import CrashConfig
from keeper.scenario.runner import Scenario, ScenarioConfig


def scenario_chain(tmp_path_factory, n_short_vol: int = 3):
    """The set-up :class:`Scenario` with ``n_short_vol`` short-vol traders (their books cycle through
    ``keeper.scenario.setup.SHORT_BOOKS``: ETH puts, BTC puts, hedged across assets, both); its chain stops after."""
    cfg = ScenarioConfig(out_dir=str(tmp_path_factory.mktemp("liquidator")), n_short_vol=n_short_vol, n_long_vol=2,
                         live=False, mc_paths=300, manipulation=False, crash=CrashConfig(n_steps=3, crash_step=1),
                         auction_floor=0.1)
    scn = Scenario(cfg)
    scn.start_chain_and_deploy()
    try:
        scn.setup_book()
        scn.fund_before = int(scn.auction.functions.fundBalance().call())
        scn.advance(900)
        yield scn
    finally:
        scn.chain.stop()

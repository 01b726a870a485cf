"""A small crash-scenario chain for the liquidator tests: Anvil on a free port, the protocol deployed, a book of
three short-vol and two long-vol traders, 15 minutes on the clock. Each test module gets its own. The auction has the
lowest floor the contract allows (``auction_floor=0.1``, MIN_CUSP) and the bots value lots at their model value
(``aversion=0``): these tests are about bidding and claims, with prices that fall until the bots take them (the
default, conservative risk charge would often wait below the floor: issue 14); the floor and resets are tested in tests/auction and by the scenario tests."""
from __future__ import annotations

import pytest

from keeper.scenario.runner import Scenario, ScenarioConfig
from keeper.data.paths import CrashConfig


@pytest.fixture(scope="module")
def small_scenario(tmp_path_factory):
    """The set-up :class:`Scenario`; its chain is stopped after the module's tests."""
    cfg = ScenarioConfig(out_dir=str(tmp_path_factory.mktemp("liquidator")), n_short_vol=3, n_long_vol=2, live=False,
                         mc_paths=300, manipulation=False, crash=CrashConfig(n_steps=3, crash_step=1),
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

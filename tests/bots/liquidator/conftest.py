"""A small crash-scenario chain for the liquidator tests: Anvil on a free port, the protocol deployed, a book of
three short-vol and two long-vol traders, 15 minutes on the clock. Each test module gets its own. The auction has the
lowest floor the contract allows (``auction_floor=0.1``, MIN_CUSP) and the bots value lots with the default hedging
valuation (``valuation="hedging"``: model value less the hedged book's residual gamma/vega charge and a spread;
``keeper.bots.liquidator.hedging``): these tests are about bidding and claims, with prices that fall until the bots
take them; the floor and resets are tested in tests/auction and by the scenario tests, and the conservative valuation
(aversion x stress loss) in tests/bots/liquidator/test_chosen_design.py and test_model.py."""
from __future__ import annotations

import pytest

from liquidator_chain import scenario_chain


@pytest.fixture(scope="module")
def small_scenario(tmp_path_factory):
    """The set-up :class:`Scenario`; its chain is stopped after the module's tests."""
    yield from scenario_chain(tmp_path_factory)

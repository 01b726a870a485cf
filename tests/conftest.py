"""Shared test fixtures.

Real market data lives outside the project in ``../shared/data`` (see its README); tests that need it take the
``shared_data`` fixture and are skipped, with the reason, where that folder is absent (a user's clone has none).

Every test run launches its own chain: brownie's local networks would launch Anvil/Ganache on port 8545 and
*attach* to whatever already listens there (another clone's test run, a scenario), so two runs on one machine
would share, snapshot and revert one chain. This file moves them to a free port (``BACKSTOP_CHAIN_PORT=<port>``
pins one, e.g. to attach on purpose) and ``_own_chain`` stops the run if brownie attached to a chain it did not
launch. See ``scripts/toolchain/backstop_toolchain.py`` for the rest of the per-checkout state.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: the keepers' integration harness (``import harness``: tests/bots/keeper, tests/chain, tests/cli)
sys.path.insert(0, str(Path(__file__).resolve().parent / "bots" / "keeper"))

try:
    import backstop_toolchain
except ImportError:  # a venv that bootstrap.sh did not set up: same module, from the checkout
    sys.path.insert(0, str(PROJECT_ROOT / "scripts" / "toolchain"))
    import backstop_toolchain

# runs when pytest loads this file, before brownie connects (at the end of collection)
CHAIN_PORT, CHAIN_PORT_PINNED = backstop_toolchain.isolate_chain()
# a send returns once its receipt is stored (Anvil shows the new nonce before the receipt, which brownie reads
# as a dropped transaction): registered by the venv hook, again here for a venv without it (idempotent)
backstop_toolchain.register_send_returns_mined()


@pytest.fixture(scope="session", autouse=True)
def _own_chain():
    """The chain this run talks to is the one it launched (not one that happened to listen on its port)."""
    import brownie

    if (brownie.network.is_connected() and brownie.network.rpc.is_active() and not CHAIN_PORT_PINNED
            and not brownie.network.rpc.is_child()):
        pytest.exit(f"brownie attached to a chain it did not launch on port {CHAIN_PORT}; refusing to share it",
                    returncode=3)
    yield


def _shared_data_dir() -> Path:
    override = os.environ.get("BACKSTOP_SHARED_DATA")
    return Path(override) if override else PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real Deribit option chains and crash price paths; skips the test where it is absent."""
    folder = _shared_data_dir()
    if not (folder / "option_chains").is_dir() or not (folder / "price_paths").is_dir():
        pytest.skip(f"real market data not found at {folder} (set BACKSTOP_SHARED_DATA or clone beside ../shared/data)")
    return folder

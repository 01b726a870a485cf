"""Fixtures for the protocol-core tests (helpers in core_helpers.py, importable by other test folders).

* ``tokens``: USDC-like quote asset (6 decimals), WETH (18), WBTC (8), all test ERC20s with open mint.
* ``keeper_keys``: five deterministic eth-account keys; ``protocol`` registers them 3-of-5.
* ``protocol``: a deployed ``Clearinghouse`` (+ ``ClearinghouseAdmin``) wrapped in ``core_helpers.Protocol``.
* ``state_machine_py``: brownie's state-machine runner from its pure-Python source.
"""
from __future__ import annotations

import pytest
from brownie import ReentrantERC20, TestERC20, accounts
from eth_account import Account
from eth_utils import keccak

from core_helpers import Protocol, deploy_protocol


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    pass


@pytest.fixture(scope="module")
def keeper_keys():
    """Five deterministic keeper keys (eth-account LocalAccounts)."""
    return [Account.from_key(keccak(text=f"backstop-keeper-{i}")) for i in range(5)]


@pytest.fixture(scope="module")
def owner():
    return accounts[0]


@pytest.fixture(scope="module")
def tokens(owner):
    usdc = TestERC20.deploy("USD Coin", "USDC", 6, {"from": owner})
    weth = TestERC20.deploy("Wrapped Ether", "WETH", 18, {"from": owner})
    wbtc = TestERC20.deploy("Wrapped Bitcoin", "WBTC", 8, {"from": owner})
    return usdc, weth, wbtc


@pytest.fixture(scope="module")
def protocol(owner, tokens, keeper_keys) -> Protocol:
    return deploy_protocol(owner, *tokens, keeper_keys)


@pytest.fixture(scope="module")
def traders(owner):
    """Two funded local accounts with private keys (makers sign quotes with them)."""
    out = []
    for i in range(2):
        a = accounts.add(keccak(text=f"backstop-trader-{i}"))
        owner.transfer(a, "10 ether")
        out.append(a)
    return out


@pytest.fixture(scope="module")
def reentrant_token(owner):
    return ReentrantERC20.deploy({"from": owner})


@pytest.fixture
def state_machine_py():
    """brownie's own ``state_machine`` runner, loaded from its pure-Python source.

    The mypyc-compiled ``brownie.test.stateful`` in eth-brownie 1.22.2 rejects the machine class it generates
    itself ("_BrownieStateMachine object expected; got BrownieStateMachine"), so the ``state_machine`` fixture
    cannot run any machine. The uncompiled ``stateful.py`` shipped beside it is the same code and works.
    """
    import importlib.util
    from pathlib import Path

    import brownie.test

    path = Path(brownie.test.__file__).with_name("stateful.py")
    spec = importlib.util.spec_from_file_location("_brownie_stateful_source", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.state_machine

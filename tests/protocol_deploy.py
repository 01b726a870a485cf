"""The one way the test suites deploy the protocol's core: the fallback-margin library, both halves of the
Clearinghouse, the keeper set and the listed collateral, with the full API reached through ``IClearinghouse`` (the
one ABI Python loads, keeper.chain.deployment.load_abi). tests/contracts (``deploy_protocol``) and tests/auction
(``deploy_core``) build their fixtures on it; the keeper and scenario suites deploy through the production path
(keeper.chain.deploy.deploy) instead, which tests the deployment tooling itself."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from brownie import Clearinghouse, ClearinghouseAdmin, Contract, FallbackMarginLogic, web3
from eth_utils import keccak

from keeper.chain.deployment import load_abi


@dataclass
class CoreContracts:
    """``raw``: the Clearinghouse as deployed (its own ABI); ``ch``: the same address with the full API; ``admin``:
    the admin half it delegates to."""

    raw: object
    ch: object
    admin: object


def deploy_clearinghouse(owner, quote, keepers: Sequence[str], threshold: int, quote_cap: int, short_fraction: int,
                         listings: Sequence[tuple] = ()) -> CoreContracts:
    """Deploy the core with ``owner`` as owner (no timelock: unit tests drive the admin functions directly), set the
    keeper set and list each ``(token, haircut [WAD], cap [token units])`` as collateral."""
    FallbackMarginLogic.deploy({"from": owner})  # external library linked into ClearinghouseAdmin
    admin = ClearinghouseAdmin.deploy(owner, quote, quote_cap, short_fraction, {"from": owner})
    raw = Clearinghouse.deploy(owner, quote, quote_cap, short_fraction, admin, {"from": owner})
    ch = Contract.from_abi("Backstop", raw.address, load_abi("clearinghouse"))
    ch.setKeeperSet(list(keepers), threshold, {"from": owner})
    for token, haircut, cap in listings:
        ch.listCollateral(token, haircut, cap, {"from": owner})
    return CoreContracts(raw, ch, admin)


def last_margin_timestamp(clearinghouse) -> int:
    """The timestamp of the last margin root the clearinghouse accepted (``lastMarginAttestation()``, an admin-half
    view reached through the fallback, called raw so any of its ABIs will do); it reverts with the chain."""
    out = web3.eth.call({"to": str(clearinghouse.address if hasattr(clearinghouse, "address") else clearinghouse),
                         "data": "0x" + keccak(text="lastMarginAttestation()")[:4].hex()})
    return int.from_bytes(bytes(out)[32:64], "big")

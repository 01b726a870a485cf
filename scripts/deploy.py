"""Deploy Backstop to the active brownie network and write the deployment file the bots read.

    brownie run scripts/deploy.py                          # Anvil (brownie's default `development` network)
    brownie run scripts/deploy.py --network ganache-cli    # Ganache

The work is done by :func:`keeper.chain.deploy.deploy` (the same code as ``backstop deploy``): tokens, Clearinghouse,
the 2-of-3 keeper set, collateral listings with haircuts and caps, the option series grid, the liquidation auction
and a seeded insurance fund. Keys come from the network's mnemonic (brownie's local chains are started from a
known one); keys are derived from the standard local test mnemonic (``$BACKSTOP_MNEMONIC`` to override) and the
deployer is funded from brownie's first unlocked account when it has no ether there (Ganache's ``brownie`` seed is
not a BIP-39 mnemonic). The deployment file goes to ``$BACKSTOP_DEPLOYMENT`` or ``./deployment.json``.
"""
from __future__ import annotations

import os

from brownie import accounts, network, web3
from eth_account import Account

from keeper.chain.local import DEFAULT_MNEMONIC
from keeper.chain.deploy import DeployConfig, deploy, derive_keys, web3_for


def main() -> None:
    url = web3.provider.endpoint_uri
    keys = derive_keys(os.environ.get("BACKSTOP_MNEMONIC", DEFAULT_MNEMONIC), 4)
    deployer = Account.from_key(keys[0]).address
    if web3.eth.get_balance(deployer) < 10**18:
        accounts[0].transfer(deployer, "100 ether")
    keepers = [Account.from_key(k).address for k in keys[1:4]]
    out = os.environ.get("BACKSTOP_DEPLOYMENT", "deployment.json")
    res = deploy(web3_for(url), keys[0], keepers, DeployConfig(), rpc_url=url, deployment_file=out,
                 progress=lambda m: print(f"  {m}"))
    print(f"Backstop deployed on {network.show_active()} (chain {res.chain_id}) at block {res.block}: "
          f"Clearinghouse {res.clearinghouse}, auction {res.auction}; deployment file {res.deployment_file}")

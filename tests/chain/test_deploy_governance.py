"""`keeper.chain.deploy.deploy` ends with the protocol owned by a BackstopTimelock (issue 12, finding H-2): on a real Anvil,
the deployer's key can no longer use any owner power directly, the timelock's delay is the deployment parameter, the
deployer keeps only the proposer role, and the guardian and the risk admin are set."""
from __future__ import annotations

import pytest

import harness as h
from keeper.errors import TxFailed
from keeper.chain.deploy import load_artifacts
from keeper.chain.sender import Sender


@pytest.mark.chain
def test_deploy_hands_every_owner_power_to_the_timelock(tmp_path):
    net = h.start_net(tmp_path)
    try:
        w3, res, ch = net.w3, net.res, net.ch
        deployer = Sender(w3, net.keys[0])
        assert res.timelock and res.params["governance_delay"] == 2 * 86400
        tl = w3.eth.contract(address=res.timelock, abi=load_artifacts(["BackstopTimelock"])["BackstopTimelock"].abi)
        auction = w3.eth.contract(address=res.auction,
                                  abi=load_artifacts(["LiquidationAuction"])["LiquidationAuction"].abi)
        assert int(tl.functions.getMinDelay().call()) == 2 * 86400
        assert ch.functions.owner().call() == res.timelock and auction.functions.owner().call() == res.timelock
        admin, proposer = tl.functions.DEFAULT_ADMIN_ROLE().call(), tl.functions.PROPOSER_ROLE().call()
        assert tl.functions.hasRole(proposer, deployer.address).call()
        assert not tl.functions.hasRole(admin, deployer.address).call()
        assert tl.functions.hasRole(admin, res.timelock).call()  # the timelock administers itself
        assert ch.functions.guardian().call() == deployer.address == ch.functions.riskAdmin().call()
        assert auction.functions.guardian().call() == deployer.address
        # the buyer of last resort's account: the deployer's address by default (set before the hand-over)
        assert auction.functions.fundAccount().call() == deployer.address == res.fund_account
        # the deployer's key: no direct owner power left, the guardian's pause works
        with pytest.raises(TxFailed, match=r"setKeeperSet would revert: OwnableUnauthorizedAccount\("):
            deployer.call(ch.functions.setKeeperSet([deployer.address], 1), "setKeeperSet")
        with pytest.raises(TxFailed, match=r"setConfig would revert: OwnableUnauthorizedAccount\("):
            deployer.call(auction.functions.setConfig(tuple(res.params["auction_config"])), "setConfig")
        deployer.call(ch.functions.pause(), "pause")
        assert ch.functions.paused().call()
    finally:
        net.chain.stop()

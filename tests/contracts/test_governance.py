"""Ownership (two-step), bounded parameters, series registry bounds, the admin-code binding."""
import brownie
from brownie import Clearinghouse, ClearinghouseAdmin, FallbackMarginLogic, TestERC20, accounts

from core_helpers import QUOTE_CAP, SHORT_FRACTION, WAD, bytes32, err

BOUNDS = "CH_ParameterOutOfBounds(bytes32,uint256,uint256,uint256)"


def test_two_step_ownership(protocol, owner):
    p = protocol
    new = accounts[8]
    p.ch.transferOwnership(new, {"from": owner})
    assert p.ch.owner() == owner and p.ch.pendingOwner() == new
    with brownie.reverts(err("OwnableUnauthorizedAccount(address)", str(accounts[7]))):
        p.ch.acceptOwnership({"from": accounts[7]})
    p.ch.acceptOwnership({"from": new})
    assert p.ch.owner() == new
    with brownie.reverts(err("EP_NotGuardian(address)", str(owner))):
        p.ch.pause({"from": owner})
    with brownie.reverts(err("OwnableUnauthorizedAccount(address)", str(owner))):
        p.ch.setKeeperSet([str(owner)], 1, {"from": owner})
    p.ch.pause({"from": new})
    assert p.ch.paused()


def test_parameter_bounds_and_events(protocol, owner):
    p = protocol
    with brownie.reverts(err(BOUNDS, bytes32("maxAttestationAge"), 3601, 5, 3600)):
        p.ch.setMaxAttestationAge(3601, {"from": owner})
    with brownie.reverts(err(BOUNDS, bytes32("shortMarginFraction"), 10**16, 5 * 10**16, WAD)):
        p.ch.setShortMarginFraction(10**16, {"from": owner})
    tx = p.ch.setMaxAttestationAge(600, {"from": owner})
    assert int(p.ch.maxAttestationAge()) == 600 and tx.events["ParameterSet"]["value"] == 600
    p.ch.setShortMarginFraction(2 * 10**17, {"from": owner})
    assert int(p.ch.shortMarginFraction()) == 2 * 10**17
    with brownie.reverts(err(BOUNDS, bytes32("keeperCount"), 17, 1, 16)):
        p.ch.setKeeperSet([f"0x{i + 1:040x}" for i in range(17)], 9, {"from": owner})


def test_series_registry_bounds(protocol, owner):
    p = protocol
    now = p.now()
    with brownie.reverts(err(BOUNDS, bytes32("strike"), 0, 1, 10**36)):
        p.ch.createSeries(p.weth, 0, now + 86400, True, {"from": owner})
    tx = p.ch.createSeries(p.weth, 2000 * WAD, now + 86400, False, {"from": owner})
    sid = tx.events["SeriesCreated"]["seriesId"]
    s = p.ch.series(sid)
    assert (s[0], int(s[1]), bool(s[2]), int(s[3])) == (str(p.weth), now + 86400, False, 2000 * WAD)
    assert tx.events["SeriesCreated"]["quoteAsset"] == p.usdc
    with brownie.reverts(err("CH_UnknownSeries(uint256)", 77)):
        p.ch.series(77)


def test_admin_must_match_quote_asset(owner, tokens):
    usdc, weth, _ = tokens
    FallbackMarginLogic.deploy({"from": owner})  # external library linked into ClearinghouseAdmin
    admin = ClearinghouseAdmin.deploy(owner, weth, QUOTE_CAP, SHORT_FRACTION, {"from": owner})
    with brownie.reverts(err("CH_AdminMismatch(address)", str(admin))):
        Clearinghouse.deploy(owner, usdc, QUOTE_CAP, SHORT_FRACTION, admin, {"from": owner})

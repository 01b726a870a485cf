"""Collateral: decimals 6/8/18, haircut valuation, caps, listing errors, withdrawals under margin, re-entrancy, pause."""
from fractions import Fraction
from math import floor

import brownie
import pytest
from brownie import RevertingDecimalsToken, TestERC20, accounts
from eth_utils import keccak

from core_helpers import EMPTY_PROOF, USDC, WAD, bytes32, err

BOUNDS = "CH_ParameterOutOfBounds(bytes32,uint256,uint256,uint256)"


def _value(amount, decimals, price_wad, haircut_wad, quote_decimals=6):
    """Independent haircut valuation with exact rationals, rounded down."""
    whole = Fraction(amount, 10**decimals) * Fraction(price_wad, WAD)
    return floor(whole * 10**quote_decimals * Fraction(WAD - haircut_wad, WAD))


@pytest.mark.ganache
def test_deposits_of_6_8_18_decimals_and_haircut_value(protocol, traders):
    p = protocol
    t = traders[0]
    p.fund(t, p.usdc, 1_234_567)  # 1.234567 USDC
    p.fund(t, p.weth, 1_500_000_000_000_000_001)  # 1.5 WETH + 1 wei
    p.fund(t, p.wbtc, 12_345_679)  # 0.12345679 WBTC
    eth_px, btc_px = 3001 * WAD + 7, 61_234 * WAD + 3
    p.post_prices({p.weth: eth_px, p.wbtc: btc_px})
    expected = 1_234_567 + _value(1_500_000_000_000_000_001, 18, eth_px, 2 * 10**17) + _value(12_345_679, 8, btc_px, 10**17)
    assert int(p.ch.collateralValue(t)) == expected
    assert int(p.ch.cashOf(t)) == 1_234_567
    assert int(p.ch.collateralOf(t, p.wbtc)) == 12_345_679
    assert set(p.ch.collateralAssetsOf(t)) == {str(p.weth), str(p.wbtc)}
    # the first deposit creates the record (nonce 1), the two collateral deposits move it; a later quote deposit does
    # not (quote cash only raises equity, so an attestation without it stays conservative and dust deposits cannot
    # make pending leaves stale)
    assert int(p.ch.stateNonce(t)) == 3
    p.fund(t, p.usdc, 1)
    assert int(p.ch.stateNonce(t)) == 3
    assert p.balances_conserved([t])


def test_deposit_cap_and_unlisted(protocol, owner, traders):
    p = protocol
    t = traders[0]
    p.ch.setCollateralParams(p.wbtc, 10**17, 5 * 10**8, {"from": owner})
    p.fund(t, p.wbtc, 4 * 10**8)
    p.wbtc.mint(t, 2 * 10**8, {"from": t})
    p.wbtc.approve(p.ch, 2 * 10**8, {"from": t})
    with brownie.reverts(err("CH_DepositCapExceeded(address,uint256,uint256)", str(p.wbtc), 6 * 10**8, 5 * 10**8)):
        p.ch.deposit(p.wbtc, 2 * 10**8, {"from": t})
    other = TestERC20.deploy("X", "X", 18, {"from": owner})
    with brownie.reverts(err("CH_AssetNotListed(address)", str(other))):
        p.ch.deposit(other, 1, {"from": t})
    with brownie.reverts(err("CH_ZeroAmount()")):
        p.ch.deposit(p.wbtc, 0, {"from": t})


@pytest.mark.ganache
def test_listing_rejects_bad_decimals(protocol, owner):
    p = protocol
    big = TestERC20.deploy("Big", "BIG", 24, {"from": owner})
    with brownie.reverts(err("CH_DecimalsTooLarge(address,uint8)", str(big), 24)):
        p.ch.listCollateral(big, 0, 1, {"from": owner})
    broken = RevertingDecimalsToken.deploy({"from": owner})
    with brownie.reverts(err("CH_DecimalsUnreadable(address)", str(broken))):
        p.ch.listCollateral(broken, 0, 1, {"from": owner})
    with brownie.reverts(err("CH_NotAContract(address)", str(accounts[7]))):
        p.ch.listCollateral(accounts[7], 0, 1, {"from": owner})
    with brownie.reverts(err("CH_AssetAlreadyListed(address)", str(p.weth))):
        p.ch.listCollateral(p.weth, 0, 1, {"from": owner})


def test_risk_admin_bounds(protocol, owner, traders):
    p = protocol
    with brownie.reverts(err(BOUNDS, bytes32("haircut"), 9 * 10**17 + 1, 0, 9 * 10**17)):
        p.ch.setCollateralParams(p.weth, 9 * 10**17 + 1, 1, {"from": owner})
    with brownie.reverts(err(BOUNDS, bytes32("haircut"), 1, 0, 0)):
        p.ch.setCollateralParams(p.usdc, 1, 1, {"from": owner})
    with brownie.reverts(err(BOUNDS, bytes32("depositCap"), 0, 1, 2**128 - 1)):
        p.ch.setCollateralParams(p.weth, 0, 0, {"from": owner})
    with brownie.reverts(err("CH_NotOwnerOrRiskAdmin(address)", str(traders[0]))):
        p.ch.setCollateralParams(p.weth, 0, 1, {"from": traders[0]})
    tx = p.ch.setCollateralParams(p.weth, 3 * 10**17, 77, {"from": owner})
    assert tx.events["CollateralParamsSet"]["haircut"] == 3 * 10**17
    cfg = p.ch.assetConfig(p.weth)
    assert (bool(cfg[0]), int(cfg[1]), int(cfg[2]), int(cfg[3])) == (True, 18, 3 * 10**17, 77)


def test_withdraw_risk_free_needs_no_proof(protocol, traders):
    p = protocol
    t = traders[0]
    p.fund(t, p.weth, 2 * WAD)
    p.fund(t, p.usdc, 50 * USDC)
    before = int(p.weth.balanceOf(t))
    p.ch.withdraw(p.weth, WAD, EMPTY_PROOF, {"from": t})
    p.ch.withdraw(p.usdc, 50 * USDC, EMPTY_PROOF, {"from": t})
    assert int(p.weth.balanceOf(t)) - before == WAD
    assert int(p.ch.collateralOf(t, p.weth)) == WAD and int(p.ch.cashOf(t)) == 0
    with brownie.reverts(err("CH_InsufficientCollateral(address,address,uint256,uint256)", str(t), str(p.weth), WAD, 2 * WAD)):
        p.ch.withdraw(p.weth, 2 * WAD, EMPTY_PROOF, {"from": t})
    with brownie.reverts(err("CH_InsufficientCash(address,int256,uint256)", str(t), 0, 1)):
        p.ch.withdraw(p.usdc, 1, EMPTY_PROOF, {"from": t})
    assert p.balances_conserved([t])


@pytest.mark.ganache
def test_withdraw_with_positions_needs_headroom(protocol, traders):
    p = protocol
    maker, taker = traders
    p.fund(maker, p.usdc, 10_000 * USDC)
    p.fund(taker, p.usdc, 10_000 * USDC)
    p.fund(taker, p.weth, 2 * WAD)
    p.post_prices({p.weth: 3000 * WAD})
    sid, _ = p.new_series()
    # taker buys 1 call from maker (maker sells): proofs for both risk-adding legs
    q, sig = p.quote(maker, sid, -WAD, 100 * WAD)
    p.ch.trade(q, sig, p.attest(maker, 10_000 * USDC, 0, 0), p.attest(taker, 16_000 * USDC, 0, 0), {"from": taker})
    with brownie.reverts(err("CH_MarginProofRequired(address)", str(taker))):
        p.ch.withdraw(p.weth, WAD, EMPTY_PROOF, {"from": taker})
    # headroom equity - IM = 2,999.99 USDC < 1 WETH x 3000 (no haircut credit): refused
    proof = p.attest(taker, 13_000 * USDC, 5_000 * USDC, 10_000 * USDC + 10_000)
    with brownie.reverts(err("CH_InsufficientHeadroom(address,int256,uint256)", str(taker), 2_999_990_000, 3000 * USDC)):
        p.ch.withdraw(p.weth, WAD, proof, {"from": taker})
    proof = p.attest(taker, 13_000 * USDC, 5_000 * USDC, 10_000 * USDC)
    p.ch.withdraw(p.weth, WAD, proof, {"from": taker})
    assert int(p.ch.collateralOf(taker, p.weth)) == WAD
    assert p.balances_conserved([maker, taker])


@pytest.mark.ganache
def test_reentrant_token_cannot_reenter(protocol, owner, traders, reentrant_token):
    p = protocol
    tok = reentrant_token
    t = traders[0]
    p.ch.listCollateral(tok, 0, 10**30, {"from": owner})
    tok.mint(t, 10 * WAD, {"from": t})
    tok.approve(p.ch, 10 * WAD, {"from": t})
    p.ch.deposit(tok, 10 * WAD, {"from": t})
    # the token tries to withdraw again (as the caller's hook would) while the vault pays out
    payload = p.ch.withdraw.encode_input(tok, 5 * WAD, EMPTY_PROOF)
    tok.arm(p.ch, payload, {"from": t})
    p.ch.withdraw(tok, 5 * WAD, EMPTY_PROOF, {"from": t})
    assert int(tok.attempts()) == 1 and not tok.lastSuccess()
    assert bytes(tok.lastRevertData()) == keccak(text="ReentrancyGuardReentrantCall()")[:4]
    # re-entering deposit during a deposit fails the same way
    tok.mint(t, WAD, {"from": t})
    tok.approve(p.ch, 2 * WAD, {"from": t})
    tok.arm(p.ch, p.ch.deposit.encode_input(tok, 1), {"from": t})
    p.ch.deposit(tok, WAD, {"from": t})
    assert int(tok.attempts()) == 2 and not tok.lastSuccess()
    assert int(p.ch.collateralOf(t, tok)) == 6 * WAD == int(tok.balanceOf(p.ch)) == int(p.ch.totalDeposits(tok))


def test_pause_blocks_exposure_not_deposits(protocol, owner, traders):
    p = protocol
    t = traders[0]
    p.ch.pause({"from": owner})
    p.fund(t, p.usdc, 10 * USDC)  # deposits still work
    p.ch.withdraw(p.usdc, 5 * USDC, EMPTY_PROOF, {"from": t})  # risk-free withdrawal still works
    proof = p.attest(t, 5 * USDC, 0, 0)
    with brownie.reverts(err("EP_EnforcedPause()")):
        p.ch.withdraw(p.usdc, 1, proof, {"from": t})
    with brownie.reverts(err("EP_NotGuardian(address)", str(t))):
        p.ch.unpause({"from": t})

"""The liquidation-module hook: set-once module, claim delivery rounding (recordClaim + settleClaim), cash transfer,
breach clearing. The module here is a plain account registered as liquidation module."""
import brownie
import pytest
from brownie import accounts

from core_helpers import EMPTY_PROOF, USDC, WAD, err


def _floor(a, b):
    return a // b


def _ceil(a, b):
    return -(-a // b)


def _conserved(p, accounts_):
    """Token balances == stored cash / collateral (+ credited cash + settlement reserve), per asset."""
    rows = p.stored_conservation(accounts_)
    return all(held == owed for _, held, owed in rows)


def _deliver(p, module, source, holder, share_wad):
    """A bid of `share_wad` of what is left of `source`'s book, delivered at once; returns the settle tx."""
    p.ch.recordClaim(source, holder, share_wad, 0, {"from": module})
    return p.ch.settleClaim(holder, {"from": accounts[9]})


def _portfolio(p, traders):
    """maker short 3 calls + WETH and WBTC collateral, taker long 3: maker is then attested breached."""
    maker, taker = traders
    p.fund(maker, p.usdc, 1_000 * USDC + 1)
    p.fund(maker, p.weth, 3 * WAD + 1)
    p.fund(maker, p.wbtc, 10**8 + 1)
    p.fund(taker, p.usdc, 20_000 * USDC)
    p.post_prices({p.weth: 3000 * WAD, p.wbtc: 60_000 * WAD})
    sid, _ = p.new_series()
    q, sig = p.quote(maker, sid, -3 * WAD - 1, 100 * WAD)
    p.ch.trade(q, sig, p.attest(maker, 70_000 * USDC), p.attest(taker, 20_000 * USDC), {"from": taker})
    return sid


@pytest.mark.ganache
def test_module_is_set_once_and_gates_the_hook(protocol, owner, traders):
    p = protocol
    module = accounts[6]
    with brownie.reverts(err("CH_NotLiquidationModule(address)", str(module))):
        p.ch.clearBreach(traders[0], {"from": module})
    tx = p.ch.setLiquidationModule(module, {"from": owner})
    assert tx.events["LiquidationModuleSet"]["module"] == module
    with brownie.reverts(err("CH_LiquidationModuleAlreadySet(address)", str(module))):
        p.ch.setLiquidationModule(accounts[7], {"from": owner})
    with brownie.reverts(err("CH_NotLiquidationModule(address)", str(owner))):
        p.ch.transferCash(traders[0], traders[1], 1, {"from": owner})
    with brownie.reverts(err("CH_NotLiquidationModule(address)", str(owner))):
        p.ch.recordClaim(traders[0], traders[1], WAD, 0, {"from": owner})
    with brownie.reverts(err("CH_NotLiquidationModule(address)", str(traders[0]))):
        p.ch.primeLot(traders[0], {"from": traders[0]})


@pytest.mark.ganache
def test_delivered_claim_rounds_against_liquidated(protocol, owner, traders):
    p = protocol
    maker, taker = traders
    sid = _portfolio(p, traders)
    receiver, module = accounts[5], accounts[6]
    p.ch.setLiquidationModule(module, {"from": owner})
    # breach: equity below maintenance
    p.attest(maker, 500 * USDC, 2_000 * USDC, 3_000 * USDC, -1_234 * USDC)
    assert p.ch.isBreached(maker)
    rec = p.ch.breachOf(maker)
    assert int(rec[5]) == -1_234 * USDC
    before = {
        "pos": int(p.ch.positionOf(maker, sid)),
        "weth": int(p.ch.collateralOf(maker, p.weth)),
        "wbtc": int(p.ch.collateralOf(maker, p.wbtc)),
        "cash": int(p.ch.cashOf(maker)),
    }
    nonces = int(p.ch.stateNonce(maker)), int(p.ch.stateNonce(receiver))
    f = WAD // 3
    # the first claim on a book is `f` of it exactly, and settling it moves `f` of the stored book
    tx = _deliver(p, module, maker, receiver, f)
    assert tuple(tx.events["ClaimSettled"].values()) == (maker, receiver, f, f, 0)
    moved_pos = -_floor(-before["pos"] * f, WAD)  # short: liability moves rounded down
    moved_weth = _ceil(before["weth"] * f, WAD)  # collateral moves rounded up
    moved_wbtc = _ceil(before["wbtc"] * f, WAD)
    moved_cash = _ceil(before["cash"] * f, WAD)  # positive cash rounded up
    assert moved_weth * WAD > before["weth"] * f and moved_pos * WAD > before["pos"] * f  # rounding really happened
    assert int(p.ch.positionOf(receiver, sid)) == moved_pos
    assert int(p.ch.positionOf(maker, sid)) == before["pos"] - moved_pos
    assert int(p.ch.collateralOf(receiver, p.weth)) == moved_weth
    assert int(p.ch.collateralOf(receiver, p.wbtc)) == moved_wbtc
    assert int(p.ch.cashOf(receiver)) == moved_cash and int(p.ch.cashOf(maker)) == before["cash"] - moved_cash
    # one bump when the claim is recorded; none when it is delivered (the effective books do not change)
    assert (int(p.ch.stateNonce(maker)), int(p.ch.stateNonce(receiver))) == (nonces[0] + 1, nonces[1] + 1)
    assert tx.events["PortfolioShareTransferred"]["fractionWad"] == f
    assert tuple(p.ch.lotOf(maker))[:4] == (0, 0, 0, True)  # the book is unfrozen again
    # positions still net to zero and token balances are still owed exactly
    holders = [maker, taker, receiver]
    assert sum(int(p.ch.positionOf(h, sid)) for h in holders) == 0
    assert p.balances_conserved(holders) and _conserved(p, holders + [module])
    # the whole rest moves with f = 1
    _deliver(p, module, maker, receiver, WAD)
    assert list(p.ch.seriesOf(maker)) == [] and list(p.ch.collateralAssetsOf(maker)) == []
    assert int(p.ch.cashOf(maker)) == 0 and int(p.ch.positionOf(receiver, sid)) == before["pos"]
    assert _conserved(p, holders + [module])
    for bad in (0, WAD + 1):
        with brownie.reverts(err("CH_InvalidFraction(uint256)", bad)):
            p.ch.recordClaim(receiver, maker, bad, 0, {"from": module})
    tx = p.ch.clearBreach(maker, {"from": module})
    assert "BreachCleared" in tx.events and not p.ch.isBreached(maker)


def test_negative_cash_moves_rounded_down_and_transfer_cash(protocol, owner, traders):
    p = protocol
    maker, taker = traders
    module, receiver = accounts[6], accounts[5]
    p.ch.setLiquidationModule(module, {"from": owner})
    p.fund(maker, p.usdc, 10 * USDC)
    p.ch.transferCash(maker, taker, 17 * USDC + 1, {"from": module})  # maker now owes 7.000001
    assert int(p.ch.cashOf(maker)) == -7 * USDC - 1
    p.ch.recordClaim(maker, receiver, WAD // 2, 0, {"from": module})
    moved = -_floor(7 * USDC + 1, 2)  # debt leaves the liquidated account rounded down
    # before delivery the views already show it: the holder's claim rounded as delivery moves it, the frozen
    # book's liability rounded up
    assert int(p.ch.cashOf(receiver)) == moved and int(p.ch.cashOf(maker)) == -_ceil(7 * USDC + 1, 2)
    assert int(p.ch.storedBalances(maker, 0, p.usdc)[2]) == -7 * USDC - 1
    p.ch.settleClaim(receiver, {"from": receiver})
    assert int(p.ch.cashOf(receiver)) == moved and int(p.ch.cashOf(maker)) == -7 * USDC - 1 - moved
    assert p.balances_conserved([maker, taker, receiver]) and _conserved(p, [maker, taker, receiver, module])
    # the taker's positive cash exceeds what the contract holds while the others owe: a named error, not a panic
    held = int(p.usdc.balanceOf(p.ch))
    assert int(p.ch.cashOf(taker)) == 17 * USDC + 1 > held
    with brownie.reverts(err("CH_InsufficientLiquidity(address,uint256,uint256)", str(p.usdc), held, 17 * USDC + 1)):
        p.ch.withdraw(p.usdc, 17 * USDC + 1, EMPTY_PROOF, {"from": taker})


def test_breached_account_cannot_add_risk(protocol, traders):
    p = protocol
    maker, taker = traders
    sid = _portfolio(p, traders)
    breached = p.attest(maker, 500 * USDC, 2_000 * USDC, 3_000 * USDC)
    q, sig = p.quote(maker, sid, -WAD, 100 * WAD, nonce=9)
    with brownie.reverts(err("CH_AccountInBreach(address)", str(maker))):
        p.ch.trade(q, sig, breached, p.attest(taker, 20_000 * USDC), {"from": taker})
    # a later healthy leaf of the same portfolio lifts a breach that no auction holds (review finding M-4)
    proof = p.attest(maker, 50_000 * USDC, 0, 0)
    assert not p.ch.isBreached(maker) and tuple(p.ch.lotOf(maker))[4:] == (False, False)
    tx = p.ch.trade(q, sig, proof, p.attest(taker, 20_000 * USDC), {"from": taker})
    assert tx.events["Traded"]["maker"] == maker

"""Option trades on signed quotes, margin-gated legs, reduce-only, nonces, and settlement conservation."""
from fractions import Fraction
from math import ceil, floor

import brownie
import pytest
from brownie import accounts, chain
from eth_utils import keccak

from core_helpers import EMPTY_PROOF, USDC, WAD, err
from keeper.ops import signing


def _setup(p, maker, taker, spot=3000 * WAD):
    p.fund(maker, p.usdc, 20_000 * USDC)
    p.fund(taker, p.usdc, 20_000 * USDC)
    p.post_prices({p.weth: spot})


@pytest.mark.ganache
def test_trade_moves_premium_and_positions(protocol, traders):
    p = protocol
    maker, taker = traders
    _setup(p, maker, taker)
    sid, _ = p.new_series()
    size, price = -(3 * WAD // 2), 123_456_789 * 10**9  # maker sells 1.5 at 123.456789 USDC
    q, sig = p.quote(maker, sid, size, price, nonce=7)
    tx = p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), p.attest(taker, 20_000 * USDC), {"from": taker})
    used = {e["account"]: e for e in tx.events["MarginAttested"]}  # the leaves the trade acted on are logged
    assert set(used) == {maker, taker} and used[maker]["equity"] == 20_000 * USDC and not used[maker]["recorded"]
    premium = ceil(Fraction(3, 2) * Fraction(price, WAD) * USDC)
    assert tx.events["Traded"]["premium"] == premium
    assert int(p.ch.positionOf(maker, sid)) == size and int(p.ch.positionOf(taker, sid)) == -size
    assert int(p.ch.cashOf(maker)) == 20_000 * USDC + premium
    assert int(p.ch.cashOf(taker)) == 20_000 * USDC - premium
    assert list(p.ch.seriesOf(maker)) == [sid] and p.ch.nonceUsed(maker, 7)
    assert p.balances_conserved([maker, taker])
    with brownie.reverts(err("CH_NonceUsed(address,uint256)", str(maker), 7)):
        p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": accounts[3]})


@pytest.mark.ganache
def test_risk_adding_leg_needs_fresh_headroom(protocol, traders):
    p = protocol
    maker, taker = traders
    _setup(p, maker, taker)
    sid, _ = p.new_series()
    q, sig = p.quote(maker, sid, -2 * WAD, 50 * WAD)
    with brownie.reverts(err("CH_MarginProofRequired(address)", str(maker))):
        p.ch.trade(q, sig, EMPTY_PROOF, p.attest(taker, 20_000 * USDC), {"from": taker})
    # seller needs premium + 0.15 x 3000 x 2 + (intrinsic 2 x 1000 - premium) = 100 + 900 + 1900 USDC of
    # equity - IM (the strike-2000 call is in the money; review finding R-5)
    required = 100 * USDC + 900 * USDC + 1900 * USDC
    thin = p.attest(maker, 20_000 * USDC, 5_000 * USDC, 17_100 * USDC + 1)
    with brownie.reverts(err("CH_InsufficientHeadroom(address,int256,uint256)", str(maker), required - 1, required)):
        p.ch.trade(q, sig, thin, p.attest(taker, 20_000 * USDC), {"from": taker})
    # buyer needs the premium
    broke = p.attest(taker, 1000 * USDC, 0, 1000 * USDC - 99 * USDC)
    with brownie.reverts(err("CH_InsufficientHeadroom(address,int256,uint256)", str(taker), 99 * USDC, 100 * USDC)):
        p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC, 0, 17_100 * USDC), broke, {"from": taker})
    ok = p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC, 0, 17_100 * USDC), p.attest(taker, 100 * USDC), {"from": taker})
    assert ok.status == 1


def test_reduce_only_allowed_paused_seller_needs_no_attestation(protocol, owner, traders):
    p = protocol
    maker, taker = traders
    _setup(p, maker, taker)
    sid, _ = p.new_series()
    q, sig = p.quote(maker, sid, -2 * WAD, 50 * WAD, nonce=1)
    p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), p.attest(taker, 20_000 * USDC), {"from": taker})
    p.ch.pause({"from": owner})
    # maker buys back 1 of its 2 short, taker sells 1 of its 2 long: both reduce-only; the seller needs nothing,
    # the buyer proves equity >= premium (review finding R-1; IM and the pause do not apply)
    q, sig = p.quote(maker, sid, WAD, 40 * WAD, nonce=2)
    with brownie.reverts(err("CH_MarginProofRequired(address)", str(maker))):
        p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": taker})
    p.ch.trade(q, sig, p.attest(maker, 40 * USDC, 0, 10**6 * USDC), EMPTY_PROOF, {"from": taker})
    assert int(p.ch.positionOf(maker, sid)) == -WAD
    # crossing through zero adds risk: refused while paused
    q, sig = p.quote(maker, sid, 2 * WAD, 40 * WAD, nonce=3)
    with brownie.reverts(err("EP_EnforcedPause()")):
        p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": taker})
    p.ch.cancelNonce(3, {"from": maker})
    p.ch.unpause({"from": owner})
    with brownie.reverts(err("CH_NonceUsed(address,uint256)", str(maker), 3)):
        p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": taker})


def test_quote_validation(protocol, traders):
    p = protocol
    maker, taker = traders
    _setup(p, maker, taker)
    sid, expiry = p.new_series(days=1)
    q, sig = p.quote(maker, sid, WAD, WAD, deadline=p.now() - 1)
    with brownie.reverts(err("CH_QuoteExpired(uint64)", p.now() - 1)):
        p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": taker})
    q, good = p.quote(maker, sid, WAD, WAD)
    _, other = p.quote(taker, sid, WAD, WAD)
    with brownie.reverts(err("CH_InvalidQuoteSignature(address)", str(maker))):
        p.ch.trade(q, other, EMPTY_PROOF, EMPTY_PROOF, {"from": taker})
    with brownie.reverts(err("CH_SelfTrade(address)", str(maker))):
        p.ch.trade(q, good, EMPTY_PROOF, EMPTY_PROOF, {"from": maker})
    q, sig = p.quote(maker, 999, WAD, WAD)
    with brownie.reverts(err("CH_UnknownSeries(uint256)", 999)):
        p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": taker})
    chain.sleep(2 * 86400)
    chain.mine()
    q, sig = p.quote(maker, sid, WAD, WAD, deadline=p.now() + 100)
    with brownie.reverts(err("CH_SeriesExpired(uint256,uint64)", sid, expiry)):
        p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": taker})


def _settle_scenario(p, traders, is_call, strike, settle_px):
    maker, taker = traders
    third = accounts[4]
    _setup(p, maker, taker)
    p.fund(third, p.usdc, 20_000 * USDC)
    sid, expiry = p.new_series(strike=strike, days=1, is_call=is_call)
    # maker short 1.333..., taker long 1, third long 0.333...
    sizes = {taker: WAD, third: WAD // 3 + 7}
    for i, (buyer, s) in enumerate(sizes.items()):
        q, sig = p.quote(maker, sid, -s, 10 * WAD, nonce=i + 1)
        p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), p.attest(buyer, 20_000 * USDC), {"from": buyer})
    holders = [maker, taker, third]
    assert sum(int(p.ch.positionOf(h, sid)) for h in holders) == 0
    with brownie.reverts(err("CH_SeriesNotExpired(uint256,uint64)", sid, expiry)):
        p.ch.settle(taker, sid, {"from": third})
    chain.sleep(86400 + 10)
    chain.mine()
    with brownie.reverts(err("CH_SettlementPriceMissing(address,uint64)", str(p.weth), expiry)):
        p.ch.settle(taker, sid, {"from": third})
    from keeper.codec import eip712
    typed = eip712.settlement_typed_data(p.domain, [str(p.weth)], [settle_px], expiry, p.now())
    p.ch.postSettlementPrices([p.weth], [settle_px], expiry, p.now(), signing.sign_attestation(typed, p.signers()), {"from": third})
    cash_before = {h: int(p.ch.cashOf(h)) for h in holders}
    sizes_before = {h: int(p.ch.positionOf(h, sid)) for h in holders}
    tx = p.ch.settleMany(holders + [accounts[8]], sid, {"from": accounts[8]})
    assert len(tx.events["Settled"]) == 3
    intrinsic = max(settle_px - strike, 0) if is_call else max(strike - settle_px, 0)
    for h in holders:
        exact = Fraction(sizes_before[h], WAD) * Fraction(intrinsic, WAD) * USDC
        expected = floor(exact) if sizes_before[h] > 0 else -ceil(-exact)  # never favours the holder
        assert int(p.ch.cashOf(h)) - cash_before[h] == expected
        assert int(p.ch.positionOf(h, sid)) == 0 and sid not in list(p.ch.seriesOf(h))
    # payoffs net to zero up to rounding, which the reserve keeps: balances still conserved
    deltas = sum(int(p.ch.cashOf(h)) - cash_before[h] for h in holders)
    assert -len(holders) <= deltas <= 0 and int(p.ch.settlementReserve()) == -deltas
    assert p.balances_conserved(holders)
    with brownie.reverts(err("CH_NoPosition(address,uint256)", str(taker), sid)):
        p.ch.settle(taker, sid, {"from": third})


@pytest.mark.ganache
def test_settlement_call_in_the_money(protocol, traders):
    _settle_scenario(protocol, traders, True, 2000 * WAD, 2345 * WAD + 123)


def test_settlement_put_and_out_of_the_money(protocol, traders):
    _settle_scenario(protocol, traders, False, 2000 * WAD, 1777 * WAD + 1)


def test_settlement_out_of_the_money_pays_nothing(protocol, traders):
    _settle_scenario(protocol, traders, True, 2000 * WAD, 1500 * WAD)

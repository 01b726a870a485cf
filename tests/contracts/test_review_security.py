"""Security review findings (docs/contracts.md, "Security review"): each test reproduces an attack on the core
and asserts the contract now refuses it, plus the honest path that must keep working."""
import brownie
import pytest
from brownie import accounts, chain

from core_helpers import EMPTY_PROOF, USDC, WAD, err
from keeper.codec import eip712
from keeper.ops import signing


def _open_pair(p, maker, taker, size=WAD, price=50 * WAD):
    """maker sells `size` calls to taker (both legs add risk, both attested healthy)."""
    p.fund(maker, p.usdc, 20_000 * USDC)
    p.fund(taker, p.usdc, 20_000 * USDC)
    p.post_prices({p.weth: 3000 * WAD})
    sid, _ = p.new_series()
    q, sig = p.quote(maker, sid, -size, price, nonce=1)
    p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), p.attest(taker, 20_000 * USDC), {"from": taker})
    return sid


def test_review_r1_reduce_only_buyback_cannot_drain_pool(protocol, owner, traders):
    """R-1 (critical): a reduce-only buy-back at an off-market price moved unbounded cash out of the buyer with no
    margin check; the colluding seller (also reduce-only) then withdrew other depositors' quote tokens."""
    p = protocol
    maker, taker = traders
    victim = accounts[5]
    sid = _open_pair(p, maker, taker)
    p.fund(victim, p.usdc, 100_000 * USDC)  # an honest depositor's funds in the pool
    pool_before = int(p.usdc.balanceOf(p.ch))
    # maker (short 1) buys it back from taker (long 1) for 100,000 USDC: both legs are reduce-only
    q, sig = p.quote(maker, sid, WAD, 100_000 * WAD, nonce=2)
    with brownie.reverts(err("CH_MarginProofRequired(address)", str(maker))):
        p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": taker})
    # the maker's attested equity (20,050 USDC) cannot pay 100,000 USDC of premium
    equity = 20_050 * USDC
    with brownie.reverts(
        err("CH_InsufficientHeadroom(address,int256,uint256)", str(maker), equity, 100_000 * USDC)
    ):
        p.ch.trade(q, sig, p.attest(maker, equity), EMPTY_PROOF, {"from": taker})
    assert int(p.usdc.balanceOf(p.ch)) == pool_before
    assert int(p.ch.positionOf(maker, sid)) == -WAD and int(p.ch.cashOf(maker)) == 20_050 * USDC


def test_review_r1_fair_buyback_allowed_paused_and_breached(protocol, owner, traders):
    """R-1 fix keeps de-risking open: a buy-back the attested equity covers passes while paused (IM and MM are
    ignored); a reduce-only sale still needs no proof. A breached account's book is bound to its breach (H-1): it
    cannot trade at all until the breach is cleared (here by a healthy attestation, no auction holding it)."""
    p = protocol
    maker, taker = traders
    sid = _open_pair(p, maker, taker, size=2 * WAD)
    # maker attested below maintenance (breach registered), equity 300 USDC: bound, even for a reduce-only trade
    proof = p.attest(maker, 300 * USDC, 5_000 * USDC, 8_000 * USDC)
    assert p.ch.isBreached(maker)
    q, sig = p.quote(maker, sid, WAD, 300 * WAD, nonce=2)  # premium 300 USDC == equity
    with brownie.reverts(err("CH_AccountInBreach(address)", str(maker))):
        p.ch.trade(q, sig, proof, EMPTY_PROOF, {"from": taker})
    proof = p.attest(maker, 300 * USDC, 100 * USDC, 200 * USDC)  # healthy: lifts the breach
    assert not p.ch.isBreached(maker)
    p.ch.pause({"from": owner})
    tx = p.ch.trade(q, sig, proof, EMPTY_PROOF, {"from": taker})
    used = tx.events["MarginAttested"]
    assert len(used) == 1 and used[0]["account"] == maker and not used[0]["recorded"]
    assert int(p.ch.positionOf(maker, sid)) == -WAD and int(p.ch.positionOf(taker, sid)) == WAD
    assert int(p.ch.cashOf(maker)) == 20_000 * USDC + 100 * USDC - 300 * USDC
    # one unit more than the attested equity is refused
    proof = p.attest(maker, 300 * USDC, 100 * USDC, 8_000 * USDC)
    q, sig = p.quote(maker, sid, WAD // 2, 600 * WAD + 2 * 10**12, nonce=3)  # premium 300.000001 USDC
    with brownie.reverts(
        err("CH_InsufficientHeadroom(address,int256,uint256)", str(maker), 300 * USDC, 300 * USDC + 1)
    ):
        p.ch.trade(q, sig, proof, EMPTY_PROOF, {"from": taker})
    # a buy-back at price 0 pays nothing: no proof needed
    q, sig = p.quote(maker, sid, WAD // 2, 0, nonce=4)  # zero premium buy-back: nothing to check
    p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": taker})
    assert int(p.ch.positionOf(maker, sid)) == -WAD // 2
    assert p.balances_conserved([maker, taker])


def test_review_r2_keeper_rotation_revokes_posted_roots(protocol, owner, traders):
    """R-2 (medium): roots posted by a keeper set stayed usable after the owner replaced the set (e.g. after a
    key compromise) for up to maxAttestationAge; rotation now clears the root ring."""
    p = protocol
    maker, taker = traders
    _open_pair(p, maker, taker)
    # a forged root (signed by the set about to be rotated out) claims the taker is rich
    forged = p.attest(taker, 10**9 * USDC)
    seq = forged[0][1]
    assert int.from_bytes(bytes(p.ch.rootCommitment(seq)), "big") != 0
    p.ch.setKeeperSet([k.address for k in p.keeper_keys[2:]], 2, {"from": owner})
    assert int.from_bytes(bytes(p.ch.rootCommitment(seq)), "big") == 0
    with brownie.reverts(err("AO_UnknownMarginRoot(uint64)", seq)):
        p.ch.withdraw(p.usdc, 20_000 * USDC, forged, {"from": taker})
    with brownie.reverts(err("AO_UnknownMarginRoot(uint64)", seq)):
        p.ch.recordMargin(forged, {"from": taker})
    # the new set's roots work, and sequences keep increasing across the rotation
    tree, header, _ = p.post_margin([p.leaf(taker, 25_000 * USDC, 0, 1_000 * USDC)], keys=p.keeper_keys[3:5])
    fresh = p.proof(tree, header, taker)
    assert fresh[0][1] == seq + 1
    p.ch.withdraw(p.usdc, 1_000 * USDC, fresh, {"from": taker})
    assert int(p.ch.cashOf(taker)) == 20_000 * USDC - 50 * USDC - 1_000 * USDC


def test_review_r3_older_leaf_cannot_override_recorded_one(protocol, owner, traders):
    """R-3 (low): an account could pass an earlier leaf of the same portfolio (any root still in the ring and
    fresh) after a later, worse leaf was recorded, picking the most favourable attestation."""
    p = protocol
    maker, taker = traders
    sid = _open_pair(p, maker, taker)
    chain.sleep(30)
    chain.mine()
    now = p.now()
    early_tree, early_header, _ = p.post_margin([p.leaf(taker, 20_000 * USDC)], timestamp=now - 20)
    early = p.proof(early_tree, early_header, taker)
    p.post_margin([p.leaf(taker, 500 * USDC, 0, 400 * USDC)], timestamp=now - 5)  # the market moved
    assert int(p.ch.marginRecord(taker)[3]) == now - 5
    with brownie.reverts(err("AO_AttestationOlder(uint64,uint64)", now - 20, now - 5)):
        p.ch.withdraw(p.usdc, 10_000 * USDC, early, {"from": taker})
    q, sig = p.quote(maker, sid, 2 * WAD, 50 * WAD, nonce=9)  # taker would go short 1 on the old leaf
    with brownie.reverts(err("AO_AttestationOlder(uint64,uint64)", now - 20, now - 5)):
        p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), early, {"from": taker})
    # the latest leaf's headroom (100 USDC) governs
    latest = p.attest(taker, 500 * USDC, 0, 400 * USDC)
    with brownie.reverts(err("CH_InsufficientHeadroom(address,int256,uint256)", str(taker), 100 * USDC, 101 * USDC)):
        p.ch.withdraw(p.usdc, 101 * USDC, latest, {"from": taker})
    p.ch.withdraw(p.usdc, 100 * USDC, latest, {"from": taker})


def test_review_r4_settlement_price_not_before_chain_expiry(protocol, owner, traders):
    """R-4 (low): `timestamp >= expiry` alone let a settlement price be stored up to 15 s (MAX_FUTURE_SKEW)
    before the chain reached expiry, while the series could still be traded at a known payoff."""
    p = protocol
    maker, taker = traders
    p.fund(maker, p.usdc, 20_000 * USDC)
    p.fund(taker, p.usdc, 20_000 * USDC)
    sid, expiry = p.new_series(days=1)
    chain.sleep(expiry - p.now() - 12)
    chain.mine()
    assert p.now() < expiry
    typed = eip712.settlement_typed_data(p.domain, [str(p.weth)], [2500 * WAD], expiry, expiry)
    sigs = signing.sign_attestation(typed, p.signers())
    with brownie.reverts(revert_pattern=r"AO_SettlementBeforeExpiry: \d+, " + str(expiry)):
        p.ch.postSettlementPrices([p.weth], [2500 * WAD], expiry, expiry, sigs, {"from": owner})
    assert int(p.ch.settlementPrice(p.weth, expiry)) == 0
    chain.sleep(13)
    chain.mine()
    p.ch.postSettlementPrices([p.weth], [2500 * WAD], expiry, expiry, sigs, {"from": owner})
    assert int(p.ch.settlementPrice(p.weth, expiry)) == 2500 * WAD


def test_review_r1_reduce_only_sale_of_hedge_needs_proof(protocol, owner, traders):
    """R-1, other side: selling a long reduce-only at an off-market low price gives its value away; for an account
    with liabilities (here the short leg of a call spread) that could leave bad debt. Such a sale now needs a leaf
    with equity + premium >= |size| x spot (a call is worth at most spot); a long-only account needs nothing."""
    p = protocol
    a, b = traders
    p.fund(a, p.usdc, 20_000 * USDC)
    p.fund(b, p.usdc, 20_000 * USDC)
    p.post_prices({p.weth: 3000 * WAD})
    s1, _ = p.new_series(strike=2000 * WAD, days=30)
    s2, _ = p.new_series(strike=2000 * WAD, days=31)
    q, sig = p.quote(a, s1, WAD, 1000 * WAD, nonce=1)  # a buys 1 s1 from b
    p.ch.trade(q, sig, p.attest(a, 20_000 * USDC), p.attest(b, 20_000 * USDC), {"from": b})
    q, sig = p.quote(a, s2, -WAD, 1000 * WAD, nonce=2)  # a sells 1 s2 to b: a holds a call spread
    p.ch.trade(q, sig, p.attest(a, 20_000 * USDC), p.attest(b, 20_000 * USDC), {"from": b})
    # a gives its ITM long s1 to b for nothing: a's leg and b's leg are both reduce-only
    q, sig = p.quote(a, s1, -WAD, 0, nonce=3)
    with brownie.reverts(err("CH_MarginProofRequired(address)", str(a))):
        p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": b})
    with brownie.reverts(
        err("CH_InsufficientHeadroom(address,int256,uint256)", str(a), 2_999 * USDC, 3_000 * USDC)
    ):
        p.ch.trade(q, sig, p.attest(a, 2_999 * USDC, 0, 0), EMPTY_PROOF, {"from": b})
    # equity that survives losing the long at its maximum value: allowed (IM and MM play no part; even paused)
    p.ch.pause({"from": owner})
    tx = p.ch.trade(q, sig, p.attest(a, 3_000 * USDC, 0, 0), EMPTY_PROOF, {"from": b})
    assert [e["account"] for e in tx.events["MarginAttested"] if not e["recorded"]] == [a]
    assert int(p.ch.positionOf(a, s1)) == 0 and int(p.ch.positionOf(b, s1)) == 0
    assert int(p.ch.positionOf(a, s2)) == -WAD
    assert p.balances_conserved([a, b])


@pytest.mark.parametrize("is_call,strike", [(True, 1000 * WAD), (False, 5000 * WAD)])
def test_review_r5_itm_short_sold_below_intrinsic(protocol, traders, is_call, strike):
    """R-5 (high): a new short needed only premium + 0.15 x spot x size of headroom, so an in-the-money option
    sold at price 0 to a colluding account moved its intrinsic value (2,000 USDC here) out of an account with
    450 USDC of headroom. The seller now also covers intrinsic value minus premium."""
    p = protocol
    a, b = traders
    p.fund(a, p.usdc, 20_000 * USDC)
    p.fund(b, p.usdc, 20_000 * USDC)
    p.post_prices({p.weth: 3000 * WAD})
    sid, _ = p.new_series(strike=strike, is_call=is_call)
    q, sig = p.quote(a, sid, -WAD, 0, nonce=1)  # a sells 1 at price 0; intrinsic 2,000 USDC
    thin = p.attest(a, 20_000 * USDC, 0, 20_000 * USDC - 450 * USDC)  # headroom = 0.15 x 3000 exactly
    with brownie.reverts(
        err("CH_InsufficientHeadroom(address,int256,uint256)", str(a), 450 * USDC, 2_450 * USDC)
    ):
        p.ch.trade(q, sig, thin, p.attest(b, 20_000 * USDC), {"from": b})
    # at a price equal to intrinsic value the shortfall term vanishes: premium + 450
    q, sig = p.quote(a, sid, -WAD, 2000 * WAD, nonce=2)
    with brownie.reverts(
        err("CH_InsufficientHeadroom(address,int256,uint256)", str(a), 2_449 * USDC, 2_450 * USDC)
    ):
        p.ch.trade(q, sig, p.attest(a, 20_000 * USDC, 0, 17_551 * USDC), p.attest(b, 20_000 * USDC), {"from": b})
    p.ch.trade(q, sig, p.attest(a, 20_000 * USDC, 0, 17_550 * USDC), p.attest(b, 20_000 * USDC), {"from": b})
    assert int(p.ch.positionOf(a, sid)) == -WAD and int(p.ch.cashOf(a)) == 22_000 * USDC


def test_review_r5_otm_short_unchanged(protocol, traders):
    """R-5 fix adds nothing for an out-of-the-money series: 0.15 x spot x size + premium as before."""
    p = protocol
    a, b = traders
    p.fund(a, p.usdc, 20_000 * USDC)
    p.fund(b, p.usdc, 20_000 * USDC)
    p.post_prices({p.weth: 3000 * WAD})
    sid, _ = p.new_series(strike=4000 * WAD, is_call=True)
    q, sig = p.quote(a, sid, -WAD, 10 * WAD, nonce=1)
    with brownie.reverts(err("CH_InsufficientHeadroom(address,int256,uint256)", str(a), 459 * USDC, 460 * USDC)):
        p.ch.trade(q, sig, p.attest(a, 20_000 * USDC, 0, 19_541 * USDC), p.attest(b, 20_000 * USDC), {"from": b})
    p.ch.trade(q, sig, p.attest(a, 20_000 * USDC, 0, 19_540 * USDC), p.attest(b, 20_000 * USDC), {"from": b})
    assert int(p.ch.positionOf(a, sid)) == -WAD

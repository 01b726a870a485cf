"""Issue 12, contract hardening: each finding of the attacker's review performed on the real compiled contracts.

Every test carries out the attack (or the bad input) and asserts that it now fails with a named custom error, or
that what it tried to break still holds. docs/contracts.md ("Security review, second round") lists each finding,
its fix and the test here. Finding ids: H-1 self-blocking liquidation, H-2 owner takes everything, M-3 unbacked
bidder payout, M-4 breach never cleared, M-5 repricing running auctions, L-6 re-entry during a bid, L-7 front-run
keeper batch, H-8 positions no keeper can price.
"""
from __future__ import annotations

import brownie
import pytest
from brownie import AuctionTestToken, BackstopTimelock, HookBidder, chain

from keeper.quant import auction_math as am
from keeper.codec import eip712
from keeper.units import WAD
from keeper.quant.auction_math import Curve, CurveKind
from tests.auction.conftest import (
    DEFAULT_CONFIG,
    EMPTY_PROOF,
    KEEPER_KEYS,
    SOLVENCY,
    THRESHOLD,
    USDC,
    breached_auction,
    config_tuple,
    reverts_with,
)
from keeper.codec import merkle
from keeper.ops import signing

FAR = 2**63
ANY = 2**255 - 1
ZERO = "0x" + "00" * 20
ZERO32 = b"\x00" * 32
CURVE = Curve(CurveKind.LINEAR, tau=DEFAULT_CONFIG["tau"])
DAY = 86400


def _breached_auction(core, accounts, equity=60_000 * USDC):
    v, bidder, _starter, start = breached_auction(core, accounts, equity=equity)
    return v, bidder, start


# ----------------------------------------------------------------------------------------------------------- H-1


def test_h1_dust_deposits_cannot_stop_start_or_bids(core, accounts):
    """A deposit of one base unit after the attestation, and another between start and bid, used to bump the
    stateNonce (start: LA_StaleBreach, bid: LA_AccountChanged). Now a quote credit moves no nonce and is held apart."""
    v, bidder = accounts[1], accounts[2]
    core.build_book(v)
    core.fund(bidder, usdc=500_000 * USDC)
    core.breach(v, 60_000 * USDC, 100_000 * USDC, 150_000 * USDC)
    nonce, cash0 = int(core.ch.stateNonce(v)), int(core.chx.cashOf(v))
    stored0 = int(core.chx.storedBalances(v, 0, core.weth)[2])
    core.fund(v, usdc=1)
    # no nonce move, and the unit is outside both the stored book (what is sold) and the effective cash (attested)
    assert int(core.ch.stateNonce(v)) == nonce
    assert int(core.chx.storedBalances(v, 0, core.weth)[2]) == stored0 and int(core.chx.cashOf(v)) == cash0
    core.auction.start(v, {"from": accounts[3]})
    core.fund(v, usdc=1)
    tx = core.auction.bid(v, WAD // 10, ANY, FAR, 0, {"from": bidder})
    assert int(tx.events["Bid"]["fractionWad"]) == WAD // 10
    assert int(core.chx.lotOf(v)["creditedCash"]) == 2
    # collateral cannot be added to a bound book (it would change what is sold)
    core.weth.mint(v, 1, {"from": v})
    core.weth.approve(core.ch, 1, {"from": v})
    with reverts_with("CH_AccountInBreach"):
        core.ch.deposit(core.weth, 1, {"from": v})


def test_h1_zero_premium_reduce_only_trade_of_a_breached_account_is_refused(core, accounts):
    """Colluding accounts trading the breached book at premium 0 (a buy-back needs no proof when the premium is 0)
    used to bump its nonce after every attestation. A book bound to its breach cannot trade at all."""
    v = accounts[1]
    core.build_book(v)  # v is short 2 of series[1], bought from the market maker
    assert int(core.chx.positionOf(v, core.series[1])) == -2 * WAD
    core.breach(v, 60_000 * USDC, 100_000 * USDC, 150_000 * USDC)
    nonce = int(core.ch.stateNonce(v))
    q, sig = core.signed_quote(core.series[1], -WAD, 0, nonce=777)  # the maker sells 1 back to v for nothing
    maker_proof = core.attest([(core.maker, 10**15, 0, 0)])[core.maker.address]
    with reverts_with("CH_AccountInBreach"):
        core.ch.trade(q, sig, maker_proof, EMPTY_PROOF, {"from": v})
    assert int(core.ch.stateNonce(v)) == nonce
    core.auction.start(v, {"from": accounts[3]})  # and the breach stays usable


def test_h1_expiry_settlement_keeps_the_auction_running(core, accounts):
    """Settling an expired series of the breached book used to bump its nonce (bids: LA_AccountChanged). Settlement of
    a bound book converts the position into cash of the same book and keeps the nonce."""
    v, bidder = accounts[1], accounts[2]
    core.fund(v, usdc=20_000 * USDC)
    core.fund(bidder, usdc=500_000 * USDC)
    expiry = chain.time() + 900
    sid = int(core.chx.createSeries(core.weth, 3_200 * WAD, expiry, False, {"from": core.owner})
              .events["SeriesCreated"]["seriesId"])
    core.trade(v, sid, 3 * WAD, 250 * WAD)  # v long 3 puts, in the money at 3,000
    core.breach(v, 1_000 * USDC, 5_000 * USDC, 7_500 * USDC)
    core.auction.start(v, {"from": accounts[3]})
    nonce, cash0 = int(core.ch.stateNonce(v)), int(core.chx.cashOf(v))
    chain.sleep(1_000)
    ts = core.now()
    typed = eip712.settlement_typed_data(core.domain(), [core.weth.address], [3_000 * WAD], expiry, ts)
    core.chx.postSettlementPrices([core.weth], [3_000 * WAD], expiry, ts,
                                  signing.sign_attestation(typed, KEEPER_KEYS[:THRESHOLD]), {"from": core.owner})
    tx = core.chx.settle(v, sid, {"from": accounts[5]})
    assert int(tx.events["Settled"]["cashDelta"]) == 600 * USDC  # 3 x (3,200 - 3,000)
    assert int(core.ch.stateNonce(v)) == nonce and int(core.chx.cashOf(v)) == cash0 + 600 * USDC
    core.post_prices({core.weth: 3000 * WAD, core.wbtc: 60_000 * WAD})  # the bidder's margin needs fresh prices
    bid = core.auction.bid(v, WAD // 10, ANY, FAR, 0, {"from": bidder})
    assert int(bid.events["Bid"]["fractionWad"]) > 0


# ----------------------------------------------------------------------------------------------------------- M-4


def test_m4_healthy_leaf_lifts_a_breach_no_auction_holds_but_not_a_running_one(core, accounts):
    v = accounts[1]
    core.fund(v, usdc=1_000 * USDC)
    core.breach(v, 10 * USDC, 1_000 * USDC)
    with reverts_with("CH_AccountInBreach"):  # bound: even an option-free withdrawal waits
        core.ch.withdraw(core.quote, 1, EMPTY_PROOF, {"from": v})
    chain.sleep(2)
    core.attest([(v, 2_000 * USDC, 1_000 * USDC, 1_500 * USDC)])  # a healthy leaf of the same portfolio
    assert not core.chx.isBreached(v) and not core.chx.lotOf(v)["inBreach"]
    tx = core.ch.withdraw(core.quote, 1, EMPTY_PROOF, {"from": v})
    assert tx.events["Withdrawn"]["amount"] == 1
    # held by a running auction, a breach is only ended by the auction (cure or finish)
    w = accounts[4]
    core.build_book(w)
    core.fund(accounts[5], usdc=500_000 * USDC)
    core.breach(w, 60_000 * USDC, 100_000 * USDC, 150_000 * USDC)
    core.auction.start(w, {"from": accounts[6]})
    core.attest([(w, 200_000 * USDC, 100_000 * USDC, 150_000 * USDC)])
    assert core.chx.isBreached(w) and core.chx.lotOf(w)["inAuction"]
    with reverts_with("LA_AccountHealthy"):
        core.auction.bid(w, WAD, ANY, FAR, 0, {"from": accounts[5]})
    assert core.auction.cure(w, {"from": accounts[7]}).events["AuctionEnded"]["reason"] == 2
    assert not core.chx.isBreached(w)


# ----------------------------------------------------------------------------------------------------------- M-3


def test_m3_insolvent_bid_credits_only_the_payout_the_fund_can_make(core, accounts):
    """A bidder with 800 USDC took a book of equity -1,000 (IM 750) with an empty fund: the margin check credited
    the 1,000 payout as cash, the fund paid nothing and the bidder was left with -200 of unbacked debt. (Since issue
    14 the price starts at the model value, E + the 18,000 haircut of the book's collateral: the book is attested at
    E = -19,000, model value -1,000, and the bidder holds 18,800, so that IM - E = 19,750 is again 950 more than it
    holds and the same arithmetic applies.)"""
    v, bidder, donor = accounts[1], accounts[2], accounts[6]
    core.build_book(v, n_series=1)
    core.breach(v, -19_000 * USDC, 500 * USDC, 750 * USDC)
    assert core.model_value(v, -19_000 * USDC) == -1_000 * USDC
    assert int(core.auction.fundBalance()) == 0
    core.fund(bidder, usdc=18_800 * USDC)
    core.auction.start(v, {"from": accounts[3]})
    with reverts_with("LA_BidderUndermargined"):
        core.auction.bid(v, WAD, ANY, FAR, 0, {"from": bidder})
    # with a fund that can pay, the very same bid is margined by the cash it actually receives
    core.quote.mint(donor, 5_000 * USDC, {"from": donor})
    core.quote.approve(core.auction, 5_000 * USDC, {"from": donor})
    core.auction.fundDeposit(5_000 * USDC, {"from": donor})
    cash0 = int(core.chx.cashOf(bidder))
    tx = core.auction.bid(v, WAD, ANY, FAR, 0, {"from": bidder})
    owed = -int(tx.events["Bid"]["amount"])
    assert owed >= 1_000 * USDC and int(tx.events["ShortfallPaid"]["paid"]) == owed
    assert "BadDebtRecorded" not in tx.events
    assert int(core.auction.fundBalance()) == 5_000 * USDC - owed


# ----------------------------------------------------------------------------------------------------------- M-5


def test_m5_running_auction_keeps_its_configuration(core, accounts):
    E = 60_000 * USDC
    v, bidder, start = _breached_auction(core, accounts, equity=E)
    chain.sleep(600)
    # the owner tries to reprice: a curve that reaches a low floor fast
    tx = core.auction.setConfig(config_tuple(tau=400, cusp=25 * 10**16), {"from": core.owner})
    assert tx.events["ConfigVersionSet"]["version"] == 2 and int(core.auction.configVersion()) == 2
    a = core.auction.auctionOf(v)
    assert a["configVersion"] == 1
    q = core.auction.quote(v)
    elapsed = tx.timestamp - start.timestamp
    V, span = core.model_value(v, E), 10_000 * USDC  # the version-1 span: ceil(0.1 x MM 100,000)
    assert abs(int(q["price_"]) - am.price(CURVE, V, span, elapsed)) <= 1 and not q["needsReset"]
    bid = core.auction.bid(v, WAD // 10, ANY, FAR, 0, {"from": bidder})
    elapsed = bid.timestamp - start.timestamp
    assert abs(int(bid.events["Bid"]["price"]) - am.price(CURVE, V, span, elapsed)) <= 1
    assert tuple(core.auction.configAt(1))[1] == DEFAULT_CONFIG["tau"]
    # bounds: no floor below MIN_CUSP, no curve that reaches its floor within MIN_DESCENT
    with reverts_with("LA_ParameterOutOfBounds"):
        core.auction.setConfig(config_tuple(cusp=0), {"from": core.owner})
    with reverts_with("LA_CurveTooSteep"):
        core.auction.setConfig(config_tuple(tau=1), {"from": core.owner})
    with reverts_with("OwnableUnauthorizedAccount"):
        core.auction.setConfig(config_tuple(), {"from": bidder})


# ----------------------------------------------------------------------------------------------------------- L-6


def test_l6_collateral_withdrawn_from_inside_the_deposit_pull_is_not_counted(core, accounts):
    """A quote token that calls the payer back lets a bidder contract withdraw its collateral mid-bid. Its margin is
    now measured after its deposit is pulled, so the withdrawal is seen and the bid is refused."""
    v, _, _ = _breached_auction(core, accounts)
    hb = HookBidder.deploy(core.ch, core.auction, {"from": accounts[4]})
    core.weth.mint(hb, 10 * WAD, {"from": accounts[4]})
    hb.depositCollateral(core.weth, 10 * WAD, {"from": accounts[4]})  # 10 WETH x 3,000 x 0.8 = 24,000 of margin
    deposit = 6_500 * USDC  # pays ~6,000 for a tenth of the book; needs 6,000 + 0.1 x (IM - E) = 15,000 of margin
    core.quote.mint(hb, deposit, {"from": accounts[4]})
    hb.approve(core.quote, core.auction, deposit, {"from": accounts[4]})
    core.post_prices({core.weth: 3000 * WAD, core.wbtc: 60_000 * WAD})
    core.quote.armHook(hb, hb.onHook.encode_input(), {"from": accounts[4]})
    with reverts_with("LA_BidderUndermargined"):
        hb.bid(v, WAD // 10, ANY, FAR, deposit, {"from": accounts[4]})
    # the same bid without the call-back is margined by the collateral and goes through
    core.quote.armHook(ZERO, b"", {"from": accounts[4]})
    tx = hb.bid(v, WAD // 10, ANY, FAR, deposit, {"from": accounts[4]})
    assert int(tx.events["Bid"]["fractionWad"]) == WAD // 10 and not hb.hookRan()
    assert int(core.chx.storedBalances(hb, 0, core.weth)[1]) == 10 * WAD  # its own WETH is still there


# ----------------------------------------------------------------------------------------------------------- L-7


def test_l7_root_posted_first_by_a_copier_does_not_block_the_keepers_batch(core, accounts):
    v, w = accounts[1], accounts[4]
    core.fund(v, usdc=1_000 * USDC)
    core.fund(w, usdc=1_000 * USDC)
    leaves = [merkle.MarginLeaf(str(a), int(core.ch.stateNonce(a)), e, mm, mm, e)
              for a, e, mm in ((v, 10 * USDC, 1_000 * USDC), (w, 5_000 * USDC, 1_000 * USDC))]
    tree = merkle.MerkleTree.of_leaves(leaves)
    core.seq += 1
    header = eip712.MarginRootHeader(b"\x22" * 32, core.seq, core.now(), len(leaves),
                                     eip712.solvency_struct_hash(SOLVENCY))
    sigs = signing.sign_attestation(eip712.margin_root_typed_data(core.domain(), tree.root, header),
                                   KEEPER_KEYS[:THRESHOLD])
    # the copier (from the mempool) posts the root alone, ahead of the keepers' batch
    core.ch.postMarginRoot(tree.root, header.as_tuple(), header.solvency_hash, SOLVENCY, sigs, {"from": accounts[7]})
    mp = tree.multiproof()
    tx = core.ch.postMarginBatch(header.as_tuple(), header.solvency_hash, SOLVENCY, [l.as_tuple() for l in mp.leaves], list(mp.proof),
                                 list(mp.flags), sigs, {"from": core.owner})
    assert "MarginRootPosted" not in tx.events  # already on record
    assert tx.events["AccountBreached"]["account"] == v and core.chx.isBreached(v)
    # a subset posted first (a chosen multiproof) does not block the rest either
    core.fund(w, weth=10**18)
    leaves2 = [merkle.MarginLeaf(str(w), int(core.ch.stateNonce(w)), 10 * USDC, 1_000 * USDC, 1_000 * USDC, 0),
               merkle.MarginLeaf(str(accounts[5]), 0, 10**9, 0, 0, 0)]
    tree2 = merkle.MerkleTree.of_leaves(leaves2)
    core.seq += 1
    h2 = eip712.MarginRootHeader(b"\x33" * 32, core.seq, core.now(), 2, eip712.solvency_struct_hash(SOLVENCY))
    sigs2 = signing.sign_attestation(eip712.margin_root_typed_data(core.domain(), tree2.root, h2),
                                    KEEPER_KEYS[:THRESHOLD])
    subset = tree2.multiproof([str(accounts[5])])
    core.ch.postMarginBatch(h2.as_tuple(), h2.solvency_hash, SOLVENCY, [l.as_tuple() for l in subset.leaves], list(subset.proof),
                            list(subset.flags), sigs2, {"from": accounts[7]})
    assert not core.chx.isBreached(w)  # the copier left w's breach out
    full = tree2.multiproof()
    tx = core.ch.postMarginBatch(h2.as_tuple(), h2.solvency_hash, SOLVENCY, [l.as_tuple() for l in full.leaves], list(full.proof),
                                 list(full.flags), sigs2, {"from": core.owner})
    assert tx.events["AccountBreached"]["account"] == w


# ----------------------------------------------------------------------------------------------------------- H-8


def test_h8_no_position_in_a_series_whose_underlying_has_no_fresh_price(core, accounts):
    taker, seller = accounts[1], accounts[4]
    core.fund(taker, usdc=50_000 * USDC)
    core.fund(seller, usdc=50_000 * USDC)
    put = core.series[1]
    core.trade(seller, put, -WAD, 100 * WAD)  # the market maker buys a put while WETH's price is fresh
    chain.sleep(400)  # WETH's attested price is now older than maxPriceAge (300 s)
    # the maker's leg is a reduce-only sale of its long (no liabilities: nothing to check); the taker's opens a
    # long on an underlying without a fresh attested price: refused
    with reverts_with("CH_StalePrice"):
        core.trade(taker, put, WAD, 100 * WAD)
    # an underlying no keeper ever priced cannot be held at all
    unpriced = AuctionTestToken.deploy("Unpriced", "UNP", 18, {"from": core.owner})
    sid = int(core.chx.createSeries(unpriced, 100 * WAD, chain.time() + 30 * DAY, True, {"from": core.owner})
              .events["SeriesCreated"]["seriesId"])
    with reverts_with("CH_StalePrice"):
        core.trade(taker, sid, WAD, WAD)
    core.post_prices({core.weth: 3000 * WAD, core.wbtc: 60_000 * WAD})
    core.trade(taker, put, WAD, 100 * WAD)  # fresh again: allowed
    assert int(core.chx.positionOf(taker, put)) == WAD


# ----------------------------------------------------------------------------------------------------------- H-2


def _hand_over(core, delay: int):
    owner = core.owner
    tl = BackstopTimelock.deploy(0, [owner], [ZERO], owner, {"from": owner})
    core.ch.transferOwnership(tl, {"from": owner})
    core.auction.transferOwnership(tl, {"from": owner})
    targets = [core.ch, core.auction, tl]
    datas = [core.ch.acceptOwnership.encode_input(), core.auction.acceptOwnership.encode_input(),
             tl.updateDelay.encode_input(delay)]
    tl.scheduleBatch(targets, [0, 0, 0], datas, ZERO32, ZERO32, 0, {"from": owner})
    tl.executeBatch(targets, [0, 0, 0], datas, ZERO32, ZERO32, {"from": owner})
    tl.renounceRole(tl.DEFAULT_ADMIN_ROLE(), owner, {"from": owner})
    assert core.ch.owner() == tl and core.auction.owner() == tl and int(tl.getMinDelay()) == delay
    return tl


def test_h2_owner_powers_wait_for_the_timelock_and_users_can_leave_first(core, accounts):
    """The owner's key installing a 1-of-1 keeper set it controls (then attesting a victim breached at 0 and buying
    the book for nothing) now has to be scheduled two days ahead, in public; the victim withdraws meanwhile."""
    tl = _hand_over(core, 2 * DAY)
    owner, victim, evil = core.owner, accounts[1], accounts[8]
    with reverts_with("OwnableUnauthorizedAccount"):
        core.chx.setKeeperSet([evil], 1, {"from": owner})
    with reverts_with("OwnableUnauthorizedAccount"):
        core.auction.setConfig(config_tuple(), {"from": owner})
    data = core.chx.setKeeperSet.encode_input([evil], 1)
    salt = b"\x01" * 32
    tx = tl.schedule(core.ch, 0, data, ZERO32, salt, 2 * DAY, {"from": owner})
    assert tx.events["CallScheduled"]["target"] == core.ch  # what every user can watch for
    with reverts_with("TimelockUnexpectedOperationState"):
        tl.execute(core.ch, 0, data, ZERO32, salt, {"from": owner})
    # the victim sees it and leaves with an ordinary keeper proof, within the delay
    core.fund(victim, usdc=10_000 * USDC)
    core.trade(victim, core.series[0], WAD, 100 * WAD)
    proof = core.attest([(victim, 9_900 * USDC, 500 * USDC, 750 * USDC)])[victim.address]
    core.ch.withdraw(core.quote, 9_000 * USDC, proof, {"from": victim})
    chain.sleep(2 * DAY + 1)
    tl.execute(core.ch, 0, data, ZERO32, salt, {"from": accounts[9]})  # anyone executes once it is ready
    assert core.chx.isKeeper(evil) and int(core.chx.threshold()) == 1


def test_h2_guardian_pause_expires_and_cannot_be_chained(core, accounts):
    g = accounts[7]
    core.ch.setGuardian(g, {"from": core.owner})
    with reverts_with("EP_NotGuardian"):
        core.ch.pause({"from": accounts[1]})
    core.ch.pause({"from": g})
    assert core.ch.paused()
    chain.sleep(3 * DAY + 1)
    chain.mine()
    assert not core.ch.paused()  # expired by itself
    with reverts_with("EP_Cooldown"):
        core.ch.pause({"from": g})
    chain.sleep(DAY)
    chain.mine()
    core.ch.pause({"from": g})
    assert core.ch.paused()
    # the module's pause stops new auctions only, and also expires
    core.auction.setGuardian(g, {"from": core.owner})
    core.auction.pause({"from": g})
    assert core.auction.paused()
    chain.sleep(3 * DAY + 1)
    chain.mine()
    assert not core.auction.paused()


def test_h2_risk_admin_only_tightens(core, accounts):
    ra = accounts[7]
    core.chx.setRiskAdmin(ra, {"from": core.owner})
    cfg = core.chx.assetConfig(core.weth)
    haircut, cap = int(cfg[2]), int(cfg[3])
    core.chx.setCollateralParams(core.weth, haircut + 10**17, cap // 2, {"from": ra})  # tighter: at once
    with reverts_with("CH_OnlyTightening"):
        core.chx.setCollateralParams(core.weth, haircut, cap // 2, {"from": ra})  # lower haircut
    with reverts_with("CH_OnlyTightening"):
        core.chx.setCollateralParams(core.weth, haircut + 10**17, cap, {"from": ra})  # higher cap
    with reverts_with("CH_OnlyTightening"):
        core.chx.setShortMarginFraction(5 * 10**16, {"from": ra})
    core.chx.setShortMarginFraction(2 * 10**17, {"from": ra})
    core.chx.setCollateralParams(core.weth, haircut, cap, {"from": core.owner})  # loosening: the (timelocked) owner
    assert int(core.chx.assetConfig(core.weth)[2]) == haircut


# ----------------------------------------------------------------------------------------------------------- exit


def test_h2_fallback_exit_when_keepers_stop_attesting(core, accounts):
    t, c = accounts[1], accounts[4]
    core.fund(t, usdc=10_000 * USDC)
    core.fund(c, usdc=10_000 * USDC)
    put, call = core.series[1], core.series[0]  # put strike 2,750; call strike 2,500
    core.trade(c, call, -WAD, 600 * WAD)  # c sells one call: cash 10,600, no cover
    core.trade(t, put, -WAD, 100 * WAD)  # t sells one put to the market maker: cash 10,100
    with reverts_with("CH_MarginProofRequired"):
        core.ch.withdraw(core.quote, 1, EMPTY_PROOF, {"from": t})
    chain.sleep(3 * DAY + 1)
    chain.mine()
    assert core.chx.fallbackActive()
    free = 10_100 * USDC - 2_750 * USDC  # cash minus the put's largest payoff
    assert int(core.chx.fallbackMargin(t)) == free
    with reverts_with("CH_FallbackMarginShort"):
        core.ch.withdraw(core.quote, free + 1, EMPTY_PROOF, {"from": t})
    core.ch.withdraw(core.quote, free, EMPTY_PROOF, {"from": t})
    # closing the short by a buy-back with no keeper proof: allowed when the fallback margin stays >= 0
    q, sig = core.signed_quote(put, -WAD, 2_751 * WAD, nonce=901)  # more than the cash that is left
    with reverts_with("CH_FallbackMarginShort"):
        core.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": t})
    q, sig = core.signed_quote(put, -WAD, 100 * WAD, nonce=902)
    core.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": t})
    assert int(core.chx.positionOf(t, put)) == 0 and int(core.chx.fallbackMargin(t)) == 2_650 * USDC
    core.ch.withdraw(core.quote, 2_650 * USDC, EMPTY_PROOF, {"from": t})  # everything, no position left
    # an uncovered short call blocks the exit until its underlying is held as cover
    assert int(core.chx.fallbackMargin(c)) == -(2**255)
    with reverts_with("CH_FallbackMarginShort"):
        core.ch.withdraw(core.quote, 1, EMPTY_PROOF, {"from": c})
    core.fund(c, weth=WAD)  # one WETH covers one call of any strike (deposits never need keepers)
    assert int(core.chx.fallbackMargin(c)) == 10_600 * USDC
    core.ch.withdraw(core.quote, 10_600 * USDC, EMPTY_PROOF, {"from": c})
    with reverts_with("CH_FallbackMarginShort"):  # the cover stays while the call is open
        core.ch.withdraw(core.weth, 1, EMPTY_PROOF, {"from": c})


# ----------------------------------------------------------------------------------------------------------- top-up


def test_partial_top_up_lowers_the_deficit_and_returns_to_the_account(core, accounts):
    v, bidder, _ = _breached_auction(core, accounts)
    d = int(core.auction.deficitOf(v))
    allowed0 = int(core.auction.quote(v)["allowedWad"])
    core.quote.mint(v, d, {"from": v})
    core.quote.approve(core.auction, d, {"from": v})
    tx = core.auction.topUp(v, d // 2, {"from": v})
    assert int(tx.events["ToppedUp"]["escrow"]) == d // 2 and int(core.auction.deficitOf(v)) == d - d // 2
    assert int(core.auction.quote(v)["allowedWad"]) < allowed0  # less may be sold
    cash0 = int(core.chx.cashOf(v))
    tx = core.auction.topUp(v, d - d // 2, {"from": v})
    assert tx.events["AuctionEnded"]["reason"] == 3  # CuredByDeposit
    assert int(core.chx.cashOf(v)) == cash0 + d and not core.chx.isBreached(v)

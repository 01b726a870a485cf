"""LiquidationAuction on the real Clearinghouse with keeper-signed attestations (M = 2 of N = 3)."""
from __future__ import annotations

from fractions import Fraction

import pytest
from brownie import chain

from keeper.quant import auction_math as am
from keeper.units import WAD
from keeper.quant.auction_math import Curve, CurveKind
from tests.auction.conftest import DEFAULT_CONFIG, USDC, breached_auction, reverts_with

CURVE = Curve(CurveKind.LINEAR, tau=DEFAULT_CONFIG["tau"])
LAM, BUF = DEFAULT_CONFIG["penalty"], DEFAULT_CONFIG["buffer"]
FAR = 2**63  # deadline far away
ANY = 2**255 - 1  # no price limit


def _positions(core, account):
    return [int(core.chx.positionOf(account, s)) for s in core.series]


def _assert_conserved(core, running=()):
    """Module's quote cash equals what it owes: fund (free + repaid claims) and every running auction's escrow."""
    assert int(core.chx.cashOf(core.auction)) == core.module_cash_liabilities(running)


# ----------------------------------------------------------------------------------------------- cannot auction


@pytest.mark.ganache
def test_no_breach_cannot_start(core, accounts):
    v = accounts[1]
    core.fund(v, usdc=1_000 * USDC)
    core.attest([(v, 2_000 * USDC, 1_000 * USDC, 1_500 * USDC)])  # healthy leaf recorded
    with reverts_with("LA_NoBreach"):
        core.auction.start(v, {"from": accounts[3]})
    assert core.auction.auctionCount() == 0


@pytest.mark.ganache
def test_fewer_than_m_keepers_record_no_breach(core, accounts):
    v = accounts[1]
    core.fund(v, usdc=1_000 * USDC)
    with reverts_with("KS_TooFewSignatures"):
        core.breach(v, 10 * USDC, 1_000 * USDC, signers=1)  # 1 of 3 signatures, threshold 2
    assert not core.chx.isBreached(v)
    with reverts_with("LA_NoBreach"):
        core.auction.start(v, {"from": accounts[3]})


@pytest.mark.ganache
def test_breach_of_older_portfolio_or_stale_cannot_start(core, accounts):
    v = accounts[1]
    core.fund(v, usdc=1_000 * USDC)
    old = int(core.ch.stateNonce(v))
    core.fund(v, weth=10**18)  # the portfolio changed (a collateral deposit bumps the state nonce)
    core.breach(v, 10 * USDC, 1_000 * USDC, nonce=old)  # a leaf of the older portfolio is not recorded
    with reverts_with("LA_NoBreach"):
        core.auction.start(v, {"from": accounts[3]})
    core.breach(v, 10 * USDC, 1_000 * USDC)  # current portfolio, but let it age past maxRecordAge
    chain.sleep(DEFAULT_CONFIG["max_age"] + 5)
    chain.mine()
    with reverts_with("LA_RecordExpired"):
        core.auction.start(v, {"from": accounts[3]})
    assert core.auction.auctionCount() == 0


def test_breach_superseded_by_healthy_record_cannot_start(core, accounts):
    v = accounts[1]
    core.fund(v, usdc=1_000 * USDC)
    core.breach(v, 10 * USDC, 1_000 * USDC)
    chain.sleep(2)
    core.attest([(v, 2_000 * USDC, 1_000 * USDC, 1_500 * USDC)])  # same portfolio, later, healthy: lifts the breach
    assert not core.chx.isBreached(v)
    with reverts_with("LA_NoBreach"):
        core.auction.start(v, {"from": accounts[3]})


# ----------------------------------------------------------------------------------------------- partial liquidation


_setup_breached_book = breached_auction


@pytest.mark.ganache
def test_partial_liquidation_restores_target_and_no_further(core, accounts):
    E, MM, IM = 60_000 * USDC, 100_000 * USDC, 150_000 * USDC
    v, bidder, starter, start_tx = _setup_breached_book(core, accounts, E, MM, IM)
    ev = start_tx.events["AuctionStarted"]
    V, span = core.model_value(v, E), -(-DEFAULT_CONFIG["span"] * MM // WAD)  # E + haircut; ceil(0.1 MM)
    assert int(ev["startPrice"]) == V and int(ev["span"]) == span
    T = am.target_margin(MM, BUF)
    assert int(ev["target"]) == T
    before_v, cash_v0 = _positions(core, v), int(core.chx.cashOf(v))
    weth_v0 = int(core.chx.collateralOf(v, core.weth))
    starter_cash0, fund0 = int(core.chx.cashOf(starter)), int(core.auction.fundBalance())
    chain.sleep(600)
    tx = core.auction.bid(v, WAD, ANY, FAR, 0, {"from": bidder})  # asks for everything, gets only what is needed
    bid = tx.events["Bid"]
    # the bid completes the sale; payouts wait for `finish` (anyone), so the bid costs what a partial one does
    assert tx.events["SaleCompleted"]["reason"] == 0 and "AuctionEnded" not in tx.events  # Restored
    assert core.auction.auctionOf(v)["done"] and int(core.auction.quote(v)["allowedWad"]) == 0
    with reverts_with("LA_AuctionDone"):
        core.auction.bid(v, WAD, ANY, FAR, 0, {"from": accounts[4]})
    with reverts_with("LA_AuctionDone"):
        core.auction.cure(v, {"from": accounts[4]})
    fin = core.auction.finish(v, {"from": accounts[5]})
    elapsed = tx.timestamp - int(start_tx.timestamp)
    price = int(bid["price"])
    assert abs(price - am.price(CURVE, V, span, elapsed)) <= 1
    g = int(bid["fractionWad"])
    assert g == am.allowed_fraction(E, T, 0, 0, price, LAM)
    assert 0 < g < WAD
    # the account after the sale (model: pro-rata book + escrowed net proceeds) is at the target ...
    escrow = int(fin.events["AuctionEnded"]["escrowReleased"])
    equity_after = Fraction(WAD - g, WAD) * E + escrow
    mm_after = Fraction(WAD - g, WAD) * MM
    assert equity_after >= Fraction(WAD + BUF, WAD) * mm_after
    # ... and no further: 0.0001% less of the book would have left it below
    less = g - g // 10**6
    split = am.split_bid(am.bid_amount(less, price), LAM, 0, 0)
    assert Fraction(WAD - less, WAD) * E + split.to_account < Fraction(WAD + BUF, WAD) * Fraction(WAD - less, WAD) * MM
    assert fin.events["AuctionEnded"]["reason"] == 0  # Restored
    # money: bidder paid floor(g p); 5% penalty; starter reward capped by the penalty; escrow to the account
    amount = am.bid_amount(g, price)
    assert int(bid["amount"]) == amount
    penalty = -(-amount * LAM // WAD)
    assert int(bid["penalty"]) == penalty
    reward = min(DEFAULT_CONFIG["tip"] + DEFAULT_CONFIG["chip"] * MM // WAD, penalty)
    assert int(core.chx.cashOf(starter)) - starter_cash0 == reward
    assert int(core.auction.fundBalance()) - fund0 == penalty - reward
    assert escrow == amount - penalty
    # positions: the bidder got g of each, rounded against the account; nothing created or lost
    after_v, got = _positions(core, v), _positions(core, bidder)
    for b, a, x in zip(before_v, after_v, got):
        assert a + x == b
        assert abs(x - b * g // WAD) <= 1
    moved_weth = int(core.chx.collateralOf(bidder, core.weth))
    assert moved_weth + int(core.chx.collateralOf(v, core.weth)) == weth_v0
    assert moved_weth == -(-weth_v0 * g // WAD)
    # account cash: kept (1-g) of its cash (core rounds the moved part up) plus the escrow
    assert int(core.chx.cashOf(v)) == cash_v0 - (-(-cash_v0 * g // WAD)) + escrow
    assert not core.chx.isBreached(v)
    _assert_conserved(core)
    # delivery: the sale is a claim on the account's frozen book; the escrow released to it is held outside that book
    claim = tx.events["ClaimRecorded"]
    assert claim["holder"] == bidder and int(claim["claimWad"]) == g and int(claim["payment"]) == amount
    lot = core.chx.lotOf(v)
    assert (int(lot["pendingWad"]), int(lot["movedWad"]), int(lot["creditedCash"])) == (g, 0, escrow)
    core.chx.settleClaim(bidder, {"from": accounts[5]})  # anyone, later: storage then holds what the views showed
    stored = [core.chx.storedBalances(a, s, core.weth) for a in (v, bidder) for s in core.series]
    n = len(core.series)
    assert [int(x[0]) for x in stored[:n]] == after_v and [int(x[0]) for x in stored[n:]] == got
    assert int(stored[n][1]) == moved_weth and int(stored[0][2]) == int(core.chx.cashOf(v))
    lot = core.chx.lotOf(v)
    assert (int(lot["pendingWad"]), int(lot["movedWad"]), int(lot["creditedCash"]), lot["primed"]) == (0, 0, 0, True)
    with reverts_with("LA_NoAuction"):
        core.auction.bid(v, WAD, ANY, FAR, 0, {"from": accounts[4]})


def test_second_bid_takes_only_the_rest_then_reverts(core, accounts):
    E, MM = 60_000 * USDC, 100_000 * USDC
    v, bidder, _, _ = _setup_breached_book(core, accounts, E, MM)
    core.fund(accounts[4], usdc=500_000 * USDC)
    q = core.auction.quote(v)
    half = int(q["allowedWad"]) // 2
    tx1 = core.auction.bid(v, half, ANY, FAR, 0, {"from": bidder})
    assert int(tx1.events["Bid"]["fractionWad"]) == half and "SaleCompleted" not in tx1.events
    _assert_conserved(core, [v])
    with reverts_with("LA_AuctionNotDone"):  # only a completed sale can be finished
        core.auction.finish(v, {"from": accounts[5]})
    tx2 = core.auction.bid(v, WAD, ANY, FAR, 0, {"from": accounts[4]})
    g2 = int(tx2.events["Bid"]["fractionWad"])
    price2 = int(tx2.events["Bid"]["price"])
    escrow1 = int(tx1.events["Bid"]["escrow"])
    T = am.target_margin(MM, BUF)
    assert g2 == am.allowed_fraction(E, T, half, escrow1, price2, LAM)
    assert g2 < WAD - half
    with reverts_with("LA_AuctionDone"):
        core.auction.bid(v, WAD, ANY, FAR, 0, {"from": bidder})
    _assert_conserved(core, [v])  # a completed sale still holds escrow and penalties until `finish`
    fin = core.auction.finish(v, {"from": accounts[5]})
    assert am.remaining_deficit(E, T, half + g2, int(fin.events["AuctionEnded"]["escrowReleased"])) <= 0
    with reverts_with("LA_NoAuction"):
        core.auction.bid(v, WAD, ANY, FAR, 0, {"from": bidder})
    _assert_conserved(core)


@pytest.mark.ganache
def test_price_limit_deadline_and_bidder_margin(core, accounts):
    v, bidder, _, _ = _setup_breached_book(core, accounts)
    chain.sleep(100)
    chain.mine()
    price_now = int(core.auction.quote(v)["price_"])
    # the price falls ~16.7 USDC per second of chain time (E = 60,000 over 3,600 s), and chain time is wall-clock
    # time between blocks: a limit 5,000 USDC below the quote stays below the price for 5 minutes, so the bid is
    # refused however slowly a loaded machine sends it (a 10 USDC margin was 0.6 s: a flake under load)
    with reverts_with("LA_PriceAboveLimit"):
        core.auction.bid(v, WAD, price_now - 5_000 * USDC, FAR, 0, {"from": bidder})
    with reverts_with("LA_BidExpired"):
        core.auction.bid(v, WAD, ANY, chain.time() - 1, 0, {"from": bidder})
    poor = accounts[5]
    with reverts_with("LA_BidderUndermargined"):
        core.auction.bid(v, WAD, ANY, FAR, 0, {"from": poor})
    with reverts_with("LA_SelfBid"):
        core.auction.bid(v, WAD, ANY, FAR, 0, {"from": v})
    # the same poor bidder may fund its margin in the same call
    core.quote.mint(poor, 200_000 * USDC, {"from": poor})
    core.quote.approve(core.auction, 200_000 * USDC, {"from": poor})
    tx = core.auction.bid(v, WAD, ANY, FAR, 200_000 * USDC, {"from": poor})
    assert int(tx.events["Bid"]["fractionWad"]) > 0
    _assert_conserved(core, [v])  # the completed sale's escrow and penalty stay with the module until `finish`
    core.auction.finish(v, {"from": poor})
    _assert_conserved(core)


def test_option_free_bidder_margin_needs_fresh_prices(core, accounts):
    """An option-free bidder's headroom is its collateral value at FRESH prices: a stale price of an asset it holds
    cannot vouch for it (the bid reverts naming the asset); a fresh one lets the same bid through."""
    v, _, _, _ = _setup_breached_book(core, accounts)
    weth_only = accounts[5]
    core.fund(weth_only, weth=100 * 10**18)  # 100 WETH, no cash: margin from collateral value only
    chain.sleep(301)  # past the core's maxPriceAge (300 s), well within the auction's tail
    chain.mine()
    ts = int(core.chx.spotPrice(core.weth)[1])
    with reverts_with("CH_StalePrice"):
        core.auction.bid(v, WAD // 100, ANY, FAR, 0, {"from": weth_only})
    assert int(core.chx.collateralValue(weth_only)) > 0 and ts + 300 < chain.time()  # the age-blind view still values it
    core.post_prices({core.weth: 3000 * 10**18, core.wbtc: 60_000 * 10**18})
    value = int(core.chx.freshCollateralValue(weth_only))
    assert value == 100 * 3000 * USDC * 8 // 10  # 100 WETH x 3,000 x (1 - 20 % haircut)
    tx = core.auction.bid(v, WAD // 100, ANY, FAR, 0, {"from": weth_only})
    assert int(tx.events["Bid"]["fractionWad"]) == WAD // 100


def test_quote_flags_a_turned_insolvent_account_for_reset(core, accounts):
    E, MM = 60_000 * USDC, 100_000 * USDC
    v, _, _, _ = _setup_breached_book(core, accounts, E, MM)
    assert not core.auction.quote(v)["needsReset"]
    core.breach(v, -1_000 * USDC, MM)  # same portfolio, now attested insolvent
    assert core.auction.quote(v)["needsReset"]
    tx = core.auction.redo(v, {"from": accounts[4]})
    assert int(tx.events["AuctionReset"]["startPrice"]) == core.model_value(v, -1_000 * USDC)
    assert not core.auction.quote(v)["needsReset"]


# ----------------------------------------------------------------------------------------------- insolvency


@pytest.mark.ganache
def test_insolvent_fund_pays_then_bad_debt_by_the_rule(core, accounts):
    donor, bidder = accounts[6], accounts[2]
    core.quote.mint(donor, 10_000 * USDC, {"from": donor})
    core.quote.approve(core.auction, 10_000 * USDC, {"from": donor})
    core.auction.fundDeposit(1_000 * USDC, {"from": donor})
    assert core.auction.fundBalance() == 1_000 * USDC
    core.fund(bidder, usdc=500_000 * USDC)
    # victim 1: model value -500 (equity -18,500 + the 18,000 haircut of its collateral), MM 2000 -> the bidder is
    # paid 500 + 200 * t / 3600 (span 0.1 MM)
    v1 = accounts[1]
    core.build_book(v1, n_series=2)
    core.breach(v1, -18_500 * USDC, 2_000 * USDC, 3_000 * USDC)
    assert core.model_value(v1, -18_500 * USDC) == -500 * USDC
    st = core.auction.start(v1, {"from": accounts[3]})
    with reverts_with("LA_MustBuyWhole"):
        core.auction.bid(v1, WAD // 2, ANY, FAR, 0, {"from": bidder})
    chain.sleep(60)
    book1 = _positions(core, v1)
    cash_b0 = int(core.chx.cashOf(bidder))
    tx = core.auction.bid(v1, WAD, ANY, FAR, 0, {"from": bidder})
    price = int(tx.events["Bid"]["price"])
    elapsed = tx.timestamp - int(st.timestamp)
    assert abs(price - am.price(CURVE, -500 * USDC, 200 * USDC, elapsed)) <= 1
    owed = -am.bid_amount(WAD, price)
    assert 500 * USDC < owed < 700 * USDC
    assert int(tx.events["ShortfallPaid"]["paid"]) == owed
    assert "BadDebtRecorded" not in tx.events
    assert core.auction.fundBalance() == 1_000 * USDC - owed
    # made whole: the whole book, plus the payment (the victim's own cash came along pro rata)
    assert _positions(core, bidder)[:2] == book1[:2]
    assert all(x == 0 for x in _positions(core, v1))
    assert tx.events["SaleCompleted"]["reason"] == 1  # SoldOut
    assert core.auction.finish(v1, {"from": accounts[5]}).events["AuctionEnded"]["reason"] == 1
    left = int(core.auction.fundBalance())
    # victim 2: the fund cannot cover it -> bad debt recorded as a claim of the bidder
    v2 = accounts[7]
    core.build_book(v2, n_series=1)
    core.breach(v2, -21_000 * USDC, 1_000 * USDC, 1_500 * USDC)  # model value -3,000
    core.auction.start(v2, {"from": accounts[3]})
    # the bidder now holds options: it needs a fresh margin record of its own to bid again
    with reverts_with("LA_BidderMarginUnknown"):
        core.auction.bid(v2, WAD, ANY, FAR, 0, {"from": bidder})
    # ... and its claim on v1's book must be delivered before it may buy another book
    core.attest([(bidder, 400_000 * USDC, 5_000 * USDC, 8_000 * USDC)])
    with reverts_with("CH_ClaimUnsettled"):
        core.auction.bid(v2, WAD, ANY, FAR, 0, {"from": bidder})
    expected = _positions(core, bidder)
    core.chx.settleClaim(bidder, {"from": accounts[5]})  # anyone may deliver it
    assert [int(core.chx.storedBalances(bidder, s, core.weth)[0]) for s in core.series] == expected
    assert all(int(core.chx.storedBalances(v1, s, core.weth)[0]) == 0 for s in core.series)
    # the delivery leaves its effective book, so its stateNonce and margin record, as they were
    tx2 = core.auction.bid(v2, WAD, ANY, FAR, 0, {"from": bidder})
    owed2 = -int(tx2.events["Bid"]["amount"])
    bad = int(tx2.events["BadDebtRecorded"]["amount"])
    assert int(tx2.events["ShortfallPaid"]["paid"]) == left and bad == owed2 - left
    assert core.auction.fundBalance() == 0 and core.auction.deficit() == bad
    claim_id = int(tx2.events["BadDebtRecorded"]["claimId"])
    with reverts_with("IF_NothingToCollect"):
        core.auction.collectBadDebt(claim_id, {"from": bidder})
    _assert_conserved(core)
    # the rule: new money repays the deficit first; the fund's free balance stays 0 until it is gone
    core.auction.fundDeposit(bad // 2, {"from": donor})
    assert core.auction.fundBalance() == 0 and core.auction.deficit() == bad - bad // 2
    c0 = int(core.chx.cashOf(bidder))
    core.auction.collectBadDebt(claim_id, {"from": donor})  # anyone may trigger; paid to the creditor
    assert int(core.chx.cashOf(bidder)) - c0 == bad // 2
    core.auction.fundDeposit(bad, {"from": donor})
    assert core.auction.deficit() == 0 and core.auction.fundBalance() == bad - (bad - bad // 2)
    core.auction.collectBadDebt(claim_id, {"from": bidder})
    assert int(core.chx.cashOf(bidder)) - c0 == bad
    _assert_conserved(core)


# ----------------------------------------------------------------------------------------------- cures


@pytest.mark.ganache
def test_deposit_cures_and_stops_the_auction(core, accounts):
    E, MM = 60_000 * USDC, 100_000 * USDC
    v, bidder, _, _ = _setup_breached_book(core, accounts, E, MM)
    d = int(core.auction.deficitOf(v))
    assert d == am.remaining_deficit(E, am.target_margin(MM, BUF), 0, 0)
    owner_of_v = v
    core.quote.mint(owner_of_v, d, {"from": owner_of_v})
    core.quote.approve(core.auction, d, {"from": owner_of_v})
    with reverts_with("LA_DepositBelowDeficit"):
        core.auction.depositAndCure(v, d - 1, {"from": owner_of_v})
    cash0 = int(core.chx.cashOf(v))
    tx = core.auction.depositAndCure(v, d, {"from": owner_of_v})
    assert tx.events["AuctionEnded"]["reason"] == 3  # CuredByDeposit
    assert int(core.chx.cashOf(v)) - cash0 == d
    assert not core.chx.isBreached(v)
    with reverts_with("LA_NoAuction"):
        core.auction.bid(v, WAD, ANY, FAR, 0, {"from": bidder})
    _assert_conserved(core)


def test_direct_deposit_is_held_apart_and_cures_only_through_a_fresh_attestation(core, accounts):
    """A quote deposit straight into a breached account neither moves its stateNonce (so it cannot stop bids) nor
    joins the book being sold: it is held apart, uncounted, and joins the account's cash when the breach ends."""
    E, MM = 60_000 * USDC, 100_000 * USDC
    v, bidder, _, _ = _setup_breached_book(core, accounts, E, MM)
    nonce, cash0 = int(core.ch.stateNonce(v)), int(core.chx.cashOf(v))
    core.fund(v, usdc=100_000 * USDC)  # straight into the clearinghouse
    assert int(core.ch.stateNonce(v)) == nonce and int(core.chx.cashOf(v)) == cash0
    assert int(core.chx.lotOf(v)["creditedCash"]) == 100_000 * USDC
    core.attest([(v, E + 10_000 * USDC, MM, 150_000 * USDC)])  # the book recovered a little: still short of MM x 1.1
    with reverts_with("LA_NotCured"):
        core.auction.cure(v, {"from": accounts[4]})
    core.attest([(v, E + 100_000 * USDC, MM, 150_000 * USDC)])
    tx = core.auction.cure(v, {"from": accounts[4]})
    assert tx.events["AuctionEnded"]["reason"] == 2  # Cured
    assert not core.chx.isBreached(v)
    assert int(core.chx.cashOf(v)) == cash0 + 100_000 * USDC and int(core.chx.lotOf(v)["creditedCash"]) == 0


# ----------------------------------------------------------------------------------------------- resets, pause, re-entry


def test_reset_needs_tail_or_floor_and_a_fresh_breach(core, accounts):
    E, MM = 60_000 * USDC, 100_000 * USDC
    v, bidder, _, _ = _setup_breached_book(core, accounts, E, MM)
    with reverts_with("LA_ResetNotNeeded"):
        core.auction.redo(v, {"from": accounts[4]})
    chain.sleep(int(0.81 * DEFAULT_CONFIG["tau"]))  # factor below the 20% cusp
    chain.mine()
    with reverts_with("LA_AuctionNeedsReset"):
        core.auction.bid(v, WAD, ANY, FAR, 0, {"from": bidder})
    with reverts_with("LA_RecordExpired"):
        core.auction.redo(v, {"from": accounts[4]})
    core.breach(v, 50_000 * USDC, MM)  # keepers attest the same portfolio again, now worse
    tx = core.auction.redo(v, {"from": accounts[4]})
    assert int(tx.events["AuctionReset"]["startPrice"]) == core.model_value(v, 50_000 * USDC)
    assert int(core.auction.quote(v)["price_"]) == core.model_value(v, 50_000 * USDC)
    assert int(core.auction.auctionOf(v)["resets"]) == 1
    tx = core.auction.bid(v, WAD, ANY, FAR, 0, {"from": bidder})
    assert tx.events["SaleCompleted"]["reason"] == 0
    with reverts_with("LA_AuctionDone"):
        core.auction.redo(v, {"from": accounts[4]})


def test_pause_blocks_starts_only(core, accounts):
    v, bidder, _, _ = _setup_breached_book(core, accounts)
    core.auction.pause({"from": core.owner})
    v2 = accounts[7]
    core.fund(v2, usdc=1_000 * USDC)
    core.breach(v2, 10 * USDC, 1_000 * USDC)
    with reverts_with("EP_EnforcedPause"):
        core.auction.start(v2, {"from": accounts[3]})
    tx = core.auction.bid(v, WAD, ANY, FAR, 0, {"from": bidder})  # running auction still clears
    assert "SaleCompleted" in tx.events
    assert "AuctionEnded" in core.auction.finish(v, {"from": accounts[5]}).events  # and ends


@pytest.mark.ganache
def test_reentrant_token_cannot_bid_twice(core, accounts):
    v, bidder, _, _ = _setup_breached_book(core, accounts)
    allowed = int(core.auction.quote(v)["allowedWad"])
    core.quote.mint(bidder, 1_000 * USDC, {"from": bidder})
    core.quote.approve(core.auction, 1_000 * USDC, {"from": bidder})
    inner = core.auction.bid.encode_input(v, WAD, ANY, FAR, 0)
    core.quote.armHook(core.auction, inner, {"from": bidder})
    tx = core.auction.bid(v, WAD // 10**6, ANY, FAR, 1_000 * USDC, {"from": bidder})
    assert core.quote.hookCalled()
    assert not core.quote.hookSucceeded()
    assert core.quote.hookReturn()[:4].hex() == "3ee5aeb5"  # ReentrancyGuardReentrantCall()
    assert int(tx.events["Bid"]["fractionWad"]) == WAD // 10**6 < allowed
    assert int(core.auction.auctionOf(v)["soldWad"]) == WAD // 10**6
    _assert_conserved(core, [v])


@pytest.mark.ganache
def test_healthy_attestation_blocks_bids_on_a_running_auction(core, accounts):
    E, MM = 60_000 * USDC, 100_000 * USDC
    v, bidder, _, _ = _setup_breached_book(core, accounts, E, MM)
    chain.sleep(5)
    core.attest([(v, 105_000 * USDC, MM, 150_000 * USDC)])  # prices recovered: same portfolio above MM (below T)
    with reverts_with("LA_AccountHealthy"):
        core.auction.bid(v, WAD, ANY, FAR, 0, {"from": bidder})
    with reverts_with("LA_NotCured"):
        core.auction.cure(v, {"from": accounts[4]})  # needs MM x 1.1 while the auction is young
    chain.sleep(DEFAULT_CONFIG["tail"] + 1)
    core.attest([(v, 105_000 * USDC, MM, 150_000 * USDC)])
    tx = core.auction.cure(v, {"from": accounts[4]})  # past tail, MM is enough
    assert tx.events["AuctionEnded"]["reason"] == 2


def test_turning_insolvent_resets_to_a_whole_book_sale_paid_from_escrow_first(core, accounts):
    E, MM = 60_000 * USDC, 100_000 * USDC
    v, bidder, _, _ = _setup_breached_book(core, accounts, E, MM)
    assert core.auction.fundBalance() == 0  # escrow pays first, then bad debt
    allowed = int(core.auction.quote(v)["allowedWad"])
    tx1 = core.auction.bid(v, allowed // 3, ANY, FAR, 0, {"from": bidder})
    escrow = int(tx1.events["Bid"]["escrow"])
    assert escrow > 0
    core.breach(v, -20_000 * USDC, 80_000 * USDC)  # the rest of the book, attested insolvent (current nonce)
    V = core.model_value(v, -20_000 * USDC)  # below -2,000: the haircut of what is left is below 18,000
    assert V < -2_000 * USDC
    tx = core.auction.redo(v, {"from": accounts[4]})
    assert int(tx.events["AuctionReset"]["startPrice"]) == V
    assert int(tx.events["AuctionReset"]["escrow"]) == escrow
    core.attest([(bidder, 10**13, 10_000 * USDC, 15_000 * USDC)])
    cash0 = int(core.chx.cashOf(bidder))
    tx = core.auction.bid(v, WAD, ANY, FAR, 0, {"from": bidder})
    owed = -int(tx.events["Bid"]["amount"])
    assert owed >= -V
    # the account's own escrow pays first (it is the account's money), the empty fund records the rest as bad debt
    bad = int(tx.events["BadDebtRecorded"]["amount"]) if "BadDebtRecorded" in tx.events else 0
    assert bad == max(owed - escrow, 0)
    fin = core.auction.finish(v, {"from": accounts[5]})
    assert int(fin.events["AuctionEnded"]["escrowReleased"]) == max(escrow - owed, 0)
    assert all(x == 0 for x in _positions(core, v))
    _assert_conserved(core)

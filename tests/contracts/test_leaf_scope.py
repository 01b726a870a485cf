"""A margin leaf authorises only what it covered (issue 16 item 2), on a real chain with real signatures.

A leaf is bound to one account and to that account's ``stateNonce`` at attestation. What the contracts enforce
(contracts/ClearinghouseBase.sol ``_verifyAccountLeaf``, contracts/AttestationOracle.sol ``_recordLeaf``, the H-8
rule of docs/contracts.md):

* every change of the account's positions or non-quote collateral (trade, withdrawal, collateral deposit,
  settlement of an unbound book) moves its stateNonce, so a leaf attested before the change authorises nothing
  after it: ``AO_StaleMarginState`` on a withdrawal, a trade or ``recordMargin``; a batch skips it unrecorded;
* a quote deposit keeps the nonce (it only raises equity, finding H-1): the leaf stays usable but authorises only
  the headroom it attested, never the cash deposited after it;
* a leaf of another account authorises nothing (``CH_MarginProofRequired``);
* a leaf older than the account's recorded one of the same portfolio cannot override it (``AO_AttestationOlder``),
  so an old healthy leaf cannot clear a later breach, and a bound book cannot trade or withdraw at all
  (``CH_AccountInBreach``);
* a series or collateral the keepers left out (no fresh attested price) cannot be traded into or withdrawn with
  any leaf, however healthy (``CH_StalePrice``): no account comes to hold what the keepers do not price.

Each test performs the attack and asserts the named error, then the honest path and the values read back.
The last two tests are findings H-9 and H-10: roots may share a second. A breach is lifted only by a strictly later
attestation (H-9), and once two roots share a second no leaf of that second is ranked against a record of it: a
later root's leaf is needed (H-10).
"""
import brownie
from brownie import chain

from core_helpers import EMPTY_PROOF, USDC, WAD, err

from keeper.codec.merkle import MerkleTree

STALE = "AO_StaleMarginState(address,uint32,uint32)"
OLDER = "AO_AttestationOlder(uint64,uint64)"
HEADROOM = "CH_InsufficientHeadroom(address,int256,uint256)"


def _book(p, maker, taker, size=WAD, price=50 * WAD):
    """maker sells `size` ETH calls (strike 2000, spot 3000) to taker; both hold 20,000 USDC first."""
    p.fund(maker, p.usdc, 20_000 * USDC)
    p.fund(taker, p.usdc, 20_000 * USDC)
    p.post_prices({p.weth: 3000 * WAD})
    sid, _ = p.new_series(strike=2000 * WAD)
    q, sig = p.quote(maker, sid, -size, price, nonce=1)
    p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), p.attest(taker, 20_000 * USDC), {"from": taker})
    return sid


def test_a_withdrawal_spends_the_leaf(protocol, traders):
    """One leaf, one withdrawal: the debit moves the nonce, so the same leaf cannot withdraw again."""
    p = protocol
    maker, taker = traders
    _book(p, maker, taker)
    nonce = int(p.ch.stateNonce(taker))
    proof = p.attest(taker, 21_000 * USDC, 1_000 * USDC, 6_000 * USDC)  # headroom 15,000
    cash0 = int(p.ch.cashOf(taker))
    p.ch.withdraw(p.usdc, 9_000 * USDC, proof, {"from": taker})
    assert int(p.ch.stateNonce(taker)) == nonce + 1 and int(p.ch.marginRecord(taker)[3]) == 0
    with brownie.reverts(err(STALE, str(taker), nonce, nonce + 1)):
        p.ch.withdraw(p.usdc, 6_000 * USDC, proof, {"from": taker})
    with brownie.reverts(err(STALE, str(taker), nonce, nonce + 1)):
        p.ch.recordMargin(proof, {"from": taker})
    assert int(p.ch.cashOf(taker)) == cash0 - 9_000 * USDC


def test_a_leaf_from_before_a_new_position_authorises_nothing_after_it(protocol, traders):
    """The leaf attested before the taker sold a second series (so it did not cover that series) can be used for
    neither a withdrawal, a risk-adding trade, a reduce-only leg that needs a proof (a buy-back of the new short, a
    sale of the old long by an account that now has liabilities), nor to record a margin."""
    p = protocol
    maker, taker = traders
    first = _book(p, maker, taker)
    second, _ = p.new_series(strike=4000 * WAD)
    nonce = int(p.ch.stateNonce(taker))
    before = p.attest(taker, 20_000 * USDC, 500 * USDC, 1_000 * USDC)  # covers the long `first` only
    q, sig = p.quote(maker, second, 2 * WAD, 20 * WAD, nonce=2)  # taker sells 2 of `second` to the maker
    p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), before, {"from": taker})
    assert int(p.ch.positionOf(taker, second)) == -2 * WAD and int(p.ch.stateNonce(taker)) == nonce + 1
    stale = err(STALE, str(taker), nonce, nonce + 1)
    with brownie.reverts(stale):  # withdrawal
        p.ch.withdraw(p.usdc, 1_000 * USDC, before, {"from": taker})
    q, sig = p.quote(maker, second, WAD, 20 * WAD, nonce=3)  # risk-adding: one more short
    with brownie.reverts(stale):
        p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), before, {"from": taker})
    q, sig = p.quote(maker, second, -WAD, 30 * WAD, nonce=4)  # reduce-only buy-back paying 30 USDC
    with brownie.reverts(stale):
        p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), before, {"from": taker})
    q0, sig0 = p.quote(maker, first, WAD, 0, nonce=5)  # reduce-only sale of the long at 0, liabilities: a short
    with brownie.reverts(stale):
        p.ch.trade(q0, sig0, EMPTY_PROOF, before, {"from": taker})
    with brownie.reverts(stale):
        p.ch.recordMargin(before, {"from": taker})
    # the leaf of the current book authorises the buy-back; the values move as the quote says
    cash = int(p.ch.cashOf(taker))
    p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), p.attest(taker, 19_000 * USDC), {"from": taker})
    assert int(p.ch.positionOf(taker, second)) == -WAD and int(p.ch.cashOf(taker)) == cash - 30 * USDC
    assert int(p.ch.positionOf(taker, first)) == WAD


def test_a_quote_deposit_keeps_the_leaf_but_not_its_headroom(protocol, traders):
    """A quote deposit does not move the nonce (finding H-1): the leaf stays usable, but authorises only the
    headroom it attested, not the cash deposited after it."""
    p = protocol
    maker, taker = traders
    _book(p, maker, taker)
    proof = p.attest(taker, 20_000 * USDC, 1_000 * USDC, 19_000 * USDC)  # headroom 1,000
    nonce = int(p.ch.stateNonce(taker))
    p.fund(taker, p.usdc, 50_000 * USDC)
    assert int(p.ch.stateNonce(taker)) == nonce
    with brownie.reverts(err(HEADROOM, str(taker), 1_000 * USDC, 1_000 * USDC + 1)):
        p.ch.withdraw(p.usdc, 1_000 * USDC + 1, proof, {"from": taker})
    cash = int(p.ch.cashOf(taker))
    p.ch.withdraw(p.usdc, 1_000 * USDC, proof, {"from": taker})
    assert int(p.ch.cashOf(taker)) == cash - 1_000 * USDC


def test_a_collateral_withdrawal_or_deposit_spends_the_leaf(protocol, traders):
    """Non-quote collateral is part of what the leaf covered: after the WETH balance changes either way, the
    leaf authorises nothing."""
    p = protocol
    maker, taker = traders
    _book(p, maker, taker)
    p.fund(taker, p.weth, 2 * WAD)
    p.post_prices({p.weth: 3000 * WAD})
    nonce = int(p.ch.stateNonce(taker))
    proof = p.attest(taker, 25_000 * USDC, 1_000 * USDC, 2_000 * USDC)  # headroom 23,000 >= 1 WETH x 3,000
    p.ch.withdraw(p.weth, WAD, proof, {"from": taker})
    assert int(p.ch.collateralOf(taker, p.weth)) == WAD
    with brownie.reverts(err(STALE, str(taker), nonce, nonce + 1)):
        p.ch.withdraw(p.weth, WAD, proof, {"from": taker})
    proof = p.attest(taker, 22_000 * USDC, 1_000 * USDC, 2_000 * USDC)
    p.fund(taker, p.weth, 1)  # a collateral deposit moves the nonce too
    with brownie.reverts(err(STALE, str(taker), nonce + 1, nonce + 2)):
        p.ch.withdraw(p.usdc, 1 * USDC, proof, {"from": taker})
    assert int(p.ch.collateralOf(taker, p.weth)) == WAD + 1


def test_another_accounts_leaf_authorises_nothing(protocol, traders):
    p = protocol
    maker, taker = traders
    _book(p, maker, taker)
    rich = p.attest(maker, 10**6 * USDC)  # the maker's (fresh, current, healthy) leaf
    with brownie.reverts(err("CH_MarginProofRequired(address)", str(taker))):
        p.ch.withdraw(p.usdc, 10_000 * USDC, rich, {"from": taker})
    sid, _ = p.new_series(strike=3500 * WAD)
    q, sig = p.quote(maker, sid, WAD, 10 * WAD, nonce=7)  # the taker would sell: risk-adding
    with brownie.reverts(err("CH_MarginProofRequired(address)", str(taker))):
        p.ch.trade(q, sig, p.attest(maker, 10**6 * USDC), rich, {"from": taker})


def test_an_old_healthy_leaf_cannot_clear_a_breach(protocol, traders):
    """After the keepers record a breach, neither a healthy leaf of the account's previous book (stale nonce) nor
    an earlier healthy leaf of the same book (older root) clears it; only a later healthy attestation does."""
    p = protocol
    maker, taker = traders
    sid = _book(p, maker, taker)
    nonce = int(p.ch.stateNonce(taker))
    tree0, h0, _ = p.post_margin([p.leaf(taker, 30_000 * USDC, 1_000 * USDC, 2_000 * USDC)])
    previous = p.proof(tree0, h0, taker)
    q, sig = p.quote(maker, sid, WAD // 2, 60 * WAD, nonce=8)  # the taker sells half its long (reduce-only)
    p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), EMPTY_PROOF, {"from": taker})
    assert int(p.ch.stateNonce(taker)) == nonce + 1
    chain.sleep(20)
    chain.mine()
    now = p.now()
    tree1, h1, _ = p.post_margin([p.leaf(taker, 30_000 * USDC, 1_000 * USDC, 2_000 * USDC)], timestamp=now - 10)
    earlier = p.proof(tree1, h1, taker)
    _, _, tx = p.post_margin([p.leaf(taker, 400 * USDC, 1_000 * USDC, 2_000 * USDC)], timestamp=now - 5)
    assert "AccountBreached" in tx.events and p.ch.isBreached(taker)
    with brownie.reverts(err(STALE, str(taker), nonce, nonce + 1)):
        p.ch.recordMargin(previous, {"from": taker})
    with brownie.reverts(err(OLDER, now - 10, now - 5)):
        p.ch.recordMargin(earlier, {"from": taker})
    # the same stale leaf in a batch (the root is on record: no new signature check) is skipped, not recorded
    mp = tree0.multiproof()
    tx = p.ch.postMarginBatch(*p.posting(h0), [l.as_tuple() for l in mp.leaves], list(mp.proof), list(mp.flags),
                              p.sign_root(tree0, h0), {"from": taker})
    assert tx.events["MarginAttested"]["recorded"] is False
    assert p.ch.isBreached(taker) and int(p.ch.marginRecord(taker)[0]) == 400 * USDC
    # bound to its breach, the book can neither withdraw nor trade, whatever leaf it shows
    with brownie.reverts(err("CH_AccountInBreach(address)", str(taker))):
        p.ch.withdraw(p.usdc, 1, earlier, {"from": taker})
    # a later healthy attestation of the current book lifts it
    p.attest(taker, 3_000 * USDC, 1_000 * USDC, 2_000 * USDC)
    assert not p.ch.isBreached(taker)


def test_a_series_or_collateral_the_keepers_left_out_is_refused_with_any_leaf(protocol, owner, traders):
    """The keepers price ETH and leave WBTC out (no attested WBTC price): a healthy, current leaf can neither open a
    position on a WBTC series nor withdraw WBTC collateral (its value is unknown); once the ETH price goes stale,
    the ETH series it covers is refused too, risk-adding legs and reduce-only sales whose bound needs spot."""
    p = protocol
    maker, taker = traders
    eth = _book(p, maker, taker)
    p.fund(taker, p.wbtc, 10**8)  # 1 WBTC deposited (deposits need no price)
    btc = int(p.ch.createSeries(p.wbtc, 60_000 * WAD, p.now() + 30 * 86400, False, {"from": owner})
              .events["SeriesCreated"]["seriesId"])
    q, sig = p.quote(maker, btc, -WAD, 500 * WAD, nonce=10)  # taker would buy a BTC put
    with brownie.reverts(err("CH_StalePrice(address,uint64)", str(p.wbtc), 0)):
        p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), p.attest(taker, 80_000 * USDC), {"from": taker})
    with brownie.reverts(err("CH_StalePrice(address,uint64)", str(p.wbtc), 0)):
        p.ch.withdraw(p.wbtc, 10**7, p.attest(taker, 80_000 * USDC), {"from": taker})
    assert int(p.ch.positionOf(taker, btc)) == 0 and int(p.ch.collateralOf(taker, p.wbtc)) == 10**8
    # ETH's attested price goes stale (maxPriceAge 300 s): a new ETH series is refused with healthy leaves
    eth2, _ = p.new_series(strike=3500 * WAD)
    ts = int(p.ch.spotPrice(p.weth)[1])
    chain.sleep(400)
    chain.mine()
    q, sig = p.quote(maker, eth2, -WAD, 40 * WAD, nonce=11)
    with brownie.reverts(err("CH_StalePrice(address,uint64)", str(p.weth), ts)):
        p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), p.attest(taker, 80_000 * USDC), {"from": taker})
    # once the keepers price both, the same trades go through and spend the leaf they used
    p.post_prices({p.weth: 3000 * WAD, p.wbtc: 60_000 * WAD})
    nonce = int(p.ch.stateNonce(taker))
    q, sig = p.quote(maker, btc, -WAD, 500 * WAD, nonce=12)
    leaf = p.attest(taker, 80_000 * USDC)
    p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), leaf, {"from": taker})
    assert int(p.ch.positionOf(taker, btc)) == WAD and int(p.ch.stateNonce(taker)) == nonce + 1
    with brownie.reverts(err(STALE, str(taker), nonce, nonce + 1)):
        p.ch.withdraw(p.wbtc, 10**7, leaf, {"from": taker})


def _post_root_only(p, leaves, timestamp):
    """Post a margin root without recording any leaf (as keepers do each block): returns (tree, header)."""
    tree = MerkleTree.of_leaves(leaves)
    header = p.margin_header(tree, timestamp)
    p.ch.postMarginRoot(tree.root, *p.posting(header), p.sign_root(tree, header), {"from": p.owner})
    return tree, header


def test_an_earlier_root_with_the_same_timestamp_cannot_clear_a_later_breach(protocol, traders):
    """Finding H-9 (docs/contracts.md): two margin roots may carry the same timestamp (consecutive blocks can share a
    second). Root s (healthy, posted root-only) and root s+1 (a breach, recorded) share second t; the account replays
    its healthy leaf of root s through ``recordMargin``: before the fix this lifted the breach before anyone started
    the auction. A leaf of the record's own second is no longer ranked against it once two roots share that second
    (H-10's rule), and a breach is lifted only by a strictly later attestation; a later healthy leaf still lifts it."""
    p = protocol
    maker, taker = traders
    _book(p, maker, taker)
    chain.sleep(20)
    chain.mine()
    t = p.now() - 5
    tree_a, h_a = _post_root_only(p, [p.leaf(taker, 30_000 * USDC, 1_000 * USDC, 2_000 * USDC),
                                      p.leaf(maker, 20_000 * USDC)], timestamp=t)
    healthy = p.proof(tree_a, h_a, taker)
    p.post_margin([p.leaf(taker, 400 * USDC, 1_000 * USDC, 2_000 * USDC)], timestamp=t)  # sequence + 1, breach
    assert p.ch.isBreached(taker) and int(p.ch.marginRecord(taker)[3]) == t
    with brownie.reverts(err(OLDER, t, t)):  # the replay: same second, two roots in it
        p.ch.recordMargin(healthy, {"from": taker})
    assert p.ch.isBreached(taker), "the earlier root's healthy leaf lifted the later breach"
    with brownie.reverts(err("CH_AccountInBreach(address)", str(taker))):
        p.ch.withdraw(p.usdc, 1 * USDC, healthy, {"from": taker})
    chain.sleep(2)
    chain.mine()
    tree_c, h_c, _ = p.post_margin([p.leaf(taker, 30_000 * USDC, 1_000 * USDC, 2_000 * USDC)], timestamp=t + 1)
    p.ch.recordMargin(p.proof(tree_c, h_c, taker), {"from": taker})  # strictly later and healthy: lifted
    assert not p.ch.isBreached(taker)


def test_an_earlier_root_with_the_same_timestamp_cannot_outrank_a_later_thinner_leaf(protocol, traders):
    """Finding H-10 (docs/contracts.md): the account's record is its rich leaf of root s (headroom 28,000); root s+1
    in the same second t records a thinner healthy leaf (headroom 1,000). Before the fix the record ranked leaves by
    timestamp only, so the account still withdrew 10,000 on root s's leaf. Now, once two roots share a second, a leaf
    of that second outranks a record of it only from the newest root: root s's leaf is refused for a withdrawal, a
    trade and a record (``AO_AttestationOlder(t, t)``); s+1's leaf works while s+1 is the newest root, and once a
    later root exists, that root's leaf authorises exactly its own headroom. While only one root holds second t, a
    leaf of it is accepted as before."""
    p = protocol
    maker, taker = traders
    _book(p, maker, taker)
    chain.sleep(20)
    chain.mine()
    t = p.now() - 10
    tree_a, h_a, _ = p.post_margin([p.leaf(taker, 30_000 * USDC, 1_000 * USDC, 2_000 * USDC)], timestamp=t)
    rich = p.proof(tree_a, h_a, taker)
    assert int(p.ch.marginRecord(taker)[3]) == t
    p.ch.recordMargin(rich, {"from": taker})  # its own root, the only one of second t: still accepted
    tree_b, h_b, tx_b = p.post_margin([p.leaf(taker, 30_000 * USDC, 1_000 * USDC, 29_000 * USDC)], timestamp=t)
    thin = p.proof(tree_b, h_b, taker)
    assert h_b.sequence == h_a.sequence + 1 and h_b.timestamp == h_a.timestamp == t
    assert [e["recorded"] for e in tx_b.events["MarginAttested"]] == [True]  # the newest root: recorded
    p.ch.recordMargin(thin, {"from": taker})  # and usable while it is the newest
    older = err(OLDER, t, t)
    cash0 = int(p.ch.cashOf(taker))
    with brownie.reverts(older):  # the attack: withdraw 10,000 on the richer leaf of the shared second
        p.ch.withdraw(p.usdc, 10_000 * USDC, rich, {"from": taker})
    with brownie.reverts(older):  # nor record it again
        p.ch.recordMargin(rich, {"from": taker})
    eth2, _ = p.new_series(strike=2500 * WAD)
    q, sig = p.quote(maker, eth2, -WAD, 40 * WAD, nonce=7)  # nor add risk on it
    with brownie.reverts(older):
        p.ch.trade(q, sig, p.attest(maker, 20_000 * USDC), rich, {"from": taker})
    with brownie.reverts(older):  # a later root (the maker's, just posted): the shared second's leaves are done
        p.ch.withdraw(p.usdc, 500 * USDC, thin, {"from": taker})
    assert int(p.ch.cashOf(taker)) == cash0
    # a later root (the next second after the last one on chain): its thin leaf authorises its own headroom
    # (1,000) and no more, and the rich leaf is plainly older
    tree_c, h_c, _ = p.post_margin([p.leaf(taker, 30_000 * USDC, 1_000 * USDC, 29_000 * USDC)])
    later = p.proof(tree_c, h_c, taker)
    assert h_c.timestamp > t and int(p.ch.marginRecord(taker)[3]) == h_c.timestamp
    with brownie.reverts(err(OLDER, t, h_c.timestamp)):
        p.ch.withdraw(p.usdc, 10_000 * USDC, rich, {"from": taker})
    with brownie.reverts(err(HEADROOM, str(taker), 1_000 * USDC, 10_000 * USDC)):
        p.ch.withdraw(p.usdc, 10_000 * USDC, later, {"from": taker})
    p.ch.withdraw(p.usdc, 500 * USDC, later, {"from": taker})
    assert int(p.ch.cashOf(taker)) == cash0 - 500 * USDC

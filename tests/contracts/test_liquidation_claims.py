"""Liquidation claims (`recordClaim` / `settleClaim`): deferred delivery of a liquidated book, checked against an
independent Python model of the documented rules (exact integer arithmetic).

The model (:class:`Ledger`) keeps every account's STORED book (positions, collateral, cash), each source's lot
(pending, moved, credited cash) and each holder's claim, and applies the rules of ``contracts/LiquidationClaims.sol``:

* a bid of ``share`` of what is left records ``claim = ceil(share * (1 - moved - pending))`` of the frozen book B
  (the whole rest for ``share == 1``);
* settlement moves ``ceil(claim / (1 - moved))`` (exactly 1 for the whole stored rest) of every stored amount,
  rounding against the source: assets (longs, collateral, positive cash) rounded up, liabilities down;
* effective views: a frozen book keeps ``floor((1 - moved - pending) / (1 - moved))`` of its stored amounts
  (assets rounded down, liabilities up) plus its credited cash; a holder adds what settlement would move now.

The module is a plain account registered as liquidation module (the auction is tested in tests/auction).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import brownie
import pytest
from brownie import accounts, chain
from eth_utils import keccak

from core_helpers import EMPTY_PROOF, USDC, WAD, err
from keeper.codec import eip712
from keeper.ops import signing

CLAIMS_PENDING = "CH_ClaimsPending(address,uint256)"
CLAIM_UNSETTLED = "CH_ClaimUnsettled(address,address,uint256)"


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def share_of(amount: int, share_wad: int) -> int:
    """`share_wad` of a signed amount, rounded against its owner: an asset up, a liability down (toward zero)."""
    if amount >= 0:
        return ceil_div(amount * share_wad, WAD)
    return -((-amount * share_wad) // WAD)


def kept_of(amount: int, kept_wad: int) -> int:
    """What a frozen book keeps of a signed stored amount: an asset rounded down, a liability up (in size)."""
    if amount >= 0:
        return amount * kept_wad // WAD
    return -ceil_div(-amount * kept_wad, WAD)


def claim_fraction(share_wad: int, moved: int, pending: int) -> int:
    remaining = WAD - moved - pending
    return remaining if share_wad == WAD else ceil_div(share_wad * remaining, WAD)


def stored_share(fraction: int, moved: int) -> int:
    base = WAD - moved
    return WAD if fraction == base else ceil_div(fraction * WAD, base)


@dataclass
class Book:
    """A stored (or effective) book: series id -> size, asset address -> balance, quote cash."""

    positions: dict = field(default_factory=dict)
    collateral: dict = field(default_factory=dict)
    cash: int = 0

    def copy(self) -> "Book":
        return Book(dict(self.positions), dict(self.collateral), self.cash)


class Ledger:
    """Independent model of the claim ledger over the stored books of `accounts_` (series `sids`, assets `assets`)."""

    def __init__(self, p, accounts_, sids, assets):
        self.p, self.sids, self.assets = p, list(sids), [str(a) for a in assets]
        self.books = {str(a): read_stored(p, a, self.sids, self.assets) for a in accounts_}
        self.lots = {str(a): [0, 0, 0] for a in accounts_}  # pending, moved, credited
        self.claims = {str(a): (None, 0) for a in accounts_}  # source, fraction

    def record(self, source, holder, share_wad, payment=0, module=None) -> int:
        s, h = str(source), str(holder)
        pending, moved, _ = self.lots[s]
        claim = claim_fraction(share_wad, moved, pending)
        assert claim > 0
        self.lots[s][0] += claim
        src, held = self.claims[h]
        assert held == 0 or src == s
        self.claims[h] = (s, held + claim)
        if payment:
            self.books[h].cash -= payment
            self.books[str(module)].cash += payment
        return claim

    def settle(self, holder) -> tuple[int, int, int]:
        """Returns (claim, share of stored, credited cash released) and applies the move."""
        h = str(holder)
        s, claim = self.claims[h]
        lot = self.lots[s]
        share = stored_share(claim, lot[1])
        self.claims[h] = (None, 0)
        lot[0] -= claim
        lot[1] += claim
        released = 0
        if lot[0] == 0:
            released, lot[1], lot[2] = lot[2], 0, 0
        move_share(self.books[s], self.books[h], share)
        self.books[s].cash += released
        return claim, share, released

    def credit(self, account, amount):
        """Quote cash credited to `account` (deposit or transferCash): outside a frozen book."""
        a = str(account)
        if self.lots[a][0]:
            self.lots[a][2] += amount
        else:
            self.books[a].cash += amount

    def effective(self, account) -> Book:
        a = str(account)
        book = self.books[a]
        src, fraction = self.claims[a]
        if fraction:
            share = stored_share(fraction, self.lots[src][1])
            source = self.books[src]
            out = book.copy()
            for sid, size in source.positions.items():
                out.positions[sid] = out.positions.get(sid, 0) + share_of(size, share)
            for asset, bal in source.collateral.items():
                out.collateral[asset] = out.collateral.get(asset, 0) + share_of(bal, share)
            out.cash += share_of(source.cash, share)
            return out
        pending, moved, credited = self.lots[a]
        if pending == 0:
            return book.copy()
        base = WAD - moved
        kept = (base - pending) * WAD // base
        return Book(
            {sid: kept_of(v, kept) for sid, v in book.positions.items()},
            {asset: kept_of(v, kept) for asset, v in book.collateral.items()},
            kept_of(book.cash, kept) + credited,
        )


def move_share(src: Book, dst: Book, share_wad: int):
    """The old immediate pro-rata transfer: `share_wad` of every stored amount of `src`, rounded against it."""
    for sid, size in src.positions.items():
        m = share_of(size, share_wad)
        src.positions[sid] = size - m
        dst.positions[sid] = dst.positions.get(sid, 0) + m
    for asset, bal in src.collateral.items():
        m = share_of(bal, share_wad)
        src.collateral[asset] = bal - m
        dst.collateral[asset] = dst.collateral.get(asset, 0) + m
    m = share_of(src.cash, share_wad)
    src.cash -= m
    dst.cash += m


def read_stored(p, account, sids, assets) -> Book:
    book = Book()
    for sid in sids:
        book.positions[sid] = int(p.ch.storedBalances(account, sid, p.usdc)[0])
    for asset in assets:
        book.collateral[str(asset)] = int(p.ch.storedBalances(account, 0, asset)[1])
    book.cash = int(p.ch.storedBalances(account, 0, p.usdc)[2])
    return book


def read_effective(p, account, sids, assets) -> Book:
    return Book(
        {sid: int(p.ch.positionOf(account, sid)) for sid in sids},
        {str(a): int(p.ch.collateralOf(account, a)) for a in assets},
        int(p.ch.cashOf(account)),
    )


def assert_conserved(p, accounts_):
    rows = p.stored_conservation(accounts_)
    assert all(held == owed for _, held, owed in rows), rows


def assert_matches(p, ledger: Ledger, accounts_):
    """Stored books, lots and claims on chain == the model's."""
    for a in accounts_:
        assert read_stored(p, a, ledger.sids, ledger.assets) == ledger.books[str(a)], a
        assert tuple(p.ch.lotOf(a))[:3] == tuple(ledger.lots[str(a)]), a
        src, fraction = ledger.claims[str(a)]
        got = p.ch.claimOf(a)
        assert (int(got[1]), str(got[0]) if fraction else None) == (fraction, src), a


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def module(protocol, owner):
    m = accounts[6]
    protocol.ch.setLiquidationModule(m, {"from": owner})
    return m


@pytest.fixture(scope="module")
def holders():
    """Bidders (unlocked node accounts; none of them signs quotes)."""
    return [accounts[3], accounts[4], accounts[5]]


@pytest.fixture(scope="module")
def book(protocol, traders, module):
    """The liquidated account (maker): short 3.000...001 of series A, long 2.000...003 of series B, odd WETH, WBTC
    and USDC balances; the taker holds the other sides. Returns (sids, assets)."""
    p = protocol
    maker, taker = traders
    p.fund(maker, p.usdc, 1_000 * USDC + 1)
    p.fund(maker, p.weth, 3 * WAD + 1)
    p.fund(maker, p.wbtc, 10**8 + 7)
    p.fund(taker, p.usdc, 20_000 * USDC)
    p.post_prices({p.weth: 3000 * WAD, p.wbtc: 60_000 * WAD})
    sid_a, _ = p.new_series()
    sid_b, _ = p.new_series(strike=2500 * WAD, is_call=False)
    q, sig = p.quote(maker, sid_a, -3 * WAD - 1, 100 * WAD, nonce=1)
    p.ch.trade(q, sig, p.attest(maker, 70_000 * USDC), p.attest(taker, 20_000 * USDC), {"from": taker})
    q, sig = p.quote(maker, sid_b, 2 * WAD + 3, 7 * WAD + 13, nonce=2)
    p.ch.trade(q, sig, p.attest(maker, 70_000 * USDC), p.attest(taker, 20_000 * USDC), {"from": taker})
    return [sid_a, sid_b], [p.weth, p.wbtc]


def _everyone(traders, holders, module):
    return list(traders) + list(holders) + [module]


# ---------------------------------------------------------------------------------------------- delivery


@pytest.mark.ganache
@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_settlement_equals_immediate_pro_rata_transfer(protocol, traders, holders, module, book, order):
    """Two bids, settled in either order: each settlement moves exactly what an immediate pro-rata transfer of the
    claim's share of the stored book would, rounding against the source; the last one unfreezes the book."""
    p = protocol
    maker = traders[0]
    sids, assets = book
    everyone = _everyone(traders, holders, module)
    ledger = Ledger(p, everyone, sids, assets)
    start = ledger.books[str(maker)].copy()
    shares = [WAD // 3, 2 * WAD // 7 + 1]
    payments = [1_234 * USDC + 5, 0]
    claims = []
    for h, s, pay in zip(holders, shares, payments):
        tx = p.ch.recordClaim(maker, h, s, pay, {"from": module})
        claims.append(ledger.record(maker, h, s, pay, module))
        ev = tx.events["ClaimRecorded"]
        assert (ev["claimWad"], ev["pendingWad"], ev["movedWad"], ev["payment"]) == (
            claims[-1], sum(claims), 0, pay
        )
    assert claims[0] == shares[0]  # nothing was claimed before: a share of the whole book
    # nothing moved yet: the source's storage is the book before the bids
    assert read_stored(p, maker, sids, assets) == start
    assert_matches(p, ledger, everyone)
    for i in order:
        h = holders[i]
        tx = p.ch.settleClaim(h, {"from": accounts[9]})
        claim, share, released = ledger.settle(h)
        assert tuple(tx.events["ClaimSettled"].values()) == (maker, h, claim, share, released)
        assert tx.events["PortfolioShareTransferred"]["fractionWad"] == share
        assert_matches(p, ledger, everyone)
    assert tuple(p.ch.lotOf(maker))[:4] == (0, 0, 0, True)
    # settled in bid order, the first holder got exactly an immediate transfer of its bid share of the book
    if order == (0, 1):
        first = Book()
        rest = start.copy()
        move_share(rest, first, shares[0])
        got = read_stored(p, holders[0], sids, assets)
        assert got.positions == first.positions and got.collateral == first.collateral
        assert got.cash == first.cash - payments[0]
    # the book moved is the book there was: stored amounts of source + holders add up exactly
    for sid in sids:
        assert sum(int(p.ch.storedBalances(a, sid, p.usdc)[0]) for a in [maker] + holders) == start.positions[sid]
    assert_conserved(p, everyone)


def test_partial_settlement_then_more_claims(protocol, traders, holders, module, book):
    """Settle one claim while another is pending (movedWad > 0), record more claims (one accumulating on the
    same source), and check every step's stored books and lot against the model; cash credited meanwhile is
    released to the source by the last settlement."""
    p = protocol
    maker, taker = traders
    h1, h2, h3 = holders
    sids, assets = book
    everyone = _everyone(traders, holders, module)
    ledger = Ledger(p, everyone, sids, assets)
    ledger.record(maker, h1, WAD // 4 + 3)
    p.ch.recordClaim(maker, h1, WAD // 4 + 3, 0, {"from": module})
    ledger.record(maker, h2, WAD // 5)
    p.ch.recordClaim(maker, h2, WAD // 5, 0, {"from": module})
    p.ch.settleClaim(h1, {"from": h3})
    ledger.settle(h1)
    assert_matches(p, ledger, everyone)
    pending, moved = tuple(p.ch.lotOf(maker))[:2]
    assert pending > 0 and moved > 0  # still frozen, part of B gone
    # quote cash credited to the frozen book while it waits (a deposit and a module payment)
    p.fund(maker, p.usdc, 77 * USDC + 1)
    ledger.credit(maker, 77 * USDC + 1)
    p.ch.transferCash(module, maker, 5 * USDC, {"from": module})
    ledger.books[str(module)].cash -= 5 * USDC
    ledger.credit(maker, 5 * USDC)
    assert_matches(p, ledger, everyone)
    # more bids: a new holder, and the pending holder again (accumulates on the same source)
    for h, s in ((h3, WAD // 2 + 11), (h2, WAD // 9)):
        claim = ledger.record(maker, h, s)
        tx = p.ch.recordClaim(maker, h, s, 0, {"from": module})
        assert tx.events["ClaimRecorded"]["claimWad"] == claim
        assert tx.events["ClaimRecorded"]["movedWad"] == ledger.lots[str(maker)][1]
    assert_matches(p, ledger, everyone)
    assert int(p.ch.claimOf(h2)[1]) == ledger.claims[str(h2)][1]
    for h in (h3, h2):
        tx = p.ch.settleClaim(h, {"from": taker})
        expected = ledger.settle(h)
        assert tuple(tx.events["ClaimSettled"].values())[2:] == expected
        assert_matches(p, ledger, everyone)
    assert expected[2] == 82 * USDC + 1  # the last settlement released the credited cash
    assert tuple(p.ch.lotOf(maker))[:4] == (0, 0, 0, True)
    assert_conserved(p, everyone)


def test_whole_rest_and_nothing_left(protocol, traders, holders, module, book):
    """A share of 1 claims exactly the rest; then nothing is left to claim; delivery empties the book."""
    p = protocol
    maker = traders[0]
    h1, h2, _ = holders
    sids, assets = book
    p.ch.recordClaim(maker, h1, WAD // 3, 0, {"from": module})
    p.ch.recordClaim(maker, h2, WAD, 0, {"from": module})
    assert int(p.ch.claimOf(h2)[1]) == WAD - WAD // 3
    assert tuple(p.ch.lotOf(maker))[:2] == (WAD, 0)
    with brownie.reverts(err("CH_NothingToClaim(address)", str(maker))):
        p.ch.recordClaim(maker, h1, WAD, 0, {"from": module})
    # the frozen book shows nothing left, the holders the whole of it
    assert all(int(p.ch.positionOf(maker, sid)) == 0 for sid in sids)
    assert int(p.ch.cashOf(maker)) == 0 and int(p.ch.collateralOf(maker, p.weth)) == 0
    p.ch.settleClaim(h1, {"from": h1})
    assert int(p.ch.claimOf(h2)[2]) == WAD  # the rest of the stored book, exactly
    p.ch.settleClaim(h2, {"from": h1})
    assert list(p.ch.seriesOf(maker)) == [] and list(p.ch.collateralAssetsOf(maker)) == []
    assert read_stored(p, maker, sids, assets) == Book({s: 0 for s in sids}, {str(a): 0 for a in assets}, 0)


# ---------------------------------------------------------------------------------------------- effective views


def test_effective_views_before_settlement(protocol, traders, holders, module, book):
    """Before delivery the views already show the claims: a holder's view is exactly what settlement then moves
    into its storage; source + holders' claims add up to the stored book within the documented rounding."""
    p = protocol
    maker, taker = traders
    h1, h2, _ = holders
    sids, assets = book
    # h1 has a book of its own: WETH and a position in a series the source does not hold
    p.fund(h1, p.weth, 5 * WAD + 9)
    sid_c, _ = p.new_series(strike=3100 * WAD)
    p.fund(h1, p.usdc, 1_000 * USDC)
    q, sig = p.quote(taker, sid_c, -WAD, 10 * WAD, nonce=3)
    p.ch.trade(q, sig, p.attest(taker, 10**9 * USDC), p.attest(h1, 10**9 * USDC), {"from": h1})
    all_sids = sids + [sid_c]
    everyone = _everyone(traders, holders, module)
    ledger = Ledger(p, everyone, all_sids, assets)
    p.ch.recordClaim(maker, h1, WAD // 3, 0, {"from": module})
    ledger.record(maker, h1, WAD // 3)
    p.ch.settleClaim(h1, {"from": h2})  # leave movedWad > 0 for the next two
    ledger.settle(h1)
    p.ch.recordClaim(maker, h2, 3 * WAD // 8, 0, {"from": module})
    ledger.record(maker, h2, 3 * WAD // 8)
    own_series, own_assets = list(p.ch.seriesOf(h1)), list(p.ch.collateralAssetsOf(h1))
    p.ch.recordClaim(maker, h1, WAD // 5 + 1, 0, {"from": module})
    ledger.record(maker, h1, WAD // 5 + 1)
    p.fund(maker, p.usdc, 3 * USDC)  # credited to the frozen book
    ledger.credit(maker, 3 * USDC)
    # every effective view == the model's
    for a in [maker, h1, h2]:
        assert read_effective(p, a, all_sids, assets) == ledger.effective(a), a
    # the holder's series and assets: its own plus its source's, each once
    src_series, src_assets = list(p.ch.seriesOf(maker)), list(p.ch.collateralAssetsOf(maker))
    union = list(p.ch.seriesOf(h1))
    assert sorted(union) == sorted(set(own_series) | set(src_series)) and len(union) == len(set(union))
    union = list(p.ch.collateralAssetsOf(h1))
    assert sorted(union) == sorted(set(own_assets) | set(src_assets)) and len(union) == len(set(union))
    # source's effective + holders' claims vs the stored book: each term is off by at most |X| / 1e18 + 1
    stored = read_stored(p, maker, all_sids, assets)
    parts = {str(h): read_effective(p, h, all_sids, assets) for h in (h1, h2)}
    own = {str(h): read_stored(p, h, all_sids, assets) for h in (h1, h2)}
    eff = read_effective(p, maker, all_sids, assets)
    for key in all_sids:
        x = stored.positions[key]
        total = eff.positions[key] + sum(parts[h].positions[key] - own[h].positions[key] for h in parts)
        assert abs(total - x) <= 3 * (abs(x) // WAD + 1), key
    for key in ledger.assets:
        x = stored.collateral[key]
        total = eff.collateral[key] + sum(parts[h].collateral[key] - own[h].collateral[key] for h in parts)
        assert abs(total - x) <= 3 * (x // WAD + 1), key
    total = eff.cash - 3 * USDC + sum(parts[h].cash - own[h].cash for h in parts)
    assert abs(total - stored.cash) <= 3 * (abs(stored.cash) // WAD + 1)
    # settling moves exactly what the holder's view showed just before, and no other holder's view changes
    # through it except by the settled holder's rounding (the next view is read again before its settlement)
    for h, other in ((h1, h2), (h2, None)):
        shown = read_effective(p, h, all_sids, assets)
        source_view = read_effective(p, maker, all_sids, assets)
        p.ch.settleClaim(h, {"from": accounts[9]})
        assert read_stored(p, h, all_sids, assets) == shown == read_effective(p, h, all_sids, assets)
        ledger.settle(h)
        assert_matches(p, ledger, everyone)
        if other is None:  # the last settlement: the source keeps what its view showed, within the rounding
            after = read_stored(p, maker, all_sids, assets)
            for sid in all_sids:
                x = stored.positions[sid]
                assert abs(after.positions[sid] - source_view.positions[sid]) <= abs(x) // WAD + 2
            for key in ledger.assets:
                assert abs(after.collateral[key] - source_view.collateral[key]) <= stored.collateral[key] // WAD + 2
            assert abs(after.cash - source_view.cash) <= abs(stored.cash) // WAD + 2
            assert read_effective(p, maker, all_sids, assets) == after


# ---------------------------------------------------------------------------------------------- freeze rules


@pytest.mark.ganache
def test_freeze_rules(protocol, traders, holders, module, book, owner):
    """A frozen source and a holder with an unsettled claim are stopped with the exact errors; quote cash still
    reaches the frozen book (outside it); claims accumulate on one source only."""
    p = protocol
    maker, taker = traders
    h1, h2, h3 = holders
    sids, _ = book
    p.ch.recordClaim(maker, h1, WAD // 4, 0, {"from": module})
    pending = WAD // 4
    frozen = err(CLAIMS_PENDING, str(maker), pending)
    unsettled = err(CLAIM_UNSETTLED, str(h1), str(maker), pending)
    # the frozen source cannot trade, as maker or as taker, nor withdraw
    q, sig = p.quote(maker, sids[0], WAD, 100 * WAD, nonce=11)
    with brownie.reverts(frozen):
        p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": taker})
    q, sig = p.quote(taker, sids[0], WAD, 100 * WAD, nonce=11)
    with brownie.reverts(frozen):
        p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": maker})
    with brownie.reverts(frozen):
        p.ch.withdraw(p.usdc, 1, EMPTY_PROOF, {"from": maker})
    # no collateral in, quote cash in but outside the frozen book
    p.fund(maker, p.weth, WAD, deposit=False)
    with brownie.reverts(frozen):
        p.ch.deposit(p.weth, WAD, {"from": maker})
    stored_cash = int(p.ch.storedBalances(maker, 0, p.usdc)[2])
    view = int(p.ch.cashOf(maker))
    p.fund(maker, p.usdc, 42 * USDC)
    assert int(p.ch.storedBalances(maker, 0, p.usdc)[2]) == stored_cash
    assert int(p.ch.cashOf(maker)) == view + 42 * USDC and tuple(p.ch.lotOf(maker))[2] == 42 * USDC
    # the module cannot take cash from the frozen book
    with brownie.reverts(frozen):
        p.ch.transferCash(maker, module, 1, {"from": module})
    # the holder cannot trade (either side) or withdraw until its claim is settled
    p.fund(h1, p.usdc, 10 * USDC)
    q, sig = p.quote(taker, sids[0], WAD, 100 * WAD, nonce=12)
    with brownie.reverts(unsettled):
        p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": h1})
    with brownie.reverts(unsettled):
        p.ch.withdraw(p.usdc, 1, EMPTY_PROOF, {"from": h1})
    # the holder cannot bid on another book, the frozen source cannot bid, and the holder's own book cannot be
    # claimed while it holds a claim
    with brownie.reverts(unsettled):
        p.ch.recordClaim(taker, h1, WAD // 2, 0, {"from": module})
    with brownie.reverts(frozen):
        p.ch.recordClaim(taker, maker, WAD // 2, 0, {"from": module})
    with brownie.reverts(unsettled):
        p.ch.recordClaim(h1, h2, WAD // 2, 0, {"from": module})
    for bad in (0, WAD + 1):
        with brownie.reverts(err("CH_InvalidFraction(uint256)", bad)):
            p.ch.recordClaim(maker, h2, bad, 0, {"from": module})
    with brownie.reverts(err("CH_SelfTrade(address)", str(maker))):
        p.ch.recordClaim(maker, maker, WAD // 2, 0, {"from": module})
    with brownie.reverts(err("CH_ZeroAddress()")):
        p.ch.recordClaim(maker, "0x" + "00" * 20, WAD // 2, 0, {"from": module})
    # on the same source the holder's claims accumulate
    p.ch.recordClaim(maker, h1, WAD // 3, 0, {"from": module})
    more = ceil_div(WAD // 3 * (WAD - pending), WAD)
    assert int(p.ch.claimOf(h1)[1]) == pending + more and int(p.ch.lotOf(maker)[0]) == pending + more
    # only the module records claims or primes lots; settleClaim needs a claim
    with brownie.reverts(err("CH_NotLiquidationModule(address)", str(h2))):
        p.ch.recordClaim(maker, h2, WAD // 3, 0, {"from": h2})
    with brownie.reverts(err("CH_NotLiquidationModule(address)", str(h2))):
        p.ch.primeLot(taker, {"from": h2})
    with brownie.reverts(err("CH_NoClaim(address)", str(h3))):
        p.ch.settleClaim(h3, {"from": h3})
    # an auction can only hold a recorded breach
    with brownie.reverts(err("CH_NotInBreach(address)", str(taker))):
        p.ch.primeLot(taker, {"from": module})
    # settlement is never paused
    p.ch.pause({"from": owner})
    tx = p.ch.settleClaim(h1, {"from": h3})
    assert tx.events["ClaimSettled"]["creditedCashReleased"] == 42 * USDC
    p.ch.unpause({"from": owner})
    # unfrozen and settled: both may act again (withdraw of quote cash the holder owns outright)
    assert tuple(p.ch.lotOf(maker))[:3] == (0, 0, 0) and tuple(p.ch.claimOf(h1)) == ("0x" + "00" * 20, 0, 0)
    p.ch.withdraw(p.weth, 1, p.attest(h1, 10**9 * USDC), {"from": h1})
    p.ch.deposit(p.weth, WAD, {"from": maker})
    assert_conserved(p, _everyone(traders, holders, module))


# ---------------------------------------------------------------------------------------------- expiry


@pytest.mark.ganache
def test_expiry_settlement_of_a_frozen_book(protocol, traders, holders, module, book, owner):
    """Expiry settlement of a frozen book is allowed: it turns the book's position into its cash, and the claimant
    then owns its share of the settled cash, exactly what settleClaim delivers."""
    p = protocol
    maker, taker = traders
    h1 = holders[0]
    p.fund(maker, p.usdc, 5_000 * USDC + 3)
    p.fund(taker, p.usdc, 5_000 * USDC)
    p.post_prices({p.weth: 3000 * WAD})
    sid, expiry = p.new_series(strike=2000 * WAD, days=1)
    q, sig = p.quote(maker, sid, -(2 * WAD + 1), 900 * WAD + 7, nonce=50)
    p.ch.trade(q, sig, p.attest(maker, 10**9 * USDC), p.attest(taker, 10**9 * USDC), {"from": taker})
    p.ch.recordClaim(maker, h1, 2 * WAD // 5 + 1, 0, {"from": module})
    _, fraction, share = p.ch.claimOf(h1)
    assert share == fraction == 2 * WAD // 5 + 1
    size, cash_before = int(p.ch.storedBalances(maker, sid, p.usdc)[0]), int(p.ch.storedBalances(maker, 0, p.usdc)[2])
    claimed_pos = int(p.ch.positionOf(h1, sid))
    assert claimed_pos == share_of(size, share)
    chain.sleep(expiry - p.now() + 1)
    chain.mine()
    px = 2_345 * WAD + 678
    typed = eip712.settlement_typed_data(p.domain, [str(p.weth)], [px], expiry, p.now())
    p.ch.postSettlementPrices([p.weth], [px], expiry, p.now(), signing.sign_attestation(typed, p.signers()), {"from": owner})
    tx = p.ch.settle(maker, sid, {"from": accounts[9]})  # the frozen book is settled like any other
    delta = int(tx.events["Settled"]["cashDelta"])
    intrinsic = px - 2000 * WAD
    assert delta == -ceil_div(ceil_div(-size * intrinsic, WAD), 10**12)  # the short pays, rounded up
    settled_cash = int(p.ch.storedBalances(maker, 0, p.usdc)[2])
    assert settled_cash == cash_before + delta
    # the claimant now holds its share of the settled cash and no position
    assert int(p.ch.positionOf(h1, sid)) == 0 and sorted(p.ch.seriesOf(h1)) == sorted(book[0])
    expected = share_of(settled_cash, share)
    assert int(p.ch.cashOf(h1)) == expected
    # value kept: the claim's cash moved by its share of the settlement payment, within rounding
    assert abs(expected - (share_of(cash_before, share) + delta * share // WAD)) <= 2
    p.ch.settleClaim(h1, {"from": h1})
    assert int(p.ch.storedBalances(h1, 0, p.usdc)[2]) == expected
    assert int(p.ch.storedBalances(maker, 0, p.usdc)[2]) == settled_cash - expected
    assert_conserved(p, _everyone(traders, holders, module))


# ---------------------------------------------------------------------------------------------- conservation


@pytest.mark.parametrize("seed", [7, 2026])
def test_random_claims_match_model_and_conserve_tokens(protocol, traders, holders, module, book, seed):
    """A seeded random sequence of bids (with payments), settlements, quote deposits and module payments to
    frozen books, and forbidden bids: after every step the chain's stored books, lots and claims equal the
    model's, forbidden bids revert with the error the model predicts, and tokens are conserved."""
    p = protocol
    rng = random.Random(seed)
    maker, taker = traders
    sids, assets = book
    everyone = _everyone(traders, holders, module)
    parties = list(traders) + list(holders)
    ledger = Ledger(p, everyone, sids, assets)
    for h in holders:
        p.fund(h, p.usdc, 10_000 * USDC)
        ledger.books[str(h)].cash += 10_000 * USDC
    done = {"bid": 0, "settle": 0, "credit": 0, "refused": 0}
    for _ in range(24):
        kind = rng.choice(["bid", "bid", "settle", "credit"])
        if kind == "bid":
            source, holder = rng.sample(parties, 2)
            share = rng.choice([WAD, rng.randrange(1, WAD), rng.randrange(1, 10**6)])
            payment = rng.choice([0, rng.randrange(1, 500 * USDC)])
            s, h = str(source), str(holder)
            expected = None
            if ledger.claims[s][1]:
                expected = err(CLAIM_UNSETTLED, s, ledger.claims[s][0], ledger.claims[s][1])
            elif ledger.lots[h][0]:
                expected = err(CLAIMS_PENDING, h, ledger.lots[h][0])
            elif ledger.claims[h][1] and ledger.claims[h][0] != s:
                expected = err(CLAIM_UNSETTLED, h, ledger.claims[h][0], ledger.claims[h][1])
            elif claim_fraction(share, moved=ledger.lots[s][1], pending=ledger.lots[s][0]) == 0:
                expected = err("CH_NothingToClaim(address)", s)
            if expected:
                with brownie.reverts(expected):
                    p.ch.recordClaim(source, holder, share, payment, {"from": module})
                done["refused"] += 1
                continue
            claim = ledger.record(source, holder, share, payment, module)
            tx = p.ch.recordClaim(source, holder, share, payment, {"from": module})
            assert tx.events["ClaimRecorded"]["claimWad"] == claim
        elif kind == "settle":
            holder = rng.choice(parties)
            if not ledger.claims[str(holder)][1]:
                with brownie.reverts(err("CH_NoClaim(address)", str(holder))):
                    p.ch.settleClaim(holder, {"from": accounts[9]})
                done["refused"] += 1
                continue
            tx = p.ch.settleClaim(holder, {"from": accounts[9]})
            assert tuple(tx.events["ClaimSettled"].values())[2:] == ledger.settle(holder)
        else:
            account = rng.choice(parties)
            amount = rng.randrange(1, 100 * USDC)
            if rng.random() < 0.5:
                p.fund(account, p.usdc, amount)
            else:
                p.ch.transferCash(module, account, amount, {"from": module})
                ledger.books[str(module)].cash -= amount
            ledger.credit(account, amount)
        done[kind] += 1
        assert_matches(p, ledger, everyone)
        assert_conserved(p, everyone)
    assert min(done.values()) >= 2, done  # the sequence exercised every kind of step
    # deliver everything: every book unfrozen, the views back to storage, positions still net to zero
    for h in parties:
        if ledger.claims[str(h)][1]:
            p.ch.settleClaim(h, {"from": accounts[9]})
            ledger.settle(h)
    assert_matches(p, ledger, everyone)
    assert_conserved(p, everyone)
    for a in parties:
        assert tuple(p.ch.lotOf(a))[:3] == (0, 0, 0)
        assert read_effective(p, a, sids, assets) == read_stored(p, a, sids, assets)
    for sid in sids:
        assert sum(int(p.ch.storedBalances(a, sid, p.usdc)[0]) for a in parties) == 0


# ---------------------------------------------------------------------------------------------- position cap


def test_settlement_goes_past_the_position_cap(protocol, traders, holders, module, book):
    """A holder already at MAX_POSITIONS_PER_ACCOUNT still receives its claim: settlement never reverts for caps
    (its own next trade in a new series does)."""
    p = protocol
    maker, taker = traders
    h1 = holders[0]
    sids, _ = book
    cap = int(p.ch.MAX_POSITIONS_PER_ACCOUNT())
    writers = [accounts.add(keccak(text=f"backstop-claims-writer-{i}")) for i in range(2)]  # makers sign quotes
    for w in writers:
        accounts[0].transfer(w, "1 ether")
        p.fund(w, p.usdc, 1_000 * USDC)
    p.fund(h1, p.usdc, 1_000 * USDC)

    def buy_one(sid, nonce):
        """h1 buys one far out-of-the-money call from a writer (half of the series each, under their own cap)."""
        w = writers[nonce % 2]
        q, sig = p.quote(w, sid, -WAD, WAD // 100, nonce=nonce)
        tree, header, _ = p.post_margin([p.leaf(w, 10**9 * USDC), p.leaf(h1, 10**9 * USDC)])
        return p.ch.trade(q, sig, p.proof(tree, header, w), p.proof(tree, header, h1), {"from": h1})

    for i in range(cap):
        if i % 8 == 0:
            p.post_prices({p.weth: 3000 * WAD})  # the writers' short legs need a fresh spot
        buy_one(p.new_series(strike=(4000 + i) * WAD)[0], 100 + i)
    own = list(p.ch.seriesOf(h1))
    assert len(own) == cap
    sid_x, _ = p.new_series(strike=9000 * WAD)
    with brownie.reverts(err("CH_TooManyPositions(address)", str(h1))):
        buy_one(sid_x, 200)
    p.ch.recordClaim(maker, h1, WAD // 2, 0, {"from": module})
    assert len(p.ch.seriesOf(h1)) == cap + len(sids)  # the effective view already shows them
    expected = [share_of(int(p.ch.storedBalances(maker, sid, p.usdc)[0]), WAD // 2) for sid in sids]
    p.ch.settleClaim(h1, {"from": h1})
    assert list(p.ch.seriesOf(h1)) == own + sids
    assert [int(p.ch.storedBalances(h1, sid, p.usdc)[0]) for sid in sids] == expected


# ---------------------------------------------------------------------------------------------- primed claim slots


@pytest.mark.ganache
def test_primed_claim_slot_is_no_claim_and_makes_the_first_claim_cheaper(protocol, traders, holders, module, book):
    """`primeClaimSlot` writes a holder's claim slot ahead of its first bid: it is no claim (views, claimOf and the
    freedom to trade are unchanged, a second call changes nothing), the first claim recorded on it is exactly the
    model's, and it costs at least the zero-slot surcharge (15,000 under Istanbul, 17,100 under EIP-2929) less than
    the same claim recorded by an unprimed holder."""
    p = protocol
    maker, taker = traders
    h1, h2, h3 = holders
    sids, assets = book
    everyone = _everyone(traders, holders, module)
    with brownie.reverts(err("CH_ZeroAddress()")):
        p.ch.primeClaimSlot(brownie.ZERO_ADDRESS, {"from": h3})
    assert not p.ch.claimSlotPrimed(h1) and not p.ch.claimSlotPrimed(h2)
    before = {str(a): read_effective(p, a, sids, assets) for a in everyone}
    tx = p.ch.primeClaimSlot(h1, {"from": h3})  # anyone may prime any holder
    assert dict(tx.events["ClaimSlotPrimed"]) == {"holder": str(h1), "by": str(h3)}
    assert p.ch.claimSlotPrimed(h1) and not p.ch.claimSlotPrimed(h2)
    assert tuple(p.ch.claimOf(h1)) == (brownie.ZERO_ADDRESS, 0, 0)
    assert {str(a): read_effective(p, a, sids, assets) for a in everyone} == before
    assert list(p.ch.seriesOf(h1)) == list(p.ch.seriesOf(h2))
    tx = p.ch.primeClaimSlot(h1, {"from": h1})
    assert "ClaimSlotPrimed" not in tx.events

    # a primed trader still trades (the slot holds no claim)
    for t in traders:
        p.ch.primeClaimSlot(t, {"from": t})
    q, sig = p.quote(maker, sids[0], -WAD, 100 * WAD, nonce=21)
    p.ch.trade(q, sig, p.attest(maker, 70_000 * USDC), p.attest(taker, 20_000 * USDC), {"from": taker})

    # same share of the same (already frozen) book for the primed and the unprimed holder
    ledger = Ledger(p, everyone, sids, assets)
    ledger.record(maker, h3, WAD // 3)
    p.ch.recordClaim(maker, h3, WAD // 3, 0, {"from": module})
    gas = {}
    for h in (h1, h2):
        claim = ledger.record(maker, h, WAD // 10)
        tx = p.ch.recordClaim(maker, h, WAD // 10, 0, {"from": module})
        assert tx.events["ClaimRecorded"]["claimWad"] == claim
        gas[str(h)] = tx.gas_used
    assert_matches(p, ledger, everyone)
    assert gas[str(h2)] - gas[str(h1)] >= 15_000, gas
    for h in (h1, h2, h3):
        p.ch.settleClaim(h, {"from": h})
        ledger.settle(h)
        assert p.ch.claimSlotPrimed(h)  # a settled claim leaves the slot non-zero
    assert_matches(p, ledger, everyone)
    assert_conserved(p, everyone)

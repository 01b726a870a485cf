"""Deferred delivery on a real local chain (Anvil started by the deploy code on a free port): a winning bid records
a claim on the auctioned book; the liquidator settles its own claim right after the bid (a delivery moves no state
nonce, so the auction goes on), settles it before bidding on another account
(also with ``settle_claims`` off), and the settlement really moves the claimed share into its own storage
(``storedBalances``), by exactly the amounts recomputed here with integer arithmetic from the storage before it."""
from __future__ import annotations

import json

import pytest

from keeper.bots.liquidator.bot import LiquidatorBot, LiquidatorSettings
from keeper.bots.liquidator.strategies import BidDecision, EdgeStrategy

from liquidator_chain import scenario_chain

WAD = 10**18
SPOT, VOL = 1800.0, 0.8


class HalfStrategy:
    """Bids half of what the edge strategy would: a partial fill that leaves the auction running."""

    name = "half"

    def decide(self, quote):
        d = EdgeStrategy(0.0).decide(quote)
        return BidDecision(True, d.fraction / 2, d.max_price, "half") if d.bid else d


class NeverBid:
    name = "never"

    def decide(self, quote):
        return BidDecision(False, reason="watching only")


@pytest.fixture(scope="module")
def four_short_books(tmp_path_factory):
    """The small scenario with all four short books: the hedged one (short ETH put, long BTC put) does not breach
    on a joint fall, so three breached books need the fourth (short puts on both)."""
    yield from scenario_chain(tmp_path_factory, n_short_vol=4)


@pytest.fixture(scope="module")
def crashed(four_short_books):
    """The small scenario after a crash that breaches solvent short-vol accounts."""
    scn = four_short_books
    att = scn.attest(SPOT, VOL)
    scn.write_market_file(SPOT, VOL)
    breached = [x.account for x in att.leaves if 0 < x.equity < x.maintenance]
    assert len(breached) >= 3, "the -10 % move should breach the three unhedged short-vol books (all still solvent)"
    yield scn, breached


def bot(scn, role, strategy, events, settle_claims=True):
    a = scn.actor(role)
    s = LiquidatorSettings(rpc_url=scn.chain.url, deployment_file=str(scn.out / "deployment.json"), key=a.key,
                           name=role, events_file=str(events), market_file=str(scn.out / "market.json"),
                           start_auctions=True, settle_claims=settle_claims)
    return LiquidatorBot(s, strategy=strategy)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _share_of(amount: int, share: int) -> int:
    """The contract's rule, recomputed: an asset (>= 0) rounded up, a liability rounded down (against the owner)."""
    return _ceil_div(amount * share, WAD) if amount >= 0 else -((-amount * share) // WAD)


def stored(scn, account, block):
    """Raw storage of ``account`` at ``block``: {series id: position}, {asset: collateral}, cash."""
    f = scn.ch.functions
    q = scn.dep.quote_asset
    pos = {int(s["id"]): int(f.storedBalances(account, int(s["id"]), q).call(block_identifier=block)[0])
           for s in scn.dep.series}
    coll = {a: int(f.storedBalances(account, 0, a).call(block_identifier=block)[1]) for a in scn.risky_assets()}
    cash = int(f.storedBalances(account, 0, q).call(block_identifier=block)[2])
    return pos, coll, cash


def assert_settlement_exact(scn, ev) -> int:
    """Check one ``ClaimSettled`` against storage just before and after its transaction (alone in its block under
    automine): the holder's claim as a share of the source's stored book (``claim / (1 - moved)``, rounded up;
    exactly 1 for the rest), every position, collateral balance and the cash moved by that share with the rounding
    against the source, credited cash released with the last claim (once the breach is cleared), and the holder's effective view before the
    settlement already showing what it received. Returns how many balances moved."""
    f = scn.ch.functions
    src, holder, n = ev["args"]["source"], ev["args"]["holder"], int(ev["blockNumber"])
    assert len(scn.w3.eth.get_block(n)["transactions"]) == 1
    c_src, fraction, _ = f.claimOf(holder).call(block_identifier=n - 1)
    assert c_src == src and fraction > 0
    pending, moved, credited, _primed, in_breach = f.lotOf(src).call(block_identifier=n - 1)[:5]
    share = WAD if fraction == WAD - moved else _ceil_div(fraction * WAD, WAD - moved)
    last = pending == fraction
    (sp0, sc0, scash0), (hp0, hc0, hcash0) = stored(scn, src, n - 1), stored(scn, holder, n - 1)
    (sp1, sc1, scash1), (hp1, hc1, hcash1) = stored(scn, src, n), stored(scn, holder, n)
    changed = 0
    for sid in sp0:
        m = _share_of(sp0[sid], share)
        assert (sp1[sid], hp1[sid]) == (sp0[sid] - m, hp0[sid] + m), sid
        assert int(f.positionOf(holder, sid).call(block_identifier=n - 1)) == hp0[sid] + m
        changed += m != 0
    for a in sc0:
        m = _ceil_div(sc0[a] * share, WAD)
        assert (sc1[a], hc1[a]) == (sc0[a] - m, hc0[a] + m), a
        assert int(f.collateralOf(holder, a).call(block_identifier=n - 1)) == hc0[a] + m
        changed += m != 0
    m = _share_of(scash0, share)
    # the last claim releases the credited cash, unless the book is still bound to its breach (a completed sale
    # before `finish`): then `finish` (clearBreach) releases it
    released = credited if last and not in_breach else 0
    assert (scash1, hcash1) == (scash0 - m + released, hcash0 + m)
    assert int(f.cashOf(holder).call(block_identifier=n - 1)) == hcash0 + m
    changed += m != 0
    assert int(f.claimOf(holder).call(block_identifier=n)[1]) == 0
    after = f.lotOf(src).call(block_identifier=n)
    assert (after[0], after[1]) == ((0, 0) if last else (pending - fraction, moved + fraction))
    return changed


def claim_logs(scn, name, **match):
    logs = getattr(scn.ch.events, name)().get_logs(from_block=scn.dep.block)
    return [e for e in logs if all(e["args"][k] == v for k, v in match.items())]


def until(scn, fn, want, tries=25, attest=False):
    """Call ``fn()`` until it returns ``want``, moving the clock 30 s (and re-attesting, if asked) in between."""
    for _ in range(tries):
        if attest:
            scn.attest(SPOT, VOL)
        if fn() == want:
            return
        scn.advance(30)
    raise AssertionError(f"{fn} never returned {want!r}")


def test_claim_slot_primed_once(crashed, tmp_path):
    """The bot writes its claim slot once (``primeClaimSlot``), logs it with the gas, and sends nothing the second
    time; the primed slot holds no claim."""
    scn, _ = crashed
    ev = tmp_path / "events.jsonl"
    l2 = bot(scn, "liquidator-2", NeverBid(), ev)
    primed = scn.ch.functions.claimSlotPrimed(l2.address)
    assert not primed.call(), "the small scenario's liquidators have never bid"
    assert l2.prime_claim_slot() == "primed"
    assert primed.call() and l2.own_claim() is None
    (log,) = claim_logs(scn, "ClaimSlotPrimed", holder=l2.address)
    assert log["args"]["by"] == l2.address
    assert l2.prime_claim_slot() == "already"
    recs = [json.loads(x) for x in ev.read_text().splitlines()]
    (rec,) = [r for r in recs if r["event"] == "claim_slot_primed"]
    assert rec["gas"] == int(scn.w3.eth.get_transaction_receipt(log["transactionHash"])["gasUsed"])


def test_claim_settled_at_once_and_the_auction_goes_on(crashed, tmp_path):
    scn, breached = crashed
    A = breached[0]
    ev = tmp_path / "events.jsonl"
    l2 = bot(scn, "liquidator-2", HalfStrategy(), ev)
    l1 = bot(scn, "liquidator-1", EdgeStrategy(0.0), ev, settle_claims=False)
    l2.poll_events()  # starts the auctions of the breached accounts
    l1.poll_events()
    assert A in l2.running and A in l1.running
    nonce = int(scn.ch.functions.stateNonce(A).call())
    until(scn, lambda: l2.consider(A), "filled")
    # a partial fill: the auction runs on, and l2 settled its claim right after the bid
    assert l2.auction_status(A) == "running" and l2.own_claim() is None and l2.stats["claims_settled"] == 1
    settled = claim_logs(scn, "ClaimSettled", holder=l2.address)
    (recorded,) = claim_logs(scn, "ClaimRecorded", holder=l2.address)
    assert [e["args"]["source"] for e in settled] == [A]
    assert settled[0]["args"]["claimWad"] == recorded["args"]["claimWad"]
    assert assert_settlement_exact(scn, settled[0]) > 0
    # the delivery moved no stateNonce: the bid moved A's once, and the auction needs no reset
    assert int(scn.ch.functions.stateNonce(A).call()) == nonce + 1
    assert not scn.auction.functions.quote(A).call()[3], "the delivery must not force a reset"
    # l1 buys the rest; with settle_claims off it keeps its claim although the auction ended
    until(scn, lambda: (l1.consider(A), l1.auction_status(A))[1], "none")
    assert l1.own_claim()[0] == A and l1.settle_if_done() == "none"
    recs = [json.loads(x) for x in ev.read_text().splitlines()]
    assert [r["why"] for r in recs if r["event"] == "claim_settled"] == ["after the bid"]


def test_claim_settled_before_bidding_on_another_account(crashed, tmp_path):
    scn, breached = crashed
    A, B = breached[0], breached[1]
    ev = tmp_path / "events.jsonl"
    l1 = bot(scn, "liquidator-1", EdgeStrategy(0.0), ev, settle_claims=False)
    l1.poll_events()
    assert l1.own_claim()[0] == A and B in l1.running
    # fresh margin records (l1's book changed with its claim); the first decision to bid on B settles A's claim
    # first, then the bid waits for a record of the settled book, which the next attestation brings
    until(scn, lambda: l1.consider(B), "filled", attest=True)
    assert l1.own_claim()[0] == B
    (s_a,) = claim_logs(scn, "ClaimSettled", holder=l1.address, source=A)
    (r_b,) = claim_logs(scn, "ClaimRecorded", holder=l1.address, source=B)
    assert s_a["blockNumber"] < r_b["blockNumber"]
    assert assert_settlement_exact(scn, s_a) > 0
    # both claims on A delivered: A's book is no longer frozen
    assert tuple(scn.ch.functions.lotOf(A).call()[:3]) == (0, 0, 0)
    recs = [json.loads(x) for x in ev.read_text().splitlines()]
    assert [r["why"] for r in recs if r["event"] == "claim_settled"] == [f"before bidding on {B}"]


def test_default_bot_settles_right_after_the_bid_that_ends_the_auction(crashed, tmp_path):
    scn, breached = crashed
    C = breached[2]
    ev = tmp_path / "events.jsonl"
    l2 = bot(scn, "liquidator-2", EdgeStrategy(0.0), ev)
    l2.poll_events()
    assert C in l2.running
    until(scn, lambda: (l2.consider(C), l2.auction_status(C))[1], "none", attest=True)
    assert l2.own_claim() is None
    recorded = claim_logs(scn, "ClaimRecorded", holder=l2.address, source=C)
    (s_c,) = claim_logs(scn, "ClaimSettled", holder=l2.address, source=C)
    # in the bot's next transactions after the bid that completed the sale: at most a `finish` of that auction
    # (a module that leaves ending to `finish`) comes between
    between = [scn.w3.eth.get_block(n, full_transactions=True)["transactions"]
               for n in range(recorded[-1]["blockNumber"] + 1, s_c["blockNumber"])]
    assert len(between) <= 1 and all(tx["from"] == l2.address and tx["to"] == scn.auction.address
                                     for txs in between for tx in txs)
    assert s_c["args"]["claimWad"] == sum(e["args"]["claimWad"] for e in recorded)
    assert assert_settlement_exact(scn, s_c) > 0


def test_options_stay_zero_sum_in_storage(crashed):
    """Every long matched by a short in storage, claims settled or not (trades and settlements move sizes)."""
    scn, _ = crashed
    head = scn.w3.eth.block_number
    accounts = set(scn.accounts()) | {scn.dep.auction}
    for e in claim_logs(scn, "ClaimRecorded"):
        accounts |= {e["args"]["source"], e["args"]["holder"]}
    totals: dict[int, int] = {}
    for a in accounts:
        for sid, size in stored(scn, a, head)[0].items():
            totals[sid] = totals.get(sid, 0) + size
    assert set(totals.values()) == {0}
    assert claim_logs(scn, "ClaimRecorded"), "the tests above must have recorded claims"

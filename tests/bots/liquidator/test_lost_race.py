"""Two liquidators race for one auction on a real local chain (Anvil started by the deploy code on a free port):
both bids go into the same block, the first fills what the auction allows, the second reverts on chain; the loser
logs and counts a lost race and keeps running. A bid decided on a stale quote is caught before it is sent."""
from __future__ import annotations

import json

import pytest

from keeper.bots.liquidator.bot import LiquidatorBot, LiquidatorSettings
from keeper.bots.liquidator.strategies import EdgeStrategy


@pytest.fixture(scope="module")
def crashed(small_scenario):
    """The small scenario after a crash that breaches solvent short-vol accounts."""
    scn = small_scenario
    breached = []
    for spot, vol in ((1800.0, 0.8), (1700.0, 0.9), (1600.0, 1.0), (1500.0, 1.1), (1400.0, 1.2)):
        att = scn.attest(spot, vol)  # a deepening crash until a solvent account falls below maintenance
        breached = [x.account for x in att.leaves if x.equity < x.maintenance and x.equity > 0]
        if breached:
            scn.write_market_file(spot, vol)
            break
    assert breached, "the crash should breach at least one solvent short-vol account"
    yield scn, breached


def bot(scn, role, edge, events):
    a = scn.actor(role)
    s = LiquidatorSettings(rpc_url=scn.chain.url, deployment_file=str(scn.out / "deployment.json"), key=a.key,
                           edge=edge, name=role, events_file=str(events), market_file=str(scn.out / "market.json"),
                           start_auctions=True)
    return LiquidatorBot(s, strategy=EdgeStrategy(edge))


def test_stale_quote_is_caught_before_sending(crashed, tmp_path):
    scn, breached = crashed
    events = tmp_path / "events.jsonl"
    b1 = bot(scn, "liquidator-1", 0.0, events)
    b1.poll_events()
    acct = breached[0]
    assert acct in b1.running
    q, d, _ = b1.evaluate(acct)
    # a price limit below the current price (a stale decision): the pre-flight call reverts LA_PriceAboveLimit
    from keeper.bots.liquidator.strategies import BidDecision

    stale = BidDecision(True, d.fraction, max(1, q.auction_price // 2))
    assert b1.bid(acct, q, stale) == "lost_race"
    rec = [json.loads(x) for x in events.read_text().splitlines() if '"lost_race"' in x][-1]
    assert rec["stage"] == "preflight" and rec["reason"] == "LA_PriceAboveLimit"


def test_same_block_race_is_a_lost_race_not_a_crash(crashed, tmp_path):
    scn, breached = crashed
    events = tmp_path / "events.jsonl"
    b1, b2 = bot(scn, "liquidator-1", 0.0, events), bot(scn, "liquidator-2", 0.0, events)
    acct = breached[0]
    b1.poll_events()  # starts auctions for the breached accounts
    b2.poll_events()  # sees them started
    assert acct in b1.running and acct in b2.running
    for _ in range(19):  # let the Dutch price fall (30 s a tick) until it is below both valuations
        scn.advance(30)
        q1, d1, _ = b1.evaluate(acct)
        q2, d2, _ = b2.evaluate(acct)
        if d1.bid and d2.bid:
            break
    assert d1.bid and d2.bid, (d1, d2)
    # both bids land in the same block: the second one finds nothing left to buy
    scn.rpc("evm_setAutomine", [False])
    try:
        import threading

        results = {}
        t1 = threading.Thread(target=lambda: results.__setitem__("b1", b1.bid(acct, q1, d1)))
        t2 = threading.Thread(target=lambda: results.__setitem__("b2", b2.bid(acct, q2, d2)))
        t1.start(), t2.start()
        import time

        time.sleep(1.5)
        scn.rpc("evm_mine", [])
        t1.join(30), t2.join(30)
    finally:
        scn.rpc("evm_setAutomine", [True])
    assert sorted(results.values()) == ["filled", "lost_race"], results
    loser = b1 if results["b1"] == "lost_race" else b2
    assert loser.stats["lost_races"] == 1 and loser.stats["errors"] == 0
    recs = [json.loads(line) for line in events.read_text().splitlines()]
    lost = [r for r in recs if r["event"] == "lost_race"]
    assert lost and lost[0]["stage"] == "mined"
    # the loser's next pass sees the auction gone (restored) or carries on bidding: no exception either way
    loser.step()

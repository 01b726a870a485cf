"""The chosen auction design with the liquidator bot as deployed by default (issue 14, docs/auctions.md), on a real
local chain (Anvil on a free port, the protocol deployed with ``DeployConfig``'s defaults but the scenario's own
floor, which the harness sets to the chosen 0.1; 2-of-3 keeper signatures over the keepers' own engine):

* a bot with the default **hedging** valuation bids and fills a solvent auction inside the risk-sized span: per
  fill, the value handed over beyond the attested model value ``f x V - amount`` is at most 15 % of the MM of what
  it bought (``f x MM``), from the chain's events (``AuctionStarted``, ``Bid``) and the attested leaf (its equity
  and MM, and the haircut taken off the account's collateral recomputed here); a bot with the **conservative**
  valuation would never bid on it (its limit is below the lowest price the auction reaches);
* with **no bidder**, the bot resets the auction once at its floor and then calls ``takeAsLastResort``: the fund's
  account (the deployer's address, the default) takes the restoring fraction at the fresh model value, the fund's
  balance falls by exactly what the contract charged it (``FundSpent``) less the penalty it keeps, the fund's account
  holds the claim on that share of the book, and the bot counts it (Prometheus ``last_resort_takes``); a second bot
  calling it in the same block loses the race (logged as skipped, not an error)."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import pytest
from web3.logs import DISCARD

from keeper.bots.liquidator.bot import LiquidatorBot, LiquidatorSettings
from keeper.bots.liquidator.strategies import BidDecision
from keeper.quant import auction_math as am

WAD = 10**18
SPOT, VOL = 1800.0, 0.8
TICK = 30


class NeverBid:
    name = "never"

    def decide(self, quote):
        return BidDecision(False, reason="no bidder")


@pytest.fixture(scope="module")
def crashed(small_scenario):
    """The small scenario after a -10 % move that breaches solvent short-vol accounts (leaves by account)."""
    scn = small_scenario
    att = scn.attest(SPOT, VOL)
    scn.write_market_file(SPOT, VOL)
    leaves = {x.account: x for x in att.leaves if 0 < x.equity < x.maintenance}
    assert len(leaves) >= 2, "the -10 % move should breach at least two solvent short-vol accounts"
    yield scn, leaves


def settings(scn, role, events, **kw):
    return LiquidatorSettings(rpc_url=scn.chain.url, deployment_file=str(scn.out / "deployment.json"),
                              key=scn.actor(role).key, name=role, events_file=str(events),
                              market_file=str(scn.out / "market.json"), start_auctions=False, **kw)


def config(scn) -> dict:
    c = scn.auction.functions.config().call()
    names = [o["name"] for o in next(i for i in scn.auction.abi if i.get("name") == "config")["outputs"][0]["components"]]
    return dict(zip(names, c))


def haircut_taken(scn, account: str, block: int) -> int:
    """The haircut the core takes off ``account``'s collateral at ``block``: per asset ``floor(h x floor(amount x
    spot))`` in quote base units, from the deployment's haircuts and decimals and the stored attested spot."""
    unit = 10 ** scn.dep.quote_decimals
    total = 0
    for sym, t in scn.dep.tokens.items():
        if t["address"] == scn.dep.quote_asset or not t["haircut"]:
            continue
        amount = int(scn.ch.functions.collateralOf(account, t["address"]).call(block_identifier=block))
        spot = int(scn.ch.functions.spotPrice(t["address"]).call(block_identifier=block)[0])
        gross = amount * spot // 10 ** int(t["decimals"]) * unit // WAD
        total += gross * round(t["haircut"] * 10_000) // 10_000
    return total


def test_deployed_defaults_are_the_chosen_design(crashed):
    scn, _ = crashed
    c = config(scn)
    assert (c["cuspWad"], c["spanWad"], c["lastResortAfter"]) == (WAD // 10, WAD // 10, 1)
    assert scn.auction.functions.fundAccount().call() == scn.dep.owner == scn.dep.fund_account


def test_hedging_bot_fills_inside_the_span_and_the_conservative_would_not(crashed, tmp_path):
    scn, leaves = crashed
    acct = sorted(leaves)[0]
    leaf = leaves[acct]
    events = tmp_path / "events.jsonl"
    hedger = LiquidatorBot(settings(scn, "liquidator-1", events, edge=0.02))
    cautious = LiquidatorBot(settings(scn, "liquidator-2", events, edge=0.02, valuation="conservative",
                                      aversion=0.15))
    assert hedger.s.valuation == "hedging"
    hedger.execution.try_start(acct)
    started = next(e for e in scn.auction.events.AuctionStarted().get_logs(from_block=scn.dep.block)
                   if e["args"]["account"] == acct)
    start, block = started["args"], int(started["blockNumber"])
    V, span, MM = int(start["startPrice"]), int(start["span"]), int(start["maintenance"])
    # the auction starts at the attested model value: the leaf's equity plus the haircut taken off its collateral
    assert (int(start["equity"]), MM) == (leaf.equity, leaf.maintenance)
    assert V == leaf.equity + haircut_taken(scn, acct, block)
    assert span == min(V, -(-MM // 10))
    lowest = V - span * 9 // 10  # the price just above the floor (cusp 0.1)
    # the conservative bot's limit is below anything this auction will ever ask: it cannot fill it
    scn.advance(TICK)
    q, d, _ = cautious.evaluate(acct)
    assert not d.bid
    conservative_limit = cautious.strategy.limit_price(q, max(q.max_fraction, 1e-9))
    assert conservative_limit < lowest, (conservative_limit, lowest, V)
    outcome = hedger.consider(acct)
    for _ in range(19):  # 30-s ticks up to the floor at 570 s
        if outcome == "filled":
            break
        scn.advance(TICK)
        outcome = hedger.consider(acct)
    assert outcome == "filled", [json.loads(x) for x in events.read_text().splitlines()][-3:]
    bids = [e["args"] for e in scn.auction.events.Bid().get_logs(from_block=block) if e["args"]["account"] == acct]
    assert bids and all(b["bidder"] == scn.actor("liquidator-1").address for b in bids)
    for b in bids:
        f, price, amount = int(b["fractionWad"]), int(b["price"]), int(b["amount"])
        assert lowest <= price <= V
        assert amount == am.bid_amount(f, price)
        transfer = f * V // WAD - amount  # attested value of the share bought minus what was paid for it
        mm_bought = f * MM // WAD
        assert transfer <= 0.15 * mm_bought, (transfer, mm_bought)
        assert transfer <= mm_bought * 9 // 100 + 1  # at most span x (1 - cusp) of the MM bought: 0.09
        print(f"fill: fraction {f / WAD:.4f} at {price / 1e6:,.2f} (V {V / 1e6:,.2f}, span {span / 1e6:,.2f}, "
              f"MM {MM / 1e6:,.2f}); transfer/MM bought {transfer / mm_bought:.4f}; conservative limit "
              f"{conservative_limit / 1e6:,.2f} < lowest price {lowest / 1e6:,.2f}")
    assert hedger.stats["bids_filled"] == len(bids) and hedger.stats["errors"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_bidder_one_reset_then_the_bot_calls_the_buyer_of_last_resort(crashed, tmp_path):
    scn, leaves = crashed
    acct = sorted(leaves)[1]
    events = tmp_path / "events.jsonl"
    port = _free_port()
    bot = LiquidatorBot(settings(scn, "liquidator-2", events, metrics_port=port), strategy=NeverBid())
    fund_account = scn.auction.functions.fundAccount().call()
    bot.execution.try_start(acct)
    started = next(e for e in scn.auction.events.AuctionStarted().get_logs(from_block=scn.dep.block)
                   if e["args"]["account"] == acct)
    t0 = int(scn.w3.eth.get_block(started["blockNumber"])["timestamp"])
    for _ in range(60):  # at most 30 minutes of chain time
        scn.advance(TICK)
        if scn.auction.functions.lastResortDue(acct).call():
            break
        bot.step()  # no bid; at the first floor: redo
    assert scn.auction.functions.lastResortDue(acct).call()
    # two bots see it due and call takeAsLastResort in the same block: one takes the book, the other lost the race
    other = LiquidatorBot(settings(scn, "liquidator-1", events), strategy=NeverBid())
    results = {}
    scn.rpc("evm_setAutomine", [False])
    try:
        threads = [threading.Thread(target=lambda b=b, k=k: results.__setitem__(k, b.step()))
                   for k, b in (("bot", bot), ("other", other))]
        for t in threads:
            t.start()
        deadline, pending = time.monotonic() + 120, 0
        while pending < 2 and time.monotonic() < deadline:  # both transactions in the pool: mine them in one block
            time.sleep(0.1)
            got = scn.rpc("txpool_status", [])["result"]["pending"]
            pending = int(got, 16) if isinstance(got, str) else int(got)
        assert pending == 2, "both bots should have sent takeAsLastResort"
        scn.rpc("evm_mine", [])
        for t in threads:
            t.join(60)
    finally:
        scn.rpc("evm_setAutomine", [True])
    assert bot.stats["last_resort_takes"] + other.stats["last_resort_takes"] == 1
    assert bot.stats["errors"] == other.stats["errors"] == 0
    recs = [json.loads(x) for x in events.read_text().splitlines()]
    took = [r for r in recs if r["event"] == "last_resort_taken"]
    assert len(took) == 1, recs[-5:]
    lost = [r for r in recs if r["event"] == "last_resort_skipped"]
    assert len(lost) == 1 and lost[0]["bot"] != took[0]["bot"], lost
    resets = [e for e in scn.auction.events.AuctionReset().get_logs(from_block=started["blockNumber"])
              if e["args"]["account"] == acct]
    assert len(resets) == 1 and not [e for e in scn.auction.events.Bid().get_logs(from_block=started["blockNumber"])
                                     if e["args"]["account"] == acct]
    rcpt = scn.w3.eth.get_transaction_receipt(took[0]["tx"])
    before, at = int(rcpt["blockNumber"]) - 1, int(rcpt["blockNumber"])
    assert int(scn.w3.eth.get_block(at)["timestamp"]) - t0 <= 1200  # two rounds to their floors: 19 minutes
    ev = scn.auction.events.LastResortTaken().process_receipt(rcpt, errors=DISCARD)[0]["args"]
    spent = scn.auction.events.FundSpent().process_receipt(rcpt, errors=DISCARD)
    ended = scn.auction.events.AuctionEnded().process_receipt(rcpt, errors=DISCARD)[0]["args"]
    assert (ev["account"], ev["fundAccount"]) == (acct, fund_account)
    # independent arithmetic from the fresh breach record it was taken on (the keepers' leaf of the current book)
    E, MM = _breach(scn, acct, before)
    V = E + haircut_taken(scn, acct, before)
    c = config(scn)
    g = am.last_resort_fraction(E, am.target_margin(MM, c["bufferWad"]), 0, c["penaltyWad"], V)
    amount = g * V // WAD
    assert (int(ev["fractionWad"]), int(ev["price"]), int(ev["amount"])) == (g, V, amount) and 0 < g < WAD
    assert [int(s["args"]["amount"]) for s in spent] == [amount] and spent[0]["args"]["to"] == fund_account
    # the fund pays the price and keeps the penalty less the starter's reward (here the bot started it)
    penalty = -(-amount * c["penaltyWad"] // WAD)
    reward = min(int(started["args"]["rewardPromised"]), penalty)
    assert (int(ended["penalty"]), int(ended["reward"])) == (penalty, reward)
    fund0 = int(scn.auction.functions.fundBalance().call(block_identifier=before))
    fund1 = int(scn.auction.functions.fundBalance().call(block_identifier=at))
    assert fund0 - fund1 == amount - (penalty - reward)
    assert int(spent[0]["args"]["fundBalance"]) == fund0 - amount
    # the fund's account holds a claim on g of the book: its effective positions gained that share of each
    source, fraction, _ = scn.ch.functions.claimOf(fund_account).call(block_identifier=at)
    assert (source, int(fraction)) == (acct, g)
    for s in scn.dep.series:
        sid = int(s["id"])
        book = int(scn.ch.functions.positionOf(acct, sid).call(block_identifier=before))
        got = int(scn.ch.functions.positionOf(fund_account, sid).call(block_identifier=at)) \
            - int(scn.ch.functions.positionOf(fund_account, sid).call(block_identifier=before))
        assert abs(got - book * g // WAD) <= 1, (sid, got, book)
    # the bot that took delivers the fund's account's claim on its next pass (anyone may; the scenario's conservative
    # run found the fund's account, auctioned later, unsellable while it still held the claim: CH_ClaimUnsettled)
    assert int(scn.ch.functions.claimOf(fund_account).call()[1]) == g
    (bot if took[0]["bot"] == "liquidator-2" else other).step()
    recs = [json.loads(x) for x in events.read_text().splitlines()]
    assert int(scn.ch.functions.claimOf(fund_account).call()[1]) == 0
    settled = [e for e in scn.ch.events.ClaimSettled().get_logs(from_block=at) if e["args"]["holder"] == fund_account]
    assert len(settled) == 1 and settled[0]["args"]["source"] == acct
    assert [r["holder"] for r in recs if r["event"] == "claim_settled" and r["bot"] == took[0]["bot"]] == [fund_account]
    for s in scn.dep.series:  # the effective book is what it was at the take: settling moves nothing between views
        sid = int(s["id"])
        assert int(scn.ch.functions.positionOf(fund_account, sid).call()) == \
            int(scn.ch.functions.positionOf(fund_account, sid).call(block_identifier=at))
    # counted, and exported to Prometheus like the bot's other counters
    assert took[0]["amount"] == amount and took[0]["fund_spent"] == amount
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert f"backstop_liquidator_last_resort_takes_total {float(bot.stats['last_resort_takes'])}" in metrics
    assert not scn.ch.functions.isBreached(acct).call()
    print(f"last resort: after {int(scn.w3.eth.get_block(at)['timestamp']) - t0} s, fraction {g / WAD:.4f} at V "
          f"{V / 1e6:,.2f} (MM {MM / 1e6:,.2f}): fund paid {amount / 1e6:,.2f}, kept penalty {penalty / 1e6:,.2f} "
          f"less reward {reward / 1e6:,.2f}; fund {fund0 / 1e6:,.2f} -> {fund1 / 1e6:,.2f}")


def _breach(scn, account: str, block: int) -> tuple[int, int]:
    """Equity and maintenance margin of ``account``'s breach record at ``block`` (``breachOf``)."""
    b = scn.ch.functions.breachOf(account).call(block_identifier=block)
    names = [o["name"] for o in next(i for i in scn.ch.abi if i.get("name") == "breachOf")["outputs"][0]["components"]]
    rec = dict(zip(names, b))
    return int(rec["equity"]), int(rec["maintenance"])

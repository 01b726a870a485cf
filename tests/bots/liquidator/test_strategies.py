"""Strategy interface: the edge rule, the affordable fraction and the external-command round trip (a real
subprocess speaking line-delimited JSON)."""
from __future__ import annotations

import sys

import pytest

from keeper.bots.liquidator.strategies import (
    BidDecision,
    EdgeStrategy,
    ExternalCommandStrategy,
    LotQuote,
    affordable_fraction,
    decide_on_quote,
    load_strategy,
)


def quote(**kw) -> LotQuote:
    base = dict(auction_id=1, account="0x" + "11" * 20, now=1_700_000_000, auction_price=90_000_000,
                valuation=100_000_000, risk_charge=2_000_000, gas_cost=500_000, free_margin=10**12,
                margin_per_lot=100_000_000, max_fraction=1.0, min_fraction=0.01)
    base.update(kw)
    return LotQuote(**base)


def test_edge_rule_matches_break_even_arithmetic():
    q = quote()
    s = EdgeStrategy(edge=0.05)
    d = s.decide(q)
    # break-even at 5 % edge for the whole lot: (100 - 2) * 0.95 - 0.5 = 92.6 quote units
    assert d.bid and d.fraction == 1.0
    assert d.max_price == 92_600_000
    # one unit above the limit: no bid
    assert not s.decide(quote(auction_price=92_600_001)).bid
    assert s.decide(quote(auction_price=92_600_000)).bid


def test_edge_strategy_respects_own_margin():
    # headroom for 40 % of the lot only
    q = quote(free_margin=40_000_000, margin_per_lot=100_000_000)
    assert affordable_fraction(q) == pytest.approx(0.4)
    d = EdgeStrategy(0.05).decide(q)
    assert d.bid and d.fraction == pytest.approx(0.4)
    # gas is spread over a smaller fill: limit = 98 * 0.95 - 0.5 / 0.4
    assert d.max_price == int(98_000_000 * 0.95 - 500_000 / 0.4)
    # no headroom at all: no bid
    assert not EdgeStrategy(0.05).decide(quote(free_margin=0)).bid


def test_gas_can_make_a_cheap_lot_not_worth_bidding():
    q = quote(valuation=1_000_000, risk_charge=0, auction_price=100_000, gas_cost=2_000_000)
    assert not EdgeStrategy(0.0).decide(q).bid


def test_an_insolvent_lot_is_bought_whole_or_not_at_all():
    s = EdgeStrategy(0.05)
    # a solvent account: the strategy's own stance, whatever is left of the lot
    q = quote(max_fraction=0.3)
    assert decide_on_quote(s, q, equity=1, remaining=0.8) == s.decide(q)
    assert s.decide(q).fraction == pytest.approx(0.3)
    # insolvent (equity < 0) while the auction lets a bid take only 0.3 of the 0.8 left: no bid at any price
    d = decide_on_quote(s, q, equity=-1, remaining=0.8)
    assert not d.bid and "whole" in d.reason
    # insolvent and the whole rest may be taken: the bid takes all 0.8 at the strategy's own limit
    q = quote(max_fraction=0.8)
    d = decide_on_quote(s, q, equity=-1, remaining=0.8)
    assert d.bid and d.fraction == 0.8 and d.max_price == s.decide(q).max_price
    # insolvent, but the strategy does not bid (price above its limit): still no bid
    assert not decide_on_quote(s, quote(max_fraction=0.8, auction_price=10**9), equity=-1, remaining=0.8).bid


def test_bad_edge_rejected():
    with pytest.raises(ValueError):
        EdgeStrategy(1.5)


@pytest.fixture
def external():
    s = ExternalCommandStrategy([sys.executable, "-m", "keeper.bots.liquidator.strategies", "--edge", "0.05"], timeout_s=10)
    yield s
    s.close()


def test_external_command_round_trip_agrees_with_in_process(external):
    inproc = EdgeStrategy(0.05)
    for q in (quote(), quote(auction_price=95_000_000), quote(free_margin=30_000_000), quote(free_margin=0)):
        assert external.decide(q).to_json() | {"reason": ""} == inproc.decide(q).to_json() | {"reason": ""}
    assert external.restarts == 0 and external.failures == 0


def test_external_command_garbage_timeout_and_death_mean_no_bid(tmp_path):
    garbage = tmp_path / "garbage.py"
    garbage.write_text("import sys\nfor l in sys.stdin:\n    print('not json', flush=True)\n")
    s = ExternalCommandStrategy([sys.executable, str(garbage)], timeout_s=5)
    d = s.decide(quote())
    assert d == BidDecision(False, reason=d.reason) and "bad external answer" in d.reason
    s.close()

    slow = tmp_path / "slow.py"
    slow.write_text("import sys, time\nfor l in sys.stdin:\n    time.sleep(30)\n")
    s = ExternalCommandStrategy([sys.executable, str(slow)], timeout_s=0.5)
    assert not s.decide(quote()).bid and s.failures == 1
    s.close()

    overbid = tmp_path / "overbid.py"
    overbid.write_text("import sys, json\nfor l in sys.stdin:\n"
                       "    print(json.dumps({'bid': True, 'fraction': 2.0, 'max_price': 5}), flush=True)\n")
    s = ExternalCommandStrategy([sys.executable, str(overbid)], timeout_s=5)
    assert not s.decide(quote()).bid
    s.close()

    dies = tmp_path / "dies.py"
    dies.write_text("import sys, json\nl = sys.stdin.readline()\n"
                    "print(json.dumps({'bid': True, 'fraction': 0.5, 'max_price': 7}), flush=True)\n")
    s = ExternalCommandStrategy([sys.executable, str(dies)], timeout_s=5)
    first = s.decide(quote())
    assert first.bid and first.fraction == 0.5 and first.max_price == 7
    s._proc.wait(timeout=5)
    second = s.decide(quote())  # restarted: answers again
    assert second.bid and s.restarts == 1
    s.close()


def test_load_strategy_specs():
    assert isinstance(load_strategy("edge", edge=0.1), EdgeStrategy)
    assert load_strategy("edge:0.07").edge == 0.07
    assert isinstance(load_strategy("cmd:python -m keeper.bots.liquidator.strategies"), ExternalCommandStrategy)
    with pytest.raises(ValueError):
        load_strategy("nonsense")


def test_the_none_strategy_never_bids_where_the_edge_rule_would():
    """``--strategy none`` (the scenario's "no bidder at all"): no bid even on a lot the edge rule takes at once, a
    lot offered at a price of one unit, or an insolvent book paying its bidder well; the edge rule bids on each."""
    never = load_strategy("none")
    lots = [quote(), quote(auction_price=1),
            quote(valuation=-10_000_000, risk_charge=0, gas_cost=0, auction_price=-50_000_000)]
    for q in lots:
        assert EdgeStrategy(edge=0.0).decide(q).bid
        assert not never.decide(q).bid
        assert not decide_on_quote(never, q, equity=q.valuation, remaining=1.0).bid


def test_liability_lot_needs_to_be_paid_more_than_it_costs():
    # an insolvent book worth -10 (a liability): the bidder must be paid at least 10 + risk + edge + gas
    q = quote(valuation=-10_000_000, risk_charge=1_000_000, gas_cost=100_000, auction_price=-11_000_000)
    s = EdgeStrategy(edge=0.05)
    # limit = -11 - 0.05 * 11 - 0.1 = -11.65: being paid 11 is not enough, being paid 11.65 is
    assert s.limit_price(q, 1.0) == -11_650_000
    assert not s.decide(q).bid
    assert s.decide(quote(valuation=-10_000_000, risk_charge=1_000_000, gas_cost=100_000,
                          auction_price=-11_650_000)).bid

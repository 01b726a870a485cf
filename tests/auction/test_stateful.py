"""Stateful property test: random deposits, trades, price moves, attestations (breaches and recoveries), auction
starts, bids, cures and time, on the real core with keeper-signed attestations.

Invariants after every step:
* conservation: the clearinghouse's token balances equal the sum of every account's stored cash / collateral, the
  module's cash equals what it owes (fund + claims repaid + escrow and penalties of running auctions), stored positions
  sum to zero, effective books differ from stored ones by rounding only, and settling a claim delivers exactly the
  holder's effective book;
* no account that the keepers' latest attestation of its current portfolio shows as healthy is ever sold from, and
  no auction starts without a breach of the current portfolio.
"""
from __future__ import annotations

import brownie
from brownie import chain
import random

from keeper.units import WAD
from collections import Counter

from tests.auction.claims_checks import assert_tokens_conserved, claim_elsewhere, settle_claim_checked
from tests.auction.conftest import USDC

FAR, ANY = 2**63, 2**255 - 1
# A seeded random walk over the same rules as the hypothesis state machine in test_state_machine.py, kept because it
# covers what that machine's few examples reach less often: three victims, bids weighted up (so auctions are bid on
# repeatedly, partially and to the end), resets, starts without a breach. Every sequence starts from the same
# snapshot, picks a rule and its arguments from the ranges below, and checks the invariants after every step.
# Failures print the seed, sequence and step list so they replay exactly. (Why hypothesis ran only 1-4 steps per
# example when the colleague tried it, and the fix: see the docstring of test_state_machine.py.)
RANGES = {
    "st_victim": (0, 2), "st_bidder": (0, 1), "st_usdc": (1, 200_000), "st_series": (0, 4), "st_size": (-5, 5),
    "st_pct": (-50, 200), "st_breach_pct": (-50, 99), "st_frac": (1, WAD), "st_price": (1_000, 6_000),
    "st_secs": (1, 900),
}
SEED, SEQUENCES, STEPS = 20261122, 2, 20


class AuctionMachine:
    stats: Counter = Counter()  # successful actions over all sequences (the test checks it is not vacuous)

    def __init__(self, core, victims, bidders, starter, everyone):
        chain.revert()
        self.core, self.victims, self.bidders, self.starter, self.everyone = core, victims, bidders, starter, everyone
        self.fund_account = brownie.accounts.at(core.auction.fundAccount())  # a local account: it settles its claims
        self.attested = {}  # account -> (nonce, equity, mm, timestamp) of the latest attestation posted
        self.sold_from_healthy = []

    # ---------------------------------------------------------------- helpers
    def _attest(self, account, equity, mm):
        self.core.attest([(account, equity, mm, mm * 3 // 2)])
        self.attested[str(account)] = (int(self.core.ch.stateNonce(account)), equity, mm, chain.time())

    def _running(self):
        return [v for v in self.victims if int(self.core.auction.auctionOf(v)["startedAt"]) != 0]

    def _model_breached_now(self, account) -> bool:
        rec = self.attested.get(str(account))
        if rec is None:
            return False
        nonce, equity, mm, ts = rec
        return nonce == int(self.core.ch.stateNonce(account)) and equity < mm

    # ---------------------------------------------------------------- rules
    def rule_deposit(self, st_victim, st_usdc):
        self.core.fund(self.victims[st_victim], usdc=st_usdc * USDC)

    def rule_trade(self, st_victim, st_series, st_size):
        if st_size == 0:
            return
        v = self.victims[st_victim]
        nonce = int(self.core.ch.stateNonce(v))
        try:
            self.core.trade(v, self.core.series[st_series], st_size * 10**17, 50 * 10**18)
        except brownie.exceptions.VirtualMachineError:
            pass  # e.g. a breached account may not add risk
        # core.trade first attests both legs healthy for the pre-trade nonce (then the trade, if it went through,
        # moved the nonce on)
        self.attested[str(v)] = (nonce, 10**15, 0, chain.time())

    def rule_price_move(self, st_price):
        self.core.post_prices({self.core.weth: st_price * 10**18, self.core.wbtc: st_price * 20 * 10**18})

    def rule_attest(self, st_victim, st_pct):  # noqa: D102 - also called by rule_breach_and_start
        v = self.victims[st_victim]
        mm = 100_000 * USDC
        self._attest(v, mm * st_pct // 100, mm)

    def rule_start(self, st_victim):
        v = self.victims[st_victim]
        breached = self._model_breached_now(v)
        try:
            self.core.auction.start(v, {"from": self.starter})
        except brownie.exceptions.VirtualMachineError as e:
            self.stats["start_refused:" + str(e.revert_msg).split(":")[0]] += 1
            return
        self.stats["start"] += 1
        assert breached, "auction started without a breach of the current portfolio"

    def rule_breach_and_start(self, st_victim, st_breach_pct):
        """The common path: keepers attest a breach of the current portfolio, someone starts the auction."""
        self.rule_attest(st_victim, st_breach_pct)
        self.rule_start(st_victim)

    def rule_bid(self, st_victim, st_bidder, st_frac):
        v, b = self.victims[st_victim], self.bidders[st_bidder]
        if claim_elsewhere(self.core, b, v) and st_frac % 2:
            # like a liquidator bot, the bidder delivers its claim on another book first (or not: then it is refused)
            if settle_claim_checked(self.core, b, self.core.series):
                self.stats["claim_settled"] += 1
        if len(self.core.chx.seriesOf(b)) > 0:
            self._attest(b, 10**13, 10_000 * USDC)  # keepers keep the bidder's own record fresh
        nonce = int(self.core.ch.stateNonce(v))
        escrow = int(self.core.auction.auctionOf(v)["escrow"])
        elsewhere = claim_elsewhere(self.core, b, v)
        try:
            tx = self.core.auction.bid(v, st_frac, ANY, FAR, 0, {"from": b})
        except brownie.exceptions.VirtualMachineError as e:
            name = str(e.revert_msg).split(":")[0]
            self.stats["bid_refused:" + name] += 1
            return
        assert not elsewhere, "a bidder with an unsettled claim on another book bought"
        self.stats["bid"] += 1
        if "SaleCompleted" in tx.events:
            self.stats["completed_by_bid"] += 1
        rec = self.attested.get(str(v))
        if rec is not None and rec[0] == nonce and rec[1] + escrow >= rec[2]:
            self.sold_from_healthy.append((str(v), rec))
        assert not self.sold_from_healthy, f"sold from an account attested healthy: {self.sold_from_healthy}"

    def rule_cure_by_deposit(self, st_victim):
        v = self.victims[st_victim]
        try:
            d = int(self.core.auction.deficitOf(v))
        except brownie.exceptions.VirtualMachineError:
            return
        d = max(d, 1)
        self.core.quote.mint(v, d, {"from": v})
        self.core.quote.approve(self.core.auction, d, {"from": v})
        try:
            self.core.auction.depositAndCure(v, d, {"from": v})
        except brownie.exceptions.VirtualMachineError:
            return
        self.stats["cured_by_deposit"] += 1
        assert not self.core.chx.isBreached(v)

    def rule_cure(self, st_victim):
        try:
            self.core.auction.cure(self.victims[st_victim], {"from": self.starter})
        except brownie.exceptions.VirtualMachineError:
            pass

    def rule_redo(self, st_victim):
        try:
            self.core.auction.redo(self.victims[st_victim], {"from": self.starter})
        except brownie.exceptions.VirtualMachineError:
            pass

    def rule_take_as_last_resort(self, st_victim):
        """The buyer of last resort (issue 14): with a fresh breach record of the last attested values, the fund's
        account takes the book when it is due; otherwise the call is refused by name and nothing changes."""
        v = self.victims[st_victim]
        auction = self.core.auction
        due, rec = bool(auction.lastResortDue(v)), self.attested.get(str(v))
        if due and rec is not None and rec[1] < rec[2]:
            self._attest(v, rec[1], rec[2])
        fund0 = int(auction.fundBalance())
        try:
            tx = auction.takeAsLastResort(v, {"from": self.starter})
        except brownie.exceptions.VirtualMachineError as e:
            name = str(e.revert_msg).split(":")[0].strip()
            assert name in ("LA_NoAuction", "LA_AuctionDone", "LA_LastResortNotDue", "LA_FundCannotPay",
                            "LA_RecordExpired", "LA_StaleBreach", "LA_NoBreach", "LA_NotBreached"), e.revert_msg
            assert not due or name != "LA_LastResortNotDue"
            self.stats["last_resort_refused"] += 1
            return
        assert due and int(auction.auctionOf(v)["startedAt"]) == 0
        taken = tx.events["LastResortTaken"]
        end = tx.events["AuctionEnded"]
        # the fund paid the price (or the payout) and got the penalty back less the starter's reward
        paid = int(taken["amount"]) if int(taken["amount"]) > 0 else sum(
            int(e["paid"]) for e in tx.events if e.name == "ShortfallPaid")
        assert int(auction.fundBalance()) == fund0 - paid + int(end["penalty"]) - int(end["reward"])
        self.stats["last_resort"] += 1

    def rule_sleep(self, st_secs):
        """Time passes; meanwhile anyone delivers the bidders' claims and finishes completed sales."""
        chain.sleep(st_secs)
        chain.mine()
        for b in [*self.bidders, self.fund_account]:
            if settle_claim_checked(self.core, b, self.core.series):
                self.stats["claim_settled"] += 1
        for v in self.victims:
            a = self.core.auction.auctionOf(v)
            if a["done"]:
                tx = self.core.auction.finish(v, {"from": self.starter})
                assert int(tx.events["AuctionEnded"]["escrowReleased"]) == int(a["escrow"])
                self.stats["finished"] += 1

    # ---------------------------------------------------------------- invariants
    def invariant_tokens_conserved(self):
        c = self.core
        assert_tokens_conserved(c, self.everyone, c.series)
        assert int(c.chx.cashOf(c.auction)) == c.module_cash_liabilities(self._running())


def test_stateful_auctions(core, accounts):
    victims = [accounts[1], accounts[7], accounts[8]]
    bidders = [accounts[2], accounts[4]]
    starter = accounts[3]
    fund_account = accounts[9]
    everyone = [*victims, *bidders, starter, core.maker, core.auction, core.owner, fund_account]
    for v in victims:
        core.build_book(v, n_series=3)
    for b in bidders:
        core.fund(b, usdc=5_000_000 * USDC)
    # the buyer of last resort: a fund account and a fund that can pay for a book
    core.auction.setFundAccount(fund_account, {"from": core.owner})
    core.quote.mint(core.owner, 1_000_000 * USDC, {"from": core.owner})
    core.quote.approve(core.auction, 1_000_000 * USDC, {"from": core.owner})
    core.auction.fundDeposit(1_000_000 * USDC, {"from": core.owner})
    chain.snapshot()
    # bids and breaches are weighted up so that most sequences reach running auctions
    rules = [n for n in dir(AuctionMachine) if n.startswith("rule_")] + ["rule_bid"] * 4 + ["rule_breach_and_start"] * 2
    rng = random.Random(SEED)
    for seq in range(SEQUENCES):
        machine = AuctionMachine(core, victims, bidders, starter, everyone)
        steps = []
        machine.invariant_tokens_conserved()
        for _ in range(STEPS):
            name = rng.choice(rules)
            fn = getattr(machine, name)
            args = {a: rng.randint(*RANGES[a]) for a in fn.__code__.co_varnames[1:fn.__code__.co_argcount]}
            steps.append((name, args))
            try:
                fn(**args)
                machine.invariant_tokens_conserved()
            except Exception as e:
                raise AssertionError(f"seed {SEED} sequence {seq} steps {steps}: {e!r}") from e
    print("stateful stats:", dict(AuctionMachine.stats))
    assert AuctionMachine.stats["start"] > 0 and AuctionMachine.stats["bid"] > 0
    assert AuctionMachine.stats["claim_settled"] > 0
    assert AuctionMachine.stats["last_resort"] + AuctionMachine.stats["last_resort_refused"] > 0

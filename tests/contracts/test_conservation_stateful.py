"""Stateful property: whatever sequence of deposits, withdrawals, trades, liquidation claims (recorded, then
settled), breaches (recorded, held by an auction, lifted by a healthy leaf, cleared by the module), dust deposits and
expiry settlements runs, the tokens the contract holds equal what accounts (and the settlement reserve) are owed in
storage, every series' stored positions net to zero, each frozen book's pending fraction is the sum of the claims on
it, and actions the claims or a breach forbid revert with the exact error.

Two drivers of the same rules and invariants: hypothesis (brownie's state machine: shrinking, random exploration;
hypothesis 6.27 runs most examples of a small ``max_examples`` for only one step, see
tests/auction/test_state_machine.py) and a seeded walk that runs every walk to its full ``WALK_STEPS`` and asserts how
many steps ran, that every rule ran, that a breach held dust apart and that expiry settlement ran while claims were
pending.
"""
import brownie
import pytest
from brownie import accounts, chain
from brownie.test import strategy
from eth_utils import keccak
import inspect
import random

from core_helpers import EMPTY_PROOF, USDC, WAD, err
from keeper.codec import eip712
from keeper.ops import signing


WALKS, WALK_STEPS = 3, 30


class Conservation:
    who = strategy("uint8", max_value=2)
    other = strategy("uint8", max_value=2)
    asset_ix = strategy("uint8", max_value=2)
    amount = strategy("uint256", min_value=1, max_value=5_000)
    size = strategy("int256", min_value=-3 * WAD, max_value=3 * WAD)
    price = strategy("uint256", min_value=1, max_value=500 * WAD)
    fraction = strategy("uint256", min_value=1, max_value=WAD)
    dust = strategy("uint8", min_value=1, max_value=100)

    steps_per_example: list = []  # class-level: one entry per counted example
    rejected: list = []
    stats: dict = {}

    def __init__(self, p, traders, owner):
        self.p = p
        self.owner = owner
        self.module = accounts[6]
        if p.ch.liquidationModule() != self.module:  # set once per deployment (the other driver may have set it)
            p.ch.setLiquidationModule(self.module, {"from": owner})
        third = accounts.add(keccak(text="backstop-trader-2"))  # makers sign quotes: local keys
        owner.transfer(third, "10 ether")
        self.holders = list(traders) + [third]
        self.assets = [p.usdc, p.weth, p.wbtc]
        self.units = [USDC, WAD, 10**8]
        for h in self.holders:
            for a in self.assets:
                a.mint(h, 10**40, {"from": h})
                a.approve(p.ch, 2**256 - 1, {"from": h})

    def setup(self):
        self.nonce = 0
        self.steps = 0
        self.steps_per_example.append(0)
        self.p.post_prices({self.p.weth: 3000 * WAD, self.p.wbtc: 60_000 * WAD})
        self.sid, self.expiry = self.p.new_series(days=1)

    def _step(self, name):
        self.steps += 1
        self.steps_per_example[-1] += 1
        self.stats[name] = self.stats.get(name, 0) + 1

    def _bound(self, account) -> bool:
        return bool(self.p.ch.lotOf(account)[4])

    def initialize_open_positions(self, size, price):
        """Every run starts with an open position pair, so settlement and share transfers have work to do."""
        self.nonce += 1
        maker, taker = self.holders[0], self.holders[1]
        q, sig = self.p.quote(maker, self.sid, size or WAD, price, nonce=self.nonce)
        self.p.ch.trade(q, sig, self.p.attest(maker, 10**12 * USDC), self.p.attest(taker, 10**12 * USDC), {"from": taker})

    # --- the claim ledger as the chain reports it
    def _lot(self, account):
        pending, moved, credited = tuple(self.p.ch.lotOf(account))[:3]
        return int(pending), int(moved), int(credited)

    def _claim(self, holder):
        source, fraction, _ = self.p.ch.claimOf(holder)
        return str(source), int(fraction)

    def _blocked(self, account):
        """The exact error that stops `account` trading or withdrawing (None if it may)."""
        if self._bound(account):
            return err("CH_AccountInBreach(address)", str(account))
        pending = self._lot(account)[0]
        if pending:
            return err("CH_ClaimsPending(address,uint256)", str(account), pending)
        source, fraction = self._claim(account)
        if fraction:
            return err("CH_ClaimUnsettled(address,address,uint256)", str(account), source, fraction)
        return None

    def rule_deposit(self, who, asset_ix, amount):
        self._step("deposit")
        h = self.holders[who]
        asset, amt = self.assets[asset_ix], amount * self.units[asset_ix] // 100
        pending, _, credited = self._lot(h)
        bound = self._bound(h)
        if bound and asset_ix != 0:
            with brownie.reverts(err("CH_AccountInBreach(address)", str(h))):
                self.p.ch.deposit(asset, amt, {"from": h})
            return
        if pending and asset_ix != 0:
            with brownie.reverts(err("CH_ClaimsPending(address,uint256)", str(h), pending)):
                self.p.ch.deposit(asset, amt, {"from": h})
            return
        stored = int(self.p.ch.storedBalances(h, 0, asset)[2 if asset_ix == 0 else 1])
        nonce = int(self.p.ch.stateNonce(h))
        self.p.ch.deposit(asset, amt, {"from": h})
        if asset_ix == 0 and nonce:  # quote cash moves no stateNonce (except an account's very first deposit)
            assert int(self.p.ch.stateNonce(h)) == nonce
        if pending or (bound and asset_ix == 0):  # quote cash credited to a frozen or bound book stays outside it
            assert self._lot(h)[2] == credited + amt
            assert int(self.p.ch.storedBalances(h, 0, asset)[2]) == stored

    def rule_dust_deposit(self, who, dust):
        """H-1's attack: a few base units of quote cash. No stateNonce move; held apart from a bound book."""
        self._step("dust_deposit")
        h = self.holders[who]
        nonce, credited, bound = int(self.p.ch.stateNonce(h)), self._lot(h)[2], self._bound(h)
        self.p.ch.deposit(self.p.usdc, dust, {"from": h})
        assert int(self.p.ch.stateNonce(h)) == (nonce or 1)
        if bound:
            assert self._lot(h)[2] == credited + dust
            self.stats["dust_held_apart"] = self.stats.get("dust_held_apart", 0) + 1

    def rule_breach(self, who):
        """Keepers record `who` below maintenance: its book is bound (no trade, withdrawal or collateral deposit)."""
        self._step("breach")
        h = self.holders[who]
        self.p.post_margin([self.p.leaf(h, 10 * USDC, 1_000 * USDC, 1_500 * USDC)])
        assert self.p.ch.isBreached(h) and self._bound(h)

    def rule_heal(self, who):
        """Keepers record `who` healthy: a breach no auction holds is lifted, one an auction holds stays."""
        self._step("heal")
        h = self.holders[who]
        held = bool(self.p.ch.lotOf(h)[5])
        was = bool(self.p.ch.isBreached(h))
        credited, pending = self._lot(h)[2], self._lot(h)[0]
        cash = int(self.p.ch.storedBalances(h, 0, self.p.usdc)[2])
        self.p.post_margin([self.p.leaf(h, 10**12 * USDC, 0, 0)])
        assert bool(self.p.ch.isBreached(h)) == (was and held)
        if was and not held and not pending:  # unbound, nothing pending: the held-apart cash joins its cash
            assert self._lot(h)[2] == 0 and int(self.p.ch.storedBalances(h, 0, self.p.usdc)[2]) == cash + credited
            self.stats["lifted"] = self.stats.get("lifted", 0) + 1

    def rule_module_holds_or_clears(self, who, other):
        """The liquidation module starts an auction on a breach (holds it) or ends one (clears it)."""
        self._step("module")
        h = self.holders[who]
        if not self.p.ch.isBreached(h):
            with brownie.reverts(err("CH_NotInBreach(address)", str(h))):
                self.p.ch.primeLot(h, {"from": self.module})
            return
        if other % 2 == 0:
            self.p.ch.primeLot(h, {"from": self.module})
            assert self.p.ch.lotOf(h)[5]
        else:
            self.p.ch.clearBreach(h, {"from": self.module})
            assert not self.p.ch.isBreached(h) and not self._bound(h)

    def rule_withdraw(self, who, asset_ix, amount):
        self._step("withdraw")
        h, a = self.holders[who], self.assets[asset_ix]
        blocked = self._blocked(h)
        if blocked:
            with brownie.reverts(blocked):
                self.p.ch.withdraw(a, 1, EMPTY_PROOF, {"from": h})
            return
        bal = int(self.p.ch.cashOf(h)) if asset_ix == 0 else int(self.p.ch.collateralOf(h, a))
        # a positive-cash account can only withdraw what the contract holds (documented limit: other accounts'
        # debts are not tokens); CH_InsufficientLiquidity is tested in test_collateral
        amt = min(bal, amount * self.units[asset_ix] // 100, int(self.p.ch.totalDeposits(a)))
        if amt <= 0:
            return
        proof = EMPTY_PROOF
        if list(self.p.ch.seriesOf(h)) or int(self.p.ch.cashOf(h)) < 0:
            proof = self.p.attest(h, 10**12 * USDC)
        self.p.ch.withdraw(a, amt, proof, {"from": h})

    def rule_trade(self, who, other, size, price):
        self._step("trade")
        maker, taker = self.holders[who], self.holders[(who + 1 + other % 2) % 3]
        if size == 0 or chain[-1].timestamp >= self.expiry:
            return
        self.nonce += 1
        q, sig = self.p.quote(maker, self.sid, size, price, nonce=self.nonce)
        blocked = self._blocked(maker) or self._blocked(taker)  # the maker is checked first
        if blocked:
            with brownie.reverts(blocked):
                self.p.ch.trade(q, sig, EMPTY_PROOF, EMPTY_PROOF, {"from": taker})
            return
        self.p.ch.trade(q, sig, self.p.attest(maker, 10**12 * USDC), self.p.attest(taker, 10**12 * USDC), {"from": taker})

    def rule_record_claim(self, who, other, fraction, amount):
        """A liquidation bid: `other` claims `fraction` of what is left of `who`'s book and pays the module."""
        self._step("record_claim")
        source, holder = self.holders[who], self.holders[other]
        if source == holder:
            return
        own_source, own = self._claim(source)
        held_source, held = self._claim(holder)
        pending, moved, _ = self._lot(source)
        payment = amount * USDC // 100
        expected = None
        if own:
            expected = err("CH_ClaimUnsettled(address,address,uint256)", str(source), own_source, own)
        elif self._bound(holder):
            expected = err("CH_AccountInBreach(address)", str(holder))
        elif self._lot(holder)[0]:
            expected = err("CH_ClaimsPending(address,uint256)", str(holder), self._lot(holder)[0])
        elif held and held_source != str(source):
            expected = err("CH_ClaimUnsettled(address,address,uint256)", str(holder), held_source, held)
        elif pending + moved == WAD:
            expected = err("CH_NothingToClaim(address)", str(source))
        if expected:
            with brownie.reverts(expected):
                self.p.ch.recordClaim(source, holder, fraction, payment, {"from": self.module})
            return
        remaining = WAD - pending - moved
        claim = remaining if fraction == WAD else -(-fraction * remaining // WAD)
        if claim == 0:
            with brownie.reverts(err("CH_NothingToClaim(address)", str(source))):
                self.p.ch.recordClaim(source, holder, fraction, payment, {"from": self.module})
            return
        self.p.ch.recordClaim(source, holder, fraction, payment, {"from": self.module})
        assert self._lot(source)[:2] == (pending + claim, moved)
        assert self._claim(holder) == (str(source), held + claim)

    def rule_settle_claim(self, who):
        """Anyone delivers a holder's claim; the last one on a book unfreezes it and releases its credited cash (unless
        the book is still bound to a breach: then the cash waits for the breach to end)."""
        self._step("settle_claim")
        holder = self.holders[who]
        source, fraction = self._claim(holder)
        if not fraction:
            with brownie.reverts(err("CH_NoClaim(address)", str(holder))):
                self.p.ch.settleClaim(holder, {"from": self.owner})
            return
        pending, moved, credited = self._lot(source)
        base = WAD - moved
        share = WAD if fraction == base else -(-fraction * WAD // base)
        bound = self._bound(source)
        tx = self.p.ch.settleClaim(holder, {"from": self.owner})
        last = pending == fraction
        released = credited if last and not bound else 0  # the last claim releases the credited cash
        assert tuple(tx.events["ClaimSettled"].values()) == (source, holder, fraction, share, released)
        assert self._lot(source) == ((0, 0, credited - released) if last else (pending - fraction, moved + fraction,
                                                                                credited))

    def rule_expire_and_settle(self, price):
        self._step("expire_and_settle")
        if self.steps < 6:  # let some trading happen first
            return
        if chain[-1].timestamp < self.expiry:
            chain.sleep(self.expiry - chain[-1].timestamp + 1)
            chain.mine()
            now = self.p.now()
            px = price + 1
            typed = eip712.settlement_typed_data(self.p.domain, [str(self.p.weth)], [px], self.expiry, now)
            sigs = signing.sign_attestation(typed, self.p.signers())
            self.p.ch.postSettlementPrices([self.p.weth], [px], self.expiry, now, sigs, {"from": self.owner})
            self.p.post_prices({self.p.weth: 3000 * WAD, self.p.wbtc: 60_000 * WAD})
        nonces = {str(h): int(self.p.ch.stateNonce(h)) for h in self.holders}
        bound = {str(h): self._bound(h) for h in self.holders}
        held = {str(h): int(self.p.ch.storedBalances(h, self.sid, self.p.usdc)[0]) != 0 for h in self.holders}
        if any(self._lot(h)[0] for h in self.holders):
            self.stats["settled_with_claims_pending"] = self.stats.get("settled_with_claims_pending", 0) + 1
        self.p.ch.settleMany(self.holders, self.sid, {"from": self.owner})
        for h in self.holders:  # a bound book keeps its nonce through settlement (its auction goes on)
            moved = int(self.p.ch.stateNonce(h)) != nonces[str(h)]
            assert moved == (held[str(h)] and not bound[str(h)]), (h, moved, held[str(h)], bound[str(h)])

    def invariant_tokens_owed(self):
        rows = self.p.stored_conservation(self.holders + [self.module])
        assert all(held == owed for _, held, owed in rows), rows

    def invariant_positions_net_to_zero(self):
        assert sum(int(self.p.ch.storedBalances(h, self.sid, self.p.usdc)[0]) for h in self.holders) == 0

    def invariant_pending_is_sum_of_claims(self):
        claims = [self._claim(h) for h in self.holders]
        for s in self.holders:
            assert self._lot(s)[0] == sum(f for src, f in claims if src == str(s))


def test_conservation_state_machine(state_machine_py, protocol, traders, owner):
    state_machine_py(
        Conservation, protocol, traders, owner, settings={"max_examples": 8, "stateful_step_count": 12, "deadline": None}
    )


#: how the seeded walk draws each rule argument (the same ranges as the strategies above)
_DRAW = {
    "who": lambda r: r.randrange(3), "other": lambda r: r.randrange(3), "asset_ix": lambda r: r.randrange(3),
    "amount": lambda r: r.randint(1, 5_000), "size": lambda r: r.randint(-3 * WAD, 3 * WAD),
    "price": lambda r: r.randint(1, 500 * WAD), "fraction": lambda r: r.choice([WAD, r.randint(1, WAD)]),
    "dust": lambda r: r.randint(1, 100),
}


def test_conservation_seeded_walk(protocol, traders, owner):
    """The same machine driven by a seeded random walk: every walk runs all WALK_STEPS rules (each followed by every
    invariant), and the walks together run every rule, hold dust apart from a breached book and settle an expired
    series while liquidation claims are pending."""
    Conservation.steps_per_example.clear()
    Conservation.stats.clear()
    machine = Conservation(protocol, traders, owner)
    rules = [(n, f) for n, f in inspect.getmembers(Conservation, inspect.isfunction) if n.startswith("rule_")]
    invariants = [f for n, f in inspect.getmembers(Conservation, inspect.isfunction) if n.startswith("invariant_")]
    for walk in range(WALKS):
        rng = random.Random(20261207 + walk)
        chain.snapshot()
        machine.setup()
        machine.initialize_open_positions(WAD * rng.randint(1, 3), 100 * WAD)
        for _ in range(WALK_STEPS):
            name, fn = rng.choice(rules)
            args = [_DRAW[p](rng) for p in list(inspect.signature(fn).parameters)[1:]]
            fn(machine, *args)
            for inv in invariants:
                inv(machine)
        chain.revert()
    steps, stats = Conservation.steps_per_example, Conservation.stats
    print("conservation walk steps:", steps, "rules:", stats)
    assert steps == [WALK_STEPS] * WALKS, steps
    for rule in ("deposit", "dust_deposit", "withdraw", "trade", "record_claim", "settle_claim", "breach", "heal",
                 "module", "expire_and_settle", "dust_held_apart", "settled_with_claims_pending"):
        assert stats.get(rule, 0) > 0, (rule, stats)

"""Stateful property: whatever sequence of deposits, withdrawals, trades, liquidation claims (recorded, then
settled), and expiry settlements runs, the tokens the contract holds equal what accounts (and the settlement reserve)
are owed in storage, every series' stored positions net to zero, each frozen book's pending fraction is the sum of
the claims on it, and actions the claims forbid revert with the exact error."""
import brownie
import pytest
from brownie import accounts, chain
from brownie.test import strategy
from eth_utils import keccak

from core_helpers import EMPTY_PROOF, USDC, WAD, err
from keeper import eip712


class Conservation:
    who = strategy("uint8", max_value=2)
    other = strategy("uint8", max_value=2)
    asset_ix = strategy("uint8", max_value=2)
    amount = strategy("uint256", min_value=1, max_value=5_000)
    size = strategy("int256", min_value=-3 * WAD, max_value=3 * WAD)
    price = strategy("uint256", min_value=1, max_value=500 * WAD)
    fraction = strategy("uint256", min_value=1, max_value=WAD)

    def __init__(self, p, traders, owner):
        self.p = p
        self.owner = owner
        self.module = accounts[6]
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
        self.p.post_prices({self.p.weth: 3000 * WAD, self.p.wbtc: 60_000 * WAD})
        self.sid, self.expiry = self.p.new_series(days=1)

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
        pending = self._lot(account)[0]
        if pending:
            return err("ClaimsPending(address,uint256)", str(account), pending)
        source, fraction = self._claim(account)
        if fraction:
            return err("ClaimUnsettled(address,address,uint256)", str(account), source, fraction)
        return None

    def rule_deposit(self, who, asset_ix, amount):
        self.steps += 1
        h = self.holders[who]
        asset, amt = self.assets[asset_ix], amount * self.units[asset_ix] // 100
        pending, _, credited = self._lot(h)
        if pending and asset_ix != 0:
            with brownie.reverts(err("ClaimsPending(address,uint256)", str(h), pending)):
                self.p.ch.deposit(asset, amt, {"from": h})
            return
        stored = int(self.p.ch.storedBalances(h, 0, asset)[2 if asset_ix == 0 else 1])
        self.p.ch.deposit(asset, amt, {"from": h})
        if pending:  # quote cash credited to a frozen book stays outside it
            assert self._lot(h)[2] == credited + amt
            assert int(self.p.ch.storedBalances(h, 0, asset)[2]) == stored

    def rule_withdraw(self, who, asset_ix, amount):
        self.steps += 1
        h, a = self.holders[who], self.assets[asset_ix]
        blocked = self._blocked(h)
        if blocked:
            with brownie.reverts(blocked):
                self.p.ch.withdraw(a, 1, EMPTY_PROOF, {"from": h})
            return
        bal = int(self.p.ch.cashOf(h)) if asset_ix == 0 else int(self.p.ch.collateralOf(h, a))
        # a positive-cash account can only withdraw what the contract holds (documented limit: other accounts'
        # debts are not tokens); InsufficientLiquidity is tested in test_collateral
        amt = min(bal, amount * self.units[asset_ix] // 100, int(self.p.ch.totalDeposits(a)))
        if amt <= 0:
            return
        proof = EMPTY_PROOF
        if list(self.p.ch.seriesOf(h)) or int(self.p.ch.cashOf(h)) < 0:
            proof = self.p.attest(h, 10**12 * USDC)
        self.p.ch.withdraw(a, amt, proof, {"from": h})

    def rule_trade(self, who, other, size, price):
        self.steps += 1
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
        self.steps += 1
        source, holder = self.holders[who], self.holders[other]
        if source == holder:
            return
        own_source, own = self._claim(source)
        held_source, held = self._claim(holder)
        pending, moved, _ = self._lot(source)
        payment = amount * USDC // 100
        expected = None
        if own:
            expected = err("ClaimUnsettled(address,address,uint256)", str(source), own_source, own)
        elif self._lot(holder)[0]:
            expected = err("ClaimsPending(address,uint256)", str(holder), self._lot(holder)[0])
        elif held and held_source != str(source):
            expected = err("ClaimUnsettled(address,address,uint256)", str(holder), held_source, held)
        elif pending + moved == WAD:
            expected = err("NothingToClaim(address)", str(source))
        if expected:
            with brownie.reverts(expected):
                self.p.ch.recordClaim(source, holder, fraction, payment, {"from": self.module})
            return
        remaining = WAD - pending - moved
        claim = remaining if fraction == WAD else -(-fraction * remaining // WAD)
        if claim == 0:
            with brownie.reverts(err("NothingToClaim(address)", str(source))):
                self.p.ch.recordClaim(source, holder, fraction, payment, {"from": self.module})
            return
        self.p.ch.recordClaim(source, holder, fraction, payment, {"from": self.module})
        assert self._lot(source)[:2] == (pending + claim, moved)
        assert self._claim(holder) == (str(source), held + claim)

    def rule_settle_claim(self, who):
        """Anyone delivers a holder's claim; the last one on a book unfreezes it and releases its credited cash."""
        self.steps += 1
        holder = self.holders[who]
        source, fraction = self._claim(holder)
        if not fraction:
            with brownie.reverts(err("NoClaim(address)", str(holder))):
                self.p.ch.settleClaim(holder, {"from": self.owner})
            return
        pending, moved, credited = self._lot(source)
        base = WAD - moved
        share = WAD if fraction == base else -(-fraction * WAD // base)
        tx = self.p.ch.settleClaim(holder, {"from": self.owner})
        released = credited if pending == fraction else 0  # the last claim releases the credited cash
        assert tuple(tx.events["ClaimSettled"].values()) == (source, holder, fraction, share, released)
        last = pending == fraction
        assert self._lot(source) == ((0, 0, 0) if last else (pending - fraction, moved + fraction, credited))

    def rule_expire_and_settle(self, price):
        self.steps += 1
        if self.steps < 6:  # let some trading happen first
            return
        if chain[-1].timestamp < self.expiry:
            chain.sleep(self.expiry - chain[-1].timestamp + 1)
            chain.mine()
            now = self.p.now()
            px = price + 1
            typed = eip712.settlement_typed_data(self.p.domain, [str(self.p.weth)], [px], self.expiry, now)
            sigs = eip712.sign_attestation(typed, self.p.signers())
            self.p.ch.postSettlementPrices([self.p.weth], [px], self.expiry, now, sigs, {"from": self.owner})
            self.p.post_prices({self.p.weth: 3000 * WAD, self.p.wbtc: 60_000 * WAD})
        self.p.ch.settleMany(self.holders, self.sid, {"from": self.owner})

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

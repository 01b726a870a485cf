"""Stateful property: whatever sequence of deposits, withdrawals, trades, liquidation transfers and settlements
runs, the tokens the contract holds equal what accounts (and the settlement reserve) are owed, and every series'
positions net to zero."""
import pytest
from brownie import accounts, chain
from brownie.test import strategy
from eth_utils import keccak

from core_helpers import EMPTY_PROOF, USDC, WAD
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

    def rule_deposit(self, who, asset_ix, amount):
        self.steps += 1
        h = self.holders[who]
        self.p.ch.deposit(self.assets[asset_ix], amount * self.units[asset_ix] // 100, {"from": h})

    def rule_withdraw(self, who, asset_ix, amount):
        self.steps += 1
        h, a = self.holders[who], self.assets[asset_ix]
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
        self.p.ch.trade(q, sig, self.p.attest(maker, 10**12 * USDC), self.p.attest(taker, 10**12 * USDC), {"from": taker})

    def rule_liquidate_share(self, who, other, fraction):
        self.steps += 1
        a, b = self.holders[who], self.holders[other]
        if a != b:
            self.p.ch.transferPortfolioShare(a, b, fraction, {"from": self.module})

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
        assert self.p.balances_conserved(self.holders)

    def invariant_positions_net_to_zero(self):
        assert sum(int(self.p.ch.positionOf(h, self.sid)) for h in self.holders) == 0


def test_conservation_state_machine(state_machine_py, protocol, traders, owner):
    state_machine_py(
        Conservation, protocol, traders, owner, settings={"max_examples": 8, "stateful_step_count": 12, "deadline": None}
    )

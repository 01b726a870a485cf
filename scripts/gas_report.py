"""Gas report for the protocol core: `brownie run scripts/gas_report.py`.

Deploys the core on the local chain, registers a 3-of-5 keeper set (eth-account keys), and measures the total
transaction gas of deposit, withdraw, trade, a price attestation, a root-only margin attestation and margin
batches of 1, 8 and 64 accounts (signatures included), then the liquidation auction (start, bids, finish, claim
delivery, cures: `scripts/gas_auction.py`) on a deployment of its own. Margin batches are measured twice: on accounts whose
record slot is still empty (first write, 22.1k per SSTORE) and again on the same accounts (steady state,
overwrite). Prints a Markdown table (the one in docs/gas.md).
"""
from __future__ import annotations

import sys
from pathlib import Path

from brownie import (
    Clearinghouse,
    ClearinghouseAdmin,
    Contract,
    FallbackMarginLogic,
    TestERC20,
    accounts,
    chain,
)
from eth_account import Account
from eth_utils import keccak

from keeper.chain.deployment import load_abi
from keeper.codec import eip712
from keeper.codec.eip712 import Domain, MarginRootHeader, Quote
from keeper.codec.merkle import MarginLeaf, MerkleTree
from keeper.ops import signing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root: scripts.gas_auction, tests.auction

WAD = 10**18
USDC = 10**6


class Bench:
    def __init__(self):
        self.owner = accounts[0]
        self.usdc = TestERC20.deploy("USD Coin", "USDC", 6, {"from": self.owner})
        self.weth = TestERC20.deploy("Wrapped Ether", "WETH", 18, {"from": self.owner})
        FallbackMarginLogic.deploy({"from": self.owner})  # external library linked into ClearinghouseAdmin
        admin = ClearinghouseAdmin.deploy(self.owner, self.usdc, 10**30, 15 * 10**16, {"from": self.owner})
        raw = Clearinghouse.deploy(self.owner, self.usdc, 10**30, 15 * 10**16, admin, {"from": self.owner})
        self.ch = Contract.from_abi("Backstop", raw.address, load_abi("clearinghouse"))
        self.keys = [Account.from_key(keccak(text=f"backstop-keeper-{i}")) for i in range(5)]
        self.ch.setKeeperSet([k.address for k in self.keys], 3, {"from": self.owner})
        self.ch.listCollateral(self.weth, 2 * 10**17, 10**30, {"from": self.owner})
        self.domain = Domain(chain.id, raw.address)
        self.price_seq = 0
        self.margin_seq = 0
        self.last_root_ts = 0

    def now(self) -> int:
        return int(chain[-1].timestamp)

    def post_prices(self, prices: dict):
        self.price_seq += 1
        assets, vals = [str(a) for a in prices], list(prices.values())
        typed = eip712.prices_typed_data(self.domain, assets, vals, self.price_seq, self.now())
        sigs = signing.sign_attestation(typed, self.keys[:3])
        return self.ch.postPrices(assets, vals, self.price_seq, self.now(), sigs, {"from": self.owner})

    #: a solvency index of realistic magnitudes (quote base units, 6 decimals; calldata gas depends on the bytes):
    #: equity 12.3M, MM 2.3M, IM 3.5M, shortfall now 1.2k, VaR 99 457k, ES 97.5 612k, fund 250k, 64 accounts
    SOLVENCY = (12_345_678_123_456, 2_345_678_901_234, 3_518_518_351_851, 1_234_567_890, 456_789_012_345,
                612_345_678_901, 250_000_000_000, 0, 64, 0)

    def header(self, tree):
        self.margin_seq += 1
        # each root in a later second than the last, as keepers at successive blocks: a leaf of a second that two
        # roots share does not outrank a record of that second (finding H-10), so two one-account batches posted in
        # one second would leave the first account's proof unusable
        while self.now() <= self.last_root_ts:
            chain.sleep(1)
            chain.mine()
        self.last_root_ts = self.now()
        return MarginRootHeader(keccak(text=f"inputs-{self.margin_seq}"), self.margin_seq, self.now(), len(tree.leaves),
                                eip712.solvency_struct_hash(self.SOLVENCY))

    def post_root(self, tree):
        h = self.header(tree)
        sigs = signing.sign_attestation(eip712.margin_root_typed_data(self.domain, tree.root, h), self.keys[:3])
        return self.ch.postMarginRoot(tree.root, h.as_tuple(), h.solvency_hash, self.SOLVENCY, sigs,
                                      {"from": self.owner})

    def post_batch(self, leaves):
        tree = MerkleTree.of_leaves(leaves)
        h = self.header(tree)
        mp = tree.multiproof()
        sigs = signing.sign_attestation(eip712.margin_root_typed_data(self.domain, tree.root, h), self.keys[:3])
        tx = self.ch.postMarginBatch(
            h.as_tuple(), h.solvency_hash, self.SOLVENCY, [l.as_tuple() for l in mp.leaves], list(mp.proof),
            list(mp.flags), sigs, {"from": self.owner}
        )
        return tree, h, tx

    def proof(self, account, equity, initial=0):
        leaf = MarginLeaf(str(account), int(self.ch.stateNonce(account)), equity, 0, initial, 0)
        tree, h, _ = self.post_batch([leaf])
        return (h.as_tuple(), leaf.as_tuple(), tree.proof(str(account)))


def main():
    b = Bench()
    rows: list[tuple[str, int, str]] = []

    def row(name, tx, per=None, note=""):
        gas = int(tx.gas_used)
        rows.append((name, gas, f"{gas // per:,}" if per else "", note))

    maker = accounts.add(keccak(text="backstop-trader-0"))
    taker = accounts[1]
    b.owner.transfer(maker, "1 ether")
    for who in (maker, taker):
        b.usdc.mint(who, 10**6 * USDC, {"from": who})
        b.usdc.approve(b.ch, 2**255, {"from": who})
        b.weth.mint(who, 100 * WAD, {"from": who})
        b.weth.approve(b.ch, 2**255, {"from": who})

    row("deposit (quote asset, first)", b.ch.deposit(b.usdc, 50_000 * USDC, {"from": taker}))
    row("deposit (quote asset, again)", b.ch.deposit(b.usdc, 50_000 * USDC, {"from": taker}))
    row("deposit (WETH, new asset)", b.ch.deposit(b.weth, 10 * WAD, {"from": taker}))
    b.ch.deposit(b.usdc, 50_000 * USDC, {"from": maker})
    empty = ((b"\x00" * 32, 0, 0, 0), ("0x" + "00" * 20, 0, 0, 0, 0, 0), [])
    row("withdraw (no positions, no proof)", b.ch.withdraw(b.usdc, 1_000 * USDC, empty, {"from": taker}))

    row("price attestation (1 asset, 3-of-5)", b.post_prices({b.weth: 3000 * WAD}))
    row("price attestation (1 asset, steady)", b.post_prices({b.weth: 3001 * WAD}))

    expiry = b.now() + 30 * 86400
    sid = b.ch.createSeries(b.weth, 3000 * WAD, expiry, True, {"from": b.owner}).events["SeriesCreated"]["seriesId"]
    q = Quote(str(maker), int(sid), -WAD, 100 * WAD, 1, b.now() + 3600)
    sig = signing.sign(eip712.quote_typed_data(b.domain, q), maker.private_key)
    mp, tp = b.proof(maker, 50_000 * USDC), b.proof(taker, 99_000 * USDC)
    row("trade (both legs add risk, 2 proofs)", b.ch.trade(q.as_tuple(), sig, mp, tp, {"from": taker}))
    q = Quote(str(maker), int(sid), WAD // 2, 90 * WAD, 2, b.now() + 3600)
    sig = signing.sign(eip712.quote_typed_data(b.domain, q), maker.private_key)
    # Buying back a short at a non-zero premium needs the buyer's proof that equity covers the premium (review R-1).
    row("trade (reduce-only both legs, buyer's proof)",
        b.ch.trade(q.as_tuple(), sig, b.proof(maker, 50_000 * USDC), empty, {"from": taker}))
    b.post_prices({b.weth: 3002 * WAD})
    row("withdraw (with margin proof)", b.ch.withdraw(b.weth, WAD, b.proof(taker, 99_000 * USDC), {"from": taker}))

    single = MerkleTree.of_leaves([MarginLeaf("0x" + "ab" * 20, 0, 1, 0, 0, 0)])
    row("margin root only (3-of-5), first ring slot", b.post_root(single))
    for _ in range(16):
        b.post_root(single)
    row("margin root only (3-of-5), steady", b.post_root(single))

    for n in (1, 8, 64):
        addrs = ["0x" + keccak(text=f"bench-{n}-{i}")[:20].hex() for i in range(n)]
        leaves = [MarginLeaf(a, 0, 10_000 * USDC + i, 3_000 * USDC, 5_000 * USDC, 7_000 * USDC) for i, a in enumerate(addrs)]
        _, _, tx = b.post_batch(leaves)
        row(f"margin batch n={n}, first write", tx, n, "per account incl. signatures")
        leaves = [MarginLeaf(a, 0, 11_000 * USDC + i, 3_000 * USDC, 5_000 * USDC, 7_000 * USDC) for i, a in enumerate(addrs)]
        _, _, tx = b.post_batch(leaves)
        row(f"margin batch n={n}, steady state", tx, n, "per account incl. signatures")

    # realistic accounts have deposited, so their record slot already holds their stateNonce: the first
    # attestation is an overwrite too
    holders = []
    for i in range(64):
        a = accounts.add(keccak(text=f"bench-holder-{i}"))
        b.owner.transfer(a, "0.1 ether")
        b.usdc.mint(a, 100 * USDC, {"from": a})
        b.usdc.approve(b.ch, 100 * USDC, {"from": a})
        b.ch.deposit(b.usdc, 100 * USDC, {"from": a})
        holders.append(a)
    leaves = [MarginLeaf(str(a), int(b.ch.stateNonce(a)), 100 * USDC, 0, 0, 0) for a in holders]
    assert all(l.state_nonce == 1 for l in leaves), "a first deposit creates the record slot (stateNonce 1)"
    _, _, tx = b.post_batch(leaves)
    row("margin batch n=64, depositors' first attestation", tx, 64, "record slot already holds stateNonce")

    # the liquidation auction on its own fresh deployment: same table, same command (scripts/gas_auction.py has the
    # per-hook breakdown)
    from scripts.gas_auction import auction_rows

    for name, tx, note in auction_rows():
        row(name, tx, note=note)

    print()
    print("| operation | total tx gas | gas per account | note |")
    print("|---|---:|---:|---|")
    for name, gas, per, note in rows:
        print(f"| {name} | {gas:,} | {per} | {note} |")

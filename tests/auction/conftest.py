"""Fixtures for the auction tests: a real Clearinghouse (core) with keepers signing real EIP-712 attestations.

Typed data, leaf hashes and signatures come from the keepers' own ``keeper/codec/eip712.py`` (the core's tests check it
against the contracts). Deployment is done here rather than through tests/contracts/conftest.py because that
directory-scoped fixture file is not visible from tests/auction/ and was written after these tests.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import brownie
import pytest
from brownie import AuctionLogic, chain
from eth_account import Account
from eth_utils import keccak

from keeper.codec import eip712
from protocol_deploy import deploy_clearinghouse, last_margin_timestamp
from keeper.units import RAY
from keeper.codec import merkle
from keeper.ops import signing

USDC = 10**6
KEEPER_KEYS = [keccak(f"backstop-auction-test-keeper-{i}".encode()) for i in range(3)]
THRESHOLD = 2
#: an empty margin proof (`leaf.account == address(0)`): "no attestation given"
EMPTY_PROOF = ((b"\x00" * 32, 0, 0, 0), ("0x" + "00" * 20, 0, 0, 0, 0, 0), [])
#: the solvency index every test root carries (SolvencyIndex struct, quote base units; docs/contracts.md)
SOLVENCY = (500_000 * USDC, 20_000 * USDC, 30_000 * USDC, 0, 1_000 * USDC, 2_000 * USDC, 10_000 * USDC, 0, 2, 0)
# linear 1 h curve, reset below 20% or after 1 h; target MM x 1.1; penalty 5%; reward 1 USDC + 1% of MM; span
# 10% of MM; the buyer of last resort after 1 reset (acts only once a fund account is set: `set_fund_account`)
DEFAULT_CONFIG = dict(kind=0, tau=3600, step=0, cut=RAY, tail=3600, cusp=2 * 10**17, buffer=10**17,
                      penalty=5 * 10**16, chip=10**16, tip=1 * USDC, max_age=300, span=10**17, last_resort_after=1)


def config_tuple(**overrides) -> tuple:
    c = {**DEFAULT_CONFIG, **overrides}
    return (c["kind"], c["tau"], c["step"], c["cut"], c["tail"], c["cusp"], c["buffer"], c["penalty"], c["chip"],
            c["tip"], c["max_age"], c["span"], c["last_resort_after"])


def _domain(ch) -> eip712.Domain:
    return eip712.Domain(chain_id=chain.id, verifying_contract=ch.address)


@dataclass
class Core:
    ch: object  # Clearinghouse (hot ABI)
    chx: object  # the same Clearinghouse address with the full API (IClearinghouse)
    auction: object
    quote: object
    weth: object
    wbtc: object
    owner: object
    maker: object
    series: list = field(default_factory=list)
    seq: int = 0
    price_seq: int = 0
    quote_nonce: int = 0

    # ---- attestations
    def now(self) -> int:
        """Attestation timestamp: the latest mined block's time (mined now, so pending sleeps apply); never ahead
        of the next block and never behind an earlier attestation, also after chain reverts."""
        chain.mine()
        return int(chain[-1].timestamp)

    def post_prices(self, prices: dict) -> None:
        self.price_seq += 1
        assets = [a.address for a in prices]
        values = list(prices.values())
        ts = self.now()
        typed = eip712.prices_typed_data(_domain(self.ch), assets, values, self.price_seq, ts)
        sigs = signing.sign_attestation(typed, KEEPER_KEYS[:THRESHOLD])
        self.ch.postPrices(assets, values, self.price_seq, ts, sigs, {"from": self.owner})

    def attest(self, rows: list, signers: int = THRESHOLD, inputs: bytes = b"\x11" * 32) -> dict:
        """Post a batch of leaves (account, equity, mm, im[, modelValue]) for the accounts' CURRENT nonces.

        Returns {account: MarginProof tuple} usable in trades. Leaves are recorded (breaches registered)."""
        leaves = []
        for r in rows:
            account, equity, mm, im = r[:4]
            mv = r[4] if len(r) > 4 else equity
            nonce = r[5] if len(r) > 5 else int(self.ch.stateNonce(account))
            leaves.append(merkle.MarginLeaf(str(account), nonce, int(equity), int(mm), int(im), int(mv)))
        hashed = sorted(((merkle.leaf_hash(l), l.as_tuple()) for l in leaves), key=lambda t: t[0])
        leaves = [l for _, l in hashed]
        hashes = [h for h, _ in hashed]
        assert len(hashes) <= 2, "test tree supports one or two leaves"
        root = hashes[0] if len(hashes) == 1 else merkle.hash_pair(hashes[0], hashes[1])
        self.seq += 1
        ts = self.now()
        last = last_margin_timestamp(self.ch)  # the chain's own (reverts with it)
        if ts <= last:  # a new root is strictly later than the last (finding H-9), as at a new block
            chain.sleep(last - ts + 1)
            ts = self.now()
        header = (b"\x11" * 32 if inputs is None else inputs, self.seq, ts, len(leaves))
        sh = eip712.solvency_struct_hash(SOLVENCY)
        typed = eip712.margin_root_typed_data(_domain(self.ch), root, eip712.MarginRootHeader(*header, sh))
        sigs = signing.sign_attestation(typed, KEEPER_KEYS[:signers])
        flags = [True] * (len(leaves) - 1)
        self.ch.postMarginBatch(header, sh, SOLVENCY, leaves, [], flags, sigs, {"from": self.owner})
        proofs = {}
        for i, l in enumerate(leaves):
            other = [hashes[1 - i]] if len(hashes) == 2 else []
            proofs[l[0]] = (header, l, other)
        return proofs

    # ---- trading
    def domain(self) -> eip712.Domain:
        return _domain(self.ch)

    def signed_quote(self, series_id: int, maker_size: int, price_wad: int, nonce: int | None = None):
        """The market maker's quote tuple and signature (`maker_size` > 0: the maker buys), valid for an hour; the
        nonce is the next of `quote_nonce` unless given."""
        if nonce is None:
            self.quote_nonce += 1
            nonce = self.quote_nonce
        quote = eip712.Quote(self.maker.address, series_id, maker_size, price_wad, nonce, self.now() + 3600)
        return quote.as_tuple(), signing.sign(eip712.quote_typed_data(self.domain(), quote), self.maker.private_key)

    def trade(self, taker, series_id: int, taker_size: int, price_wad: int) -> None:
        """Taker trades `taker_size` contracts of a series with the market maker at `price_wad` per contract."""
        q, sig = self.signed_quote(series_id, -taker_size, price_wad)
        big = 10**15
        proofs = self.attest([(taker, big, 0, 0), (self.maker, big, 0, 0)])
        self.ch.trade(q, sig, proofs[self.maker.address], proofs[str(taker)], {"from": taker})

    def fund(self, account, usdc: int = 0, weth: int = 0, wbtc: int = 0) -> None:
        for token, amount in ((self.quote, usdc), (self.weth, weth), (self.wbtc, wbtc)):
            if amount:
                token.mint(account, amount, {"from": account})
                token.approve(self.ch, amount, {"from": account})
                self.ch.deposit(token, amount, {"from": account})

    def build_book(self, account, n_series: int = 5) -> None:
        """Gives `account` collateral in WETH and WBTC, quote cash and `n_series` option positions (long and short)."""
        # the stored prices again, fresh: a trade needs prices younger than maxPriceAge (300 s), and on a loaded machine
        # a module's tests outlive the prices its fixture posted (Ganache follows the wall clock)
        self.post_prices({t: int(self.chx.spotPrice(t)[0]) for t in (self.weth, self.wbtc)})
        self.fund(account, usdc=50_000 * USDC, weth=10 * 10**18, wbtc=1 * 10**8)
        for i, sid in enumerate(self.series[:n_series]):
            size = (i + 1) * 10**18 if i % 2 == 0 else -(i + 1) * 10**18
            self.trade(account, sid, size, 100 * 10**18)

    # ---- auction helpers
    def breach(self, account, equity: int, mm: int, im: int | None = None, signers: int = THRESHOLD, nonce=None):
        im = im if im is not None else mm * 3 // 2
        row = (account, equity, mm, im, equity) if nonce is None else (account, equity, mm, im, equity, nonce)
        return self.attest([row], signers=signers)

    def haircut_value(self, account) -> int:
        """Independent of the contract: sum over the account's collateral of floor(haircut x floor(amount x spot)) in
        quote base units, from the core's views (what the auction's start price adds back to the attested equity)."""
        total = 0
        for asset in self.chx.collateralAssetsOf(account):
            cfg = self.chx.assetConfig(asset)
            amount = int(self.chx.collateralOf(account, asset))
            spot = int(self.chx.spotPrice(asset)[0])
            gross = amount * spot // 10 ** int(cfg["decimals"]) * USDC // 10**18
            total += gross * int(cfg["haircut"]) // 10**18
        return total

    def model_value(self, account, equity: int) -> int:
        """The attested model value V = E + the haircut taken off the account's collateral."""
        return int(equity) + self.haircut_value(account)

    def module_cash_liabilities(self, running_accounts) -> int:
        total = int(self.auction.fundLiabilities())
        for acct in running_accounts:
            a = self.auction.auctionOf(acct)
            total += int(a["escrow"]) + int(a["penaltyTotal"])
        return total


def deploy_core(accounts, AuctionTestToken, Clearinghouse, ClearinghouseAdmin, LiquidationAuction, config=None,
                quote_token=None) -> Core:
    owner = accounts[0]
    maker = accounts.add(keccak(b"backstop-auction-test-maker"))  # a local key: makers sign quotes
    owner.transfer(maker, "10 ether")
    quote = quote_token or AuctionTestToken.deploy("Test USD", "tUSD", 6, {"from": owner})
    weth = AuctionTestToken.deploy("Wrapped Ether", "WETH", 18, {"from": owner})
    wbtc = AuctionTestToken.deploy("Wrapped Bitcoin", "WBTC", 8, {"from": owner})
    cap = 2**127
    keepers = [Account.from_key(k).address for k in KEEPER_KEYS]
    deployed = deploy_clearinghouse(owner, quote, keepers, THRESHOLD, cap, 10**17,
                                    [(weth, 2 * 10**17, cap), (wbtc, 2 * 10**17, cap)])
    ch, chx = deployed.raw, deployed.ch
    AuctionLogic.deploy({"from": owner})  # external library linked into LiquidationAuction
    auction = LiquidationAuction.deploy(ch, owner, config or config_tuple(), {"from": owner})
    chx.setLiquidationModule(auction, {"from": owner})
    core = Core(ch, chx, auction, quote, weth, wbtc, owner, maker)
    core.post_prices({weth: 3000 * 10**18, wbtc: 60_000 * 10**18})
    expiry = chain.time() + 30 * 86400
    for k in range(5):
        tx = chx.createSeries(weth, (2500 + 250 * k) * 10**18, expiry, k % 2 == 0, {"from": owner})
        core.series.append(int(tx.events["SeriesCreated"]["seriesId"]))
    core.fund(maker, usdc=10_000_000 * USDC)
    return core


def breached_auction(core, accounts, equity=60_000 * USDC, mm=100_000 * USDC, im=150_000 * USDC):
    """A running auction on `accounts[1]` (a book of 5 positions + 2 collateral assets, attested breached at `equity`,
    `mm`, `im`), started by `accounts[3]`, with `accounts[2]` funded to bid. Returns (account, bidder, starter, start
    transaction)."""
    v, bidder, starter = accounts[1], accounts[2], accounts[3]
    core.build_book(v)
    core.fund(bidder, usdc=500_000 * USDC)
    core.breach(v, equity, mm, im)
    tx = core.auction.start(v, {"from": starter})
    return v, bidder, starter, tx


@pytest.fixture(scope="module")
def core(accounts, AuctionTestToken, Clearinghouse, ClearinghouseAdmin, LiquidationAuction):
    return deploy_core(accounts, AuctionTestToken, Clearinghouse, ClearinghouseAdmin, LiquidationAuction)


@pytest.fixture(autouse=True)
def isolate(fn_isolation):
    pass


@contextmanager
def reverts_with(name: str):
    """Expect a revert whose decoded custom error (brownie: ``"Name: args"``) is ``name``."""
    try:
        yield
    except brownie.exceptions.VirtualMachineError as e:
        msg = str(e.revert_msg)
        assert msg.split(":")[0].strip() == name, f"expected {name}, got {msg!r}"
    else:
        raise AssertionError(f"did not revert (expected {name})")


@pytest.fixture
def state_machine_py():
    """brownie's own ``state_machine`` runner, loaded from its pure-Python source.

    Same fixture as tests/contracts/conftest.py (that directory-scoped conftest is not visible here): the
    mypyc-compiled ``brownie.test.stateful`` in eth-brownie 1.22.2 rejects the machine class it generates itself
    ("_BrownieStateMachine object expected; got BrownieStateMachine"); the uncompiled ``stateful.py`` shipped beside
    it is the same code and works.
    """
    import importlib.util
    from pathlib import Path

    import brownie.test

    path = Path(brownie.test.__file__).with_name("stateful.py")
    spec = importlib.util.spec_from_file_location("_brownie_stateful_source_auction", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.state_machine

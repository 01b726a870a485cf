"""Helpers for the protocol-core tests (and for anyone who needs a deployed Backstop); fixtures in conftest.py.

* ``tokens``: USDC-like quote asset (6 decimals), WETH (18), WBTC (8), all test ERC20s with open mint.
* ``keeper_keys``: five deterministic eth-account keys; ``protocol`` registers them 3-of-5.
* ``protocol``: a deployed ``Clearinghouse`` (+ ``ClearinghouseAdmin``, reached by its fallback) wrapped in
  :class:`Protocol`, with helpers that post prices and margin batches signed by ``keeper/codec/eip712.py``.
* ``err(signature, *args)``: the revert string brownie reports for a custom error, built from the error's
  signature so that an assertion names the exact error.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from brownie import (
    chain,
)
from brownie.exceptions import decode_typed_error
from eth_abi import encode as abi_encode
from eth_utils import keccak

from keeper.codec import eip712
from protocol_deploy import deploy_clearinghouse, last_margin_timestamp
from keeper.codec.merkle import MarginLeaf, MerkleTree
from keeper.codec.eip712 import Domain, MarginRootHeader, Quote
from keeper.ops import signing

WAD = 10**18
USDC = 10**6
QUOTE_CAP = 10**15 * USDC
SHORT_FRACTION = 15 * 10**16  # 0.15
EMPTY_LEAF = ("0x" + "00" * 20, 0, 0, 0, 0, 0)
EMPTY_PROOF = ((b"\x00" * 32, 0, 0, 0), EMPTY_LEAF, [])
#: the solvency index test roots carry unless a test gives one (the SolvencyIndex struct, quote base units):
#: equity, MM, IM, shortfall now / VaR 99 / ES 97.5, fund, excluded equity, accounts, excluded accounts
SOLVENCY = (1_000_000 * USDC, 200_000 * USDC, 300_000 * USDC, 0, 40_000 * USDC, 50_000 * USDC, 75_000 * USDC,
            -12 * USDC, 3, 1)


def _error_types(signature: str) -> list[str]:
    inner = signature[signature.index("(") + 1 : -1]
    return [t for t in inner.split(",") if t]


def err(signature: str, *args) -> str:
    """The revert message brownie 1.22 gives for custom error ``signature`` with ``args``."""
    selector = keccak(text=signature)[:4]
    data = selector + abi_encode(_error_types(signature), list(args))
    return decode_typed_error("0x" + data.hex())


def bytes32(name: str) -> bytes:
    """A Solidity ``bytes32("name")`` literal."""
    return name.encode().ljust(32, b"\x00")


@dataclass
class Protocol:
    """A deployed Backstop core with keeper-signing helpers (signatures from keeper/codec/eip712.py)."""

    ch: object
    admin_code: object
    owner: object
    usdc: object
    weth: object
    wbtc: object
    keeper_keys: list
    domain: Domain
    price_seq: int = 0
    margin_seq: int = 0
    trees: dict = field(default_factory=dict)
    solvency: tuple = SOLVENCY

    # --- attestations
    def now(self) -> int:
        return int(chain[-1].timestamp)

    def signers(self, n: int = 3) -> list:
        return self.keeper_keys[:n]

    def post_prices(self, prices: dict, timestamp: int | None = None, keys=None, sender=None):
        self.price_seq += 1
        ts = timestamp if timestamp is not None else self.now()
        assets = [str(a) for a in prices]
        vals = [int(v) for v in prices.values()]
        typed = eip712.prices_typed_data(self.domain, assets, vals, self.price_seq, ts)
        sigs = signing.sign_attestation(typed, keys if keys is not None else self.signers())
        return self.ch.postPrices(assets, vals, self.price_seq, ts, sigs, {"from": sender or self.owner})

    def margin_header(self, tree: MerkleTree, timestamp: int | None = None, sequence: int | None = None,
                      solvency: tuple | None = None):
        if sequence is None:
            self.margin_seq += 1
            sequence = self.margin_seq
        if timestamp is None:
            # like keepers at successive blocks: a new root is strictly later than the last (a breach is lifted only
            # by a strictly later attestation, finding H-9), so wait out the second when two land in one
            last = last_margin_timestamp(self.ch)  # the chain's own (reverts with it)
            if self.now() <= last:
                chain.sleep(last - self.now() + 1)
                chain.mine()
            timestamp = self.now()
        ts = timestamp
        sh = eip712.solvency_struct_hash(self.solvency if solvency is None else solvency)
        return MarginRootHeader(keccak(text=f"inputs-{sequence}"), sequence, ts, len(tree.leaves), sh)

    def posting(self, header: MarginRootHeader, solvency: tuple | None = None) -> tuple:
        """The header arguments of ``postMarginRoot``/``postMarginBatch``: header struct, signed solvency hash and
        the index itself (``self.solvency`` unless given)."""
        return header.as_tuple(), header.solvency_hash, self.solvency if solvency is None else solvency

    def sign_root(self, tree: MerkleTree, header: MarginRootHeader, keys=None) -> bytes:
        typed = eip712.margin_root_typed_data(self.domain, tree.root, header)
        return signing.sign_attestation(typed, keys if keys is not None else self.signers())

    def post_margin(self, leaves, timestamp: int | None = None, keys=None, sender=None, solvency=None):
        """Post a whole batch (multiproof with no proof nodes); returns (tree, header, tx)."""
        tree = MerkleTree.of_leaves(leaves)
        header = self.margin_header(tree, timestamp, solvency=solvency)
        mp = tree.multiproof()
        tx = self.ch.postMarginBatch(
            *self.posting(header, solvency),
            [l.as_tuple() for l in mp.leaves],
            list(mp.proof),
            list(mp.flags),
            self.sign_root(tree, header, keys),
            {"from": sender or self.owner},
        )
        return tree, header, tx

    def leaf(self, account, equity, maintenance=0, initial=0, model_value=0, nonce=None) -> MarginLeaf:
        n = int(self.ch.stateNonce(account)) if nonce is None else nonce
        return MarginLeaf(str(account), n, int(equity), int(maintenance), int(initial), int(model_value))

    def attest(self, account, equity, maintenance=0, initial=0, model_value=0):
        """Post a one-account batch for the account's current state and return its MarginProof tuple."""
        tree, header, _ = self.post_margin([self.leaf(account, equity, maintenance, initial, model_value)])
        return self.proof(tree, header, account)

    @staticmethod
    def proof(tree: MerkleTree, header: MarginRootHeader, account) -> tuple:
        return (header.as_tuple(), tree.leaf_of(str(account)).as_tuple(), tree.proof(str(account)))

    # --- funds and trading
    def fund(self, account, token, amount, deposit=True):
        token.mint(account, amount, {"from": account})
        token.approve(self.ch, amount, {"from": account})
        if deposit:
            return self.ch.deposit(token, amount, {"from": account})

    def new_series(self, strike=2000 * WAD, days=30, is_call=True, underlying=None):
        expiry = self.now() + days * 86400
        tx = self.ch.createSeries(underlying or self.weth, strike, expiry, is_call, {"from": self.owner})
        return tx.events["SeriesCreated"]["seriesId"], expiry

    def quote(self, maker, series_id, size, price, nonce=1, deadline=None) -> tuple[tuple, bytes]:
        q = Quote(str(maker), int(series_id), int(size), int(price), int(nonce), deadline or self.now() + 3600)
        sig = signing.sign(eip712.quote_typed_data(self.domain, q), maker.private_key)
        return q.as_tuple(), sig

    def balances_conserved(self, holders) -> bool:
        """Token balances held == what accounts (and the settlement reserve) are owed, per asset."""
        ok = int(self.usdc.balanceOf(self.ch)) == sum(int(self.ch.cashOf(h)) for h in holders) + int(
            self.ch.settlementReserve()
        )
        for token in (self.weth, self.wbtc):
            ok &= int(token.balanceOf(self.ch)) == sum(int(self.ch.collateralOf(h, token)) for h in holders)
            ok &= int(token.balanceOf(self.ch)) == int(self.ch.totalDeposits(token))
        return ok

    def stored_conservation(self, accounts) -> list[tuple[str, int, int]]:
        """Token conservation on raw storage, which holds whatever liquidation claims are pending (the effective
        views then differ from storage by the claims' rounding): per asset ``(symbol, held, owed)`` where quote
        ``owed`` = stored cash + cash credited outside frozen books (``lotOf``) + the settlement reserve, and a
        collateral's ``owed`` = stored balances (also checked against ``totalDeposits``: a third row per token).
        ``accounts`` must list every account with a balance (the liquidation module's too)."""
        rows = []
        cash = sum(int(self.ch.storedBalances(a, 0, self.usdc)[2]) + int(self.ch.lotOf(a)[2]) for a in accounts)
        rows.append(("USDC", int(self.usdc.balanceOf(self.ch)), cash + int(self.ch.settlementReserve())))
        for token in (self.weth, self.wbtc):
            held = int(token.balanceOf(self.ch))
            rows.append((token.symbol(), held, sum(int(self.ch.storedBalances(a, 0, token)[1]) for a in accounts)))
            rows.append((token.symbol() + " totalDeposits", held, int(self.ch.totalDeposits(token))))
        return rows


def deploy_protocol(owner, usdc, weth, wbtc, keeper_keys, threshold=3) -> Protocol:
    """The core (tests/protocol_deploy.py) with the keepers registered, WETH (20%) and WBTC (10%) listed, and
    ``owner`` as risk admin."""
    core = deploy_clearinghouse(owner, usdc, [k.address for k in keeper_keys], threshold, QUOTE_CAP, SHORT_FRACTION,
                                [(weth, 2 * 10**17, 10**9 * WAD), (wbtc, 10**17, 10**9 * 10**8)])
    ch, admin, raw = core.ch, core.admin, core.raw
    ch.setRiskAdmin(owner, {"from": owner})
    domain = Domain(chain.id, raw.address)
    return Protocol(ch, admin, owner, usdc, weth, wbtc, list(keeper_keys), domain)

"""Attestation for the scenario's set-up phase (and its ``--keepers inline`` mode): read the book from chain,
run the quant engine, build the margin leaves and Merkle tree, collect M keeper signatures and post.

The scenario needs attested prices and margin leaves before anyone can trade (short legs need a fresh spot, every
risk-adding leg a margin proof), i.e. before the keeper processes have anything to attest. This module does that
genesis work with the keepers' own keys and the keepers' engine (:func:`keeper.attest.leaves.risk_run`: a
correlated Monte Carlo tail set seeded from the block hash, a SPAN-like grid with joint, single-asset and
opposite-direction moves, and the correlation stress at the keepers' default ``stress_correlation`` of 1) over every
underlying at once (:func:`portfolio_attestation`: each series on its own underlying's spot and smile, every listed
collateral moving with its own underlying); the inputs document (the keepers' schema,
:data:`keeper.attest.leaves.SCHEMA`, priced from the scenario's smiles rather than a fitted surface) is archived
under its hash (:class:`keeper.data.archive.InputsArchive`) so that ``backstop verify`` can recompute every number.

Digests are the contract's own ``hashTypedData(structHash)``; the struct hashes follow docs/contracts.md.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from eth_utils import to_checksum_address

from dataclasses import dataclass

from eth_utils import keccak

from keeper.attest.engine import (
    accounts_document,
    Attestation,
    BookState,
    EngineSettings,
    SmileFn,
    smile_from,
)
from keeper.attest.inputs import build_document, risk_document
from keeper.attest.leaves import canonical_inputs, risk_run, solvency_from_run
from keeper.codec import eip712
from keeper.codec.eip712 import margin_root_struct_hash, prices_struct_hash
from keeper.codec.merkle import MerkleTree
from keeper.data.feed import BlockRef
from keeper.ops.signing import sign_digest_sorted
from keeper.quant.pricing import black76_price
from keeper.quant.risk.scenarios import seed_from_block_hash
from keeper.units import SECONDS_PER_YEAR, WAD, to_wad

if TYPE_CHECKING:
    from keeper.scenario.world import World

log = logging.getLogger("backstop.scenario.keepers")


def read_book(ch, accounts: Sequence[str], series_ids: Sequence[int], assets: Sequence[str],
              decimals: Mapping[str, int]) -> BookState:
    """Read every account's positions, collateral, cash and state nonce from the clearinghouse."""
    col = {sid: j for j, sid in enumerate(series_ids)}
    pos = np.zeros((len(accounts), len(series_ids)))
    coll = np.zeros((len(accounts), len(assets)))
    cash, nonces = [], []
    for i, a in enumerate(accounts):
        for sid in ch.functions.seriesOf(a).call():
            if int(sid) in col:
                pos[i, col[int(sid)]] = int(ch.functions.positionOf(a, int(sid)).call()) / WAD
        for j, asset in enumerate(assets):
            coll[i, j] = int(ch.functions.collateralOf(a, asset).call()) / 10 ** decimals[asset]
        cash.append(int(ch.functions.cashOf(a).call()))
        nonces.append(int(ch.functions.stateNonce(a).call()))
    return BookState(list(accounts), list(series_ids), pos, list(assets), coll, cash, nonces,
                     {a: int(decimals[a]) for a in assets})


@dataclass(frozen=True)
class PortfolioSettings(EngineSettings):
    """The inline keepers' engine settings: the scenario's, plus the keeper processes' default correlation stress
    (``risk.stress_correlation`` 1.0, docs/risk.md), so both kinds of keeper margin the two-asset book alike."""

    stress_correlation: float = 1.0


def portfolio_attestation(book: BookState, series: Mapping[int, dict], spots: Mapping[str, float],
                          smiles: Mapping[str, SmileFn], haircuts: Mapping[str, float], settings: EngineSettings,
                          sequence: int, timestamp: int, block_hash: bytes, fund: float = 0.0,
                          marks: Mapping[int, float] | None = None) -> Attestation:
    """The inputs document of ``book`` over every underlying and its leaves (the keepers' :func:`risk_run`), with the
    solvency index of the book (``fund`` in whole quote units).

    ``spots``: every risky asset's spot by address (whole quote units); ``smiles``: the smile of every asset a series
    is written on, by address. The underlyings of the document are the risky collateral assets in ``book.assets``
    order (then any series underlying not listed as collateral); each series names its own, is priced at that
    underlying's spot on its smile, and each collateral asset moves with its own. ``marks``: series id -> a mark
    override (a hybrid mark), the model value otherwise."""
    sids = [int(s) for s in book.series_ids]
    unders = [to_checksum_address(a) for a in book.assets]
    for sid in sids:
        u = to_checksum_address(series[sid]["underlying"])
        if u not in unders:
            unders.append(u)
    und_idx = {u.lower(): i for i, u in enumerate(unders)}
    spot_wad = [to_wad(spots[next(a for a in spots if a.lower() == u.lower())]) for u in unders]
    smile_of = {a.lower(): f for a, f in smiles.items()}
    strike = np.array([series[s]["strike"] for s in sids], float)
    t = np.array([max(series[s]["expiry"] - timestamp, 0) / SECONDS_PER_YEAR for s in sids], float)
    is_call = np.array([series[s]["is_call"] for s in sids], bool)
    u_of = [und_idx[str(series[s]["underlying"]).lower()] for s in sids]
    fwd = np.array([spot_wad[u] / WAD for u in u_of], float)
    vols = np.zeros(len(sids))
    for u, addr in enumerate(unders):
        sel = np.array([x == u for x in u_of], bool)
        if sel.any():
            vols[sel] = np.asarray(smile_of[addr.lower()](strike[sel], np.maximum(t[sel], 1e-9), fwd[sel]), float)
    model = black76_price(fwd, strike, t, vols, is_call) if sids else np.zeros(0)
    mk = np.array([float(marks[s]) if marks and s in marks else float(m) for s, m in zip(sids, model)])
    dec = book.decimals or {}
    accounts = accounts_document(book, sids)
    doc = build_document(
        block=BlockRef(int(sequence), "0x" + bytes(block_hash).hex(), int(timestamp)),
        mc_seed=seed_from_block_hash(block_hash),
        underlyings=[{"asset": u, "spot_wad": w, "surface": None} for u, w in zip(unders, spot_wad)],
        series=[{"id": s, "underlying": u, "strike": str(to_wad(series[s]["strike"])),
                 "expiry": int(series[s]["expiry"]), "is_call": bool(series[s]["is_call"])} for s, u in zip(sids, u_of)],
        vols=vols, marks=mk,
        collateral_assets=[{"asset": to_checksum_address(x), "decimals": int(dec.get(x, 18)),
                            "haircut": str(to_wad(haircuts[x])), "underlying": und_idx[x.lower()], "price": "0"}
                           for x in book.assets],
        accounts=accounts, quote_decimals=settings.quote_decimals, risk=risk_document(settings))
    run = risk_run(doc)
    solvency = solvency_from_run(run, float(fund))
    blob = canonical_inputs(doc)
    return Attestation(run.leaves, MerkleTree([x.hash() for x in run.leaves]), keccak(blob), blob, int(sequence),
                       int(timestamp), {s: float(p) for s, p in zip(sids, model)},
                       {s: float(v) for s, v in zip(sids, vols)},
                       eip712.solvency_index_tuple(solvency, settings.quote_decimals), solvency)


class InlineKeepers:
    """Signs and posts prices and margin batches with the keepers' keys (M of them per attestation)."""

    def __init__(self, w3, ch, keeper_keys: Sequence[str], threshold: int, sender, archive=None):
        self.w3 = w3
        self.ch = ch
        self.keys = list(keeper_keys)
        self.threshold = threshold
        self.sender = sender
        self.archive = archive
        self.price_sequence = 0
        self.margin_sequence = 0

    def _signers(self) -> list[str]:
        return self.keys[: self.threshold]

    def sync_sequences(self) -> None:
        """Continue after the last sequences on chain."""
        try:
            self.margin_sequence = int(self.ch.functions.lastMarginAttestation().call()[0])
            self.price_sequence = int(self.ch.functions.lastPriceAttestation().call()[0])
        except Exception:  # noqa: BLE001 - older ABI without these views: keep local counters
            pass

    def post_prices(self, spots: Mapping[str, float], timestamp: int):
        """Post ``spots`` (whole quote units per whole asset unit) as WAD prices."""

        self.price_sequence += 1
        assets = [to_checksum_address(a) for a in spots]
        prices = [to_wad(round(spots[a], 6)) for a in spots]
        sh = prices_struct_hash(assets, prices, self.price_sequence, timestamp)
        digest = bytes(self.ch.functions.hashTypedData(sh).call())
        sigs = sign_digest_sorted(digest, self._signers())
        return self.sender.call(self.ch.functions.postPrices(assets, prices, self.price_sequence, timestamp, sigs),
                                "postPrices")

    def post_batch(self, att: Attestation):
        """Post a full batch (every leaf recorded, breaches registered by the contract)."""
        sh = margin_root_struct_hash(att.tree.root, att.inputs_hash, att.sequence, att.timestamp, len(att.leaves),
                                     att.solvency_hash)
        digest = bytes(self.ch.functions.hashTypedData(sh).call())
        sigs = sign_digest_sorted(digest, self._signers())
        ordered = sorted(att.leaves, key=lambda x: x.hash())
        flags = [True] * (len(ordered) - 1)
        if self.archive is not None:
            self.archive.put_bytes(att.inputs_blob)
        return self.sender.call(self.ch.functions.postMarginBatch(att.header(), att.solvency_hash, att.solvency_struct,
                                                                  [x.as_tuple() for x in ordered], [], flags, sigs),
                                "postMarginBatch")

    def next_sequence(self) -> int:
        self.margin_sequence += 1
        return self.margin_sequence


class Attestor:
    """The keepers' work for the current block, done in this process (the set-up phase and ``--keepers inline``):
    prices of every listed asset, then every account's leaf over both underlyings in one batch
    (:func:`portfolio_attestation`), posted by :class:`InlineKeepers`. ``spot`` and ``vol`` are the first
    underlying's; the world derives the second's (:meth:`World.market`)."""

    def __init__(self, world: World, keepers: InlineKeepers, mc_paths: int):
        self.world = world
        self.keepers = keepers
        self.mc_paths = mc_paths

    def fund_balance(self) -> float:
        """The insurance fund's free balance in whole quote units (0 before the auction is deployed)."""
        w = self.world
        if getattr(w, "auction", None) is None:
            return 0.0
        return int(w.auction.functions.fundBalance().call()) / 10 ** int(w.dep.quote_decimals)

    def attest(self, spot: float, vol: float, marks: dict[int, float] | None = None, post_prices: bool = True,
               post: bool = True) -> Attestation:
        """Attest the current block (``post=False``: compute the leaves on the chain's book without posting
        anything, a preview for the set-up's deposits)."""
        w = self.world
        head = w.w3.eth.get_block("latest")
        ts = int(head["timestamp"])
        if post_prices and post:
            self.keepers.post_prices(w.spots(spot), ts)
        book = w.read_book()
        head = w.w3.eth.get_block("latest")
        smiles = {w.dep.tokens[sym]["address"]: smile_from(v) for sym, (_p, v) in w.market(spot, vol).items()}
        att = portfolio_attestation(book, w.series_map(), w.spots(spot), smiles, w.haircuts(),
                                    PortfolioSettings(mc_paths=self.mc_paths, quote_decimals=w.dep.quote_decimals),
                                    sequence=int(head["number"]), timestamp=int(head["timestamp"]),
                                    block_hash=bytes(head["hash"]), fund=self.fund_balance(), marks=marks)
        if post:
            self.keepers.post_batch(att)
        return att

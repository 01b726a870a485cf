"""Attestation for the scenario's set-up phase (and its ``--keepers inline`` mode): read the book from chain,
run the quant engine, build the margin leaves and Merkle tree, collect M keeper signatures and post.

The scenario needs attested prices and margin leaves before anyone can trade (short legs need a fresh spot, every
risk-adding leg a margin proof), i.e. before the keeper processes have anything to attest. This module does that
genesis work with the keepers' own keys and the keepers' engine (:func:`keeper.attest.engine.compute_attestation`:
a Monte Carlo tail set seeded from the block hash and a SPAN-like grid); the inputs document (the keepers' schema,
:data:`keeper.attest.leaves.SCHEMA`, priced from the scenario's smile rather than a fitted surface) is archived
under its hash (:class:`keeper.data.archive.InputsArchive`) so that ``backstop verify`` can recompute every number.

Digests are the contract's own ``hashTypedData(structHash)``; the struct hashes follow docs/contracts.md.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from eth_utils import to_checksum_address

from keeper.attest.engine import (
    Attestation,
    BookState,
    EngineSettings,
    MarketState,
    compute_attestation,
    smile_from,
)
from keeper.codec.eip712 import margin_root_struct_hash, prices_struct_hash
from keeper.ops.signing import sign_digest_sorted
from keeper.units import WAD, to_wad

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
    prices, then every account's leaf in one batch, computed by the keepers' engine and posted by
    :class:`InlineKeepers`."""

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

    def attest(self, spot: float, vol: float, marks: dict[int, float] | None = None, post_prices: bool = True
               ) -> Attestation:
        w = self.world
        head = w.w3.eth.get_block("latest")
        ts = int(head["timestamp"])
        if post_prices:
            self.keepers.post_prices(w.spots(spot), ts)
        book = w.read_book()
        head = w.w3.eth.get_block("latest")
        market = MarketState(w.spots(spot), smile_from(vol), int(head["timestamp"]), bytes(head["hash"]), marks)
        att = compute_attestation(book, w.series_map(), market, w.haircuts(), w.dep.underlying,
                                  EngineSettings(mc_paths=self.mc_paths, quote_decimals=w.dep.quote_decimals),
                                  sequence=int(head["number"]), timestamp=int(head["timestamp"]),
                                  fund=self.fund_balance())
        self.keepers.post_batch(att)
        return att

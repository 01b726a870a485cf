"""Attestation for the scenario's set-up phase (and its ``--keepers inline`` mode): read the book from chain,
run the quant engine, build the margin leaves and Merkle tree, collect M keeper signatures and post.

The scenario needs attested prices and margin leaves before anyone can trade (short legs need a fresh spot, every
risk-adding leg a margin proof), i.e. before the keeper processes have anything to attest. This module does that
genesis work with the keepers' own keys and the same engine the keepers run (:mod:`keeper.quant.risk.engine` with a Monte
Carlo tail set seeded from the block hash and a SPAN-like grid); the inputs are archived under their hash
(:class:`keeper.data.archive.InputsArchive`) so that ``backstop verify`` can recompute every number. The archive
document (``kind: "backstop-scenario-inputs/1"``) holds the risk inputs of :func:`keeper.quant.risk.engine.serialize_risk_inputs`
plus the accounts, their state nonces and quote cash, and the scenario-set parameters.

Digests are the contract's own ``hashTypedData(structHash)``; the struct hashes follow docs/contracts.md.
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
from eth_account import Account
from eth_utils import to_checksum_address

from keeper.attest.engine import Attestation, BookState
from keeper.codec.eip712 import margin_root_struct_hash, prices_struct_hash
from keeper.units import WAD, to_wad

log = logging.getLogger("backstop.scenario.keepers")








def sign_digest_sorted(digest: bytes, keys: Sequence[str]) -> bytes:
    """Concatenated 65-byte ``r || s || v`` signatures of ``digest`` by ``keys``, signers strictly ascending."""

    sigs = []
    for k in keys:
        acct = Account.from_key(k)
        signed = acct.unsafe_sign_hash(digest)
        sigs.append((int(acct.address, 16), signed.signature))
    return b"".join(s for _, s in sorted(sigs))




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
    return BookState(list(accounts), list(series_ids), pos, list(assets), coll, cash, nonces)












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
        sh = margin_root_struct_hash(att.tree.root, att.inputs_hash, att.sequence, att.timestamp, len(att.leaves))
        digest = bytes(self.ch.functions.hashTypedData(sh).call())
        sigs = sign_digest_sorted(digest, self._signers())
        ordered = sorted(att.leaves, key=lambda x: x.hash())
        flags = [True] * (len(ordered) - 1)
        if self.archive is not None:
            self.archive.put_bytes(att.inputs_blob)
        return self.sender.call(self.ch.functions.postMarginBatch(att.header(), [x.as_tuple() for x in ordered], [],
                                                                  flags, sigs), "postMarginBatch")

    def next_sequence(self) -> int:
        self.margin_sequence += 1
        return self.margin_sequence





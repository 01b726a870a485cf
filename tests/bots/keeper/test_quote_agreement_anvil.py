"""Keepers agreeing on one quote set per block (issue 15 item 6), three keeper bots on Anvil with real HTTP.

Two keepers read the venue "a moment later" than the third (their quotes moved by up to 0.3 of a spread, one spot
0.05 % off): on their own reads they would fit different surfaces, yet with the agreement step all three archive the
proposer's quotes and sign one root. Then one keeper fabricates one quote: when it proposes, the two honest keepers
refuse its set and sign the fallback document, identical to each other; the fabricated quote never enters an honest
keeper's archive; when an honest keeper proposes, the fabricator refuses and the honest pair still has its quorum.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import harness as h
from keeper.data.feed import BlockRef
from keeper.exchange.book import rotation_order
from keeper.ops.config import parse_config
from keeper.quant.risk.engine import from_canonical


@pytest.fixture
def net(tmp_path):
    n = h.start_net(tmp_path)
    h.setup_book(n)
    yield n
    n.chain.stop()


class ViewOf:
    """A keeper's read of the venue: the real source's, moved as a later read would be (``seed``), or with one
    fabricated quote (``fabricate``: a tight quote at that multiple of the mid on the row nearest the money)."""

    def __init__(self, data, seed=None, spot_shift=0.0, fabricate=None):
        self.data, self.seed, self.spot_shift, self.fabricate = data, seed, spot_shift, fabricate
        self.fabricated_row = None

    def __getattr__(self, name):
        return getattr(self.data, name)

    def spot(self, block):
        agg, skips = self.data.spot(block)
        if self.spot_shift and hasattr(agg, "price"):
            agg = dataclasses.replace(agg, price=agg.price * (1 + self.spot_shift))
        return agg, skips

    def chain(self, block, spot, **kw):
        c = self.data.chain(block, spot / (1 + self.spot_shift), **kw)  # the venue lists the same strikes for everyone
        if not hasattr(c, "bid"):
            return c
        bid, ask = np.array(c.bid), np.array(c.ask)
        two = np.isfinite(bid) & np.isfinite(ask) & (bid > 0)
        if self.seed is not None:
            rng = np.random.default_rng([self.seed, block.number])
            shift = np.where(two, rng.uniform(-0.3, 0.3, len(c)) * (ask - bid), 0.0)
            bid, ask = np.where(two, np.maximum(bid + shift, 0.0), bid), np.where(two, ask + shift, ask)
        if self.fabricate is not None:
            idx = np.flatnonzero(two)
            i = int(idx[np.argmin(np.abs(np.log(c.strike[idx] / c.forward[idx])))])
            mid, half = 0.5 * (bid[i] + ask[i]), 0.5 * (ask[i] - bid[i])
            bid[i], ask[i] = self.fabricate * mid - 0.1 * half, self.fabricate * mid + 0.1 * half
            self.fabricated_row = (int(c.expiry_ts[i]), float(c.strike[i]), bool(c.is_call[i]), float(bid[i]))
        return dataclasses.replace(c, bid=bid, ask=ask)


def _keepers(net, tmp_path, views):
    spot = tmp_path / "spot.json"
    h.write_spot(spot, 2000.0)
    ports = h.free_ports(3)
    ks = []
    for i in range(3):
        cfg = h.keeper_config(net, i, ports, spot).model_dump(mode="json")
        cfg["exchange"].update({"quote_agreement": True, "agreement_wait_s": 15.0})
        k = h.KeeperThread(net, i, parse_config(cfg))
        if views.get(i):
            feed = k.bot.feeds[0]
            feed.data = views[i](feed.data)
        ks.append(k)
    return ks


def _doc(k, block):
    att = k.bot.view.attestation(block)
    if not att:
        return None
    return from_canonical(json.loads(k.bot.archive.get(att["header"]["inputsHash"])))


def _proposer(ks, block):
    return rotation_order(block, [k.bot.me for k in ks])[0].lower()


def _quotes_have(doc, row):
    """Whether the archived quotes hold the fabricated quote (expiry, strike, call, bid)."""
    q = doc["underlyings"][0].get("quotes") or {}
    return any((int(e), float(k), bool(c), b) == row
               for e, k, c, b in zip(q.get("expiry_ts", []), q.get("strike", []), q.get("is_call", []), q.get("bid", [])))


def _rejections(k):
    return k.bot.metrics.skipped_inputs.labels(reason="quote_set_rejected")._value.get()


def test_keepers_with_slightly_different_reads_sign_one_root(net, tmp_path):
    ks = _keepers(net, tmp_path, {1: lambda d: ViewOf(d, seed=1, spot_shift=0.0005),
                                  2: lambda d: ViewOf(d, seed=2)})
    try:
        blocks = []
        for _ in range(3):  # three blocks: each keeper proposes once
            b = net.mine()
            assert h.wait_for(lambda: all(k.bot.view.attestation(b) for k in ks), 90), "keepers did not attest"
            blocks.append(b)
        assert {_proposer(ks, b) for b in blocks} == {k.bot.me.lower() for k in ks}
        for b in blocks:
            roots = {k.bot.view.attestation(b)["root"] for k in ks}
            assert len(roots) == 1, f"block {b}: keepers signed different roots {roots}"
            docs = [_doc(k, b) for k in ks]
            assert all("fallback" not in d["underlyings"][0] for d in docs)
            # every keeper archived the proposer's quotes, not its own read
            prop = next(k for k in ks if k.bot.me.lower() == _proposer(ks, b))
            published = prop.bot.view.quote_set(b, ks[0].bot.feeds[0].asset)
            assert published is not None
            assert all(d["underlyings"][0]["quotes"]["bid"] == docs[0]["underlyings"][0]["quotes"]["bid"] for d in docs)
        # the reads really differed: keeper 1's own chain of a block keeper 0 proposed is not the one it archived
        b = next(b for b in blocks if _proposer(ks, b) == ks[0].bot.me.lower())
        blk = net.w3.eth.get_block(b)
        ref = BlockRef(b, blk["hash"].hex(), int(blk["timestamp"]))
        own = ks[1].bot.feeds[0].data.chain(ref, 2000.0, listed=ks[1].bot.markets.listed(ks[1].bot.feeds[0], ref))
        archived = _doc(ks[1], b)["underlyings"][0]["quotes"]["bid"]
        assert [None if not np.isfinite(x) else float(x) for x in own.bid] != archived
        assert _rejections(ks[0]) == _rejections(ks[1]) == _rejections(ks[2]) == 0
    finally:
        for k in ks:
            k.stop()


def test_a_fabricated_quote_set_is_refused_and_the_honest_pair_keeps_its_quorum(net, tmp_path):
    ks = _keepers(net, tmp_path, {2: lambda d: ViewOf(d, fabricate=3.0)})
    liar = ks[2]
    try:
        seen = {"liar": 0, "honest": 0}
        for _ in range(5):
            b = net.mine()
            liar_proposes = _proposer(ks, b) == liar.bot.me.lower()
            if liar_proposes:  # the honest keepers refuse its set: they sign nothing built on it
                assert h.wait_for(lambda: all(_rejections(k) > seen["liar"] for k in ks[:2]), 90), "not refused"
                seen["liar"] += 1
                for k in ks[:2]:
                    d = _doc(k, b)
                    assert d is None or d["underlyings"][0].get("fallback", {}).get("reason") == "quote_set_rejected"
            else:  # an honest proposer: the honest pair signs one root, the liar refuses the honest set
                assert h.wait_for(lambda: all(k.bot.view.attestation(b) for k in ks[:2]), 90), "honest pair silent"
                seen["honest"] += 1
                assert ks[0].bot.view.attestation(b)["root"] == ks[1].bot.view.attestation(b)["root"]
                assert "fallback" not in _doc(ks[0], b)["underlyings"][0]
                assert h.wait_for(lambda: (liar.bot.last_block or 0) >= b, 60)
                att = liar.bot.view.attestation(b)
                assert att is None or att["root"] != ks[0].bot.view.attestation(b)["root"]
            row = liar.bot.feeds[0].data.fabricated_row
            for k in ks[:2]:  # the fabricated quote is in no document an honest keeper archived
                for f in k.bot.archive.directory.glob("*.json"):
                    assert not _quotes_have(from_canonical(json.loads(f.read_bytes())), row)
        assert seen["liar"] >= 1 and seen["honest"] >= 2
    finally:
        for k in ks:
            k.stop()

"""The previous attested surface as the fit's prior (issue 15, item 1) and the one fallback rule for rejected market
data (issue 15, item 4; docs/keeper.md "Fallback"), on the keepers' real path: three keepers as threads on a private
Anvil with the real contracts, WETH and WBTC each with its own sources, WBTC's option chain drawn from a market file
that the test rewrites.

Second computations: the attested surface refitted from the keeper's own chain source and the previous archived
document's surface (hash equality); the refused surface's own arbitrage report; the margins recomputed from the
archived document with and without its fallback flag."""
import json
import math

import pytest
from eth_account import Account

import harness as h
from test_multi_asset import BTC0, _book, _deploy_cfg, _series

WAD = 10**18
GOOD = {"atm_vol": 0.5, "skew": -0.1, "curvature": 0.3}
# the repair leaves butterfly arbitrage in the cold fit of this smile: 149 of 150 chains drawn at random blocks and
# times (0.3/-8/10, used before, left it in only 60 % of them: five blocks in a row could all pass)
ARBITRAGEABLE = {"atm_vol": 0.2, "skew": -10.0, "curvature": 15.0}

pytestmark = pytest.mark.chain


@pytest.fixture
def net(tmp_path):
    n = h.start_net(tmp_path, deploy_cfg=_deploy_cfg())
    yield n
    n.chain.stop()


def _write(path, data):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _doc(ks, inputs_hash):
    from keeper.quant.risk.engine import from_canonical

    for k in ks:
        blob = k.bot.archive.get(inputs_hash)
        if blob:
            return from_canonical(json.loads(blob))
    return None


def _entry(doc, asset):
    """The asset's underlying entry, or {} when the document left it out (under load a keeper can miss the previous
    document in a block and then has no fallback to use: the asset's holders are left out of that block)."""
    return next((u for u in doc["underlyings"] if u["asset"].lower() == asset.lower()), {})


def _root_after(net, block, timeout=120):
    """Sequence and inputs hash of the first margin root posted with sequence >= block."""
    def got():
        ev = [e for e in net.ch.events.MarginRootPosted().get_logs(from_block=block)
              if int(e["args"]["sequence"]) >= block]
        return ev and ev[0]
    e = h.wait_for(got, timeout)
    assert e, "no margin root reached the chain"
    return int(e["args"]["sequence"]), "0x" + bytes(e["args"]["inputsHash"]).hex()


def _attested(ks, n, timeout=90):
    """The first block >= n that a keeper attested, and that attestation (a keeper skips a block when a
    submission's own block arrived before it ran the cycle)."""
    def first():
        got = [(m, a) for k in ks for m, a in list(k.bot.attestations.items()) if m >= n]
        return min(got, key=lambda x: x[0]) if got else None
    hit = h.wait_for(first, timeout)
    assert hit, f"no block from {n} on attested"
    return hit


def _atm_vol(surface, t_days=30.0):
    t = t_days / 365.0
    f = float(surface.forward(t))
    return float(surface.implied_vol(f, t, f))


def test_prior_fallback_on_an_arbitrageable_surface_and_its_limit(net, tmp_path):
    from keeper.attest.leaves import leaves_from_inputs, recompute_from_archive
    from keeper.data.feed import BlockRef
    from keeper.quant.surface import VolSurface, fit_surface

    weth, wbtc = net.res.underlying, net.res.tokens["WBTC"]["address"]
    eth_call, btc_put = _series(net, weth, True), _series(net, wbtc, False)
    keys, addr, proofs = _book(net)
    fkey = net.keys[7]  # F: an ETH call only
    h.fund(net, fkey, net.res.quote_asset, 20_000 * 10**6)
    addr["F"] = Account.from_key(fkey).address
    keys["F"] = fkey
    h.post_asset_prices(net, {weth: 2000.0, wbtc: BTC0}, 1)
    seq = 2
    for n, (taker, sid, px) in enumerate([("E", btc_put["id"], 1500.0), ("F", eth_call["id"], 140.0)]):
        proofs = h.margin_batch(net, {a: int(net.ch.functions.cashOf(a).call()) + (36_000 * 10**6 if a == addr["D"]
                                                                                   else 0) for a in addr.values()}, seq)
        seq += 1
        h.trade(net, keys["C"], keys[taker], sid, -1.0, px, n + 1, proofs[addr["C"]], proofs[addr[taker]])

    eth, btc, market = tmp_path / "eth.json", tmp_path / "btc.json", tmp_path / "btc-market.json"
    h.write_spot(eth, 2000.0)
    h.write_spot(btc, BTC0)
    _write(market, GOOD)
    sim = {"seed": 12, "spot0": BTC0, "jump_intensity": 0.0, "expiries_days": [14, 30, 60]}
    assets = {"WETH": {"spot_sources": [{"name": "eth", "kind": "file", "path": str(eth)}],
                       "chain": {"kind": "simulated"}},
              "WBTC": {"spot_sources": [{"name": "btc", "kind": "file", "path": str(btc)}],
                       "chain": {"kind": "market_file", "path": str(market)}, "simulated": sim}}
    ports = h.free_ports(3)
    ks = [h.KeeperThread(net, i, h.multi_asset_config(net, i, ports, assets, fallback_blocks=3)) for i in range(3)]
    try:
        # -- 1. the prior: vol quadruples in the market file; the next attested surface moves by the bounded step
        s1, h1 = _root_after(net, net.mine())
        d1 = _doc(ks, h1)
        _write(market, dict(GOOD, atm_vol=2.0))
        s2, h2 = _root_after(net, net.mine())
        d2 = _doc(ks, h2)
        prior = VolSurface.from_canonical(_entry(d1, wbtc)["surface"])
        attested = VolSurface.from_canonical(_entry(d2, wbtc)["surface"])
        feed = next(f for f in ks[0].bot.feeds if f.asset == wbtc)
        blk = BlockRef(d2["block"]["number"], d2["block"]["hash"], d2["block"]["timestamp"])
        chain = feed.data.chain(blk, int(_entry(d2, wbtc)["spot_wad"]) / WAD,
                                listed=ks[0].bot.markets.listed(feed, blk))
        assert fit_surface(chain, prior=prior).hash() == attested.hash()  # every keeper refits the same
        cold = fit_surface(chain)
        assert _atm_vol(cold) == pytest.approx(2.0, rel=0.05)
        elapsed = d2["block"]["timestamp"] - d1["block"]["timestamp"]
        cap = math.log(2.0) * max(elapsed, 12.0) / 60.0
        assert cap < math.log(3.0)  # the test's move is beyond what this elapsed time lets through
        assert _atm_vol(attested) <= _atm_vol(prior) * math.exp(cap) * 1.02 < 0.8 * _atm_vol(cold)

        # -- 2. an arbitrageable chain: the refused surface is never signed; the last attested one is, flagged
        # With the previous surface as prior the fit of this chain stays arbitrage-free (the prior's gate and the
        # repair of the gated target absorb it); a keeper without a prior (cold start: no previous document, or a
        # previous fallback) fits it freely, and the repair then leaves butterfly arbitrage in almost every block. The
        # bots' fit hook reproduces that cold fit (the shipped fit_surface, no prior) on every keeper.
        _write(market, ARBITRAGEABLE)
        for k in ks:
            k.bot.markets.fit = lambda chain: fit_surface(chain)
        found, tried = None, []
        for _ in range(5):
            n, att = _attested(ks, net.mine())
            doc = _doc(ks, att.inputs_hash)
            tried.append((n, [k.i for k in ks if k.bot.attestations.get(n)],
                          [u.get("fallback") for u in doc["underlyings"]]))
            if _entry(doc, wbtc).get("fallback"):
                found = (n, att, doc)
                break
        assert found, f"no block priced WBTC on its fallback: {tried}"
        n, att, doc = found
        fb = _entry(doc, wbtc)["fallback"]
        src = fb["source_block"]
        last_root = max((e for e in net.ch.events.MarginRootPosted().get_logs(from_block=0)
                         if int(e["blockNumber"]) <= n), key=lambda e: int(e["args"]["sequence"]))  # as of head n
        # the data reused is that of the document the last root on chain names (if that one was itself a fallback,
        # the block its data came from carries over)
        src_doc = _doc(ks, "0x" + bytes(last_root["args"]["inputsHash"]).hex())
        src_fb = _entry(src_doc, wbtc).get("fallback")
        want = src_fb["source_block"] if src_fb else int(last_root["args"]["sequence"])
        assert src == want and n - src <= 3
        assert fb == {"reason": "surface_arbitrage", "since_block": src_fb["since_block"] if src_fb else src + 1,
                      "source_block": src, "shock_widening": 0.5}
        assert _entry(doc, wbtc)["surface"] == _entry(src_doc, wbtc)["surface"]
        blk = BlockRef(doc["block"]["number"], doc["block"]["hash"], doc["block"]["timestamp"])
        refused = fit_surface(feed.data.chain(blk, int(_entry(doc, wbtc)["spot_wad"]) / WAD,
                                              listed=ks[0].bot.markets.listed(feed, blk)))
        arb = refused.fit_report["arbitrage"]
        assert not (arb["butterfly_ok"] and arb["calendar_ok"])  # what the keepers refused to sign
        assert refused.hash() != VolSurface.from_canonical(_entry(doc, wbtc)["surface"]).hash()
        assert sum(k.bot.metrics.skipped_inputs.labels(reason="surface_arbitrage")._value.get() for k in ks) >= 1
        assert "fallback" not in _entry(doc, weth)  # ETH priced on its own fresh data
        # the flag is in the signed document: the root recomputes from it, and the widening raises E's margin
        root, leaves = recompute_from_archive(next(b for k in ks if (b := k.bot.archive.get(att.inputs_hash))))
        assert "0x" + root.hex() == att.root
        e_with = next(l for l in leaves if l.account == addr["E"])
        plain = json.loads(json.dumps(doc))
        del _entry(plain, wbtc)["fallback"]
        e_plain = next(l for l in leaves_from_inputs(plain)[0] if l.account == addr["E"])
        assert e_with.maintenance > e_plain.maintenance and e_with.equity == e_plain.equity

        # -- 3. the whole asset rejected (WBTC's only spot source unusable): the same rule, then its holders left out
        for k in ks:
            k.bot.markets.fit = None
        _write(market, GOOD)
        n0 = net.mine()
        sg, hg = _root_after(net, n0)
        good = _doc(ks, hg)
        if _entry(good, wbtc).get("fallback"):  # the repair can pass on this chain once in a while: one more root
            sg, hg = _root_after(net, net.mine())
            good = _doc(ks, hg)
        assert not _entry(good, wbtc).get("fallback")
        btc.write_text('{"price": "NaN"}')
        seen = {}
        for _ in range(8):
            n, att = _attested(ks, net.mine())
            doc = _doc(ks, att.inputs_hash)
            seen[n] = (att, doc)
            if addr["E"] not in {l.account for l in att.leaves}:
                break
        fallbacks = [(n, d) for n, (a, d) in seen.items() if any(u["asset"] == wbtc and u.get("fallback")
                                                                  for u in d["underlyings"])]
        assert fallbacks, "the rejected spot was not covered by the fallback"
        for n, d in fallbacks:
            fbk = _entry(d, wbtc)["fallback"]
            assert fbk["reason"] == "too_few_sources" and n - fbk["source_block"] <= 3
            assert int(_entry(d, wbtc)["spot_wad"]) == int(_entry(good, wbtc)["spot_wad"])  # the last attested spot
        last_n, (last_att, last_doc) = max(seen.items())
        left = {l.account for l in last_att.leaves}
        assert addr["E"] not in left and addr["D"] not in left and addr["C"] not in left  # BTC holders left out
        assert addr["F"] in left  # ... and the ETH-only account is still attested in the root
        assert wbtc not in {u["asset"] for u in last_doc["underlyings"]}
        assert sum(k.bot.metrics.skipped_inputs.labels(reason="market_data_rejected")._value.get() for k in ks) >= 1
        # no price attestation re-signs a reused WBTC spot
        for e in net.ch.events.PricesPosted().get_logs(from_block=min(seen)):
            assert wbtc not in e["args"]["assets"]
    finally:
        for k in ks:
            k.stop()

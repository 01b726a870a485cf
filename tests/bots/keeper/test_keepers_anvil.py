"""Three keepers (M = 2) as threads with real HTTP between them, on a private Anvil with the real contracts.

Each test deploys afresh (keeper.chain.local on a free port), opens a small book (A healthy, B thin short puts,
C counterparty), starts the keepers and mines blocks explicitly."""
import json
import time
from pathlib import Path

import numpy as np
import pytest
from eth_account import Account

import harness as h

from keeper.verify.liquidation import settlement_evidence
from keeper.verify.settlement import posted_price_findings, settlement_findings

WAD = 10**18

pytestmark = pytest.mark.chain


@pytest.fixture
def net(tmp_path):
    n = h.start_net(tmp_path)
    h.setup_book(n)
    yield n
    n.chain.stop()


def _start(net, tmp_path, n=3, fabricate=None, rpc_urls=None, price_deviation=0.5, spot_price=2000.0,
           root_every=1_000_000):
    spot = tmp_path / "spot.json"
    h.write_spot(spot, spot_price)
    ports = h.free_ports(3)
    ks = []
    for i in range(n):
        cfg = h.keeper_config(net, i, ports, spot, rpc_url=(rpc_urls or {}).get(i), price_deviation=price_deviation,
                              root_every=root_every)
        ks.append(h.KeeperThread(net, i, cfg, fabricate=(fabricate or {}).get(i)))
    return spot, ks


def _stop(ks):
    for k in ks:
        k.stop()


def _root(k, block):
    att = k.bot.view.attestation(block)
    return att["root"] if att else None


def _breached(net, name):
    return bool(net.ch.functions.isBreached(net.users[name]).call())


def test_price_shock_breach_registered_within_two_blocks(net, tmp_path):
    spot, ks = _start(net, tmp_path, price_deviation=0.1)
    try:
        quiet = []
        for _ in range(3):
            b = net.mine()
            assert h.wait_for(lambda: all(_root(k, b) for k in ks), 20), "keepers did not attest the block"
            quiet.append(b)
        # same inputs, same root: all three keepers agree on every block
        for b in quiet:
            assert len({_root(k, b) for k in ks}) == 1
        assert not any(_breached(net, x) for x in "ABC")  # healthy accounts are never registered
        seq_before = int(net.ch.functions.lastMarginAttestation().call()[0])
        h.write_spot(spot, 1300.0)
        shock = net.mine()
        assert h.wait_for(lambda: _breached(net, "B"), 20), "breach not registered"
        rec = net.ch.functions.breachOf(net.users["B"]).call()
        ev = net.ch.events.AccountBreached().get_logs(from_block=shock)
        assert len(ev) == 1 and ev[0]["args"]["account"] == net.users["B"]
        assert ev[0]["blockNumber"] - shock <= 2
        assert int(net.ch.functions.lastMarginAttestation().call()[0]) == shock > seq_before
        # the registered numbers are the keepers' leaf for B, and B's equity is below its maintenance margin
        leaf = next(l for l in ks[0].bot.attestations[shock].leaves if l.account == net.users["B"])
        assert int(rec[0]) == leaf.equity < int(rec[1]) == leaf.maintenance
        assert not _breached(net, "A") and not _breached(net, "C")
        # the same root is not submitted twice: one MarginRootPosted for the shock block
        posted = net.ch.events.MarginRootPosted().get_logs(from_block=shock)
        assert [int(e["args"]["sequence"]) for e in posted] == [shock]
        # the submitter started B's liquidation auction (and is its starter)
        from keeper.chain.deployment import load_abi

        auction = net.w3.eth.contract(address=net.res.auction, abi=load_abi("auction"))
        started = auction.events.AuctionStarted().get_logs(from_block=shock)
        assert [e["args"]["account"] for e in started] == [net.users["B"]]
        assert started[0]["args"]["starter"] in {Account.from_key(k).address for k in net.keeper_keys}
        # the 35 % move exceeds price_deviation: the quantized spot was posted, signed by two keepers
        assert h.wait_for(lambda: int(net.ch.functions.spotPrice(net.res.underlying).call()[0]) == 1300 * WAD, 20)
        pp = net.ch.events.PricesPosted().get_logs(from_block=shock)
        assert [int(e["args"]["sequence"]) for e in pp] == [shock]
        # anyone can recompute the attested root from the archive served over HTTP
        from keeper.exchange.client import PeerClient
        from keeper.attest.leaves import recompute_from_archive

        blob = PeerClient("k1", ks[1].server.url).archive(ev[0]["args"]["inputsHash"].hex())
        root, leaves = recompute_from_archive(blob)
        assert "0x" + root.hex() == _root(ks[0], shock) == "0x" + bytes(ev[0]["args"]["root"]).hex()
        # an account owner fetches its leaf and branch over HTTP and records it on chain with them
        assert h.wait_for(lambda: ks[2].bot.view.snapshot().get("last_margin_sequence") == shock, 10)
        m = PeerClient("k2", ks[2].server.url).margin(net.users["A"])
        assert m["header"]["sequence"] == shock and m["values"]["equity"] > m["values"]["maintenance"]
        hd, lf = m["header"], m["leaf"]
        proof = ((bytes.fromhex(hd["inputsHash"][2:]), hd["sequence"], hd["timestamp"], hd["leafCount"]),
                 (lf["account"], lf["stateNonce"], lf["equity"], lf["maintenance"], lf["initial"], lf["modelValue"]),
                 [bytes.fromhex(x[2:]) for x in m["proof"]])
        from keeper.chain.sender import Sender

        Sender(net.w3, net.keys[4]).call(net.ch.functions.recordMargin(proof), "recordMargin")
        rec = net.ch.functions.marginRecord(net.users["A"]).call()
        assert int(rec[0]) == lf["equity"] and int(rec[1]) == lf["maintenance"]
        # restart every keeper: fresh processes state, same chain; nothing already on chain is sent again
        _stop(ks)
        ks = []
        n_roots = len(net.ch.events.MarginRootPosted().get_logs(from_block=0))
        ports = h.free_ports(3)
        ks = [h.KeeperThread(net, i, h.keeper_config(net, i, ports, spot, price_deviation=0.1)) for i in range(3)]
        for _ in range(2):
            b = net.mine()
            assert h.wait_for(lambda: all(_root(k, b) for k in ks), 60)  # restarted keepers rebuild their state first
            assert any(l.breached for l in ks[0].bot.attestations[b].leaves)  # B is still under water
        time.sleep(1.0)
        assert len(net.ch.events.MarginRootPosted().get_logs(from_block=0)) == n_roots
        assert len(net.ch.events.AccountBreached().get_logs(from_block=0)) == 1
    finally:
        _stop(ks)


def test_one_keeper_killed_the_other_two_still_register(net, tmp_path):
    spot, ks = _start(net, tmp_path)
    try:
        b = net.mine()
        assert h.wait_for(lambda: all(_root(k, b) for k in ks), 20)
        # kill the keeper that the rotation designates for the shock block
        from keeper.exchange.book import rotation_order

        shock_block = int(net.w3.eth.block_number) + 2  # one quiet block, then the shock
        addrs = [Account.from_key(k).address for k in net.keeper_keys]
        victim = addrs.index(rotation_order(shock_block, addrs)[0])
        ks[victim].stop()
        alive = [k for i, k in enumerate(ks) if i != victim]
        b = net.mine()
        assert h.wait_for(lambda: all(_root(k, b) for k in alive), 20)
        h.write_spot(spot, 1300.0)
        shock = net.mine()
        assert shock == shock_block  # the dead keeper was the designated submitter of the shock block
        assert h.wait_for(lambda: _breached(net, "B"), 20)
        ev = net.ch.events.AccountBreached().get_logs(from_block=shock)
        assert ev and ev[0]["blockNumber"] - shock <= 2
        assert not _breached(net, "A")
    finally:
        _stop(k for i, k in enumerate(ks) if k.thread.is_alive())


def test_fabricated_breach_from_one_keeper_changes_nothing(net, tmp_path):
    import io
    import json

    from keeper.ops.logging import configure_logging

    buf = io.StringIO()
    configure_logging("INFO", stream=buf)
    a = net.users["A"]
    spot, ks = _start(net, tmp_path, fabricate={0: [a]})
    try:
        seq0 = int(net.ch.functions.lastMarginAttestation().call()[0])
        blocks = []
        for _ in range(3):
            b = net.mine()
            assert h.wait_for(lambda: all(_root(k, b) for k in ks), 20)
            blocks.append(b)
        time.sleep(1.0)  # a few exchange rounds
        for b in blocks:
            assert _root(ks[0], b) != _root(ks[1], b) == _root(ks[2], b)
        assert not _breached(net, "A")
        assert int(net.ch.functions.lastMarginAttestation().call()[0]) == seq0  # nothing submitted
        assert net.ch.events.AccountBreached().get_logs(from_block=blocks[0]) == []
        # the honest keepers saw the disagreement and know which leaf differs
        assert ks[1].bot.metrics.disagreements._value.get() >= 1
        seen = [json.loads(line) for line in buf.getvalue().splitlines()
                if '"keepers_disagree"' in line and '"k1"' in line]
        assert seen, "no keepers_disagree line from an honest keeper"
        diff = next(r["leaf_diff"] for r in seen if r.get("leaf_diff"))
        fields = {(acct, f) for acct, f, _mine, _theirs in diff["differ"]}
        assert fields == {(a.lower(), "equity")}  # the liar wrote equity -1 for A: that field, and only it, differs
        # the liar cannot reach the quorum with its own signature only
        att = ks[0].bot.attestations[blocks[-1]]
        d = ks[0].bot.codec.digest("margin", att.message())
        assert ks[0].bot.book.count("margin", blocks[-1], d) == 1
    finally:
        _stop(ks)


def test_rpc_down_and_back(net, tmp_path):
    port = int(net.chain.url.rsplit(":", 1)[1])
    proxy = h.TcpProxy(port).start()
    url = f"http://127.0.0.1:{proxy.port}"
    spot, ks = _start(net, tmp_path, rpc_urls={0: url, 1: url, 2: url})
    try:
        b = net.mine()
        assert h.wait_for(lambda: all(_root(k, b) for k in ks), 20)
        proxy.stop()
        for _ in range(3):
            net.mine()
        assert h.wait_for(lambda: all(k.bot.view.snapshot().get("rpc") == "down" for k in ks), 20)
        time.sleep(0.5)
        assert all(k.thread.is_alive() for k in ks)  # no crash
        h.write_spot(spot, 1300.0)
        shock = net.mine()  # mined while the keepers cannot see the chain
        proxy.start()
        # resumes at the latest block (skipping the ones it missed) and registers the breach
        assert h.wait_for(lambda: _breached(net, "B"), 30)
        assert all(k.bot.last_block is not None and k.bot.last_block >= shock for k in ks)
        assert all(shock - 1 not in k.bot.attestations for k in ks)
        assert ks[0].bot.metrics.rpc_errors._value.get() > 0
    finally:
        _stop(ks)
        proxy.stop()


def _client(net, depth=64):
    from keeper.chain.client import ChainClient
    from keeper.chain.deployment import load_deployment
    from keeper.ops.config import parse_config

    cfg = parse_config({"chain": {"rpc_url": net.chain.url, "reorg_depth": depth}}).chain
    return ChainClient(net.w3, load_deployment(net.deployment_file), cfg)


def test_state_cache_is_incremental_and_matches_direct_reads(net):
    c = _client(net)
    c.sync(c.head())
    st = c.state
    assert set(net.users.values()) <= set(st.accounts)
    for name, a in net.users.items():
        snap = st.accounts[a]
        assert snap.cash == int(net.ch.functions.cashOf(a).call())
        assert snap.state_nonce == int(net.ch.functions.stateNonce(a).call())
        for sid in net.ch.functions.seriesOf(a).call():
            assert snap.positions.get(int(sid), 0) == int(net.ch.functions.positionOf(a, int(sid)).call())
    assert {s.series_id for s in st.series.values()} == {s["id"] for s in net.res.series}
    assert st.threshold == 2 and len(st.keepers) == 3
    # the on-chain price feed adapter reads the attested spot (posted at set-up: 2,000)
    from keeper.data.sources import BlockRef, OnChainSpotSource

    head = c.head()
    q = OnChainSpotSource("oc", lambda: c.spot_price(net.res.underlying), max_age_s=3600).spot(
        BlockRef(head.number, head.hash, head.timestamp))
    assert q.price == 2000.0
    # one new deposit: only that account is re-read on the next block
    from keeper.chain.sender import Sender

    usdc = net.w3.eth.contract(address=net.res.quote_asset, abi=h._erc20_abi())
    Sender(net.w3, net.keys[0]).call(usdc.functions.mint(net.users["A"], 7 * 10**6), "mint")
    s = Sender(net.w3, net.keys[4])
    s.call(usdc.functions.approve(net.ch.address, 7 * 10**6), "approve")
    before = st.accounts[net.users["A"]].cash
    s.call(net.ch.functions.deposit(usdc.address, 7 * 10**6), "deposit")
    reread = []
    orig = c.refresh_dirty
    c.refresh_dirty = lambda *a, **k: reread.append(sorted(c.dirty)) or orig(*a, **k)
    c.sync(c.head())
    assert reread == [[net.users["A"]]]
    assert st.accounts[net.users["A"]].cash == before + 7 * 10**6


def test_reorg_drops_cache_beyond_the_fork(net):
    from keeper.chain.sender import Sender

    c = _client(net, depth=8)  # events older than 8 blocks are folded into the base state
    c.sync(c.head())
    assert all(b >= c.head().number - 8 for b, *_ in c._logs)
    n_series = len(c.state.series)
    a = net.users["A"]
    cash0 = c.state.accounts[a].cash
    snap = net.w3.provider.make_request("evm_snapshot", [])["result"]
    usdc = net.w3.eth.contract(address=net.res.quote_asset, abi=h._erc20_abi())
    Sender(net.w3, net.keys[0]).call(usdc.functions.mint(a, 5 * 10**6), "mint")
    s = Sender(net.w3, net.keys[4])
    s.call(usdc.functions.approve(net.ch.address, 5 * 10**6), "approve")
    s.call(net.ch.functions.deposit(usdc.address, 5 * 10**6), "deposit")
    assert c.sync(c.head()) is None
    assert c.state.accounts[a].cash == cash0 + 5 * 10**6
    # the deposit is reorged away: a longer chain without it replaces those blocks
    net.w3.provider.make_request("evm_revert", [snap])
    ts = int(net.w3.eth.get_block("latest")["timestamp"]) + 100
    net.w3.provider.make_request("anvil_setNextBlockTimestamp", [ts])
    net.mine(5)
    fork = c.sync(c.head())
    assert fork is not None
    assert c.state.accounts[a].cash == cash0 == int(net.ch.functions.cashOf(a).call())
    assert len(c.state.series) == n_series and set(net.users.values()) <= set(c.state.accounts)


def _one_keeper(net, tmp_path, **market):
    """One keeper (quorum 1 of its own view; its peers are configured but not running)."""
    spot = tmp_path / "spot1.json"
    h.write_spot(spot, 2000.0)
    ports = h.free_ports(3)
    cfg = h.keeper_config(net, 0, ports, spot).model_dump(mode="json")
    cfg["market"].update(market)
    from keeper.ops.config import parse_config

    return spot, h.KeeperThread(net, 0, parse_config(cfg))


def test_bad_spot_or_chain_is_skipped_and_nothing_signed(net, tmp_path):
    spot, k = _one_keeper(net, tmp_path)
    try:
        b = net.mine()
        assert h.wait_for(lambda: _root(k, b), 20)
        skipped = k.bot.metrics.skipped_inputs
        spot.write_text('{"price": "NaN"}')
        b2 = net.mine()
        assert h.wait_for(lambda: k.bot.last_block == b2 and k.bot.view.snapshot().get("note", "").startswith("no"),
                          20)
        time.sleep(0.3)
        assert _root(k, b2) is None and ("margin", b2) not in k.bot.pending
        assert skipped.labels(reason="bad_price")._value.get() >= 1
        assert skipped.labels(reason="too_few_sources")._value.get() >= 1
        # back to a good price: signing resumes
        h.write_spot(spot, 2000.0)
        b3 = net.mine()
        assert h.wait_for(lambda: _root(k, b3), 20)
    finally:
        k.stop()


def test_cycle_on_a_replayed_deribit_chain(net, tmp_path, shared_data):
    path = shared_data / "option_chains" / "deribit_ETH_20240108T1119Z.csv"
    spot, k = _one_keeper(net, tmp_path, chain={"kind": "deribit_csv", "path": str(path)})
    try:
        b = net.mine()
        att = h.wait_for(lambda: k.bot.view.attestation(b), 30)
        assert att and len(att["leaves"]) == 3
        # the surface block b's leaves were computed from: its archived inputs (archived before the attestation
        # is published)
        import json

        from keeper.quant.surface import VolSurface

        surface = VolSurface.from_canonical(json.loads(k.bot.archive.get(att["header"]["inputsHash"]))["underlyings"][0]["surface"])
        assert len(surface.slices) >= 3
        # the status view gets the cycle's surface and account count at the very end of the cycle, after the
        # attestation is published (and after price/settlement signing): wait for it to show this surface
        want = "0x" + surface.hash().hex()
        st = h.wait_for(lambda: (s := k.bot.view.snapshot()).get("surface", {}).get("hash") == want and s, 30)
        assert st, k.bot.view.snapshot()
        assert st["surface"]["slices"] == len(surface.slices) and st["accounts"] == 3
    finally:
        k.stop()


def test_settlement_price_posted_after_expiry(net, tmp_path):
    """The settlement price is the 30-minute TWAP of the attested prices before expiry (the price in force at the
    window's start, then a 1,700 print 600 s before expiry), recomputed here from the PricesPosted events, not the
    1,990 spot the keepers read after expiry. Then the keepers settle every holder of the expired series
    (settleMany): positions go to 0 and each holder's cash moves by position x intrinsic at that price, to a unit."""
    from fractions import Fraction

    expiry = max(int(s["expiry"]) for s in net.res.series)
    expired = [s for s in net.res.series if int(s["expiry"]) == expiry]
    holders = list(net.users.values())
    before = {(a, int(s["id"])): int(net.ch.functions.positionOf(a, int(s["id"])).call())
              for a in holders for s in expired}
    assert any(before.values())
    cash0 = {a: int(net.ch.functions.cashOf(a).call()) for a in holders}
    net.w3.provider.make_request("anvil_setNextBlockTimestamp", [expiry - 600])
    b = net.mine()
    h.post_prices(net, 1700.0, b + 1)
    net.w3.provider.make_request("anvil_setNextBlockTimestamp", [expiry + 60])
    net.mine()
    steps = sorted((int(e["args"]["timestamp"]), int(p))
                   for e in net.ch.events.PricesPosted().get_logs(from_block=0)
                   for a, p in zip(e["args"]["assets"], e["args"]["prices"]) if a == net.res.underlying)
    start = expiry - 1800
    in_force = [p for t, p in steps if t <= start][-1]
    late = [(t, p) for t, p in steps if start < t <= expiry]
    assert [p for _, p in late] == [1700 * WAD]
    twap = Fraction(in_force * (late[0][0] - start) + late[0][1] * (expiry - late[0][0]), 1800)
    expected = int(twap) + (1 if twap - int(twap) > Fraction(1, 2) else 0)
    spot = tmp_path / "spot.json"
    h.write_spot(spot, 1990.0)
    ports = h.free_ports(3)
    from keeper.ops.config import parse_config

    def keepers(settle_holders):
        out = []
        for i in range(3):
            cfg = h.keeper_config(net, i, ports, spot).model_dump(mode="json")
            cfg["publish"].update(settlement=True, settle_holders=settle_holders)
            out.append(h.KeeperThread(net, i, parse_config(cfg)))
        return out

    # first keepers that post the price but leave the holders alone, so a document of a block after the posting
    # still holds the expired series; then keepers that settle them
    ks = keepers(False)
    try:
        net.mine()
        ok = h.wait_for(lambda: int(net.ch.functions.settlementPrice(net.res.underlying, expiry).call()), 30)
        assert ok == expected != 1990 * WAD and 1700 * WAD < ok < in_force
        ev = net.ch.events.SettlementPricePosted().get_logs(from_block=0)
        assert len(ev) == 1 and int(ev[0]["args"]["expiry"]) == expiry
        # backstop verify's settlement rule on a keeper's own document of a block after the posting, while the
        # series is still held: each expired series is valued at the posted price, and the posted price is the TWAP;
        # the same document with an expired series re-marked at the 1,990 spot is refused, naming the series
        b = net.mine()

        def first_attested():  # a keeper skips a block whose successor arrived before its cycle ran
            got = [(m, k) for k in ks for m in list(k.bot.attestations) if m >= b]
            return min(got, key=lambda x: x[0]) if got else None

        hit = h.wait_for(first_attested, 60)
        assert hit, f"no block from {b} on attested"
        b, k = hit
        doc = json.loads(k.bot.archive.get(k.bot.attestations[b].inputs_hash))
        evidence = settlement_evidence(net.ch, 0, b)
        found = settlement_findings(doc, evidence) + posted_price_findings(evidence)
        held = {sid for (_a, sid), pos in before.items() if pos}
        checked = {int(f["check"].split("series ")[-1].split(",")[0]) for f in found if "series" in f["check"]}
        assert checked == {int(s["id"]) for s in doc["series"] if int(s["expiry"]) <= expiry} >= held, found
        assert all(f["ok"] for f in found) and len(found) == len(checked) + 1, found  # + the posted price's check
        row = next(s for s in doc["series"] if int(s["expiry"]) == expiry)
        row["forward_wad"] = str(1990 * WAD)
        bad = [f for f in settlement_findings(doc, evidence) if not f["ok"]]
        assert [f"series {row['id']}," in f["check"] for f in bad] == [True], bad
        # the keepers settle the holders: no expired position is left
        _stop(ks)
        ks = keepers(True)
        def all_settled():
            net.mine()  # each new block is a keeper's turn to send settleMany
            return not any(int(net.ch.functions.positionOf(a, sid).call()) for (a, sid) in before)

        assert h.wait_for(all_settled, 90, interval=1.0), "the holders of the expired series were not settled"
        strikes = {int(s["id"]): float(s["strike"]) for s in expired}
        calls = {int(s["id"]): bool(s.get("is_call", False)) for s in expired}
        for a in holders:
            move = sum(Fraction(pos, WAD) * max(Fraction(ok, WAD) - Fraction(strikes[sid]) if calls[sid] else
                                                Fraction(strikes[sid]) - Fraction(ok, WAD), 0)
                       for (acct, sid), pos in before.items() if acct == a)
            assert abs(int(net.ch.functions.cashOf(a).call()) - cash0[a] - move * 10**6) <= 1, a
        assert len(net.ch.events.Settled().get_logs(from_block=0)) == sum(1 for v in before.values() if v)
    finally:
        _stop(ks)


def test_keeper_recomputes_after_a_reorg(net, tmp_path):
    spot, k = _one_keeper(net, tmp_path)
    try:
        b = net.mine()
        assert h.wait_for(lambda: _root(k, b), 20)
        snap = net.w3.provider.make_request("evm_snapshot", [])["result"]
        b1 = net.mine()
        assert h.wait_for(lambda: _root(k, b1), 20)
        old_hash = k.bot.view.snapshot()["block_hash"]
        net.w3.provider.make_request("evm_revert", [snap])
        ts = int(net.w3.eth.get_block("latest")["timestamp"]) + 100
        net.w3.provider.make_request("anvil_setNextBlockTimestamp", [ts])
        b2 = net.mine(2)
        assert b2 == b1 + 1
        assert h.wait_for(lambda: k.bot.last_block == b2 and _root(k, b2), 20)
        assert k.bot.metrics.reorgs._value.get() == 1
        new_hash = net.w3.eth.get_block(b1)["hash"].hex()
        assert new_hash.removeprefix("0x") != old_hash.removeprefix("0x")
        # the attestation of the replaced block is gone (or rebuilt on the new block): never the old one
        att = k.bot.attestations.get(b1)
        if att is not None:
            import json

            doc = json.loads(k.bot.archive.get(att.inputs_hash))
            assert doc["block"]["hash"].removeprefix("0x") == new_hash.removeprefix("0x")
    finally:
        k.stop()


def test_periodic_root_when_the_last_one_is_old_enough(net, tmp_path):
    spot, ks = _start(net, tmp_path, root_every=3)
    try:
        def seq():
            return int(net.ch.functions.lastMarginAttestation().call()[0])

        s0 = seq()  # the set-up root, many blocks old: the keepers post a root at once
        b = h.wait_for(lambda: seq() if seq() > s0 else None, 20)
        assert b is not None
        assert h.wait_for(lambda: all(_root(k, b + 1) for k in ks), 20)  # the block their post mined
        time.sleep(0.5)
        assert seq() == b  # block b + 1 is one block after the last root: nothing due
        while int(net.w3.eth.block_number) < b + 3:
            n = net.mine()
            assert h.wait_for(lambda: all(_root(k, n) for k in ks), 20)
        b3 = b + 3
        assert h.wait_for(lambda: seq() == b3, 20)
        posted = [int(e["args"]["sequence"]) for e in net.ch.events.MarginRootPosted().get_logs(from_block=0)]
        assert [x for x in posted if x > s0] == [b, b3]
        # every posted root is the root all three keepers computed for that block
        roots = {int(e["args"]["sequence"]): "0x" + bytes(e["args"]["root"]).hex()
                 for e in net.ch.events.MarginRootPosted().get_logs(from_block=0) if int(e["args"]["sequence"]) > s0}
        for s_, r in roots.items():
            assert {_root(k, s_) for k in ks} == {r}
    finally:
        _stop(ks)


@pytest.mark.ganache
def test_price_shock_on_ganache(tmp_path):
    """The same keepers against Ganache (istanbul: legacy gas prices, no base fee)."""
    net = h.start_net(tmp_path, backend="ganache")
    ks = []
    try:
        h.setup_book(net)
        spot, ks = _start(net, tmp_path)
        b = net.mine()
        assert h.wait_for(lambda: all(_root(k, b) for k in ks), 30)
        assert len({_root(k, b) for k in ks}) == 1
        h.write_spot(spot, 1300.0)
        shock = net.mine()
        assert h.wait_for(lambda: _breached(net, "B"), 30)
        ev = net.ch.events.AccountBreached().get_logs(from_block=shock)
        assert ev and ev[0]["blockNumber"] - shock <= 2 and not _breached(net, "A")
    finally:
        _stop(ks)
        net.chain.stop()


def test_leaf_hash_and_digests_match_the_contract_views(net):
    """The keeper's leaf hash and EIP-712 digests (both through keeper/codec/eip712.py) against the contract's own
    ``leafHash`` and ``hashTypedData`` views: the independent check now that the keeper has no copy of its own."""
    from keeper.codec import eip712
    from keeper.exchange.codec import TypedDataCodec
    from keeper.codec.merkle import MarginLeaf

    ch = net.ch
    acc = Account.from_key(b"\x07" * 32).address
    for l in (MarginLeaf(acc, 3, -5, 7, 11, -13), MarginLeaf(acc, 2**32 - 1, 2**95 - 1, 2**96 - 1, 2**96 - 1, -(2**95))):
        assert l.hash() == bytes(ch.functions.leafHash(l.as_tuple()).call())
    codec = TypedDataCodec(net.w3.eth.chain_id, ch.address)
    msgs = {"margin": {"root": "0x" + "aa" * 32, "inputsHash": "0x" + "bb" * 32, "sequence": 7,
                       "timestamp": 1_700_000_000, "leafCount": 3, "solvencyHash": "0x" + "cc" * 32},
            "prices": {"assets": [net.res.underlying], "prices": [1999 * WAD], "sequence": 8,
                       "timestamp": 1_700_000_001}}
    for kind, m in msgs.items():
        sh = eip712.struct_hash(codec.typed_data(kind, m))
        assert codec.digest(kind, m) == bytes(ch.functions.hashTypedData(sh).call())
    # a changed field changes both sides
    for field, value in (("leafCount", 4), ("solvencyHash", "0x" + "cd" * 32)):
        other = dict(msgs["margin"], **{field: value})
        assert codec.digest("margin", other) != codec.digest("margin", msgs["margin"])
        assert codec.digest("margin", other) == bytes(ch.functions.hashTypedData(
            eip712.struct_hash(codec.typed_data("margin", other))).call())


class _NoVolAt:
    """The fitted surface, except that it gives no vol (NaN) at one strike: a failed slice for one series."""

    def __init__(self, surface, strike: float) -> None:
        self._s, self._k = surface, strike

    def __getattr__(self, name):
        return getattr(self._s, name)

    def implied_vol(self, k, t, f):
        v = np.asarray(self._s.implied_vol(k, t, f), dtype=float)
        return np.where(np.isclose(np.asarray(k, dtype=float), self._k), np.nan, v)


def test_nan_vol_for_one_series_skips_only_its_holders(net, tmp_path):
    from keeper.quant.surface import fit_surface

    spot, k = _one_keeper(net, tmp_path)
    held = {2000.0}  # A, B and C all trade the ATM put (harness.setup_book)
    free = next(s["strike"] for s in net.res.series if s["strike"] not in held)
    skipped = k.bot.metrics.skipped_inputs
    try:
        k.bot.markets.fit = lambda chain: _NoVolAt(fit_surface(chain), free)  # a series nobody holds: everyone attested
        b = net.mine()
        assert h.wait_for(lambda: _root(k, b), 20)
        assert k.bot.attestations[b].message()["leafCount"] == 3
        assert skipped.labels(reason="bad_market_data")._value.get() >= 1
        assert skipped.labels(reason="unattestable_account")._value.get() == 0
        k.bot.markets.fit = lambda chain: _NoVolAt(fit_surface(chain), 2000.0)  # the series all three hold
        b2 = net.mine()
        # wait for what is asserted (a fixed sleep after the cycle's start was too short on a loaded machine): the
        # three holders skipped in block b2's cycle, then the end of that cycle (the keeper runs one cycle at a
        # time under its tick lock) before checking that nothing built on b2 was signed
        assert h.wait_for(lambda: k.bot.last_block == b2
                          and skipped.labels(reason="unattestable_account")._value.get() >= 3, 30)
        assert h.wait_for(lambda: k.bot._lock.acquire(blocking=False) and (k.bot._lock.release() or True), 30)
        assert _root(k, b2) is None and ("margin", b2) not in k.bot.pending  # nothing built on it is signed
        k.bot.markets.fit = None  # the surface is whole again: signing resumes
        b3 = net.mine()
        assert h.wait_for(lambda: _root(k, b3), 20)
    finally:
        k.stop()

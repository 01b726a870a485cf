"""One keeper set over two underlyings (issue 16, item 1): WETH and WBTC each with its own spot source and option
chain, series on both, WBTC collateral at its 10 % haircut; three keepers as threads with real HTTP between them on
a private Anvil with the real contracts.

Second computations: the haircut value of WBTC by hand (amount x attested price x 0.9), model values with py_vollib's
Black-76 on the archived forward and vol of each series' own underlying."""
import json

import pytest
from eth_account import Account
from py_vollib.black import black as vollib_black

import harness as h

WAD = 10**18
BTC0 = 40_000.0
ETH0 = 2_000.0

pytestmark = pytest.mark.chain


def _deploy_cfg():
    from keeper.chain.deploy import CollateralSpec, DeployConfig, SeriesPlan

    return DeployConfig(
        n_keepers=3, threshold=2, spot0=ETH0,
        collateral=(CollateralSpec("WETH", 18, 0.15, 100_000, ETH0), CollateralSpec("WBTC", 8, 0.10, 5_000, BTC0)),
        series=(SeriesPlan(1.0, 30.0, True), SeriesPlan(0.9, 30.0, False), SeriesPlan(0.9, 30.0, False, "WBTC"),
                SeriesPlan(1.1, 30.0, True, "WBTC")),
        fund_seed=10_000.0)


@pytest.fixture
def net(tmp_path):
    n = h.start_net(tmp_path, deploy_cfg=_deploy_cfg())
    yield n
    n.chain.stop()


def _series(net, underlying, is_call):
    return next(s for s in net.res.series if s["underlying"] == underlying and s["is_call"] == is_call)


def _assets(tmp_path, btc_price=BTC0, eth_price=ETH0, btc_chain=None):
    eth, btc = tmp_path / "eth.json", tmp_path / "btc.json"
    h.write_spot(eth, eth_price)
    h.write_spot(btc, btc_price)
    return {
        "WETH": {"spot_sources": [{"name": "eth-file", "kind": "file", "path": str(eth)}],
                 "chain": {"kind": "simulated"}},
        "WBTC": {"spot_sources": [{"name": "btc-file", "kind": "file", "path": str(btc)}],
                 "chain": btc_chain or {"kind": "simulated"},
                 "simulated": {"seed": 12, "spot0": BTC0, "jump_intensity": 0.0, "expiries_days": [14, 30, 60],
                               "atm_vol": 0.5}},
    }, eth, btc


def _start(net, assets, **kw):
    ports = h.free_ports(3)
    return [h.KeeperThread(net, i, h.multi_asset_config(net, i, ports, assets, **kw)) for i in range(3)]


def _stop(ks):
    for k in ks:
        k.stop()


def _book(net):
    """C (maker, 500k USDC), D (1 WBTC + 2,000 USDC), E (50k USDC) with a set-up margin batch; returns
    (addresses, proofs)."""
    usdc, wbtc = net.res.quote_asset, net.res.tokens["WBTC"]["address"]
    keys = {"C": net.keys[6], "D": net.keys[4], "E": net.keys[5]}
    h.fund(net, keys["C"], usdc, 500_000 * 10**6)
    h.fund(net, keys["D"], usdc, 2_000 * 10**6)
    h.fund(net, keys["D"], wbtc, 10**8)
    h.fund(net, keys["E"], usdc, 50_000 * 10**6)
    addr = {n: Account.from_key(k).address for n, k in keys.items()}
    proofs = h.margin_batch(net, {addr["C"]: 500_000 * 10**6, addr["D"]: 38_000 * 10**6,
                                  addr["E"]: 50_000 * 10**6}, 1)
    net.users = addr
    return keys, addr, proofs


def test_two_underlyings_one_root_wbtc_valued_and_withdrawable(net, tmp_path):
    from keeper.attest.leaves import recompute_from_archive
    from keeper.errors import TxFailed
    from keeper.exchange.client import PeerClient
    from keeper.units import SECONDS_PER_YEAR

    weth, wbtc = net.res.underlying, net.res.tokens["WBTC"]["address"]
    eth_call, btc_put = _series(net, weth, True), _series(net, wbtc, False)
    keys, addr, proofs = _book(net)
    # H-8: no risk-adding leg on either underlying without a fresh attested price of it
    for sid in (btc_put["id"], eth_call["id"]):
        with pytest.raises(TxFailed, match="CH_StalePrice"):
            h.trade(net, keys["C"], keys["E"], sid, -1.0, 100.0, 100 + sid, proofs[addr["C"]], proofs[addr["E"]])
    h.post_asset_prices(net, {weth: ETH0}, 1)  # ETH priced, BTC still not
    with pytest.raises(TxFailed, match="CH_StalePrice"):
        h.trade(net, keys["C"], keys["E"], btc_put["id"], -1.0, 1500.0, 1, proofs[addr["C"]], proofs[addr["E"]])
    h.post_asset_prices(net, {weth: ETH0, wbtc: BTC0}, 2)
    # E buys a BTC put and an ETH call, D an ETH call (C sells; C's proof renewed after each trade)
    seq = 2
    for n, (taker, sid, px) in enumerate([("E", btc_put["id"], 1500.0), ("E", eth_call["id"], 140.0),
                                          ("D", eth_call["id"], 140.0)]):
        h.trade(net, keys["C"], keys[taker], sid, -1.0, px, n + 1, proofs[addr["C"]], proofs[addr[taker]])
        equities = {a: int(net.ch.functions.cashOf(a).call()) + (36_000 * 10**6 if a == addr["D"] else 0)
                    for a in addr.values()}
        proofs = h.margin_batch(net, equities, seq)
        seq += 1
    assert int(net.ch.functions.positionOf(addr["E"], btc_put["id"]).call()) == WAD

    # the keepers: WBTC's spot file at 42,000 (a 5 % move: both assets' prices are due)
    assets, eth, btc = _assets(tmp_path, btc_price=42_000.0)
    ks = _start(net, assets)
    try:
        b = net.mine()
        # a root signed by two keepers reaches the chain (root_every_blocks = 2; the keepers agree)
        seq = h.wait_for(lambda: (x := int(net.ch.functions.lastMarginAttestation().call()[0])) >= b and x, 120)
        assert seq, ks[0].bot.view.snapshot()
        posted = [e for e in net.ch.events.MarginRootPosted().get_logs(from_block=b)
                  if int(e["args"]["sequence"]) == seq][0]
        att = h.wait_for(lambda: next((k.bot.attestations.get(seq) for k in ks if k.bot.attestations.get(seq)), None),
                         30)
        assert att and att.root == "0x" + bytes(posted["args"]["root"]).hex()
        # one price attestation carries both assets at the keepers' spots
        assert h.wait_for(lambda: int(net.ch.functions.spotPrice(wbtc).call()[0]) == 42_000 * WAD, 30)
        pp = [e for e in net.ch.events.PricesPosted().get_logs(from_block=b)]
        assert pp and sorted(pp[-1]["args"]["assets"], key=str.lower) == sorted([weth, wbtc], key=str.lower)
        assert int(net.ch.functions.spotPrice(weth).call()[0]) == 2_000 * WAD

        k = next(k for k in ks if k.bot.attestations.get(seq))
        doc = json.loads(k.bot.archive.get(att.inputs_hash))
        assert sorted(u["asset"] for u in doc["underlyings"]) == sorted([weth, wbtc])
        by_id = {int(s["id"]): s for s in doc["series"]}
        unders = doc["underlyings"]
        leaves = {l.account: l for l in att.leaves}
        assert set(addr.values()) <= set(leaves)  # every account in the one root (with the auction module's)
        assert not any(ks_excluded for ks_excluded in k.bot.view.snapshot().get("excluded", {}).values())
        t = (int(eth_call["expiry"]) - doc["block"]["timestamp"]) / SECONDS_PER_YEAR

        def model(s):
            i = [int(x["id"]) for x in doc["series"]].index(int(s["id"]))
            vol = float.fromhex(doc["vols"][i]["f"]) if isinstance(doc["vols"][i], dict) else doc["vols"][i]
            fwd = int(by_id[int(s["id"])]["forward_wad"]) / WAD
            u = unders[by_id[int(s["id"])]["underlying"]]["asset"]
            assert u == s["underlying"]  # each series on its own underlying
            return vollib_black("c" if s["is_call"] else "p", fwd, s["strike"], t, 0.0, vol)

        # E: a BTC put and an ETH call, each at its own underlying's forward and vol
        e = leaves[addr["E"]]
        assert abs(e.model_value - (model(btc_put) + model(eth_call)) * 1e6) <= 2
        assert e.maintenance > 0
        # D: 1 WBTC at 42,000 x (1 - 10 %) = 37,800 in equity (not 0), plus cash and the ETH call's mark
        d = leaves[addr["D"]]
        d_cash = int(net.ch.functions.cashOf(addr["D"]).call())
        i_call = [int(x["id"]) for x in doc["series"]].index(eth_call["id"])
        mark = doc["marks"][i_call]
        mark = float.fromhex(mark["f"]) if isinstance(mark, dict) else mark
        assert abs(d.equity - (d_cash + 37_800 * 10**6 + mark * 1e6)) <= 2
        assert abs(d.model_value - model(eth_call) * 1e6) <= 2
        # the root recomputes from the archive alone
        root, _ = recompute_from_archive(PeerClient("k", k.server.url).archive(att.inputs_hash))
        assert "0x" + root.hex() == att.root
        # the solvency index of the attested book is on the attestation and in the status
        assert att.solvency is not None and att.solvency.accounts == len(att.leaves) and att.solvency.fund == 10_000.0
        assert att.solvency.total_equity == pytest.approx(sum(l.equity for l in att.leaves) / 1e6, abs=1e-3)

        # D withdraws half its WBTC with its proof from the keepers' root on chain
        k = next(k for k in ks if k.bot.attestations.get(seq))
        assert h.wait_for(lambda: k.bot.view.snapshot().get("last_margin_sequence", 0) >= seq, 60)
        snap = k.bot.view.snapshot()
        assert snap["solvency"]["accounts"] == len(att.leaves)
        # keeper status: per asset, its listed series split between the hybrid mark's two branches, as rendered
        per_asset = {u: sum(1 for x in net.res.series if x["underlying"] == u) for u in (weth, wbtc)}
        assert {a: sum(c.values()) for a, c in snap["marks"].items()} == {u.lower(): n for u, n in per_asset.items()}
        from rich.console import Console
        from keeper.cli.keeper import render_status

        con = Console(record=True, width=200)
        render_status(snap, console=con)
        text = con.export_text()
        for sym, u in (("WETH", weth), ("WBTC", wbtc)):
            c = snap["marks"][u.lower()]
            assert any(sym in line and f"{c['market']}/{c['model']}" in line for line in text.splitlines()), text
        m = PeerClient("k", k.server.url).margin(addr["D"])
        assert m and m["leaf"]["equity"] > 21_000 * 10**6  # half a WBTC is 21,000 at 42,000
        bal0 = int(net.ch.functions.collateralOf(addr["D"], wbtc).call())
        h._sender(net, keys["D"]).call(net.ch.functions.withdraw(wbtc, 5 * 10**7, h.proof_tuple(m)), "withdraw")
        assert int(net.ch.functions.collateralOf(addr["D"], wbtc).call()) == bal0 - 5 * 10**7
        # E's two-asset leaf is in a root on chain: recorded with its proof
        me = PeerClient("k", k.server.url).margin(addr["E"])
        h._sender(net, keys["E"]).call(net.ch.functions.recordMargin(h.proof_tuple(me)), "recordMargin")
        assert int(net.ch.functions.marginRecord(addr["E"]).call()[0]) == me["leaf"]["equity"]
        # with the keepers' prices and proofs, E adds a BTC leg: the H-8 rule is met by the keepers' prices
        mc = PeerClient("k", k.server.url).margin(addr["C"])
        h.trade(net, keys["C"], keys["E"], btc_put["id"], -1.0, 1500.0, 9, h.proof_tuple(mc), h.proof_tuple(me))
        assert int(net.ch.functions.positionOf(addr["E"], btc_put["id"]).call()) == 2 * WAD
    finally:
        _stop(ks)

"""A two-asset account attested, breached and auctioned on a real chain (issue 16 item 6): X sells a BTC put and
an ETH put; three keeper bots (threads, real HTTP between them, per-asset spot files and simulated chains) attest it
healthy in one root over both underlyings (X then withdraws down to its initial margin with their proof); BTC alone crashes (its spot file -30 %), the keepers re-attest and
register X as breached and one of them starts the auction from that record at the book's attested value; a bid
fills and the auction ends.

Second computations: the breached leaf's model value by py_vollib's Black-76 on the archived forward and vol of each
leg's own underlying, its equity as cash + size x archived mark; the bid's amount, penalty and escrow, the bidder's
cash, the insurance fund and the positions from the auction's documented rules (docs/auctions.md), read back from
chain storage and events."""
import json

import pytest
from eth_account import Account
from py_vollib.black import black as vollib_black

import harness as h

WAD = 10**18
BTC0, ETH0 = 40_000.0, 2_000.0

pytestmark = pytest.mark.chain


def _deploy_cfg():
    from keeper.chain.deploy import CollateralSpec, DeployConfig, SeriesPlan

    return DeployConfig(
        n_keepers=3, threshold=2, spot0=ETH0,
        collateral=(CollateralSpec("WETH", 18, 0.15, 100_000, ETH0), CollateralSpec("WBTC", 8, 0.10, 5_000, BTC0)),
        series=(SeriesPlan(0.9, 30.0, False), SeriesPlan(0.95, 30.0, False, "WBTC")),
        fund_seed=10_000.0)


@pytest.fixture
def net(tmp_path):
    n = h.start_net(tmp_path, deploy_cfg=_deploy_cfg())
    yield n
    n.chain.stop()


def _f(x):
    return float.fromhex(x["f"]) if isinstance(x, dict) else float(x)


def test_two_asset_account_breached_by_one_asset_crash_is_auctioned(net, tmp_path):
    from keeper.exchange.client import PeerClient
    from keeper.units import SECONDS_PER_YEAR

    weth, wbtc, usdc = net.res.underlying, net.res.tokens["WBTC"]["address"], net.res.quote_asset
    eth_put = next(s for s in net.res.series if s["underlying"] == weth)
    btc_put = next(s for s in net.res.series if s["underlying"] == wbtc)
    auction = net.w3.eth.contract(address=net.res.auction,
                                  abi=json.loads(net.deployment_file.read_text())["abi"]["auction"])
    keys = {"X": net.keys[4], "B": net.keys[5], "C": net.keys[6], "S": net.keys[7]}
    addr = {n: Account.from_key(k).address for n, k in keys.items()}
    h.fund(net, keys["C"], usdc, 500_000 * 10**6)
    h.fund(net, keys["X"], usdc, 25_000 * 10**6)
    h.fund(net, keys["B"], usdc, 200_000 * 10**6)
    h.post_asset_prices(net, {weth: ETH0, wbtc: BTC0}, 1)
    proofs = h.margin_batch(net, {addr["C"]: 500_000 * 10**6, addr["X"]: 40_000 * 10**6}, 1)
    # X sells 1 BTC put (K 38,000) and 10 ETH puts (K 1,800) to C: a short book on both underlyings
    h.trade(net, keys["X"], keys["C"], btc_put["id"], -1.0, 1_500.0, 1, proofs[addr["X"]], proofs[addr["C"]])
    proofs = h.margin_batch(net, {addr["C"]: 500_000 * 10**6, addr["X"]: 40_000 * 10**6}, 2)
    h.trade(net, keys["X"], keys["C"], eth_put["id"], -10.0, 60.0, 2, proofs[addr["X"]], proofs[addr["C"]])

    eth_file, btc_file = tmp_path / "eth.json", tmp_path / "btc.json"
    h.write_spot(eth_file, ETH0)
    h.write_spot(btc_file, BTC0)
    assets = {"WETH": {"spot_sources": [{"name": "eth", "kind": "file", "path": str(eth_file)}],
                       "chain": {"kind": "simulated"}},
              "WBTC": {"spot_sources": [{"name": "btc", "kind": "file", "path": str(btc_file)}],
                       "chain": {"kind": "simulated"},
                       "simulated": {"seed": 12, "spot0": BTC0, "jump_intensity": 0.0, "expiries_days": [14, 30, 60],
                                     "atm_vol": 0.5}}}
    ports = h.free_ports(3)
    ks = [h.KeeperThread(net, i, h.multi_asset_config(net, i, ports, assets)) for i in range(3)]
    client = PeerClient("k", ks[0].server.url)

    def leaf_at(min_seq):
        """X's leaf in a root posted at or after ``min_seq`` at its current nonce (mining until there is one)."""
        def got():
            net.mine()
            seq = int(net.ch.functions.lastMarginAttestation().call()[0])
            # the leaf of the root on chain: a keeper that missed that block (under load) answers with its latest
            # attestation, which is not on chain (AO_UnknownMarginRoot), so ask for the posted sequence
            m = client.margin(addr["X"], sequence=seq) if seq >= min_seq else None
            nonce = int(net.ch.functions.stateNonce(addr["X"]).call())
            return m if m and m["header"]["sequence"] == seq and m["leaf"]["stateNonce"] == nonce else None
        return h.wait_for(got, 240, interval=0.5)  # 120 s missed once at load 7 (a scenario run beside CI)

    try:
        # 1. attested healthy over both underlyings; X withdraws its cash down to its initial margin with the
        # keepers' proof (equity - IM >= amount)
        m = leaf_at(net.mine())
        assert m and m["leaf"]["equity"] > m["leaf"]["initial"] > m["leaf"]["maintenance"] > 0, m
        free = m["leaf"]["equity"] - m["leaf"]["initial"] - 10**6
        h._sender(net, keys["X"]).call(net.ch.functions.withdraw(usdc, free, h.proof_tuple(m)), "withdraw")
        m = leaf_at(net.mine())
        assert m and m["leaf"]["maintenance"] <= m["leaf"]["equity"] < 1.6 * m["leaf"]["maintenance"], m
        assert not net.ch.functions.isBreached(addr["X"]).call()
        fund0 = int(auction.functions.fundBalance().call())

        # 2. BTC alone falls 30 %: the keepers attest the new BTC price and register X as breached
        h.write_spot(btc_file, BTC0 * 0.7)
        breach = h.wait_for(lambda: net.mine() and [e for e in net.ch.events.AccountBreached().get_logs(
            from_block=m["header"]["sequence"]) if e["args"]["account"] == addr["X"]], 120, interval=0.5)
        assert breach, ks[0].bot.view.snapshot()
        b = breach[-1]["args"]
        assert b["equity"] < b["maintenance"]
        # the new BTC price is attested too (it may land a block after the root); ETH's is unchanged
        assert h.wait_for(lambda: net.mine() and int(net.ch.functions.spotPrice(wbtc).call()[0]) == 28_000 * WAD,
                          60, interval=0.5)
        assert int(net.ch.functions.spotPrice(weth).call()[0]) == 2_000 * WAD
        # the breached leaf recomputed: model value by py_vollib on each leg's own underlying, equity from marks
        k = next(k for k in ks if k.bot.archive.get("0x" + bytes(b["inputsHash"]).hex()))
        doc = json.loads(k.bot.archive.get("0x" + bytes(b["inputsHash"]).hex()))
        ids = [int(s["id"]) for s in doc["series"]]
        unders = {int(s["id"]): doc["underlyings"][int(s["underlying"])]["asset"] for s in doc["series"]}
        spots = {u["asset"].lower(): int(u["spot_wad"]) for u in doc["underlyings"]}
        assert spots == {wbtc.lower(): 28_000 * WAD, weth.lower(): 2_000 * WAD}  # the breach priced the crash
        assert unders[btc_put["id"]].lower() == wbtc.lower() and unders[eth_put["id"]].lower() == weth.lower()
        t_of = {int(s["id"]): (int(s["expiry"]) - doc["block"]["timestamp"]) / SECONDS_PER_YEAR for s in doc["series"]}
        model, marked = 0.0, 0.0
        for sid, size in ((btc_put["id"], -1.0), (eth_put["id"], -10.0)):
            i = ids.index(sid)
            fwd = int(doc["series"][i]["forward_wad"]) / WAD
            s = btc_put if sid == btc_put["id"] else eth_put
            model += size * vollib_black("p", fwd, s["strike"], t_of[sid], 0.0, _f(doc["vols"][i]))
            marked += size * _f(doc["marks"][i])
        assert abs(b["modelValue"] - model * 1e6) <= 2, (b["modelValue"], model)
        cash = int(net.ch.functions.cashOf(addr["X"]).call())
        assert abs(b["equity"] - (cash + marked * 1e6)) <= 2

        # 3. the keeper that posted the breach starts the auction from that record (publish.start_auctions), at
        # the book's attested value (X holds only cash and options: its equity E)
        started = h.wait_for(lambda: net.mine() and auction.events.AuctionStarted().get_logs(
            from_block=breach[-1]["blockNumber"]), 60, interval=0.5)
        assert started, "no keeper started the auction"
        st = started[-1]["args"]
        assert st["starter"] in {Account.from_key(k).address for k in net.keeper_keys}
        assert (st["account"], st["equity"], st["maintenance"]) == (addr["X"], b["equity"], b["maintenance"])
        assert st["startPrice"] == b["equity"]

        # 4. B bids for what restores X; the arithmetic read back from chain
        price, allowed, _f_ray, needs_reset = auction.functions.quote(addr["X"]).call()
        assert not needs_reset and 0 < allowed <= WAD
        stored = net.ch.functions.storedBalances
        b_cash0 = int(stored(addr["B"], 0, usdc).call()[2])
        x_pos0 = {sid: int(net.ch.functions.positionOf(addr["X"], sid).call()) for sid in (btc_put["id"], eth_put["id"])}
        now = int(net.w3.eth.get_block("latest")["timestamp"])
        h._sender(net, keys["B"]).call(auction.functions.bid(addr["X"], WAD, 2**200, now + 600, 0), "bid")
        bid = auction.events.Bid().get_logs(from_block=net.w3.eth.block_number)[-1]["args"]
        fill, amount, penalty = int(bid["fractionWad"]), int(bid["amount"]), int(bid["penalty"])
        assert 0 < fill <= WAD and bid["bidder"] == addr["B"]
        assert amount == int(bid["price"]) * fill // WAD  # floor(fill x price), price > 0 for a solvent book
        pen_wad = _penalty_wad(auction)
        assert penalty == -(-amount * pen_wad // WAD)  # ceil(amount x penalty)
        assert int(bid["escrow"]) == amount - penalty
        assert int(stored(addr["B"], 0, usdc).call()[2]) == b_cash0 - amount  # the bidder paid its bid in cash

        # 5. the sale is complete: finish pays escrow to X, the starter's reward and the fund's share
        assert auction.functions.auctionOf(addr["X"]).call()[_field(auction, "done")], "the bid completes the sale"
        starter_cash0 = int(stored(st["starter"], 0, usdc).call()[2])
        x_cash0 = _cash_and_lot(net, stored, addr["X"], usdc)
        h._sender(net, keys["S"]).call(auction.functions.finish(addr["X"]), "finish")
        end = auction.events.AuctionEnded().get_logs(from_block=net.w3.eth.block_number)[-1]["args"]
        assert int(end["penalty"]) == penalty and int(end["escrowReleased"]) == amount - penalty
        assert int(end["reward"]) == min(penalty, int(st["rewardPromised"]))
        assert int(auction.functions.fundBalance().call()) == fund0 + penalty - int(end["reward"])
        assert int(stored(st["starter"], 0, usdc).call()[2]) == starter_cash0 + int(end["reward"])
        # escrow to the account (its stored cash, or cash credited to its frozen book while claims are pending)
        assert _cash_and_lot(net, stored, addr["X"], usdc) == x_cash0 + amount - penalty
        # B's claim delivered: positions move from X to B and net to what X held
        h._sender(net, keys["S"]).call(net.ch.functions.settleClaim(addr["B"]), "settleClaim")
        for sid, p0 in x_pos0.items():
            px, pb = (int(stored(a, sid, usdc).call()[0]) for a in (addr["X"], addr["B"]))
            assert px + pb == p0 and pb < 0, (sid, px, pb, p0)
            assert abs(pb / p0 - fill / WAD) < 1e-6
    finally:
        for k in ks:
            k.stop()


def _cash_and_lot(net, stored, account, usdc) -> int:
    return int(stored(account, 0, usdc).call()[2]) + int(net.ch.functions.lotOf(account).call()[2])


def _field(auction, name: str) -> int:
    """Index of ``name`` in the ``auctionOf`` struct."""
    comps = next(i["outputs"][0]["components"] for i in auction.abi if i.get("name") == "auctionOf")
    return [c["name"] for c in comps].index(name)


def _penalty_wad(auction) -> int:
    """The auction's penalty (``penaltyWad``) from its config struct, by field name."""
    comps = next(i["outputs"][0]["components"] for i in auction.abi if i.get("name") == "config")
    return int(auction.functions.config().call()[[c["name"] for c in comps].index("penaltyWad")])

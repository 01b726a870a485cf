"""Benchmark: the keeper's per-block cycle for 1,000 and 10,000 accounts, and breach-to-chain in blocks.

Run from the project root:  python -m benchmarks.bench_keeper [--accounts 1000 10000] [--repeats 3] [--no-chain]

Three measurements:

1. **compute + sign** (no chain): a synthetic book (each account: quote cash, WETH collateral, Poisson(4)
   positions on 20 on-chain put/call series, sizes +-1..10 contracts), the simulated option chain of the block,
   ``fit_surface``, ``build_portfolio_inputs`` (marks and the canonical inputs document), archive (keccak of the canonical
   JSON), ``leaves_from_inputs`` (risk engine: 2,000 Monte Carlo scenarios seeded from the block hash + the
   SPAN-like grid), Merkle tree of all leaves and the EIP-712 signature. Best of ``--repeats``.
2. **chain reads, cache warm** (private Anvil with the real contracts, ``--chain-accounts`` accounts that each
   deposited and hold a position): one ``ChainClient.sync`` on a new block with nothing changed (event scan of
   one block + the batched per-block views), and a full re-read of every account by batched calls (what a
   cold start or a reorg costs), reported per account.
3. **breach-to-chain**: three keepers (M = 2) on that Anvil; spot shocked from 2,000 to 1,300 in block B; the
   number of blocks from B to the block holding ``AccountBreached``.

Target: cycle <= 2 s for 10,000 accounts (chain reads with the cache warm + compute + signing).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WAD = 10**18


def synthetic_state(n_accounts: int, seed: int = 1):
    """(series, accounts, collateral doc) of a synthetic book."""
    from keeper.chain.client import AccountSnapshot, SeriesInfo

    rng = np.random.default_rng(seed)
    now = 1_700_000_000
    weth = "0x" + "ee" * 20
    series = []
    sid = 1
    for days in (7, 30, 90):
        for pct in (0.8, 0.9, 1.0, 1.1, 1.2) if days != 90 else (0.9, 1.0, 1.1):
            for is_call in (True, False):
                if len(series) < 20:
                    series.append(SeriesInfo(sid, weth, int(2000 * pct) * WAD, now + days * 86400, is_call))
                    sid += 1
    accounts = []
    for i in range(n_accounts):
        k = max(1, rng.poisson(4))
        ids = rng.choice(len(series), size=min(k, len(series)), replace=False)
        pos = {series[j].series_id: int(rng.integers(1, 11)) * int(rng.choice([-1, 1])) * WAD for j in ids}
        accounts.append(AccountSnapshot(f"0x{i + 1:040x}", int(rng.integers(0, 50)),
                                        int(rng.integers(1_000, 100_000)) * 10**6,
                                        {weth: int(rng.integers(0, 20)) * WAD}, pos))
    coll = [{"asset": weth, "decimals": 18, "haircut": str(15 * 10**16), "underlying": 0, "price": "0"}]
    return now, series, accounts, coll, weth


def bench_compute(n_accounts: int, repeats: int) -> dict:
    from eth_account import Account

    from keeper.data.archive import InputsArchive
    from keeper.ops.config import parse_config
    from keeper.exchange.codec import TypedDataCodec
    from keeper.ops.signing import sign_digest
    from keeper.attest.inputs import Attestation, risk_document
    from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
    from keeper.codec.merkle import MerkleTree
    from keeper.attest.leaves import canonical_inputs, leaves_from_inputs
    from keeper.units import price_to_wad
    from keeper.data.sources import BlockRef, SimulatedMarket
    from keeper.quant.surface import fit_surface

    cfg = parse_config({"market": {"simulated": {"seed": 3, "jump_intensity": 0.0}}})
    now, series, accounts, coll, weth = synthetic_state(n_accounts)
    sim = SimulatedMarket(cfg.market.simulated)
    acct = Account.from_key(b"\x01" * 32)
    codec = TypedDataCodec(31337, "0x" + "ab" * 20)
    archive = InputsArchive(None)
    stages: dict[str, list[float]] = {}
    for r in range(repeats):
        block = BlockRef(1000 + r, "0x" + f"{r + 7:064x}", now)
        t = {}
        t0 = time.perf_counter()
        chain = sim.chain(block, 2000.0)
        surface = fit_surface(chain)
        t["surface"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        doc = build_portfolio_inputs(
            block=block, markets=[AssetMarket(weth, price_to_wad(2000.0, 2), surface, chain)], series=series,
            accounts=accounts, collateral={c["asset"]: {"decimals": c["decimals"], "haircut": int(c["haircut"])}
                                           for c in coll},
            quote_asset="0x" + "0c" * 20, quote_decimals=6, risk=risk_document(cfg.risk)).document
        h = archive.put_bytes(canonical_inputs(doc))
        t["inputs+archive"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        leaves, _ = leaves_from_inputs(doc)
        t["risk+leaves"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        tree = MerkleTree([l.hash() for l in leaves])
        att = Attestation(block.number, now, h, leaves, tree, 0)
        sign_digest(acct, codec.digest("margin", att.message()))
        t["merkle+sign"] = time.perf_counter() - t3
        t["total"] = time.perf_counter() - t0
        for k, v in t.items():
            stages.setdefault(k, []).append(v)
    return {k: min(v) for k, v in stages.items()}


def bench_chain(n_accounts: int, tmp: Path) -> dict:
    """Warm-cache sync and full re-read cost on a private Anvil with ``n_accounts`` funded accounts."""
    sys.path.insert(0, str(ROOT / "tests" / "bots" / "keeper"))
    import harness as h
    from eth_account import Account

    from keeper.chain.client import ChainClient
    from keeper.chain.deployment import load_deployment
    from keeper.ops.config import parse_config
    from keeper.chain.sender import Sender

    net = h.start_net(tmp)
    try:
        h.setup_book(net)
        usdc = net.w3.eth.contract(address=net.res.quote_asset, abi=h._erc20_abi())
        owner = Sender(net.w3, net.keys[0])
        # more accounts: each is funded with gas (anvil_setBalance) and quote tokens, approves and deposits
        t0 = time.perf_counter()
        for i in range(n_accounts):
            key = (i + 1000).to_bytes(32, "big")
            a = Account.from_key(key).address
            net.w3.provider.make_request("anvil_setBalance", [a, hex(10**18)])
            owner.send(usdc.functions.mint(a, 10**6).build_transaction(
                {"from": owner.address, "gas": 200_000, "gasPrice": 1}), wait=False)
            user = Sender(net.w3, "0x" + key.hex())
            user.send(usdc.functions.approve(net.ch.address, 10**6).build_transaction(
                {"from": a, "gas": 200_000, "gasPrice": 1}), wait=False)
            user.send(net.ch.functions.deposit(usdc.address, 10**6).build_transaction(
                {"from": a, "gas": 300_000, "gasPrice": 1}), wait=(i == n_accounts - 1))
        setup_s = time.perf_counter() - t0
        cfg = parse_config({"chain": {"rpc_url": net.chain.url}}).chain
        client = ChainClient(net.w3, load_deployment(net.deployment_file), cfg)
        t0 = time.perf_counter()
        client.sync(client.head())
        cold = time.perf_counter() - t0
        n = len(client.state.accounts)
        warm = []
        for _ in range(5):
            net.mine()
            t0 = time.perf_counter()
            client.sync(client.head())
            warm.append(time.perf_counter() - t0)
        client.dirty = set(client.state.accounts)
        t0 = time.perf_counter()
        client.refresh_dirty()
        reread = time.perf_counter() - t0
        return {"accounts_on_chain": n, "setup_s": setup_s, "cold_sync_s": cold, "warm_sync_s": min(warm),
                "full_reread_s": reread, "reread_per_account_ms": 1000 * reread / n}
    finally:
        net.chain.stop()


def bench_breach_to_chain(tmp: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "bots" / "keeper"))
    import harness as h

    net = h.start_net(tmp)
    ks = []
    try:
        users = h.setup_book(net)
        spot = tmp / "spot.json"
        h.write_spot(spot, 2000.0)
        ports = h.free_ports(3)
        ks = [h.KeeperThread(net, i, h.keeper_config(net, i, ports, spot)) for i in range(3)]
        b = net.mine()
        h.wait_for(lambda: all(k.bot.view.attestation(b) for k in ks), 30)
        h.write_spot(spot, 1300.0)
        t0 = time.perf_counter()
        shock = net.mine()
        h.wait_for(lambda: net.ch.functions.isBreached(users["B"]).call(), 30)
        secs = time.perf_counter() - t0
        ev = net.ch.events.AccountBreached().get_logs(from_block=shock)
        return {"shock_block": shock, "breach_block": int(ev[0]["blockNumber"]) if ev else None,
                "blocks": int(ev[0]["blockNumber"]) - shock if ev else None, "seconds": secs}
    finally:
        for k in ks:
            k.stop()
        net.chain.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chain-accounts", type=int, default=300)
    ap.add_argument("--no-chain", action="store_true")
    args = ap.parse_args()
    from keeper.ops.logging import configure_logging

    configure_logging("ERROR")
    out: dict = {"compute": {}}
    for n in args.accounts:
        r = bench_compute(n, args.repeats)
        out["compute"][n] = r
        print(f"compute+sign {n:>6} accounts: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in r.items()),
              flush=True)
    if not args.no_chain:
        with tempfile.TemporaryDirectory() as d:
            out["chain"] = bench_chain(args.chain_accounts, Path(d))
        c = out["chain"]
        print(f"chain reads ({c['accounts_on_chain']} accounts on chain): warm sync {c['warm_sync_s'] * 1000:.1f} ms, "
              f"cold sync {c['cold_sync_s'] * 1000:.0f} ms, full re-read {c['full_reread_s'] * 1000:.0f} ms "
              f"({c['reread_per_account_ms']:.2f} ms/account)", flush=True)
        with tempfile.TemporaryDirectory() as d:
            out["breach_to_chain"] = bench_breach_to_chain(Path(d))
        b = out["breach_to_chain"]
        print(f"breach-to-chain: shock in block {b['shock_block']}, AccountBreached in block {b['breach_block']} "
              f"({b['blocks']} block(s), {b['seconds']:.2f} s)", flush=True)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()

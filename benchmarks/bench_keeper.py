"""Benchmark: the keeper's per-block compute-and-sign cycle on a two-underlying book against the one-underlying cycle of
an earlier commit (issue 16, Speed), and breach-to-chain in blocks.

Run from the project root:
    python -m benchmarks.bench_keeper [--accounts 1000 10000] [--repeats 3] [--inner-repeats 2] [--workers 2]
                                      [--baseline-ref ef61879 | --no-baseline] [--no-chain]
    python -m benchmarks.bench_keeper --accounts 100000 --no-baseline --no-chain     # growth: time and peak memory

1. **compute + sign** (no chain), this tree: a synthetic two-underlying book (:func:`synthetic_state`: 20 WETH and
   20 WBTC series, each account Poisson(4) positions drawn from all 40, quote cash, WETH and WBTC collateral),
   per underlying its own simulated option chain and ``fit_surface`` ("surface"), ``build_portfolio_inputs`` and
   the archive (keccak of the canonical JSON) ("inputs+archive"), ``risk_run`` (2,000 Monte Carlo scenarios seeded
   from the block hash, the joint/single/opposite grid, the correlation stress; ``--workers`` threads, the
   keeper's ``risk.workers``) and the leaves ("risk+leaves"), bulk leaf hashes, the Merkle tree and the EIP-712
   signature ("merkle+sign"). "solvency" (the index the keeper signs with the root since issue 16; the baseline
   has none) is reported apart and in "total+solvency".
2. **baseline**: ``git worktree add --detach <tmp> <--baseline-ref>`` (removed afterwards); that commit's own
   ``benchmarks/bench_keeper.py --no-chain`` (its one-underlying book on 20 WETH series, its flat ``keeper/``
   modules) at the same account count, in a subprocess, its JSON parsed.
   Each of ``--repeats`` rounds runs one fresh process of ours and one of the baseline, in alternating order, so
   load falls on both alike; each process runs ``--inner-repeats`` cycles and reports its best. Per stage the best
   round; the ratio of the best totals and the ratio within each round. Peak memory: ``ru_maxrss`` of each
   benchmark process (``os.wait4`` on that child: the process doing the work, the risk threads included).
3. **chain reads, cache warm** (private Anvil with the real contracts, ``--chain-accounts`` accounts that each
   deposited and hold a position): one ``ChainClient.sync`` on a new block with nothing changed (event scan of
   one block + the batched per-block views), and a full re-read of every account by batched calls (what a
   cold start or a reorg costs), reported per account.
4. **breach-to-chain**: three keepers (M = 2) on that Anvil; spot shocked from 2,000 to 1,300 in block B; the
   number of blocks from B to the block holding ``AccountBreached``.

Target (issue 16): the two-underlying cycle for 10,000 accounts no slower than the baseline's one-underlying cycle
in the same run on the same machine; 100,000 accounts reported with peak memory (<= 2 GB).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WAD = 10**18

#: the two underlyings of the synthetic book: (label, address, spot, simulated-market seed)
UNDERLYINGS = (("WETH", "0x" + "ee" * 20, 2000.0, 3), ("WBTC", "0x" + "bb" * 20, 40000.0, 8))
QUOTE = "0x" + "0c" * 20


def synthetic_state(n_accounts: int, seed: int = 1):
    """A two-underlying synthetic book: ``(now, series, accounts, collateral)``.

    20 series per underlying (WETH and WBTC: 7/30-day expiries at 80-120 % of spot, 90-day at 90-110 %, calls and
    puts); each account holds Poisson(4) positions (at least 1) drawn from all 40 series, sizes +-1..10 contracts,
    quote cash, 0-19 WETH and 0-1.9 WBTC. Same positions per account as the one-underlying book of ef61879, so the
    two cycles attest the same number of leaves over the same number of position entries."""
    from keeper.chain.client import AccountSnapshot, SeriesInfo

    rng = np.random.default_rng(seed)
    now = 1_700_000_000
    series = []
    sid = 1
    for _, asset, spot, _ in UNDERLYINGS:
        mine = 0
        for days in (7, 30, 90):
            for pct in (0.8, 0.9, 1.0, 1.1, 1.2) if days != 90 else (0.9, 1.0, 1.1):
                for is_call in (True, False):
                    if mine < 20:
                        series.append(SeriesInfo(sid, asset, int(spot * pct) * WAD, now + days * 86400, is_call))
                        sid += 1
                        mine += 1
    weth, wbtc = UNDERLYINGS[0][1], UNDERLYINGS[1][1]
    accounts = []
    for i in range(n_accounts):
        k = max(1, rng.poisson(4))
        ids = rng.choice(len(series), size=min(k, len(series)), replace=False)
        pos = {series[j].series_id: int(rng.integers(1, 11)) * int(rng.choice([-1, 1])) * WAD for j in ids}
        accounts.append(AccountSnapshot(f"0x{i + 1:040x}", int(rng.integers(0, 50)),
                                        int(rng.integers(1_000, 100_000)) * 10**6,
                                        {weth: int(rng.integers(0, 20)) * WAD,
                                         wbtc: int(rng.integers(0, 20)) * WAD // 10}, pos))
    collateral = {weth: {"decimals": 18, "haircut": 15 * 10**16}, wbtc: {"decimals": 18, "haircut": 10 * 10**16},
                  QUOTE: {"decimals": 6, "haircut": 0}}
    return now, series, accounts, collateral


def bench_compute(n_accounts: int, repeats: int, workers: int = 1) -> dict:
    """Best of ``repeats`` per stage (seconds) of the two-underlying compute-and-sign cycle, ``workers`` processes
    for the risk run (``keeper.ops.pool``); also ``peak_rss_mb`` of this process (and of its pool's processes)."""
    from eth_account import Account

    from keeper.attest.inputs import Attestation, risk_document
    from keeper.attest.leaves import canonical_inputs, risk_run, solvency_from_run
    from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
    from keeper.codec.merkle import MerkleTree, leaf_hashes
    from keeper.data.archive import InputsArchive
    from keeper.data.sources import BlockRef, SimulatedMarket
    from keeper.exchange.codec import TypedDataCodec
    from keeper.ops.config import parse_config
    from keeper.ops.pool import RiskPool
    from keeper.ops.signing import sign_digest
    from keeper.quant.surface import fit_surface
    from keeper.units import price_to_wad

    cfg = parse_config({"market": {"simulated": {"seed": 3, "jump_intensity": 0.0}}})
    now, series, accounts, collateral = synthetic_state(n_accounts)
    sims = [(asset, spot, SimulatedMarket(cfg.market.simulated.model_copy(update={"seed": seed, "spot0": spot})))
            for _, asset, spot, seed in UNDERLYINGS]
    acct = Account.from_key(b"\x01" * 32)
    codec = TypedDataCodec(31337, "0x" + "ab" * 20)
    archive = InputsArchive(None)
    stages: dict[str, list[float]] = {}
    with RiskPool(workers) as pool:
        for r in range(repeats):
            block = BlockRef(1000 + r, "0x" + f"{r + 7:064x}", now)
            t = {}
            t0 = time.perf_counter()
            markets = []
            for asset, spot, sim in sims:
                chain = sim.chain(block, spot)
                markets.append(AssetMarket(asset, price_to_wad(spot, 2), fit_surface(chain), chain))
            t["surface"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            doc = build_portfolio_inputs(block=block, markets=markets, series=series, accounts=accounts,
                                         collateral=collateral, quote_asset=QUOTE, quote_decimals=6,
                                         risk=risk_document(cfg.risk)).document
            h = archive.put_bytes(canonical_inputs(doc))
            t["inputs+archive"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            run = risk_run(doc, mapper=pool)
            leaves = run.leaves
            t["risk+leaves"] = time.perf_counter() - t2
            t3 = time.perf_counter()
            tree = MerkleTree(leaf_hashes(leaves))  # the keeper's path (keeper/bots/keeper/cycle.py)
            att = Attestation(block.number, now, h, leaves, tree, markets[0].spot_wad)
            sign_digest(acct, codec.digest("margin", att.message()))
            t["merkle+sign"] = time.perf_counter() - t3
            t["total"] = time.perf_counter() - t0
            t4 = time.perf_counter()
            solvency_from_run(run, 1_000_000.0, mapper=pool)
            t["solvency"] = time.perf_counter() - t4
            t["total+solvency"] = t["total"] + t["solvency"]
            for k, v in t.items():
                stages.setdefault(k, []).append(v)
    out: dict = {k: min(v) for k, v in stages.items()}
    out["root"] = "0x" + tree.root.hex()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux), in
    MiB; the risk pool's workers are threads of this process, so this is the whole cycle's peak."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def _run_child(cmd: list[str], cwd: Path) -> tuple[dict, float]:
    """Run one benchmark process; its last stdout line (JSON) and its peak RSS in MiB (``os.wait4``'s
    ``ru_maxrss`` of that process alone)."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=str(cwd), stdout=subprocess.PIPE, stderr=err, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # reaps the child: its own rusage
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        if code != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} (in {cwd}) failed with {code}: {err.read()[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def ours_once(n: int, inner: int, workers: int) -> dict:
    """This tree's two-underlying cycle in a fresh process (best of ``inner``), with that process's peak RSS."""
    r, rss = _run_child([sys.executable, "-m", "benchmarks.bench_keeper", "--child", "--accounts", str(n),
                         "--repeats", str(inner), "--workers", str(workers)], ROOT)
    r["peak_rss_mb"] = rss
    return r


def baseline_once(tree: Path, n: int, inner: int) -> dict:
    """The baseline commit's own one-underlying compute+sign (its benchmarks/bench_keeper.py --no-chain, its flat
    keeper/ modules) in a fresh process from its worktree (best of ``inner``), with that process's peak RSS."""
    r, rss = _run_child([sys.executable, "-m", "benchmarks.bench_keeper", "--no-chain", "--accounts", str(n),
                         "--repeats", str(inner)], tree)
    stages = dict(r["compute"][str(n)])
    stages["peak_rss_mb"] = rss
    return stages


class BaselineTree:
    """``git worktree add --detach <tmp> <ref>`` for the run, removed afterwards; checks that a process started
    in it imports the worktree's ``keeper`` package (not this tree's editable install)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-keeper-baseline-"))
        self.path = self.tmp / "tree"

    def __enter__(self) -> Path:
        made = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(self.path), self.ref],
                              capture_output=True, text=True)
        if made.returncode != 0:  # e.g. a shallow clone without the commit
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise RuntimeError(f"git worktree add {self.ref} failed: {made.stderr.strip()[-500:]}")
        where = subprocess.run([sys.executable, "-c", "import keeper; print(keeper.__file__)"], cwd=str(self.path),
                               capture_output=True, text=True).stdout.strip()
        if not where or not Path(where).resolve().is_relative_to(self.path.resolve()):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the baseline worktree imports keeper from {where!r}, not from {self.path}")
        return self.path

    def __exit__(self, *exc) -> None:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.path)],
                       capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


STAGES = ("surface", "inputs+archive", "risk+leaves", "merkle+sign", "total")


def compare(n: int, repeats: int, inner: int, workers: int, tree: Path | None) -> dict:
    """``repeats`` rounds, each one fresh process of ours and one of the baseline (order alternating, so load
    falls on both alike); per stage the best round of each; the ratio of the best totals and of each round's pair."""
    ours, base, loads = [], [], [os.getloadavg()[0]]
    for r in range(repeats):
        order = ["base", "ours"] if r % 2 == 0 else ["ours", "base"]
        for side in order:
            if side == "ours":
                ours.append(ours_once(n, inner, workers))
            elif tree is not None:
                base.append(baseline_once(tree, n, inner))
        loads.append(os.getloadavg()[0])
    for x in ours + base:  # the stages after the surface fit (the part this work changed)
        x["total-surface"] = x["total"] - x["surface"]
    out = {"accounts": n, "workers": workers, "rounds": repeats, "inner_repeats": inner,
           "load_1min": [round(x, 2) for x in loads],
           "ours": {k: min(o[k] for o in ours) for k in ours[0] if k != "root"},
           "ours_rounds_total": [o["total"] for o in ours], "root": ours[0]["root"]}
    if base:
        out["baseline"] = {k: min(b[k] for b in base) for k in base[0]}
        out["baseline_rounds_total"] = [b["total"] for b in base]
        out["ratio_best_total"] = out["ours"]["total"] / out["baseline"]["total"]
        out["ratio_per_round"] = [o["total"] / b["total"] for o, b in zip(ours, base)]
    return out


def print_comparison(c: dict, ref: str) -> None:
    n, o, b = c["accounts"], c["ours"], c.get("baseline")
    print(f"\ncompute+sign, {n:,} accounts, best of {c['rounds']} rounds x {c['inner_repeats']} "
          f"(load 1-min during: {', '.join(f'{x:.1f}' for x in c['load_1min'])}):")
    head = f"  {'stage':<16}{'two underlyings, ' + str(c['workers']) + ' worker(s)':>34}"
    print(head + (f"{ref + ' one underlying':>28}{'ratio':>8}" if b else ""))
    for k in STAGES + ("total-surface", "solvency", "total+solvency"):
        if k not in o:
            continue
        line = f"  {k:<16}{o[k] * 1000:>31.0f} ms"
        if b and k in b:
            line += f"{b[k] * 1000:>25.0f} ms{o[k] / b[k]:>8.2f}"
        print(line)
    print(f"  {'peak RSS':<16}{o['peak_rss_mb']:>31.0f} MB" + (f"{b['peak_rss_mb']:>25.0f} MB" if b else ""))
    if b:
        print(f"  ratio of best totals {c['ratio_best_total']:.2f}; per round "
              + ", ".join(f"{x:.2f}" for x in c["ratio_per_round"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeats", type=int, default=3, help="rounds (each: a fresh process of ours and of the baseline)")
    ap.add_argument("--inner-repeats", type=int, default=2, help="cycles per process, best taken")
    ap.add_argument("--workers", type=int, default=2, help="threads of the risk run (risk.workers)")
    ap.add_argument("--baseline-ref", default="ef61879", help="commit whose one-underlying cycle is the baseline")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--baseline-max-accounts", type=int, default=10_000,
                    help="run the baseline only up to this many accounts")
    ap.add_argument("--chain-accounts", type=int, default=300)
    ap.add_argument("--no-chain", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from keeper.ops.logging import configure_logging

    configure_logging("ERROR")
    if args.child:  # one process, one account count: this tree's cycle, JSON on the last line
        print(json.dumps(bench_compute(args.accounts[0], args.repeats, args.workers)))
        return
    out: dict = {"compute": {}, "machine": {"cpus": os.cpu_count()}}
    need_base = not args.no_baseline and any(n <= args.baseline_max_accounts for n in args.accounts)
    made, tree = None, None
    if need_base:
        made = BaselineTree(args.baseline_ref)
        try:
            tree = made.__enter__()
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"baseline {args.baseline_ref} unavailable, this tree alone: {exc}", flush=True)
            made = None
    try:
        for n in args.accounts:
            c = compare(n, args.repeats, args.inner_repeats, args.workers,
                        tree if n <= args.baseline_max_accounts else None)
            out["compute"][n] = c
            print_comparison(c, args.baseline_ref)
    finally:
        if made is not None:
            made.__exit__(None, None, None)
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

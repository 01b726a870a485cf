"""Integration harness: a private Anvil on a free port with the real contracts deployed (keeper.chain.local), a small
book of accounts with option positions, keeper bots in threads with real HTTP between them, and a TCP proxy that
can be stopped and restarted between a keeper and Anvil."""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account

WAD = 10**18
SPOT0 = 2000.0


@dataclass
class Net:
    chain: object
    w3: object
    res: object
    ch: object
    keys: list  # private keys: [owner, k1, k2, k3, A, B, C]
    keeper_keys: list
    deployment_file: Path
    users: dict = field(default_factory=dict)  # name -> address
    tmp: Path = None

    def mine(self, n: int = 1) -> int:
        for _ in range(n):
            self.w3.provider.make_request("evm_mine", [])
        return int(self.w3.eth.block_number)


def start_net(tmp: Path, backend: str = "anvil", deploy_cfg=None) -> Net:
    from keeper.chain.deploy import CollateralSpec, DeployConfig, SeriesPlan, deploy, derive_keys
    from keeper.chain.local import ensure_chain, free_port

    port = free_port()
    lc = ensure_chain(f"http://127.0.0.1:{port}", backend=backend, accounts=10, log_dir=tmp)
    from keeper.chain.client import make_web3

    w3 = make_web3(lc.url, timeout=30)
    keys = derive_keys(lc.mnemonic, 8)
    keeper_keys = keys[1:4]
    cfg = deploy_cfg or DeployConfig(n_keepers=3, threshold=2, spot0=SPOT0,
                                     collateral=(CollateralSpec("WETH", 18, 0.15, 100_000, SPOT0),),
                                     series=(SeriesPlan(1.0, 30.0, False), SeriesPlan(0.9, 30.0, False)),
                                     fund_seed=0.0)
    dep_file = tmp / "deployment.json"
    res = deploy(w3, keys[0], [Account.from_key(k).address for k in keeper_keys], cfg, rpc_url=lc.url,
                 deployment_file=dep_file)
    from keeper.chain.deploy import clearinghouse_abi

    ch = w3.eth.contract(address=res.clearinghouse, abi=clearinghouse_abi())
    net = Net(lc, w3, res, ch, keys, keeper_keys, dep_file, tmp=tmp)
    return net


def _sender(net: Net, key: str):
    from keeper.chain.sender import Sender

    return Sender(net.w3, key)


def _sign_sorted(digest: bytes, keys) -> bytes:
    sigs = sorted((int(Account.from_key(k).address, 16), bytes(Account.from_key(k).unsafe_sign_hash(digest).signature))
                  for k in keys)
    return b"".join(s for _, s in sigs)


def _no_solvency(leaf_count: int):
    """The "no figures" solvency index a set-up root is posted with, and its struct hash (signed in MarginRoot)."""
    from keeper.codec.eip712 import solvency_struct_hash, unavailable_solvency

    s = unavailable_solvency(leaf_count)
    return s, solvency_struct_hash(s)


def genesis_margin(net: Net, accounts: list[str], seq: int):
    """Post a set-up margin batch (signed by two keeper keys) crediting each account's cash as equity and no
    margin, so that the first trades have proofs; returns {account: MarginProof tuple}."""
    from keeper.codec.merkle import MarginLeaf, MerkleTree

    ch = net.ch
    ts = int(net.w3.eth.get_block("latest")["timestamp"])
    leaves = []
    for a in accounts:
        cash = int(ch.functions.cashOf(a).call())
        coll = int(ch.functions.collateralOf(a, net.res.underlying).call())
        equity = cash + coll * int(SPOT0) // 10**12 // 2  # WETH at half its value, in 6-dp quote units
        leaves.append(MarginLeaf(a, int(ch.functions.stateNonce(a).call()), equity, 0, 0, 0))
    tree = MerkleTree([l.hash() for l in leaves])
    inputs_hash = b"\x01" * 32
    from keeper.codec.eip712 import margin_root_struct_hash

    solvency, solvency_hash = _no_solvency(len(leaves))
    sh = margin_root_struct_hash(tree.root, inputs_hash, seq, ts, len(leaves), solvency_hash)
    digest = bytes(ch.functions.hashTypedData(sh).call())
    sigs = _sign_sorted(digest, net.keeper_keys[:2])
    header = (inputs_hash, seq, ts, len(leaves))
    ordered, proof, flags = tree.multiproof([l.hash() for l in leaves])
    by_hash = {l.hash(): l for l in leaves}
    _sender(net, net.keys[0]).call(ch.functions.postMarginBatch(header, solvency_hash, solvency,
                                                                [by_hash[h].as_tuple() for h in ordered],
                                                                proof, flags, sigs), "genesis postMarginBatch")
    return {l.account: (header, l.as_tuple(), tree.proof(l.hash())) for l in leaves}


def post_prices(net: Net, price: float, seq: int) -> None:
    from keeper.codec.eip712 import prices_struct_hash

    ch = net.ch
    ts = int(net.w3.eth.get_block("latest")["timestamp"])
    assets = [net.res.underlying]
    prices = [int(round(price * 100)) * 10**16]
    digest = bytes(ch.functions.hashTypedData(prices_struct_hash(assets, prices, seq, ts)).call())
    _sender(net, net.keys[0]).call(ch.functions.postPrices(assets, prices, seq, ts,
                                                           _sign_sorted(digest, net.keeper_keys[:2])), "postPrices")


def post_asset_prices(net: Net, prices: dict, seq: int) -> None:
    """Post ``{asset address: price}`` (whole quote units, 2 decimals) signed by two keeper keys (set-up only)."""
    from keeper.codec.eip712 import prices_struct_hash

    ch = net.ch
    ts = int(net.w3.eth.get_block("latest")["timestamp"])
    assets = sorted(prices, key=str.lower)
    wads = [int(round(prices[a] * 100)) * 10**16 for a in assets]
    digest = bytes(ch.functions.hashTypedData(prices_struct_hash(assets, wads, seq, ts)).call())
    _sender(net, net.keys[0]).call(ch.functions.postPrices(assets, wads, seq, ts,
                                                           _sign_sorted(digest, net.keeper_keys[:2])), "postPrices")


def margin_batch(net: Net, equities: dict, seq: int):
    """A set-up margin batch (two keeper keys) giving each account the equity named (quote base units) and no
    margin, at its current stateNonce; returns {account: MarginProof tuple}."""
    from keeper.codec.eip712 import margin_root_struct_hash
    from keeper.codec.merkle import MarginLeaf, MerkleTree

    ch = net.ch
    ts = int(net.w3.eth.get_block("latest")["timestamp"])
    leaves = [MarginLeaf(a, int(ch.functions.stateNonce(a).call()), int(e), 0, 0, 0) for a, e in equities.items()]
    tree = MerkleTree([l.hash() for l in leaves])
    inputs_hash = b"\x02" * 32
    solvency, solvency_hash = _no_solvency(len(leaves))
    sh = margin_root_struct_hash(tree.root, inputs_hash, seq, ts, len(leaves), solvency_hash)
    digest = bytes(ch.functions.hashTypedData(sh).call())
    header = (inputs_hash, seq, ts, len(leaves))
    ordered, proof, flags = tree.multiproof([l.hash() for l in leaves])
    by_hash = {l.hash(): l for l in leaves}
    _sender(net, net.keys[0]).call(ch.functions.postMarginBatch(header, solvency_hash, solvency,
                                                                [by_hash[h].as_tuple() for h in ordered],
                                                                proof, flags, _sign_sorted(digest, net.keeper_keys[:2])),
                                   "set-up postMarginBatch")
    return {l.account: (header, l.as_tuple(), tree.proof(l.hash())) for l in leaves}


def fund(net: Net, key: str, token: str, amount: int) -> None:
    """Mint ``amount`` base units of ``token`` to the key's address and deposit them into the clearinghouse."""
    erc20 = net.w3.eth.contract(address=token, abi=_erc20_abi())
    addr = Account.from_key(key).address
    _sender(net, net.keys[0]).call(erc20.functions.mint(addr, amount), "mint")
    s = _sender(net, key)
    s.call(erc20.functions.approve(net.ch.address, amount), "approve")
    s.call(net.ch.functions.deposit(token, amount), "deposit")


def trade(net: Net, maker_key: str, taker_key: str, series_id: int, size: float, price: float, nonce: int,
          maker_proof, taker_proof):
    """The taker fills the maker's signed quote (``size`` > 0: the maker buys); returns the receipt."""
    from keeper.codec.eip712 import Domain, Quote, quote_typed_data
    from keeper.ops.signing import sign

    domain = Domain(int(net.w3.eth.chain_id), net.ch.address)
    deadline = int(net.w3.eth.get_block("latest")["timestamp"]) + 3600
    q = Quote(maker=Account.from_key(maker_key).address, series_id=series_id, size=int(size * WAD),
              price=int(round(price * 100)) * 10**16, nonce=nonce, deadline=deadline)
    sig = sign(quote_typed_data(domain, q), maker_key)
    return _sender(net, taker_key).call(net.ch.functions.trade(q.as_tuple(), sig, maker_proof, taker_proof),
                                        "trade")


def proof_tuple(m: dict):
    """The ``MarginProof`` tuple of a keeper's ``GET /margin/<account>`` answer."""
    hd, lf = m["header"], m["leaf"]
    return ((bytes.fromhex(hd["inputsHash"][2:]), hd["sequence"], hd["timestamp"], hd["leafCount"]),
            (lf["account"], lf["stateNonce"], lf["equity"], lf["maintenance"], lf["initial"], lf["modelValue"]),
            [bytes.fromhex(x[2:]) for x in m["proof"]])


def setup_book(net: Net) -> dict:
    """Accounts: A (healthy, well funded, short 1 put), B (thin, short 10 ATM puts: breaches on a crash),
    C (counterparty, long the puts). Returns {name: address}."""
    from keeper.ops.signing import sign
    from keeper.codec.eip712 import Domain, Quote, quote_typed_data

    ch = net.ch
    usdc = net.w3.eth.contract(address=net.res.quote_asset, abi=_erc20_abi())
    names = {"A": net.keys[4], "B": net.keys[5], "C": net.keys[6]}
    funding = {"A": 200_000, "B": 5_000, "C": 500_000}
    owner = _sender(net, net.keys[0])
    addr = {n: Account.from_key(k).address for n, k in names.items()}
    for n, k in names.items():
        amt = funding[n] * 10**6
        owner.call(usdc.functions.mint(addr[n], amt), "mint")
        s = _sender(net, k)
        s.call(usdc.functions.approve(ch.address, amt), "approve")
        s.call(ch.functions.deposit(usdc.address, amt), "deposit")
    post_prices(net, SPOT0, 1)
    proofs = genesis_margin(net, list(addr.values()), 1)
    series = {s["strike"]: s["id"] for s in net.res.series}
    atm = series[2000.0]
    domain = Domain(int(net.w3.eth.chain_id), ch.address)
    deadline = int(net.w3.eth.get_block("latest")["timestamp"]) + 3600
    empty = ((b"\x00" * 32, 0, 0, 0), ("0x" + "00" * 20, 0, 0, 0, 0, 0), [])
    seq = 2
    for nonce, (taker, size) in enumerate([("A", 1), ("B", 10)]):
        q = Quote(maker=addr["C"], series_id=atm, size=size * WAD, price=100 * WAD, nonce=nonce + 1,
                  deadline=deadline)
        sig = sign(quote_typed_data(domain, q), names["C"])
        _sender(net, names[taker]).call(ch.functions.trade(q.as_tuple(), sig, proofs[addr["C"]], proofs[addr[taker]]),
                                        f"trade {taker}")
        proofs = genesis_margin(net, list(addr.values()), seq)
        seq += 1
    net.users = addr
    return addr


def _erc20_abi():
    return [{"name": n, "type": "function", "stateMutability": "nonpayable",
             "inputs": [{"name": "a", "type": "address"}, {"name": "b", "type": "uint256"}],
             "outputs": [{"name": "", "type": "bool"}]} for n in ("mint", "approve")]


# ------------------------------------------------------------------------------------------------------------
def keeper_config(net: Net, i: int, ports: list[int], spot_file: Path, rpc_url: str | None = None,
                  root_every: int = 1_000_000, price_deviation: float = 0.5):
    from keeper.ops.config import parse_config

    peers = [{"name": f"k{j}", "url": f"http://127.0.0.1:{ports[j]}",
              "address": Account.from_key(net.keeper_keys[j]).address} for j in range(len(ports)) if j != i]
    return parse_config({
        "chain": {"rpc_url": rpc_url or net.chain.url, "deployment_file": str(net.deployment_file),
                  "poll_interval_s": 0.2, "retry_attempts": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
                  "request_timeout_s": 3},
        "market": {"underlying": "WETH", "spot_sources": [{"name": "file", "kind": "file", "path": str(spot_file)}],
                   "chain": {"kind": "simulated"},
                   "simulated": {"seed": 11, "jump_intensity": 0.0, "expiries_days": [14, 30, 60]}},
        "risk": {"mc_paths": 500},
        "exchange": {"port": ports[i], "peers": peers, "request_timeout_s": 0.5, "takeover_blocks": 1},
        "thresholds": {"quorum": 2},
        "publish": {"root_every_blocks": root_every, "prices_heartbeat_blocks": 1_000_000,
                    "price_deviation": price_deviation,
                    "settlement": False},
        "metrics": {"enabled": False},
        "archive_dir": str(net.tmp / f"archive{i}"),
        "logging": {"level": "INFO"},
    })


def multi_asset_config(net: Net, i: int, ports: list[int], assets: dict, *, root_every: int = 2,
                       price_deviation: float = 0.01, fallback_blocks: int = 20, fallback_widening: float = 0.5,
                       mc_paths: int = 500):
    """A keeper config in the per-asset form: ``assets`` maps a symbol to its ``market.assets`` entry."""
    from keeper.ops.config import parse_config

    peers = [{"name": f"k{j}", "url": f"http://127.0.0.1:{ports[j]}",
              "address": Account.from_key(net.keeper_keys[j]).address} for j in range(len(ports)) if j != i]
    return parse_config({
        "chain": {"rpc_url": net.chain.url, "deployment_file": str(net.deployment_file),
                  "poll_interval_s": 0.2, "retry_attempts": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
                  "request_timeout_s": 3},
        "market": {"assets": assets, "fallback_blocks": fallback_blocks, "fallback_widening": fallback_widening,
                   "simulated": {"seed": 11, "jump_intensity": 0.0, "expiries_days": [14, 30, 60]}},
        "risk": {"mc_paths": mc_paths},
        "exchange": {"port": ports[i], "peers": peers, "request_timeout_s": 0.5, "takeover_blocks": 1},
        "thresholds": {"quorum": 2},
        "publish": {"root_every_blocks": root_every, "prices_heartbeat_blocks": 1_000_000,
                    "price_deviation": price_deviation, "settlement": False},
        "metrics": {"enabled": False},
        "archive_dir": str(net.tmp / f"archive{i}"),
        "logging": {"level": "INFO"},
    })


def lying_keeper(accounts: list[str]):
    """Fault injection (tests only): a :class:`KeeperBot` subclass whose cycle reports each of ``accounts`` as breached
    (equity -1, maintenance and initial at least 1) in the leaves it signs and publishes, while archiving the honest
    inputs; everything else it does is the real keeper's."""
    import dataclasses

    from keeper.bots.keeper.bot import KeeperBot

    bad = {a.lower() for a in accounts}

    class LyingKeeper(KeeperBot):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            honest, log = self.block_cycle.compute_leaves, self.log

            def compute_leaves(doc: dict):
                leaves, details, out_of_range = honest(doc)
                out = []
                for l in leaves:
                    if l.account.lower() in bad:
                        log.warning("fabricating_breach", account=l.account)
                        l = dataclasses.replace(l, equity=-1, maintenance=max(l.maintenance, 1),
                                                initial=max(l.initial, 1))
                    out.append(l)
                return out, details, out_of_range

            self.block_cycle.compute_leaves = compute_leaves

    return LyingKeeper


class KeeperThread:
    """One keeper (its scheduler and HTTP server) in this process; ``stop()`` kills it. ``fabricate``: accounts
    this keeper falsely reports as breached (:func:`lying_keeper`)."""

    def __init__(self, net: Net, i: int, cfg, log_stream=None, fabricate: list[str] | None = None) -> None:
        from keeper.bots.keeper.bot import build_keeper
        from keeper.bots.keeper.scheduler import run_scheduler
        from keeper.ops.keys import KeeperKey
        from keeper.ops.logging import get_logger

        self.i = i
        key = KeeperKey(Account.from_key(net.keeper_keys[i]))
        self.bot, self.server = build_keeper(cfg, key, log=get_logger(f"k{i}", address=key.address),
                                             bot_class=lying_keeper(fabricate) if fabricate else None)
        self.server.start()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=run_scheduler, args=(self.bot, cfg.chain.poll_interval_s,
                                                                  self.stop_event), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=20)
        self.server.stop()


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for(pred, timeout: float, interval: float = 0.1):
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = pred()
        if got:
            return got
        time.sleep(interval)
    return None


def write_spot(path: Path, price: float) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"price": price, "volume": 1.0}))
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------------------
class TcpProxy:
    """A tiny TCP forwarder 127.0.0.1:port -> target; ``stop()`` closes the listener and every connection,
    ``start()`` listens again on the same port."""

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.port = port
        self._srv = None
        self._conns: list[socket.socket] = []
        self._running = threading.Event()

    def start(self) -> "TcpProxy":
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(32)
        srv.settimeout(0.2)
        self.port = srv.getsockname()[1]
        self._srv = srv
        self._running.set()
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        srv = self._srv
        while self._running.is_set():
            try:
                c, _ = srv.accept()
            except (socket.timeout, OSError):
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                c.close()
                continue
            self._conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def stop(self) -> None:
        self._running.clear()
        if self._srv is not None:
            self._srv.close()
            self._srv = None
        for s in self._conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self._conns = []

"""Deploy Backstop to a local chain and write the deployment file the bots read.

Reusable from ``brownie run scripts/deploy.py`` and from ``backstop deploy``:

* :func:`ensure_chain` attaches to the JSON-RPC endpoint when something answers there, or starts a local Anvil
  (``node_modules/.bin/anvil``; Ganache with ``backend="ganache"``) on that port and returns a handle that stops
  it again. Accounts come from a known mnemonic, so every process of a scenario can derive its keys.
* :func:`load_artifacts` takes ABIs and bytecode from brownie's build folder (compiling through brownie's
  project loader when the build is missing or stale).
* :func:`deploy` deploys the contracts, registers the keeper set and threshold, lists the collateral assets
  with haircuts and caps, creates the option series, wires the auction module and the insurance fund, and
  :func:`write_bot_deployment` writes the deployment file in the schema of :mod:`keeper.chain` (addresses, chain
  id, block) plus a ``.full.json`` with keepers, tokens, series and parameters.

Transactions are sent with web3 and signed locally with the derived keys (no node-side unlocked accounts), so the
same code runs against Anvil, Ganache or any other node.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

log = logging.getLogger("backstop.deploy")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: the mnemonic every local chain of the scenario is started with (test keys only, never for real funds)
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_CHAIN_ID = 31337
WAD = 10**18


class DeployError(RuntimeError):
    """Deployment cannot proceed; the message names the step and the cause in one line."""


# --------------------------------------------------------------------------------------------------- chain


def rpc_answers(url: str, timeout: float = 1.0) -> int | None:
    """Chain id of the node at ``url``, or ``None`` when nothing answers there."""
    import requests

    try:
        r = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                          timeout=timeout)
        return int(r.json()["result"], 16)
    except Exception:  # noqa: BLE001 - any failure means "not a usable node"
        return None


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    local = PROJECT_ROOT / "node_modules" / ".bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise DeployError(f"{name} not found in node_modules/.bin or PATH (run scripts/toolchain/bootstrap.sh)")
    return found


@dataclass
class LocalChain:
    """A JSON-RPC endpoint; ``process`` is set when this object started the node (then :meth:`stop` ends it)."""

    url: str
    chain_id: int
    backend: str
    mnemonic: str = DEFAULT_MNEMONIC
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def stop(self) -> None:
        """Stop the node if this object started it (by its own process id only)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def __enter__(self) -> "LocalChain":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_chain(url: str = "http://127.0.0.1:8545", backend: str = "anvil", *, chain_id: int = DEFAULT_CHAIN_ID,
                 accounts: int = 60, balance_eth: int = 10_000, mnemonic: str = DEFAULT_MNEMONIC,
                 gas_limit: int = 30_000_000, block_time: float | None = None, log_dir: Path | None = None,
                 start_timeout: float = 30.0) -> LocalChain:
    """Attach to ``url`` when a node answers, else start ``backend`` (``anvil`` or ``ganache``) listening there.

    Only local URLs (127.0.0.1 / localhost) are started. Anvil runs with base fee 0 and the given gas limit;
    Ganache with ``--chain.hardfork istanbul`` (the build's EVM version). ``block_time`` None means one block per
    transaction (automine)."""
    cid = rpc_answers(url)
    if cid is not None:
        log.info("attached to existing node at %s (chain id %s)", url, cid)
        return LocalChain(url, cid, "external", mnemonic)
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost") or parsed.port is None:
        raise DeployError(f"no node answers at {url} and only a local URL with a port can be started")
    port = parsed.port
    if backend == "anvil":
        argv = [_bin("anvil"), "--port", str(port), "--chain-id", str(chain_id), "--accounts", str(accounts),
                "--balance", str(balance_eth), "--mnemonic", mnemonic, "--gas-limit", str(gas_limit),
                "--block-base-fee-per-gas", "0", "--code-size-limit", str(2**17), "--silent"]
        if block_time:
            argv += ["--block-time", str(block_time)]
    elif backend == "ganache":
        argv = [_bin("ganache"), "--server.port", str(port), "--chain.chainId", str(chain_id),
                "--wallet.totalAccounts", str(accounts), "--wallet.defaultBalance", str(balance_eth),
                "--wallet.mnemonic", mnemonic, "--miner.blockGasLimit", str(gas_limit),
                "--chain.hardfork", "istanbul", "--chain.allowUnlimitedContractSize", "--logging.quiet"]
        if block_time:
            argv += ["--miner.blockTime", str(block_time)]
    else:
        raise DeployError(f"unknown chain backend {backend!r} (use anvil or ganache)")
    log_path = None
    out = subprocess.DEVNULL
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        log_path = Path(log_dir) / f"{backend}-{port}.log"
        out = log_path.open("wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeployError(f"{backend} exited with code {proc.returncode} on port {port}"
                              + (f" (see {log_path})" if log_path else ""))
        cid = rpc_answers(url, timeout=0.5)
        if cid is not None:
            log.info("started %s at %s (pid %s, chain id %s)", backend, url, proc.pid, cid)
            return LocalChain(url, cid, backend, mnemonic, proc, log_path)
        time.sleep(0.2)
    proc.terminate()
    raise DeployError(f"{backend} did not answer at {url} within {start_timeout:.0f}s")


def derive_keys(mnemonic: str, n: int) -> list[str]:
    """The first ``n`` private keys (0x hex) of the standard path m/44'/60'/0'/0/i."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return ["0x" + Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}").key.hex().removeprefix("0x")
            for i in range(n)]


# ----------------------------------------------------------------------------------------------- artefacts


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list
    bytecode: str

    def linked(self, libraries: dict[str, str]) -> "Artifact":
        """This artefact with each external library's placeholder (brownie's ``__Name___…``, 40 characters)
        replaced by its deployed address; raises :class:`DeployError` if a placeholder is left."""
        code = self.bytecode
        for name, address in libraries.items():
            code = code.replace(("__" + name).ljust(40, "_"), address[2:].lower())
        if "__" in code:
            raise DeployError(f"{self.name} needs a library that was not linked: {code[code.index('__'):][:40]}")
        return Artifact(self.name, self.abi, code)


def load_artifacts(names: Sequence[str], build_dir: Path | None = None, compile_if_missing: bool = True
                   ) -> dict[str, Artifact]:
    """ABI and deploy bytecode of the named contracts from brownie's ``build/contracts`` (compiled through
    brownie's project loader when an artefact is missing)."""
    build = Path(build_dir) if build_dir else PROJECT_ROOT / "build" / "contracts"
    missing = [n for n in names if not (build / f"{n}.json").is_file()]
    if missing and compile_if_missing:
        compile_project()
        missing = [n for n in names if not (build / f"{n}.json").is_file()]
    if missing:
        raise DeployError(f"no compiled artefact for {', '.join(missing)} in {build}")
    out = {}
    for n in names:
        d = json.loads((build / f"{n}.json").read_text())
        bc = d.get("bytecode") or ""
        if not bc:
            raise DeployError(f"artefact {n} has no bytecode (abstract contract or interface?)")
        out[n] = Artifact(n, d["abi"], bc if bc.startswith("0x") else "0x" + bc)
    return out


def compile_project() -> None:
    """Compile the contracts with brownie (``brownie compile``) in the project folder."""
    brownie = shutil.which("brownie") or str(PROJECT_ROOT / ".venv" / "bin" / "brownie")
    r = subprocess.run([brownie, "compile"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stdout + r.stderr).strip().splitlines()[-5:]
        raise DeployError("brownie compile failed: " + " | ".join(tail))


# -------------------------------------------------------------------------------------------- transactions


class Sender:
    """Sends transactions signed locally with one key; waits for the receipt and raises on revert."""

    def __init__(self, w3, key: str, gas_limit: int = 12_000_000):
        from eth_account import Account

        self.w3 = w3
        self.account = Account.from_key(key)
        self.address = self.account.address
        self.gas_limit = gas_limit
        self._nonce: int | None = None

    def _next_nonce(self) -> int:
        if self._nonce is None:
            self._nonce = self.w3.eth.get_transaction_count(self.address, "pending")
        n = self._nonce
        self._nonce += 1
        return n

    def reset_nonce(self) -> None:
        self._nonce = None

    def send(self, tx: dict, wait: bool = True, what: str = "transaction"):
        """Fill gas/nonce/chain id, sign, send; with ``wait`` return the receipt and raise DeployError on revert."""
        tx = dict(tx)
        tx.setdefault("from", self.address)
        tx.setdefault("chainId", self.w3.eth.chain_id)
        tx.setdefault("gasPrice", max(int(self.w3.eth.gas_price), 1))
        if "gas" not in tx:
            try:
                tx["gas"] = min(int(self.w3.eth.estimate_gas(tx) * 1.3) + 50_000, self.gas_limit)
            except Exception as e:  # noqa: BLE001 - the node's revert reason is the useful part
                raise DeployError(f"{what} would revert: {e}") from None
        for attempt in range(3):
            tx["nonce"] = self._next_nonce()
            signed = self.account.sign_transaction(tx)
            raw = getattr(signed, "raw_transaction", None) or getattr(signed, "rawTransaction")
            try:
                h = self.w3.eth.send_raw_transaction(raw)
                break
            except Exception as e:  # noqa: BLE001
                self.reset_nonce()  # another sender used this key's nonce (a shared node): re-read and retry
                if "nonce" not in str(e).lower() or attempt == 2:
                    raise
        if not wait:
            return h
        rcpt = self.w3.eth.wait_for_transaction_receipt(h, timeout=120)
        if rcpt["status"] != 1:
            raise DeployError(f"{what} reverted (tx {h.hex()})")
        return rcpt

    def deploy(self, art: Artifact, *args):
        """Deploy ``art`` with constructor ``args``; returns a web3 contract at the new address."""
        c = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        tx = c.constructor(*args).build_transaction({"from": self.address, "gas": self.gas_limit,
                                                     "gasPrice": max(int(self.w3.eth.gas_price), 1)})
        rcpt = self.send(tx, what=f"deploy {art.name}")
        return self.w3.eth.contract(address=rcpt["contractAddress"], abi=art.abi)

    def call(self, fn, what: str = "", **tx):
        """Send a contract function call (``contract.functions.f(...)``); a revert raises :class:`DeployError`
        naming the custom error and its arguments."""
        what = what or fn.fn_name
        try:
            built = fn.build_transaction({"from": self.address, "gasPrice": max(int(self.w3.eth.gas_price), 1),
                                          **tx})
        except Exception as e:  # noqa: BLE001 - estimate_gas reverted: say which error
            raise DeployError(f"{what} would revert: {describe_revert(e, fn.contract_abi)}") from None
        built.pop("gas", None)
        return self.send(built, what=what)


def describe_revert(exc: BaseException, abi: list) -> str:
    """``Name(arg, ...)`` of the custom error inside a web3 revert, decoded with ``abi``; else the message."""
    from eth_abi import decode
    from eth_utils import function_signature_to_4byte_selector

    data = getattr(exc, "data", None)
    if not isinstance(data, str):
        data = next((a for a in getattr(exc, "args", ()) if isinstance(a, str) and a.startswith("0x")), None)
    if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
        for item in abi:
            if item.get("type") != "error":
                continue
            types = [i["type"] for i in item.get("inputs", [])]
            sel = "0x" + function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})").hex()
            if data[:10].lower() == sel:
                try:
                    args = decode(types, bytes.fromhex(data[10:]))
                except Exception:  # noqa: BLE001
                    args = ()
                shown = ", ".join(("0x" + a.hex()) if isinstance(a, bytes) else str(a) for a in args)
                return f"{item['name']}({shown})"
    return str(exc)[:200]


def web3_for(url: str):
    """A web3 instance on ``url`` (HTTP)."""
    from web3 import Web3

    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60}))


# ---------------------------------------------------------------------------------------------- deployment


@dataclass(frozen=True)
class CollateralSpec:
    """A collateral asset to list: symbol, decimals, haircut (fraction), deposit cap (whole units), spot."""

    symbol: str
    decimals: int
    haircut: float
    cap: float
    spot: float


@dataclass(frozen=True)
class SeriesPlan:
    """An option series to create: strike as a fraction of spot, days to expiry, call or put."""

    strike_pct: float
    expiry_days: float
    is_call: bool


@dataclass(frozen=True)
class DeployConfig:
    """What to deploy: keeper count and threshold, collateral list, series grid and auction parameters."""

    n_keepers: int = 3
    threshold: int = 2
    quote_symbol: str = "USDC"
    quote_decimals: int = 6
    underlying_symbol: str = "WETH"
    spot0: float = 2000.0
    collateral: tuple[CollateralSpec, ...] = (
        CollateralSpec("WETH", 18, 0.15, 100_000, 2000.0),
        CollateralSpec("WBTC", 8, 0.10, 5_000, 40000.0),
    )
    series: tuple[SeriesPlan, ...] = tuple(
        SeriesPlan(k, d, c) for d in (14.0, 45.0) for k in (0.8, 0.9, 1.0, 1.1, 1.2) for c in (True, False))
    max_attestation_age: int = 3600
    max_price_age: int = 3600
    short_margin_fraction: float = 0.15
    penalty: float = 0.05
    target_buffer: float = 0.10
    auction_tau: int = 600
    #: the auction's floor (``cuspWad``): once the linear curve's factor falls below it, bids stop and the auction
    #: must be reset from a fresh attested value (MakerDAO's cusp; ETH-A used 0.4). 0 lets the price reach zero.
    auction_floor: float = 0.4
    fund_seed: float = 50_000.0
    #: minimum delay [s] of the BackstopTimelock that owns the deployment once it is set up (every power that can
    #: loosen risk or move value waits this long); ``None`` leaves the deployer's key as owner (unit tests only)
    governance_delay: int | None = 2 * 86400


def to_wad(x: float) -> int:
    """Float to WAD, rounded to the nearest unit (float inputs carry ~16 significant digits)."""
    from decimal import Decimal

    return int((Decimal(repr(float(x))) * WAD).to_integral_value())


RAY = 10**27
#: name of the mintable ERC20 test token contract (contracts/test/) the local deployment uses
TOKEN_CONTRACT = "TestERC20"


@dataclass
class DeployResult:
    """Everything :func:`deploy` created (richer than the deployment file: keys' addresses, series, params)."""

    chain_id: int
    rpc_url: str
    block: int
    timestamp: int
    owner: str
    clearinghouse: str
    auction: str
    quote_asset: str
    quote_decimals: int
    underlying: str
    tokens: dict[str, dict]  # symbol -> {"address", "decimals", "haircut", "cap", "spot"}
    keepers: list[str]
    threshold: int
    series: list[dict]  # {"id", "underlying", "strike", "expiry", "is_call"}
    params: dict
    deployment_file: str = ""
    timelock: str = ""  # the BackstopTimelock owning the contracts ("" when the deployer's key owns them)

    def to_json(self) -> dict:
        return asdict(self)


def clearinghouse_abi(arts: dict[str, Artifact] | None = None) -> list:
    """The Clearinghouse's full ABI: ``IClearinghouse`` (contracts/interfaces/IClearinghouse.sol) declares the
    functions, events and errors of both halves, its own hot paths and the ``ClearinghouseAdmin`` functions its
    fallback delegates to (tests/contracts/test_selectors.py checks it against the compiled halves). ``arts`` is
    accepted for callers that loaded the artefacts already; otherwise the project is compiled if needed."""
    if arts is None:
        load_artifacts(["Clearinghouse", "ClearinghouseAdmin"])
    from keeper.chain import load_abi

    return load_abi("clearinghouse")


def auction_config_tuple(cfg: DeployConfig) -> tuple:
    """The LiquidationAuction ``Config`` struct: linear curve over ``auction_tau`` seconds, reset below
    ``auction_floor`` of the start price's span or after twice ``auction_tau``."""
    return (0, int(cfg.auction_tau), 0, RAY, int(max(cfg.auction_tau * 2, 120)), to_wad(cfg.auction_floor),
            to_wad(cfg.target_buffer), to_wad(cfg.penalty), to_wad(0.001), 0, int(cfg.max_attestation_age))


def deploy(w3, owner_key: str, keeper_addresses: Sequence[str], cfg: DeployConfig = DeployConfig(), *,
           rpc_url: str = "", deployment_file: Path | str | None = None, token_contract: str = TOKEN_CONTRACT,
           progress=None) -> DeployResult:
    """Deploy tokens, Clearinghouse and LiquidationAuction; register keepers and threshold, list collateral with
    haircuts and caps, create the series grid around ``cfg.spot0``, set the auction as liquidation module and seed
    the insurance fund; write the deployment file when ``deployment_file`` is given."""
    from eth_utils import to_checksum_address

    say = progress or (lambda msg: log.info(msg))
    if not 1 <= cfg.threshold <= cfg.n_keepers or 2 * cfg.threshold <= cfg.n_keepers:
        raise DeployError(f"threshold {cfg.threshold} of {cfg.n_keepers} keepers: need 2M > N and M <= N")
    if len(keeper_addresses) != cfg.n_keepers:
        raise DeployError(f"{len(keeper_addresses)} keeper addresses given, config says {cfg.n_keepers}")
    arts = load_artifacts([token_contract, "Clearinghouse", "ClearinghouseAdmin", "LiquidationAuction",
                           "FallbackMarginLogic", "BackstopTimelock"])
    owner = Sender(w3, owner_key)
    tokens: dict[str, dict] = {}

    def make_token(symbol: str, decimals: int):
        c = owner.deploy(arts[token_contract], f"Test {symbol}", symbol, decimals)
        say(f"token {symbol} ({decimals} dp) at {c.address}")
        return c

    quote = make_token(cfg.quote_symbol, cfg.quote_decimals)
    tokens[cfg.quote_symbol] = {"address": quote.address, "decimals": cfg.quote_decimals, "haircut": 0.0,
                                "cap": 10**15, "spot": 1.0}
    for c in cfg.collateral:
        t = make_token(c.symbol, c.decimals)
        tokens[c.symbol] = {"address": t.address, "decimals": c.decimals, "haircut": c.haircut, "cap": c.cap,
                            "spot": c.spot}
    quote_cap = 10**15 * 10**cfg.quote_decimals
    smf = to_wad(cfg.short_margin_fraction)
    library = owner.deploy(arts["FallbackMarginLogic"])
    admin_art = arts["ClearinghouseAdmin"].linked({"FallbackMarginLogic": library.address})
    admin = owner.deploy(admin_art, owner.address, quote.address, quote_cap, smf)
    core = owner.deploy(arts["Clearinghouse"], owner.address, quote.address, quote_cap, smf, admin.address)
    ch = w3.eth.contract(address=core.address, abi=clearinghouse_abi(arts))
    say(f"Clearinghouse at {ch.address} (admin code at {admin.address})")
    keepers = sorted((to_checksum_address(k) for k in keeper_addresses), key=lambda a: int(a, 16))
    owner.call(ch.functions.setKeeperSet(keepers, cfg.threshold), "setKeeperSet")
    owner.call(ch.functions.setMaxAttestationAge(cfg.max_attestation_age), "setMaxAttestationAge")
    owner.call(ch.functions.setMaxPriceAge(cfg.max_price_age), "setMaxPriceAge")
    say(f"keeper set {cfg.threshold}-of-{len(keepers)}: {', '.join(k[:10] for k in keepers)}")
    for c in cfg.collateral:
        addr = tokens[c.symbol]["address"]
        cap = int(c.cap * 10**c.decimals)
        owner.call(ch.functions.listCollateral(addr, to_wad(c.haircut), cap), f"listCollateral {c.symbol}")
        say(f"listed {c.symbol}: haircut {c.haircut:.0%}, cap {c.cap:,.0f}")
    underlying = tokens[cfg.underlying_symbol]["address"]
    now = int(w3.eth.get_block("latest")["timestamp"])
    series = []
    for plan in cfg.series:
        strike = round(cfg.spot0 * plan.strike_pct, 2)
        expiry = now + int(plan.expiry_days * 86400)
        owner.call(ch.functions.createSeries(underlying, to_wad(strike), expiry, plan.is_call), "createSeries")
        series.append({"id": len(series) + 1, "underlying": underlying, "strike": strike, "expiry": expiry,
                       "is_call": plan.is_call})
    # series ids: read back from the events of the creations rather than assuming numbering
    ev = ch.events.SeriesCreated().get_logs(from_block=0)
    if len(ev) == len(series):
        for s, e in zip(series, ev):
            s["id"] = int(e["args"]["seriesId"])
    say(f"created {len(series)} option series")
    auction = owner.deploy(arts["LiquidationAuction"], ch.address, owner.address, auction_config_tuple(cfg))
    owner.call(ch.functions.setLiquidationModule(auction.address), "setLiquidationModule")
    say(f"LiquidationAuction at {auction.address} (liquidation module)")
    if cfg.fund_seed > 0:
        seed = int(cfg.fund_seed * 10**cfg.quote_decimals)
        owner.call(quote.functions.mint(owner.address, seed), "mint fund seed")
        owner.call(quote.functions.approve(auction.address, seed), "approve fund seed")
        owner.call(auction.functions.fundDeposit(seed), "fundDeposit")
        say(f"insurance fund seeded with {cfg.fund_seed:,.0f} {cfg.quote_symbol}")
    owner.call(ch.functions.setRiskAdmin(owner.address), "setRiskAdmin")
    owner.call(ch.functions.setGuardian(owner.address), "setGuardian")
    owner.call(auction.functions.setGuardian(owner.address), "auction setGuardian")
    timelock = None
    if cfg.governance_delay is not None:
        timelock = hand_over_to_timelock(w3, owner, arts["BackstopTimelock"], [ch, auction], cfg.governance_delay)
        say(f"owner of Clearinghouse and LiquidationAuction: BackstopTimelock at {timelock} "
            f"(min delay {cfg.governance_delay:,} s); guardian and risk admin: {owner.address}")
    head = w3.eth.get_block("latest")
    res = DeployResult(
        chain_id=int(w3.eth.chain_id), rpc_url=rpc_url, block=int(head["number"]), timestamp=int(head["timestamp"]),
        owner=owner.address, clearinghouse=ch.address, auction=auction.address, quote_asset=quote.address,
        quote_decimals=cfg.quote_decimals, underlying=underlying, tokens=tokens, keepers=keepers,
        threshold=cfg.threshold, series=series,
        params={"short_margin_fraction": cfg.short_margin_fraction, "penalty": cfg.penalty,
                "target_buffer": cfg.target_buffer, "auction_tau": cfg.auction_tau, "auction_floor": cfg.auction_floor,
                "max_attestation_age": cfg.max_attestation_age, "max_price_age": cfg.max_price_age,
                "spot0": cfg.spot0, "auction_config": list(auction_config_tuple(cfg)),
                "governance_delay": cfg.governance_delay},
        timelock=timelock or "",
    )
    if deployment_file is not None:
        res.deployment_file = str(write_bot_deployment(res, deployment_file))
        say(f"deployment file written: {res.deployment_file}")
    return res


def hand_over_to_timelock(w3, owner: "Sender", timelock_art: Artifact, owned: Sequence, delay: int) -> str:
    """Make a new :class:`BackstopTimelock` the owner of every contract in ``owned`` (Ownable2Step) and raise its
    minimum delay to ``delay`` seconds; returns its address.

    The timelock starts with delay 0 and ``owner`` as proposer and bootstrap admin, accepts the ownerships and raises
    its own delay in operations that run at once, then ``owner`` renounces the admin role: from then on every
    owner power waits ``delay`` seconds (anyone may execute a ready operation; ``owner`` proposes and cancels)."""
    if delay < 0:
        raise DeployError(f"governance delay must be >= 0 seconds, got {delay}")
    zero = "0x" + "00" * 20
    tl = owner.deploy(timelock_art, 0, [owner.address], [zero], owner.address)
    for c in owned:
        owner.call(c.functions.transferOwnership(tl.address), f"transferOwnership {c.address[:10]}")
    targets = [c.address for c in owned] + [tl.address]
    payloads = [c.encode_abi("acceptOwnership", []) for c in owned] + [tl.encode_abi("updateDelay", [int(delay)])]
    salt = b"\x00" * 32
    args = (targets, [0] * len(targets), payloads, b"\x00" * 32, salt)
    owner.call(tl.functions.scheduleBatch(*args, 0), "timelock scheduleBatch (hand-over)")
    owner.call(tl.functions.executeBatch(*args), "timelock executeBatch (hand-over)")
    admin_role = tl.functions.DEFAULT_ADMIN_ROLE().call()
    owner.call(tl.functions.renounceRole(admin_role, owner.address), "timelock renounce bootstrap admin")
    for c in owned:
        if c.functions.owner().call() != tl.address:
            raise DeployError(f"{c.address} did not accept the timelock as owner")
    if int(tl.functions.getMinDelay().call()) != int(delay):
        raise DeployError("timelock delay was not raised")
    return tl.address


def write_bot_deployment(res: DeployResult, path: Path | str) -> Path:
    """Write the deployment file in the schema of :mod:`keeper.chain` (``backstop-deployment/1``), and the full
    :class:`DeployResult` beside it as ``<name>.full.json``."""
    from keeper.chain import DEPLOYMENT_SCHEMA, Deployment, write_deployment as write_chain_deployment

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    collateral = {sym: t["address"] for sym, t in res.tokens.items() if sym != _quote_symbol(res)}
    dep = Deployment.model_validate({
        "schema": DEPLOYMENT_SCHEMA, "chain_id": res.chain_id, "block": res.block,
        "clearinghouse": res.clearinghouse, "auction": res.auction, "quote_asset": res.quote_asset,
        "underlyings": {_symbol_of(res, res.underlying): res.underlying}, "collateral": collateral,
        "abi": {"clearinghouse": clearinghouse_abi(),
                "auction": load_artifacts(["LiquidationAuction"])["LiquidationAuction"].abi},
    })
    write_chain_deployment(p, dep)
    full = p.with_name(p.stem + ".full.json")
    full.write_text(json.dumps(res.to_json(), indent=2))
    return p


def _quote_symbol(res: DeployResult) -> str:
    return next(s for s, t in res.tokens.items() if t["address"] == res.quote_asset)


def _symbol_of(res: DeployResult, address: str) -> str:
    return next(s for s, t in res.tokens.items() if t["address"].lower() == address.lower())


def read_deploy_result(path: Path | str) -> DeployResult:
    """Read the ``.full.json`` written beside a deployment file (or the full file itself)."""
    p = Path(path)
    full = p if p.name.endswith(".full.json") else p.with_name(p.stem + ".full.json")
    try:
        return DeployResult(**json.loads(full.read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise DeployError(f"cannot read deployment details {full}: {e}") from None

"""Deploy Backstop to a local chain and write the deployment file the bots read.

Reusable from ``brownie run scripts/deploy.py`` and from ``backstop deploy``:

* :func:`ensure_chain` attaches to the JSON-RPC endpoint when something answers there, or starts a local Anvil
  (``node_modules/.bin/anvil``; Ganache with ``backend="ganache"``) on that port and returns a handle that stops
  it again. Accounts come from a known mnemonic, so every process of a scenario can derive its keys.
* :func:`load_artifacts` takes ABIs and bytecode from brownie's build folder (compiling through brownie's
  project loader when the build is missing or stale).
* :func:`deploy` deploys the contracts, registers the keeper set and threshold, lists the collateral assets
  with haircuts and caps, creates the option series, wires the auction module and the insurance fund, and
  :func:`write_bot_deployment` writes the deployment file in the schema of :mod:`keeper.chain.deployment` (addresses, chain
  id, block) plus a ``.full.json`` with keepers, tokens, series and parameters.

Transactions are sent with web3 and signed locally with the derived keys (no node-side unlocked accounts), so the
same code runs against Anvil, Ganache or any other node.
"""
from __future__ import annotations

import logging
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import requests

from keeper.errors import DeployError

log = logging.getLogger("backstop.deploy")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: the mnemonic every local chain of the scenario is started with (test keys only, never for real funds)
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_CHAIN_ID = 31337
# --------------------------------------------------------------------------------------------------- chain


def rpc_answers(url: str, timeout: float = 1.0) -> int | None:
    """Chain id of the node at ``url``, or ``None`` when nothing answers there."""

    try:
        r = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                          timeout=timeout)
        return int(r.json()["result"], 16)
    except Exception:  # noqa: BLE001 - any failure means "not a usable node"
        return None


#: where :func:`free_port` looks first: below Linux's ephemeral range (32768-60999), from which the kernel hands out
#: the local ports of outgoing connections. A port picked there can be taken by any client socket (an RPC call,
#: a keeper's HTTP request) between the pick and the server's bind, which happened under load.
LISTEN_PORTS = range(20000, 32000)


def free_port(avoid: frozenset[int] | set[int] = frozenset()) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, not in ``avoid``: a random one below the ephemeral range
    (checked by binding it), else one the kernel assigns."""
    rng = random.Random()
    for _ in range(64):
        port = rng.choice(LISTEN_PORTS)
        if port in avoid:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
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



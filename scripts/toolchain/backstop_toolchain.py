"""Per-checkout toolchain state for every Python process of this checkout's ``.venv``.

``scripts/toolchain/bootstrap.sh`` installs ``.venv/.../site-packages/backstop_toolchain.pth``, which puts this
folder on ``sys.path`` and calls :func:`activate` when any interpreter of the venv starts (``brownie``, ``pytest``,
``python``, subprocesses of tests). Nothing here runs for another checkout's venv, so two clones on one machine
never share any of it:

* **Compiler.** ``SOLCX_BINARY_PATH`` is set to ``.venv/solcx``, where bootstrap writes the ``solc-v<version>``
  adapter over this checkout's solcjs (py-solc-x, and so brownie, look for compilers there instead of ``~/.solcx``).
* **brownie's data folder.** brownie keeps ``network-config.yaml``, ``topics.json``, ``errors.json``, its
  hypothesis example database and deployment/cache databases in ``DATA_FOLDER = Path.home() / ".brownie"``,
  computed once when ``brownie._config`` is imported (a compiled module: there is no setting for it). While that one
  module is being imported, ``HOME`` is pointed at ``.venv/brownie-home`` (so the folder is
  ``.venv/brownie-home/.brownie``) and restored right after; nothing else in the process sees the change.
* **Chain port.** brownie's local networks launch their chain on the port of ``network-config.yaml`` (8545) and
  *attach* to whatever already listens there, so two runs share one chain. :func:`isolate_chain` points every
  network brownie launches itself at one port for this process: ``BACKSTOP_CHAIN_PORT`` (a number: use it, e.g. to
  attach on purpose; ``free``: a free port). The tests' ``conftest.py`` calls it for every test run (a free port
  unless the variable names one); for other commands it is applied when ``BACKSTOP_CHAIN_PORT`` is set (``make gas``
  sets ``free``), so ``brownie run scripts/deploy.py`` still attaches to a chain already on 8545.
* **Transactions return mined.** On a development network, a middleware (:func:`register_send_returns_mined`,
  registered when brownie's middleware package is imported) makes ``eth_sendRawTransaction`` /
  ``eth_sendTransaction`` return only once the transaction's receipt can be read. Anvil mines an automined
  transaction after the send has returned, and it commits the new state (the sender's nonce) before it stores
  the block and its receipts (``do_mine_block`` releases the state lock, then takes the block-storage lock). In
  between, ``eth_getTransactionCount(sender, "latest")`` already counts the transaction while
  ``eth_getTransactionReceipt`` still returns null. brownie's confirmation loop reads exactly these two, in
  that order, and takes "nonce moved, no receipt" for a replaced transaction: ``Tx dropped without known
  replacement``. The window is short but a loaded machine stretches it (the test suite sent tens of thousands
  of transactions per run). Once the send returns with the receipt stored, brownie never looks inside it.
  ``BACKSTOP_SEND_WAIT_S`` (default 120; 0 disables) bounds the wait, e.g. for a chain with automine off.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import random
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
SOLCX_DIR = VENV / "solcx"
BROWNIE_HOME = VENV / "brownie-home"
PORT_VARIABLE = "BACKSTOP_CHAIN_PORT"
SEND_WAIT_VARIABLE = "BACKSTOP_SEND_WAIT_S"
SEND_METHODS = frozenset({"eth_sendRawTransaction", "eth_sendTransaction"})
LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0", "::1"}


def activate() -> None:
    """Called by ``backstop_toolchain.pth`` at interpreter start: compiler folder, brownie data folder, port."""
    os.environ["SOLCX_BINARY_PATH"] = str(SOLCX_DIR)
    if "brownie._config" in sys.modules:  # imported before site? cannot happen with a .pth; be safe
        return
    if not any(isinstance(f, _BrownieFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _BrownieFinder())


def brownie_data_folder() -> Path:
    return BROWNIE_HOME / ".brownie"


@contextmanager
def _home(path: Path):
    saved = os.environ.get("HOME")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["HOME"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved


class _WrappedLoader(importlib.abc.Loader):
    """Runs the wrapped loader (module creation and body: a mypyc extension module runs its body while it is
    created) inside ``around`` and calls ``after(module)`` once the module is loaded."""

    def __init__(self, inner, around, after):
        self.inner, self.around, self.after = inner, around, after

    def create_module(self, spec):
        with self.around():
            return self.inner.create_module(spec)

    def exec_module(self, module):
        with self.around():
            self.inner.exec_module(module)
        self.after(module)


@contextmanager
def _nothing():
    yield


def _after_config(module) -> None:
    if os.environ.get(PORT_VARIABLE):
        isolate_chain(module.CONFIG)


def _after_middlewares(module) -> None:
    register_send_returns_mined(module)


class _BrownieFinder(importlib.abc.MetaPathFinder):
    """Wraps the loading of two brownie modules: ``brownie._config`` (HOME pointed at the checkout's brownie home,
    then the chain port) and ``brownie.network.middlewares`` (then the send-returns-mined middleware)."""

    def __init__(self):
        self.todo = {
            "brownie._config": (lambda: _home(BROWNIE_HOME), _after_config),
            "brownie.network.middlewares": (_nothing, _after_middlewares),
        }

    def find_spec(self, name, path=None, target=None):
        if name not in self.todo:
            return None
        around, after = self.todo.pop(name)
        if not self.todo:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _WrappedLoader(spec.loader, around, after)
        return spec


def send_wait_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(SEND_WAIT_VARIABLE, "120")))
    except ValueError:
        raise SystemExit(f"{SEND_WAIT_VARIABLE}={os.environ[SEND_WAIT_VARIABLE]!r}: expected seconds") from None


def register_send_returns_mined(middlewares=None):
    """Add the middleware described in this module's docstring to brownie's middleware list (idempotent); it is
    installed on the next connect (``web3.reset_middlewares``). Returns the middleware class."""
    if middlewares is None:
        import brownie.network.middlewares as middlewares
    for cls in middlewares._middlewares:
        if getattr(cls, "BACKSTOP_SEND_RETURNS_MINED", False):
            return cls

    from web3.middleware import Web3Middleware

    # brownie's BrownieMiddlewareABC is compiled (mypyc) and cannot be subclassed here; brownie only needs what
    # this class has: get_layer, construction from the web3 object, web3's middleware interface and uninstall
    class SendReturnsMined(Web3Middleware):
        BACKSTOP_SEND_RETURNS_MINED = True

        @classmethod
        def get_layer(cls, w3, network_type):
            return 0 if network_type == "development" and send_wait_seconds() > 0 else None

        def wrap_make_request(self, make_request):
            def middleware(method, params):
                response = make_request(method, params)
                if method in SEND_METHODS and isinstance(response, dict) and response.get("result"):
                    wait_for_receipt(make_request, response["result"], send_wait_seconds())
                return response

            return middleware

        def uninstall(self):
            pass

    middlewares._middlewares.append(SendReturnsMined)
    return SendReturnsMined


def wait_for_receipt(make_request, txid, timeout_s: float) -> bool:
    """Poll ``eth_getTransactionReceipt`` until the node returns the receipt (True) or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        reply = make_request("eth_getTransactionReceipt", [txid])
        if isinstance(reply, dict) and reply.get("result"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def free_port() -> int:
    """A port nothing listens on, picked below Linux's ephemeral range (32768-60999) where client sockets never land
    (keeper.chain.local.free_port does the same; this module cannot import the package), else kernel-assigned."""
    rng = random.Random()
    for _ in range(64):
        port = rng.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chain_port_from_env(default: str = "free") -> tuple[int, bool]:
    """(port, pinned): the port ``BACKSTOP_CHAIN_PORT`` names, or a free one (pinned False)."""
    value = (os.environ.get(PORT_VARIABLE) or default).strip().lower()
    if value == "free":
        return free_port(), False
    try:
        port = int(value)
    except ValueError:
        raise SystemExit(f"{PORT_VARIABLE}={value!r}: expected a port number or 'free'") from None
    if not 0 < port < 65536:
        raise SystemExit(f"{PORT_VARIABLE}={value!r}: not a port number")
    return port, True


def isolate_chain(config=None, default: str = "free") -> tuple[int, bool]:
    """Point every local network brownie launches itself (``cmd`` set, host without a port) at one port: the one
    ``BACKSTOP_CHAIN_PORT`` names or a free one. Returns ``(port, pinned)``; call it before brownie connects."""
    if config is None:
        from brownie._config import CONFIG as config
    port, pinned = chain_port_from_env(default)
    for network in config.networks.values():
        host = urlparse(network.get("host") or "")
        if "cmd" not in network or host.port is not None or host.hostname not in LOCAL_HOSTS:
            continue
        settings = network.get("cmd_settings")
        if not isinstance(settings, dict):
            settings = network["cmd_settings"] = {}
        settings["port"] = port
    return port, pinned

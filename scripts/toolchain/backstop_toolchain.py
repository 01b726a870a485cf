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
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
SOLCX_DIR = VENV / "solcx"
BROWNIE_HOME = VENV / "brownie-home"
PORT_VARIABLE = "BACKSTOP_CHAIN_PORT"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0", "::1"}


def activate() -> None:
    """Called by ``backstop_toolchain.pth`` at interpreter start: compiler folder, brownie data folder, port."""
    os.environ["SOLCX_BINARY_PATH"] = str(SOLCX_DIR)
    if "brownie._config" in sys.modules:  # imported before site? cannot happen with a .pth; be safe
        return
    if not any(isinstance(f, _BrownieConfigFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _BrownieConfigFinder())


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


class _HomeLoader(importlib.abc.Loader):
    """Runs the wrapped loader with ``HOME`` pointed at the checkout's brownie home (module creation and body:
    a mypyc extension module runs its body while it is created)."""

    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        with _home(BROWNIE_HOME):
            return self.inner.create_module(spec)

    def exec_module(self, module):
        with _home(BROWNIE_HOME):
            self.inner.exec_module(module)
        if os.environ.get(PORT_VARIABLE):
            isolate_chain(module.CONFIG)


class _BrownieConfigFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "brownie._config":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _HomeLoader(spec.loader)
        return spec


def free_port() -> int:
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

"""keeper/backtest: the math modules import no chain, network or process modules and do no file I/O."""
from __future__ import annotations

import ast
from pathlib import Path

import keeper.backtest

PKG = Path(keeper.backtest.__file__).parent
PURE = ("market.py", "population.py", "engine.py", "runner.py", "var_backtest.py", "report.py")
FORBIDDEN = {"web3", "eth_account", "requests", "subprocess", "socket", "urllib", "http"}


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module.split(".")[0]


def test_pure_modules_import_nothing_forbidden_and_open_no_files():
    for name in PURE:
        tree = ast.parse((PKG / name).read_text())
        bad = set(_imports(tree)) & FORBIDDEN
        assert not bad, f"{name} imports {bad}"
        calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                 for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert not calls & {"open", "read_text", "write_text", "savefig", "mkdir"}, name

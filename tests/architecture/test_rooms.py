"""The rooms of keeper/ and their rules (docs/ARCHITECTURE.md), checked on the real tree, and each check shown to
catch a violation planted in a copy of the tree.

import-linter (`lint-imports`, contracts in pyproject.toml) checks the direction of imports between rooms; the
AST checks here cover what it cannot express: no flat modules besides units.py and errors.py, no private name
imported across modules, imports at module top (function-level only for matplotlib), codec taking only EIP-712
hashing from eth-account, the units defined once, and one exception root.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEEPER = ROOT / "keeper"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
#: modules allowed directly in keeper/
FLAT_OK = {"__init__.py", "units.py", "errors.py"}
#: function-level imports allowed for these (optional heavy dependencies)
LAZY_OK = ("matplotlib",)
UNIT_NAMES = {"WAD", "RAY", "SECONDS_PER_YEAR"}


def _modules(root: Path):
    for f in sorted(root.rglob("*.py")):
        yield f, ast.parse(f.read_text(), filename=str(f))


def flat_modules(root: Path) -> list[str]:
    return sorted(f.name for f in root.glob("*.py") if f.name not in FLAT_OK)


def private_imports(root: Path) -> list[str]:
    """``from keeper.x import _name`` anywhere in the package."""
    out = []
    for f, tree in _modules(root):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keeper"):
                out += [f"{f.relative_to(root.parent)}:{node.lineno} {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def lazy_imports(root: Path) -> list[str]:
    """Imports inside functions, except optional heavy dependencies, optional readers in ``try`` blocks and
    ``if TYPE_CHECKING:`` blocks (annotations only)."""
    out = []
    for f, tree in _modules(root):
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or parents.get(node) is tree:
                continue
            mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            p, in_try = parents.get(node), False
            while p is not None and p is not tree:
                in_try |= isinstance(p, ast.Try)
                typing_only = isinstance(p, ast.If) and ast.unparse(p.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                in_try |= typing_only and parents.get(p) is tree
                p = parents.get(p)
            if not in_try and not (mod or "").startswith(LAZY_OK):
                out.append(f"{f.relative_to(root.parent)}:{node.lineno} {ast.unparse(node)}")
    return out


def codec_eth_account_uses(root: Path) -> list[str]:
    """What keeper/codec takes from eth_account besides ``eth_account.messages`` (keys belong in ops.signing)."""
    out = []
    for f, tree in _modules(root / "codec"):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("eth_account") \
                    and node.module != "eth_account.messages":
                out.append(f"{f.name}:{node.lineno} from {node.module}")
            if isinstance(node, ast.Import) and any(a.name.startswith("eth_account") for a in node.names):
                out.append(f"{f.name}:{node.lineno} import eth_account")
    return out


def unit_redefinitions(root: Path) -> list[str]:
    out = []
    for f, tree in _modules(root):
        if f.name == "units.py" and f.parent == root:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign):
                out += [f"{f.relative_to(root.parent)}:{node.lineno} {t.id}" for t in node.targets
                        if isinstance(t, ast.Name) and t.id in UNIT_NAMES]
    return out


def lint_imports(pkg_parent: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(pkg_parent))
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=pkg_parent, env=env, capture_output=True, text=True, timeout=300)


def test_the_tree_keeps_every_rule():
    assert flat_modules(KEEPER) == []
    assert private_imports(KEEPER) == []
    assert lazy_imports(KEEPER) == []
    assert codec_eth_account_uses(KEEPER) == []
    assert unit_redefinitions(KEEPER) == []
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_every_error_has_the_one_root():
    from keeper.errors import BackstopError

    stray = []
    for m in pkgutil.walk_packages([str(KEEPER)], "keeper."):
        mod = importlib.import_module(m.name)
        for name, obj in inspect.getmembers(mod, inspect.isclass):
            if obj.__module__ == mod.__name__ and issubclass(obj, Exception) and not issubclass(obj, BackstopError):
                stray.append(f"{mod.__name__}.{name}")
    assert stray == []


@pytest.fixture()
def planted(tmp_path):
    """A copy of keeper/ in which every rule is broken once."""
    pkg = tmp_path / "keeper"
    shutil.copytree(KEEPER, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "helpers.py").write_text("X = 1\n")
    with open(pkg / "quant" / "marks.py", "a") as fh:  # math importing the bot: upward, and a network library
        fh.write("\nfrom keeper.bots import keeper as _bot  # noqa\nimport requests  # noqa\n")
    with open(pkg / "attest" / "inputs.py", "a") as fh:
        fh.write("\nfrom keeper.codec.canonical import normalise as _n, _private  # noqa\n"
                 "\ndef f():\n    import numpy\n    return numpy\n\nWAD = 10**18\n")
    with open(pkg / "codec" / "canonical.py", "a") as fh:
        fh.write("\nfrom eth_account import Account  # noqa\n")
    return pkg


def test_a_planted_violation_of_each_rule_is_caught(planted):
    assert flat_modules(planted) == ["helpers.py"]
    assert [x.split()[-1] for x in private_imports(planted)] == ["_private"]
    assert any("import numpy" in x for x in lazy_imports(planted))
    assert codec_eth_account_uses(planted) == [f"canonical.py:{_last_line(planted / 'codec' / 'canonical.py')} from eth_account"]
    assert [x.split()[-1] for x in unit_redefinitions(planted)] == ["WAD"]
    run = lint_imports(planted.parent)
    assert run.returncode != 0
    assert "keeper.quant.marks -> keeper.bots.keeper" in run.stdout
    assert "keeper.quant is not allowed to import requests" in run.stdout


def _last_line(path: Path) -> int:
    return len(path.read_text().splitlines())

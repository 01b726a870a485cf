#!/usr/bin/env python3
"""Static analysis gate: slither on the contracts, failing on any High or Medium finding not triaged.

    python scripts/slither_check.py                 # or: make slither (also part of make test)
    python scripts/slither_check.py --missing-only  # print only the paste-able entries for untriaged findings

Slither compiles through this checkout's solc adapter over solcjs (``--solc .venv/solcx/solc-v<version>
--solc-standard-json``, OpenZeppelin remapped to ``node_modules``). A standard-JSON run takes the ``.sol`` files of
one folder (not its subfolders) plus what they import, so slither runs once per folder under ``contracts/`` that
holds Solidity files, except ``test`` folders (test tokens and harnesses, never deployed; the re-entrant token is
hostile on purpose). Each run's JSON goes to ``reports/slither/<folder>.json``.

A finding is keyed by detector + contract + function (the state variable's name for findings about a state
variable, empty for findings about a whole contract), so a key survives line moves. ``slither-triage.toml`` (at the
project root) lists accepted findings, each with its reason::

    [[finding]]
    detector = "unused-return"
    contract = "KeeperSet"
    function = "_verifySignatures"
    reason = "..."

Exit status 1 (one line per finding) when a High or Medium finding has no entry with a reason, or when slither
fails; triage entries that match nothing are reported (not an error: the contracts move). Findings lying entirely in
third-party code (``node_modules``) are counted, not gated. Untriaged findings are printed as TOML entries with
``reason = "TODO"`` to paste and fill in (an entry whose reason is empty or starts with TODO does not count).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "contracts"
TRIAGE = ROOT / "slither-triage.toml"
REPORTS = ROOT / "reports" / "slither"
GATED = ("High", "Medium")
THIRD_PARTY = ("node_modules/",)


@dataclass(frozen=True)
class Finding:
    detector: str
    impact: str
    contract: str
    function: str
    where: str  # file#lines of the first element
    description: str
    third_party: bool

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.detector, self.contract, self.function)

    def line(self) -> str:
        name = f"{self.contract}.{self.function}" if self.function else self.contract
        first = " ".join(self.description.split())
        return f"slither {self.impact} {self.detector} {name} ({self.where}): {first[:240]}"

    def toml(self) -> str:
        comment = "\n".join("# " + l for l in " ".join(self.description.split()).split(". ") if l)[:600]
        return (f'[[finding]]\ndetector = "{self.detector}"\ncontract = "{self.contract}"\n'
                f'function = "{self.function}"\nimpact = "{self.impact}"\nreason = "TODO"\n{comment}\n')


def solc_adapter() -> Path:
    version = json.loads((ROOT / "node_modules" / "solc" / "package.json").read_text())["version"]
    adapter = ROOT / ".venv" / "solcx" / f"solc-v{version}"
    if not os.access(adapter, os.X_OK):
        sys.exit(f"slither_check: no solc adapter at {adapter} (run: make setup)")
    return adapter


def targets() -> list[Path]:
    """Every folder under contracts/ holding .sol files, except test folders."""
    out = []
    for folder in sorted({p.parent for p in CONTRACTS.rglob("*.sol")}):
        rel = folder.relative_to(CONTRACTS)
        if "test" in rel.parts:
            continue
        out.append(folder)
    return out


def run_slither(folder: Path, adapter: Path) -> dict:
    rel = folder.relative_to(ROOT)
    REPORTS.mkdir(parents=True, exist_ok=True)
    out = REPORTS / (("_".join(folder.relative_to(CONTRACTS).parts) or "contracts") + ".json")
    out.unlink(missing_ok=True)
    slither = Path(sys.executable).with_name("slither")
    cmd = [str(slither), str(rel), "--solc", str(adapter), "--solc-standard-json",
           "--solc-remaps", "@openzeppelin/=node_modules/@openzeppelin/",
           "--exclude-informational", "--exclude-low", "--exclude-optimization",
           "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if not out.is_file():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        sys.exit(f"slither_check: slither produced no JSON for {rel} (exit {proc.returncode}):\n  " + "\n  ".join(tail)
                 + f"\n  command: {' '.join(cmd)}")
    doc = json.loads(out.read_text())
    if not doc.get("success"):
        sys.exit(f"slither_check: slither failed on {rel}: {doc.get('error')}")
    return doc


def _contract_and_function(element: dict) -> tuple[str, str]:
    kind, name = element.get("type"), element.get("name", "")
    parent = (element.get("type_specific_fields") or {}).get("parent") or {}
    if kind == "contract":
        return name, ""
    if kind == "function":
        return parent.get("name", ""), name
    if kind == "variable":
        if parent.get("type") == "function":  # a local variable: keyed by its function
            grand = (parent.get("type_specific_fields") or {}).get("parent") or {}
            return grand.get("name", ""), parent.get("name", "")
        return parent.get("name", ""), name
    if kind == "node":  # a statement: its function
        grand = (parent.get("type_specific_fields") or {}).get("parent") or {}
        return grand.get("name", ""), parent.get("name", "")
    # an event, modifier, struct, enum...: its contract and its own name
    return parent.get("name", "") or name, name if parent else ""


def findings(doc: dict) -> list[Finding]:
    out = []
    for r in (doc.get("results") or {}).get("detectors", []):
        elements = [e for e in r.get("elements", []) if e.get("source_mapping")]
        if not elements:
            continue
        first = elements[0]
        contract, function = _contract_and_function(first)
        sm = first["source_mapping"]
        lines = sm.get("lines") or []
        where = sm.get("filename_relative", "?") + (f"#{lines[0]}" + (f"-{lines[-1]}" if len(lines) > 1 else "")
                                                    if lines else "")
        third = all(any(e["source_mapping"].get("filename_relative", "").startswith(tp) for tp in THIRD_PARTY)
                    for e in elements)
        out.append(Finding(r["check"], r["impact"], contract, function, where, r.get("description", ""), third))
    return out


def load_triage(path: Path) -> dict[tuple[str, str, str], str]:
    if not path.is_file():
        return {}
    data = tomllib.loads(path.read_text())
    out = {}
    for i, entry in enumerate(data.get("finding", [])):
        try:
            key = (entry["detector"], entry["contract"], entry.get("function", ""))
        except KeyError as exc:
            sys.exit(f"slither_check: {path.name} entry {i + 1} has no {exc.args[0]}")
        if key in out:
            sys.exit(f"slither_check: {path.name} lists {key} twice")
        out[key] = str(entry.get("reason", "")).strip()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--triage", type=Path, default=TRIAGE)
    ap.add_argument("--missing-only", action="store_true", help="print only paste-able entries for untriaged findings")
    args = ap.parse_args(argv)

    adapter = solc_adapter()
    triage = load_triage(args.triage)
    seen: dict[tuple[str, str, str], Finding] = {}
    all_keys = set()
    third_party = 0
    for folder in targets():
        if not args.missing_only:
            print(f"slither: {folder.relative_to(ROOT)}", flush=True)
        for f in findings(run_slither(folder, adapter)):
            if f.impact not in GATED:
                continue
            if f.third_party:
                third_party += 1
                continue
            all_keys.add(f.key)
            seen.setdefault(f.key, f)  # a finding reported by several runs (shared files) counts once

    untriaged = [f for k, f in sorted(seen.items()) if not triage.get(k) or triage[k].upper().startswith("TODO")]
    if args.missing_only:
        for f in untriaged:
            print(f.toml())
        return 1 if untriaged else 0

    accepted = [f for f in seen.values() if f not in untriaged]
    stale = sorted(k for k in triage if k not in all_keys)
    print(f"slither: {len(seen)} High/Medium finding(s) in the project's contracts, {len(accepted)} triaged in "
          f"{args.triage.relative_to(ROOT) if args.triage.is_relative_to(ROOT) else args.triage}; "
          f"{third_party} in third-party code (node_modules) not gated")
    for k in stale:
        print(f"slither: triage entry matches no finding (remove it?): detector={k[0]} contract={k[1]} "
              f"function={k[2]}")
    if not untriaged:
        return 0
    for f in untriaged:
        print(f.line())
    print(f"\n# {len(untriaged)} untriaged High/Medium finding(s): fix them, or paste these entries into "
          f"{TRIAGE.relative_to(ROOT)} and write each reason\n")
    for f in untriaged:
        print(f.toml())
    return 1


if __name__ == "__main__":
    sys.exit(main())

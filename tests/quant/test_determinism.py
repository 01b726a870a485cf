"""Bit-identical risk outputs across runs, processes, thread settings and chunk sizes."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from keeper.quant.risk.engine import compute_account_risk, deserialize_risk_inputs, serialize_risk_inputs
from keeper.quant.risk.scenarios import grid_scenarios, monte_carlo_scenarios, seed_from_block_hash
from keeper.quant.risk.synthetic import synthetic_book

ROOT = Path(__file__).resolve().parents[2]
BLOCK_HASH = "0x" + "5c" * 16 + "a7" * 16

CHILD = r"""
import hashlib, sys
from keeper.quant.risk.engine import compute_account_risk, deserialize_risk_inputs
from keeper.quant.risk.scenarios import grid_scenarios, monte_carlo_scenarios, seed_from_block_hash
inputs = deserialize_risk_inputs(open(sys.argv[1], "rb").read())
mc = monte_carlo_scenarios(seed_from_block_hash(sys.argv[2]), 3000, inputs.n_underlyings)
risk = compute_account_risk(inputs, mc, grid_scenarios([0.15, 0.2]), chunk=int(sys.argv[3]))
sys.stdout.write(hashlib.sha256(risk.to_bytes()).hexdigest())
"""


def _digest_in_process(inputs, chunk: int = 256) -> str:
    mc = monte_carlo_scenarios(seed_from_block_hash(BLOCK_HASH), 3000, inputs.n_underlyings)
    risk = compute_account_risk(inputs, mc, grid_scenarios([0.15, 0.2]), chunk=chunk)
    return hashlib.sha256(risk.to_bytes()).hexdigest()


def _digest_in_subprocess(path: Path, threads: str, chunk: int, hashseed: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               PYTHONHASHSEED=hashseed, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), BLOCK_HASH, str(chunk)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip()


def test_same_serialized_inputs_give_identical_bytes_in_two_processes(tmp_path):
    inputs = synthetic_book(2024, 600, 60, positions_per_account=6)
    path = tmp_path / "inputs.json"
    path.write_bytes(serialize_risk_inputs(inputs))
    here = _digest_in_process(deserialize_risk_inputs(path.read_bytes()))
    one = _digest_in_subprocess(path, "1", 256, "1")
    two = _digest_in_subprocess(path, "2", 97, "2")
    assert len(one) == 64 and one == two == here
    # and the digest does depend on the inputs: one nudged vol changes it
    vols = np.array(inputs.vols)
    vols[0] = np.nextafter(vols[0], 1.0)
    nudged = type(inputs)(inputs.series, inputs.positions, inputs.collateral, inputs.collateral_assets,
                          inputs.forward, vols, inputs.marks, inputs.params)
    assert _digest_in_process(nudged) != here


def test_outputs_do_not_depend_on_chunking_or_repetition():
    inputs = synthetic_book(9, 333, 40, positions_per_account=5)
    digests = {_digest_in_process(inputs, chunk) for chunk in (1, 50, 256, 1000)}
    digests.add(_digest_in_process(inputs, 256))
    assert len(digests) == 1

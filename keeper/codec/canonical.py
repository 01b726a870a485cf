"""Deterministic serialization and hashing of off-chain inputs.

Everything a keeper attests is recomputable from inputs serialized here: canonical JSON (sorted keys, no
whitespace, floats written as their exact IEEE-754 hex so that two machines agree bit for bit) hashed with
keccak-256, the hash the contracts carry as ``inputsHash``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, is_dataclass
from typing import Any

import numpy as np
from eth_utils import keccak


def normalise(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return normalise(asdict(value))
    if isinstance(value, dict):
        return {str(k): normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, np.ndarray):
        return [normalise(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"non-finite float {f!r} cannot be serialized canonically")
        return {"f": f.hex()}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def canonical_json(value: Any) -> bytes:
    """Serialize ``value`` (dicts, lists, dataclasses, numpy arrays, floats, ints, str, bytes) canonically."""
    return json.dumps(normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def inputs_hash(value: Any) -> bytes:
    """keccak-256 of the canonical serialization: 32 bytes."""
    return keccak(canonical_json(value))

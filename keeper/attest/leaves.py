"""Margin leaves from an inputs document: the :class:`Leaf`, the hash-indexed Merkle tree, and
:func:`leaves_from_inputs`, the pure computation every keeper and verifier runs on the same archived document."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp
from eth_abi.exceptions import EncodingError

from keeper import units
from keeper.codec import eip712
from keeper.codec.canonical import normalise
from keeper.quant.risk.engine import (
    CALL,
    NO_UNDERLYING,
    PUT,
    CollateralTable,
    RiskInputs,
    RiskParams,
    SeriesTable,
    compute_account_risk,
    from_canonical,
    model_values,
    to_quote_units,
)
from keeper.quant.risk.scenarios import (
    MertonParams,
    grid_scenarios,
    monte_carlo_scenarios,
)
from keeper.units import SECONDS_PER_YEAR, WAD

SCHEMA = "backstop-inputs/1"


# ------------------------------------------------------------------------------------------------------------
# Margin leaves and the OZ StandardMerkleTree: hashing, tree layout, proofs and bounds come from keeper/codec/eip712.py
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Leaf:
    """One account's attested margin numbers (quote base units). Unlike :class:`keeper.codec.eip712.MarginLeaf` it is
    not range-checked at construction (the risk engine's output is checked with :meth:`storage_violation` and an
    out-of-range account is left out of the batch, not allowed to stop it)."""

    account: str
    state_nonce: int
    equity: int
    maintenance: int
    initial: int
    model_value: int

    def as_tuple(self) -> tuple:
        """The Solidity ``MarginLeaf`` struct as a tuple (for contract calls and :func:`keeper.codec.eip712.leaf_hash`)."""
        return (self.account, self.state_nonce, self.equity, self.maintenance, self.initial, self.model_value)

    def to_json(self) -> dict:
        """The leaf as published by the status API (camelCase keys)."""
        return {"account": self.account, "stateNonce": self.state_nonce, "equity": self.equity,
                "maintenance": self.maintenance, "initial": self.initial, "modelValue": self.model_value}

    @property
    def breached(self) -> bool:
        return self.equity < self.maintenance

    def hash(self) -> bytes:
        """The OZ StandardMerkleTree leaf hash, :func:`keeper.codec.eip712.leaf_hash` (ABI encoding out of range for the
        leaf's types raises ``ValueError``)."""

        try:
            return eip712.leaf_hash(self)
        except EncodingError as exc:
            raise ValueError(f"leaf of {self.account}: value out of range for its ABI type ({exc})") from exc

    def storage_violation(self) -> Optional[str]:
        """``None`` when the contract can store this leaf (``AccountState``/``BreachRecord``: int96 equity and
        model value, uint96 maintenance and initial, uint32 stateNonce), else why not. The bounds are
        :class:`keeper.codec.eip712.MarginLeaf`'s; a cheap comparison first, the dataclass for the message."""
        if (0 <= self.state_nonce <= units.UINT32_MAX and units.INT96_MIN <= self.equity <= units.INT96_MAX
                and 0 <= self.maintenance <= units.UINT96_MAX and 0 <= self.initial <= units.UINT96_MAX
                and units.INT96_MIN <= self.model_value <= units.INT96_MAX):
            return None
        try:
            eip712.MarginLeaf(*self.as_tuple())
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None


@dataclass(frozen=True)
class _HashIndexedTree(eip712.MarginTree):
    """:class:`keeper.codec.eip712.MarginTree` whose ``leaves`` are the sorted leaf hashes and whose lookups go by hash,
    so that its ``proof``/``multiproof`` serve a tree built from hashes (see :class:`MerkleTree`)."""

    index: dict = field(default_factory=dict, repr=False, compare=False)

    def _tree_index(self, leaf_hash: bytes) -> int:  # type: ignore[override]
        return self.index[bytes(leaf_hash)]


class MerkleTree:
    """Thin adapter over :class:`keeper.codec.eip712.MarginTree` (OZ StandardMerkleTree: leaves sorted by hash,
    ``tree[len-1-i] = leaf i``, nodes :func:`keeper.codec.eip712.hash_pair`) built from leaf hashes computed once:
    ``MarginTree.build`` re-validates every leaf and ABI-encodes each twice (about 1.5 s for 10,000 leaves, over
    the 2 s cycle budget). ``proof`` and ``multiproof`` are eip712's, keyed by leaf hash; ``multiproof`` returns
    ``(leaves in processing order, proof, flags)`` as OZ ``getMultiProof``."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        if not leaf_hashes:
            raise ValueError("a Merkle tree needs at least one leaf")
        ordered = sorted(bytes(h) for h in leaf_hashes)
        n = len(ordered)
        tree: list[bytes] = [b""] * (n - 1) + ordered[::-1]
        for i in range(n - 2, -1, -1):
            tree[i] = eip712.hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        self._tree = _HashIndexedTree(tuple(ordered), tuple(tree), {h: 2 * n - 2 - i for i, h in enumerate(ordered)})

    @property
    def root(self) -> bytes:
        return self._tree.root

    def proof(self, leaf_hash: bytes) -> list[bytes]:
        """The branch of one leaf (``MerkleProof.processProof``); ``KeyError`` when the hash is not a leaf."""
        return self._tree.proof(leaf_hash)

    def multiproof(self, leaf_hashes: Sequence[bytes]) -> tuple[list[bytes], list[bytes], list[bool]]:
        """(leaves in processing order, proof, flags) of a subset, for ``processMultiProof``."""
        mp = self._tree.multiproof(list(dict.fromkeys(bytes(h) for h in leaf_hashes)))
        return list(mp.leaves), list(mp.proof), list(mp.flags)


# ------------------------------------------------------------------------------------------------------------
# Computation from the inputs document
# ------------------------------------------------------------------------------------------------------------
def _risk_params(r: dict):

    return RiskParams(var_level=r["var_confidence"], es_level=r["es_confidence"], im_multiplier=r["im_multiplier"])


def leaves_from_inputs(inputs: dict, chunk: int = 256) -> tuple[list[Leaf], dict]:
    """Every account's :class:`Leaf` from an inputs document (see :func:`build_inputs`), and per-account details
    (floats) for the status API. Pure: the same document gives the same leaves bit for bit."""

    r = inputs["risk"]
    ts = int(inputs["block"]["timestamp"])
    spot = int(inputs["spot_wad"]) / WAD
    dec = int(inputs["quote_decimals"])
    series = inputs["series"]
    sid_index = {int(s["id"]): i for i, s in enumerate(series)}
    assets = inputs["collateral_assets"]
    asset_index = {a["asset"]: i for i, a in enumerate(assets)}
    accounts = inputs["accounts"]
    n_acc, n_ser, n_as = len(accounts), len(series), len(assets)

    rows, cols, vals = [], [], []
    coll = np.zeros((n_acc, n_as))
    cash = np.zeros(n_acc)
    for i, a in enumerate(accounts):
        for sid, size in a["positions"]:
            rows.append(i)
            cols.append(sid_index[int(sid)])
            vals.append(int(size) / WAD)
        for asset, amount in a["collateral"]:
            j = asset_index[asset]
            coll[i, j] = int(amount) / 10 ** int(assets[j]["decimals"])
        cash[i] = int(a["cash"]) / 10**dec
    positions = sp.csr_matrix((vals, (rows, cols)), shape=(n_acc, n_ser))
    st = SeriesTable(
        underlying=np.zeros(n_ser, dtype=np.int64),
        strike=np.array([int(s["strike"]) / WAD for s in series]) if n_ser else np.zeros(0),
        expiry=np.array([max(int(s["expiry"]) - ts, 0) / SECONDS_PER_YEAR for s in series]) if n_ser else np.zeros(0),
        kind=np.array([CALL if s["is_call"] else PUT for s in series], dtype=np.int64),
        discount=np.ones(n_ser))
    ct = CollateralTable(price=np.array([spot if a["moves"] else float(a["price"]) for a in assets]),
                         haircut=np.array([int(a["haircut"]) / WAD for a in assets]),
                         underlying=np.array([0 if a["moves"] else NO_UNDERLYING for a in assets], dtype=np.int64))
    ri = RiskInputs(series=st, positions=positions, collateral=coll, collateral_assets=ct,
                    forward=np.array([spot]), vols=np.array([float(v) for v in inputs["vols"]]),
                    marks=np.array([float(m) for m in inputs["marks"]]), params=_risk_params(r))
    horizon = float(r["horizon_days"]) / 365.0
    tail = monte_carlo_scenarios(int(inputs["mc_seed"]), int(r["mc_paths"]), 1,
                                 MertonParams(diffusion_vol=float(r["mc_diffusion_vol"])), horizon=horizon)
    grid = grid_scenarios(float(r["grid_spot_range"]), float(r["grid_vol_range"]), n_underlyings=1, horizon=horizon)
    risk = compute_account_risk(ri, tail, grid, chunk=chunk)
    total_equity = risk.equity + cash
    model_val = np.asarray(positions @ model_values(ri)).ravel() if n_ser else np.zeros(n_acc)
    eq = to_quote_units(total_equity, dec, "floor")
    mm = to_quote_units(risk.maintenance_margin, dec, "ceil")
    im = to_quote_units(risk.initial_margin, dec, "ceil")
    mv = to_quote_units(model_val, dec, "floor")
    leaves = [Leaf(a["account"], int(a["state_nonce"]), eq[i], mm[i], im[i], mv[i]) for i, a in enumerate(accounts)]
    details = {"equity": total_equity, "maintenance": risk.maintenance_margin, "initial": risk.initial_margin,
               "es": risk.es, "var": risk.var}
    return leaves, details


def canonical_inputs(doc: dict) -> bytes:
    """``canonical_json(doc)`` computed faster for an inputs document: only the parts that hold floats (surface,
    risk, vols, marks) go through :func:`keeper.codec.canonical.normalise`; the large account and series lists hold only
    str/int/bool and are serialized as they are. Byte-identical to ``canonical_json(doc)`` (tested)."""


    fast = dict(doc)
    for k in ("surface", "risk", "vols", "marks", "block", "collateral_assets"):
        if k in fast:
            fast[k] = normalise(fast[k])
    return json.dumps(fast, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def recompute_from_archive(blob: bytes) -> tuple[bytes, list[Leaf]]:
    """Root and leaves recomputed from an archived inputs file (what anyone can do with ``GET /archive/<h>``)."""


    inputs = from_canonical(json.loads(blob))
    leaves, details = leaves_from_inputs(inputs)
    leaves, _, _ = storable_leaves(leaves, details)
    return MerkleTree([l.hash() for l in leaves]).root, leaves


def storable_leaves(leaves: Sequence[Leaf], details: dict) -> tuple[list[Leaf], dict, list[tuple[Leaf, str]]]:
    """Split computed leaves into those the contract can store (:meth:`Leaf.storage_violation` is ``None``) and
    the rest: ``(kept leaves, details restricted to them, [(left-out leaf, reason)])``. Pure; the keeper signs
    only the kept leaves and :func:`recompute_from_archive` applies the same rule, so the roots agree."""
    bad = [(i, l, r) for i, l in enumerate(leaves) if (r := l.storage_violation()) is not None]
    if not bad:
        return list(leaves), details, []
    drop = {i for i, _, _ in bad}
    keep = np.array([i for i in range(len(leaves)) if i not in drop], dtype=np.int64)
    kept_details = {k: (np.asarray(v)[keep] if hasattr(v, "__len__") and len(v) == len(leaves) else v)
                    for k, v in details.items()}
    return [leaves[i] for i in keep.tolist()], kept_details, [(l, r) for _, l, r in bad]



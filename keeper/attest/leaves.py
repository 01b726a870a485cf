"""Margin leaves from an inputs document (``schema: "backstop-inputs/2"``): :func:`leaves_from_inputs`, the pure
computation every keeper and verifier runs on the same archived document, the rule for which leaves the contract can
store (:func:`storable_leaves`) and the recomputation of a root from an archived file."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from keeper.codec.canonical import normalise
from keeper.codec.merkle import MarginLeaf, MerkleTree, leaf_hashes
from keeper.quant.risk.engine import (
    CALL,
    AccountMap,
    AccountRisk,
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
    ScenarioSet,
    correlation_stress_scenarios,
    grid_scenarios,
    monte_carlo_scenarios,
)
from keeper.quant.risk.solvency import SolvencyIndex, solvency_index
from keeper.units import SECONDS_PER_YEAR, WAD

#: the one inputs-document schema (docs/keeper.md, "Inputs document")
SCHEMA = "backstop-inputs/2"
#: accounts per chunk of the solvency index's shortfall sum (``solvency_index``'s default; the sum's order)
SOLVENCY_CHUNK = 256


# ------------------------------------------------------------------------------------------------------------
# Computation from the inputs document
# ------------------------------------------------------------------------------------------------------------
def _risk_params(r: dict):

    return RiskParams(var_level=r["var_confidence"], es_level=r["es_confidence"], im_multiplier=r["im_multiplier"])


@dataclass(frozen=True)
class RiskRun:
    """What :func:`risk_run` computed from a document: the engine's inputs, the tail and grid sets (after any
    fallback widening), the account risk, each account's quote cash and the leaves' float details."""

    inputs: RiskInputs
    tail: ScenarioSet
    grid: ScenarioSet
    risk: AccountRisk
    cash: np.ndarray
    leaves: list
    details: dict


def widen_scenarios(s: ScenarioSet, factors: np.ndarray) -> ScenarioSet:
    """``s`` with each underlying's log spot moves and log vol shocks multiplied by its factor (1 = unchanged)."""
    f = np.asarray(factors, dtype=np.float64)
    if np.all(f == 1.0):
        return s
    return ScenarioSet(s.name, s.log_spot * f[None, :], s.vol_shock * f[None, :], s.weight, s.horizon)


def shock_factors(unders: Sequence[dict]) -> np.ndarray:
    """Per underlying of a document, ``1 + shock_widening`` of its fallback flag (1 without one)."""
    out = []
    for u in unders:
        fb = u.get("fallback")
        w = float(fb["shock_widening"]) if fb else 0.0
        if not (w >= 0.0 and np.isfinite(w)):
            raise ValueError(f"underlying {u.get('asset')}: fallback shock_widening {w!r} is not a finite number >= 0")
        out.append(1.0 + w)
    return np.array(out, dtype=np.float64)


def risk_run(inputs: dict, chunk: int = 256, mapper: AccountMap | None = None) -> RiskRun:
    """The whole risk computation of an inputs document (:func:`leaves_from_inputs` is its leaves).

    ``mapper`` (:class:`keeper.quant.risk.engine.AccountMap`, e.g. ``keeper.ops.pool.RiskPool``): the scenario
    passes run on blocks of accounts side by side. It is not part of the document, and the leaves are the same bits
    whatever it is (tests/attest/test_workers_identical.py). The engine's own hash of its input arrays is not
    computed (``hashes=False``): the document's keccak, signed as ``inputsHash``, binds every input."""
    if inputs.get("schema") != SCHEMA:
        raise ValueError(f"inputs document of schema {inputs.get('schema')!r}, expected {SCHEMA!r}")
    r = inputs["risk"]
    ts = int(inputs["block"]["timestamp"])
    dec = int(inputs["quote_decimals"])
    unders = inputs["underlyings"]
    spots = np.array([int(u["spot_wad"]) / WAD for u in unders], dtype=np.float64)
    series = inputs["series"]
    sid_index = {int(s["id"]): i for i, s in enumerate(series)}
    assets = inputs["collateral_assets"]
    asset_index = {a["asset"]: i for i, a in enumerate(assets)}
    accounts = inputs["accounts"]
    n_acc, n_ser, n_as, n_und = len(accounts), len(series), len(assets), len(unders)

    # the book, column-wise (one comprehension per column instead of a Python loop filling numpy cells)
    held = [a["positions"] for a in accounts]
    rows = [i for i, p in enumerate(held) for _ in p]
    cols = [sid_index[int(sid)] for p in held for sid, _ in p]
    vals = [int(size) / WAD for p in held for _, size in p]
    unit = [10 ** int(x["decimals"]) for x in assets]
    pledged = [a["collateral"] for a in accounts]
    coll = np.zeros((n_acc, n_as))
    c_rows = [i for i, c in enumerate(pledged) for _ in c]
    c_cols = [asset_index[asset] for c in pledged for asset, _ in c]
    coll[c_rows, c_cols] = [int(amount) / unit[j] for c in pledged for (_, amount), j in
                            zip(c, (asset_index[asset] for asset, _ in c))]
    cash = np.array([int(a["cash"]) / 10**dec for a in accounts], dtype=np.float64).reshape(n_acc)
    positions = sp.csr_matrix((vals, (rows, cols)), shape=(n_acc, n_ser))
    st = SeriesTable(
        underlying=np.array([int(s["underlying"]) for s in series], dtype=np.int64),
        strike=np.array([int(s["strike"]) / WAD for s in series]) if n_ser else np.zeros(0),
        expiry=np.array([max(int(s["expiry"]) - ts, 0) / SECONDS_PER_YEAR for s in series]) if n_ser else np.zeros(0),
        kind=np.array([CALL if s["is_call"] else PUT for s in series], dtype=np.int64),
        discount=np.ones(n_ser),
        carry=np.array([int(s["forward_wad"]) / int(unders[int(s["underlying"])]["spot_wad"]) if "forward_wad" in s
                        else 1.0 for s in series]) if n_ser else np.zeros(0))
    moves = [a["underlying"] is not None for a in assets]
    ct = CollateralTable(price=np.array([spots[int(a["underlying"])] if m else float(a["price"])
                                         for a, m in zip(assets, moves)]),
                         haircut=np.array([int(a["haircut"]) / WAD for a in assets]),
                         underlying=np.array([int(a["underlying"]) if m else NO_UNDERLYING
                                              for a, m in zip(assets, moves)], dtype=np.int64))
    ri = RiskInputs(series=st, positions=positions, collateral=coll, collateral_assets=ct, forward=spots,
                    vols=np.array([float(v) for v in inputs["vols"]]),
                    marks=np.array([float(m) for m in inputs["marks"]]), params=_risk_params(r))
    horizon = float(r["horizon_days"]) / 365.0
    widen = shock_factors(unders)
    tail = widen_scenarios(monte_carlo_scenarios(int(inputs["mc_seed"]), int(r["mc_paths"]), n_und,
                                                 MertonParams(diffusion_vol=float(r["mc_diffusion_vol"])),
                                                 horizon=horizon), widen)
    grid = widen_scenarios(grid_scenarios(float(r["grid_spot_range"]), float(r["grid_vol_range"]),
                                          n_underlyings=n_und, horizon=horizon), widen)
    # the correlation stress (docs/risk.md): several underlyings and ``risk.stress_correlation`` set
    rho = r.get("stress_correlation")
    stress = (widen_scenarios(correlation_stress_scenarios(int(inputs["mc_seed"]), int(r["mc_paths"]), n_und,
                                                           MertonParams(diffusion_vol=float(r["mc_diffusion_vol"])),
                                                           horizon=horizon, rho=float(rho)), widen)
              if rho is not None and n_und > 1 else None)
    # the solvency index's shortfall rides on the tail pass when the chunks are the index's (256 accounts)
    risk = compute_account_risk(ri, tail, grid, chunk=chunk, hashes=False, stress_set=stress, mapper=mapper,
                                shortfall_cash=cash if chunk == SOLVENCY_CHUNK else None)
    total_equity = risk.equity + cash
    model_val = np.asarray(positions @ model_values(ri)).ravel() if n_ser else np.zeros(n_acc)
    eq = to_quote_units(total_equity, dec, "floor")
    mm = to_quote_units(risk.maintenance_margin, dec, "ceil")
    im = to_quote_units(risk.initial_margin, dec, "ceil")
    mv = to_quote_units(model_val, dec, "floor")
    leaves = [MarginLeaf(a["account"], int(a["state_nonce"]), eq[i], mm[i], im[i], mv[i]) for i, a in enumerate(accounts)]
    details = {"equity": total_equity, "maintenance": risk.maintenance_margin, "initial": risk.initial_margin,
               "es": risk.es, "var": risk.var}
    return RiskRun(ri, tail, grid, risk, cash, leaves, details)


def leaves_from_inputs(inputs: dict, chunk: int = 256, mapper: AccountMap | None = None
                       ) -> tuple[list[MarginLeaf], dict]:
    """Every account's :class:`MarginLeaf` from an inputs document (``schema`` :data:`SCHEMA`, built by
    :func:`keeper.attest.inputs.build_document`), and per-account details (floats) for the status API.

    Every underlying in ``underlyings`` has its own spot (the forward of its series and of the collateral that moves
    with it); the Monte Carlo tail set and the stress grid move all of them jointly (docs/risk.md). An underlying
    flagged ``fallback`` (priced on its last attested market data) has its moves and vol shocks widened by
    ``1 + shock_widening`` in both sets. Pure: the same document gives the same leaves bit for bit."""
    run = risk_run(inputs, chunk, mapper)
    return run.leaves, run.details


def solvency_from_run(run: RiskRun, fund: float, excluded: dict | None = None, excluded_equity: float = 0.0,
                      drop: Sequence[str] = (), mapper: AccountMap | None = None) -> SolvencyIndex:
    """The solvency index (:func:`keeper.quant.risk.solvency.solvency_index`) of a document's accounts, over the
    same (widened) tail set their leaves were margined on; ``drop``: accounts of the document that were not attested
    (a leaf the contract cannot store), taken out of the figures. ``fund`` in quote units."""
    if drop:
        gone = {a.lower() for a in drop}
        keep = np.array([i for i, l in enumerate(run.leaves) if l.account.lower() not in gone], dtype=np.int64)
        ri = run.inputs
        sub = RiskInputs(series=ri.series, positions=ri.positions[keep], collateral=ri.collateral[keep],
                         collateral_assets=ri.collateral_assets, forward=ri.forward, vols=ri.vols, marks=ri.marks,
                         params=ri.params)
        risk = compute_account_risk(sub, run.tail, run.grid, mapper=mapper)
        return solvency_index(sub, risk, run.cash[keep], run.tail, fund, excluded, excluded_equity, mapper=mapper)
    return solvency_index(run.inputs, run.risk, run.cash, run.tail, fund, excluded, excluded_equity, mapper=mapper,
                          shortfall=run.risk.tail_shortfall)


def canonical_inputs(doc: dict) -> bytes:
    """``canonical_json(doc)`` computed faster for an inputs document: only the parts that hold floats (underlyings
    with their surfaces, risk, vols, marks) go through :func:`keeper.codec.canonical.normalise`; the large account and series lists hold only
    str/int/bool and are serialized as they are. Byte-identical to ``canonical_json(doc)`` (tested)."""


    fast = dict(doc)
    for k in ("underlyings", "risk", "vols", "marks", "block", "collateral_assets"):
        if k in fast:
            fast[k] = normalise(fast[k])
    return json.dumps(fast, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def recompute_from_archive(blob: bytes) -> tuple[bytes, list[MarginLeaf]]:
    """Root and leaves recomputed from an archived inputs file (what anyone can do with ``GET /archive/<h>``)."""


    inputs = from_canonical(json.loads(blob))
    leaves, details = leaves_from_inputs(inputs)
    leaves, _, _ = storable_leaves(leaves, details)
    return MerkleTree(leaf_hashes(leaves)).root, leaves


def storable_leaves(leaves: Sequence[MarginLeaf], details: dict) -> tuple[list[MarginLeaf], dict, list[tuple[MarginLeaf, str]]]:
    """Split computed leaves into those the contract can store (:meth:`MarginLeaf.violation` is ``None``) and
    the rest: ``(kept leaves, details restricted to them, [(left-out leaf, reason)])``. Pure; the keeper signs
    only the kept leaves and :func:`recompute_from_archive` applies the same rule, so the roots agree."""
    bad = [(i, l, r) for i, l in enumerate(leaves) if (r := l.violation()) is not None]
    if not bad:
        return list(leaves), details, []
    drop = {i for i, _, _ in bad}
    keep = np.array([i for i in range(len(leaves)) if i not in drop], dtype=np.int64)
    kept_details = {k: (np.asarray(v)[keep] if hasattr(v, "__len__") and len(v) == len(leaves) else v)
                    for k, v in details.items()}
    return [leaves[i] for i in keep.tolist()], kept_details, [(l, r) for _, l, r in bad]



"""The attestation engine for a book read from chain: risk inputs (positions, collateral, cash, nonces) and a market
(spots, smile, block hash) in, margin leaves, their Merkle tree and the archived inputs document out; and the
verifier's recomputation of every leaf from that document alone (``kind: "backstop-scenario-inputs/1"``).
Pure: no chain I/O (reading the book is the caller's job)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import scipy.sparse as sp
from eth_utils import keccak, to_checksum_address

from keeper.codec.canonical import canonical_json
from keeper.codec.merkle import MarginLeaf, MerkleTree
from keeper.quant.pricing import black76_price
from keeper.quant.risk.engine import (
    CALL,
    PUT,
    CollateralTable,
    RiskInputs,
    RiskParams,
    SeriesTable,
    compute_account_risk,
    deserialize_risk_inputs,
    model_values,
    serialize_risk_inputs,
    to_quote_units,
)
from keeper.quant.risk.scenarios import (
    grid_scenarios,
    monte_carlo_scenarios,
    seed_from_block_hash,
)
from keeper.units import SECONDS_PER_YEAR

INPUTS_KIND = "backstop-scenario-inputs/1"


#: smile: (strike, expiry_years, forward) -> Black-76 vol
SmileFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BookState:
    """What the chain holds for each account: positions (account x series, contracts), risky collateral
    (account x asset, whole units), quote cash (base units) and state nonces."""

    accounts: list[str]
    series_ids: list[int]
    positions: np.ndarray
    assets: list[str]
    collateral: np.ndarray
    cash: list[int]
    nonces: list[int]


@dataclass(frozen=True)
class MarketState:
    """The market the attestation is computed on: spot per asset, the smile, time and block hash (MC seed)."""

    spots: Mapping[str, float]
    smile: SmileFn
    now: int
    block_hash: bytes
    marks: Mapping[int, float] | None = None  # series id -> mark override (e.g. a hybrid mark); model otherwise


@dataclass(frozen=True)
class Attestation:
    """One computed margin root: leaves, tree, header fields and the archived inputs document."""

    leaves: list[MarginLeaf]
    tree: MerkleTree
    inputs_hash: bytes
    inputs_blob: bytes
    sequence: int
    timestamp: int
    model_prices: dict[int, float]
    vols: dict[int, float]

    def header(self) -> tuple:
        return (self.inputs_hash, self.sequence, self.timestamp, len(self.leaves))

    def proof_for(self, account: str) -> tuple:
        """The ``MarginProof`` struct (header, leaf, branch) of ``account``."""
        leaf = next(x for x in self.leaves if x.account.lower() == account.lower())
        return (self.header(), leaf.as_tuple(), self.tree.proof(leaf.hash()))

    def leaf_of(self, account: str) -> MarginLeaf:
        return next(x for x in self.leaves if x.account.lower() == account.lower())


@dataclass(frozen=True)
class EngineSettings:
    """Risk-engine settings of the attestation (archived with the inputs)."""

    mc_paths: int = 2000
    grid_spot_range: float = 0.15
    grid_vol_range: float = 0.25
    quote_decimals: int = 6


def compute_attestation(book: BookState, series: Mapping[int, dict], market: MarketState,
                        haircuts: Mapping[str, float], underlying: str, settings: EngineSettings,
                        sequence: int, timestamp: int) -> Attestation:
    """Run the quant engine on ``book`` and build the leaves (equity and model value rounded down, margins up).

    Every series is on ``underlying``; risky collateral moves with its own spot (its own underlying index)."""

    sids = book.series_ids
    strike = np.array([series[s]["strike"] for s in sids], float)
    t = np.array([max(series[s]["expiry"] - market.now, 0) / SECONDS_PER_YEAR for s in sids], float)
    is_call = np.array([series[s]["is_call"] for s in sids], bool)
    # underlyings: the option underlying first, then every other risky collateral asset
    unders = [underlying] + [a for a in book.assets if a.lower() != underlying.lower()]
    fwd = np.array([market.spots[u] for u in unders], float)
    f_series = np.full(len(sids), fwd[0])
    vols = np.asarray(market.smile(strike, np.maximum(t, 1e-9), f_series), float)
    model = black76_price(f_series, strike, t, vols, is_call)
    marks = model.copy()
    if market.marks:
        for j, s in enumerate(sids):
            if s in market.marks:
                marks[j] = float(market.marks[s])
    und_idx = {u.lower(): i for i, u in enumerate(unders)}
    inputs = RiskInputs(
        series=SeriesTable(np.zeros(len(sids), dtype=np.int64), strike, t,
                           np.where(is_call, CALL, PUT).astype(np.int64), np.ones(len(sids))),
        positions=sp.csr_matrix(book.positions),
        collateral=book.collateral,
        collateral_assets=CollateralTable(np.array([market.spots[a] for a in book.assets], float),
                                          np.array([haircuts[a] for a in book.assets], float),
                                          np.array([und_idx[a.lower()] for a in book.assets], dtype=np.int64)),
        forward=fwd, vols=vols, marks=marks, params=RiskParams())
    seed = seed_from_block_hash(market.block_hash)
    tail = monte_carlo_scenarios(seed, settings.mc_paths, len(unders))
    grid = grid_scenarios(settings.grid_spot_range, settings.grid_vol_range, n_underlyings=len(unders))
    risk = compute_account_risk(inputs, tail, grid)
    d = settings.quote_decimals
    cash = np.array(book.cash, float) / 10**d
    equity = to_quote_units(risk.equity + cash, d, "floor")
    mm = to_quote_units(risk.maintenance_margin, d, "ceil")
    im = to_quote_units(risk.initial_margin, d, "ceil")
    mv = to_quote_units(np.asarray(inputs.positions @ model_values(inputs)).ravel(), d, "floor")
    leaves = [MarginLeaf(to_checksum_address(a), n, e, m, i_, v)
              for a, n, e, m, i_, v in zip(book.accounts, book.nonces, equity, mm, im, mv)]
    doc = {
        "kind": INPUTS_KIND,
        "risk_inputs": json.loads(serialize_risk_inputs(inputs)),
        "accounts": [to_checksum_address(a) for a in book.accounts],
        "series_ids": [int(s) for s in sids],
        "assets": [to_checksum_address(a) for a in book.assets],
        "underlyings": [to_checksum_address(u) for u in unders],
        "state_nonces": [int(n) for n in book.nonces],
        "cash": [int(c) for c in book.cash],
        "model_prices": [float(x) for x in model],
        "engine": {"mc_seed": int(seed), "mc_paths": settings.mc_paths, "grid_spot_range": settings.grid_spot_range,
                   "grid_vol_range": settings.grid_vol_range, "quote_decimals": d},
        "timestamp": int(timestamp),
    }

    blob = canonical_json(doc)
    return Attestation(leaves, MerkleTree([x.hash() for x in leaves]), keccak(blob), blob, int(sequence),
                       int(timestamp), {s: float(p) for s, p in zip(sids, model)},
                       {s: float(v) for s, v in zip(sids, vols)})


def recompute_leaves(blob: bytes) -> list[MarginLeaf]:
    """Recompute every leaf from an archived inputs document (the verifier's path): same engine, same seeds."""

    def f(v) -> float:
        return float.fromhex(v["f"]) if isinstance(v, dict) else float(v)

    doc = json.loads(blob)
    if doc.get("kind") != INPUTS_KIND:
        raise ValueError(f"unknown inputs document kind {doc.get('kind')!r}")
    inputs = deserialize_risk_inputs(canonical_json(doc["risk_inputs"]))
    eng = doc["engine"]
    n_und = inputs.n_underlyings
    tail = monte_carlo_scenarios(int(eng["mc_seed"]), int(eng["mc_paths"]), n_und)
    grid = grid_scenarios(f(eng["grid_spot_range"]), f(eng["grid_vol_range"]), n_underlyings=n_und)
    risk = compute_account_risk(inputs, tail, grid)
    d = int(eng["quote_decimals"])
    cash = np.array(doc["cash"], float) / 10**d

    model = model_values(inputs)
    equity = to_quote_units(risk.equity + cash, d, "floor")
    mm = to_quote_units(risk.maintenance_margin, d, "ceil")
    im = to_quote_units(risk.initial_margin, d, "ceil")
    mv = to_quote_units(np.asarray(inputs.positions @ model).ravel(), d, "floor")
    return [MarginLeaf(a, int(n), e, m, i_, v)
            for a, n, e, m, i_, v in zip(doc["accounts"], doc["state_nonces"], equity, mm, im, mv)]


def smile_from(atm_vol: float, skew: float = -0.15, curvature: float = 0.4) -> SmileFn:
    """The scenario market's smile: ``atm * (1 + skew * k + curvature * k^2)`` in log-moneyness ``k``,
    floored at 5 % (the same shape the simulated market draws quotes around)."""
    def f(strike, expiry, forward):
        k = np.log(np.asarray(strike, float) / np.asarray(forward, float))
        return np.maximum(atm_vol * (1.0 + skew * k + curvature * k * k), 0.05) + 0.0 * np.asarray(expiry, float)
    return f


def quantize(x: float) -> float:
    """Spot rounded to cents (what is attested)."""
    return math.floor(x * 100 + 0.5) / 100



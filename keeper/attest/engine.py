"""Attestation of a book read from chain on a given market (the scenario's genesis and inline keepers): the book and
the market are written into the one inputs document (:func:`keeper.attest.inputs.build_document`, schema
``backstop-inputs/2``) and the leaves come from :func:`keeper.attest.leaves.leaves_from_inputs`, the same engine
the keeper bots run and ``backstop verify`` recomputes. Pure: no chain I/O (reading the book is the caller's job).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from eth_utils import keccak, to_checksum_address

from keeper.attest.inputs import build_document, risk_document
from keeper.attest.leaves import canonical_inputs, leaves_from_inputs, risk_run, solvency_from_run
from keeper.codec import eip712
from keeper.codec.merkle import MarginLeaf, MerkleTree
from keeper.data.feed import BlockRef
from keeper.quant.pricing import black76_price
from keeper.quant.risk.engine import RiskParams, from_canonical
from keeper.quant.risk.scenarios import seed_from_block_hash
from keeper.units import SECONDS_PER_YEAR, WAD, to_wad


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
    decimals: Mapping[str, int] | None = None  # per collateral asset (18 when not given)


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
    #: the solvency index signed with the root: the on-chain struct tuple (quote base units, rounded once by
    #: :func:`keeper.codec.eip712.solvency_index_tuple`) and the float index it came from
    solvency_struct: tuple = ()
    solvency: Any = None

    def header(self) -> tuple:
        """The on-chain ``MarginRootHeader`` (what proofs carry)."""
        return (self.inputs_hash, self.sequence, self.timestamp, len(self.leaves))

    @property
    def solvency_hash(self) -> bytes:
        """``MarginRoot.solvencyHash``: the struct hash of :attr:`solvency_struct`."""
        return eip712.solvency_struct_hash(self.solvency_struct)

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
    mc_diffusion_vol: float = 0.7
    horizon_days: float = 1.0
    #: the engine's default margin levels (:class:`keeper.quant.risk.engine.RiskParams`)
    var_confidence: float = RiskParams.var_level
    es_confidence: float = RiskParams.es_level
    im_multiplier: float = RiskParams.im_multiplier


def compute_attestation(book: BookState, series: Mapping[int, dict], market: MarketState,
                        haircuts: Mapping[str, float], underlying: str, settings: EngineSettings,
                        sequence: int, timestamp: int, fund: float = 0.0) -> Attestation:
    """The inputs document of ``book`` on ``market``, its leaves (equity and model value rounded down, margins
    up) and the solvency index of the book (:func:`keeper.attest.leaves.solvency_from_run`, ``fund``: the insurance
    fund's balance in whole quote units). Every series is on ``underlying``; each other risky collateral asset is an
    underlying of its own, priced at its own spot."""
    sids = [int(s) for s in book.series_ids]
    strike = np.array([series[s]["strike"] for s in sids], float)
    t = np.array([max(series[s]["expiry"] - market.now, 0) / SECONDS_PER_YEAR for s in sids], float)
    is_call = np.array([series[s]["is_call"] for s in sids], bool)
    unders = [underlying] + [a for a in book.assets if a.lower() != underlying.lower()]
    und_idx = {u.lower(): i for i, u in enumerate(unders)}
    spot_wad = [to_wad(market.spots[u]) for u in unders]
    f_series = np.full(len(sids), spot_wad[0] / WAD)
    vols = np.asarray(market.smile(strike, np.maximum(t, 1e-9), f_series), float)
    model = black76_price(f_series, strike, t, vols, is_call)
    marks = model.copy()
    for j, s in enumerate(sids):
        if market.marks and s in market.marks:
            marks[j] = float(market.marks[s])
    dec = book.decimals or {}
    accounts = accounts_document(book, sids)
    doc = build_document(
        block=BlockRef(int(sequence), "0x" + bytes(market.block_hash).hex(), int(timestamp)),
        mc_seed=seed_from_block_hash(market.block_hash),
        underlyings=[{"asset": to_checksum_address(u), "spot_wad": w, "surface": None} for u, w in zip(unders, spot_wad)],
        series=[{"id": s, "underlying": 0, "strike": str(to_wad(series[s]["strike"])), "expiry": int(series[s]["expiry"]),
                 "is_call": bool(series[s]["is_call"])} for s in sids],
        vols=vols, marks=marks,
        collateral_assets=[{"asset": to_checksum_address(x), "decimals": int(dec.get(x, 18)),
                            "haircut": str(to_wad(haircuts[x])), "underlying": und_idx[x.lower()], "price": "0"}
                           for x in book.assets],
        accounts=accounts, quote_decimals=settings.quote_decimals, risk=risk_document(settings))
    run = risk_run(doc)
    leaves = run.leaves
    solvency = solvency_from_run(run, float(fund))
    blob = canonical_inputs(doc)
    return Attestation(leaves, MerkleTree([x.hash() for x in leaves]), keccak(blob), blob, int(sequence),
                       int(timestamp), {s: float(p) for s, p in zip(sids, model)},
                       {s: float(v) for s, v in zip(sids, vols)},
                       eip712.solvency_index_tuple(solvency, settings.quote_decimals), solvency)


def recompute_leaves(blob: bytes) -> list[MarginLeaf]:
    """Every leaf recomputed from an archived inputs document (the verifier's path): same engine, same seeds."""
    return leaves_from_inputs(from_canonical(json.loads(blob)))[0]


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


def accounts_document(book, sids) -> list[dict]:
    """The inputs document's ``accounts`` section of ``book`` (positions on the series ``sids``, in that order):
    checksummed addresses, integer strings in base units, sorted by address."""
    dec = book.decimals or {}
    accounts = []
    for i, a in enumerate(book.accounts):
        accounts.append({
            "account": to_checksum_address(a), "state_nonce": int(book.nonces[i]), "cash": str(int(book.cash[i])),
            "collateral": [[to_checksum_address(x), str(int(round(book.collateral[i, j] * 10 ** dec.get(x, 18))))]
                           for j, x in enumerate(book.assets) if book.collateral[i, j]],
            "positions": [[s, str(int(round(book.positions[i, j] * WAD)))]
                          for j, s in enumerate(sids) if book.positions[i, j]]})
    accounts.sort(key=lambda x: x["account"].lower())
    return accounts

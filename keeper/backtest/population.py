"""A seeded population of accounts: short and long vol, near and far from margin, cash and volatile collateral.

Pure numpy. Books are dense (accounts x series) arrays of signed contracts; collateral is quote cash plus an amount
of the path's underlying (wrong-way risk for short puts). Sizing to a target ratio equity / MM needs the margin
engine, passed in as ``mm_fn(positions, collateral_amounts) -> MM per account`` so this module stays engine-free.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keeper.backtest.market import SeriesSet

#: account kinds and their shares of the population
KINDS = {
    "short_put": 0.30,
    "short_strangle": 0.15,
    "short_far_put": 0.15,  # far out-of-the-money put sellers: the thin series
    "put_spread": 0.10,
    "covered_call": 0.10,
    "long_vol": 0.20,
}


@dataclass
class Population:
    """Books of ``n`` accounts (mutable copies are made by the engine)."""

    kind: list[str]
    positions: np.ndarray  # (n, n_series)
    cash: np.ndarray  # quote units
    coll: np.ndarray  # underlying units
    target_ratio: np.ndarray

    @property
    def n(self) -> int:
        return int(self.cash.size)


def _pick(series: SeriesSet, spot: float, pct: float, call: bool, expiry_rank: int) -> int:
    exps = np.unique(series.expiry_ts)
    e = exps[min(expiry_rank, exps.size - 1)]
    cand = np.flatnonzero((series.is_call == call) & (series.expiry_ts == e))
    return int(cand[np.argmin(np.abs(series.strike[cand] - pct * spot))])


def make_population(n: int, series: SeriesSet, spot0: float, seed: int = 0) -> Population:
    """Books without collateral (sized by :func:`size_collateral`): notional 20k-500k quote units per account."""
    rng = np.random.default_rng([seed, 7])
    names = list(KINDS)
    kinds = rng.choice(len(names), size=n, p=np.array(list(KINDS.values())))
    pos = np.zeros((n, series.n))
    coll_share = np.zeros(n)
    for a in range(n):
        kind = names[kinds[a]]
        q = float(np.exp(rng.uniform(np.log(20_000), np.log(500_000)))) / spot0
        er = int(rng.integers(0, 2))
        if kind == "short_put":
            pos[a, _pick(series, spot0, rng.uniform(0.78, 0.95), False, er)] -= q
            coll_share[a] = 0.35
        elif kind == "short_strangle":
            pos[a, _pick(series, spot0, rng.uniform(0.80, 0.92), False, er)] -= q
            pos[a, _pick(series, spot0, rng.uniform(1.08, 1.25), True, er)] -= q
        elif kind == "short_far_put":
            pos[a, _pick(series, spot0, rng.uniform(0.60, 0.72), False, er)] -= 2 * q
            coll_share[a] = 0.25
        elif kind == "put_spread":
            pos[a, _pick(series, spot0, 0.90, False, er)] -= q
            pos[a, _pick(series, spot0, 0.75, False, er)] += q
        elif kind == "covered_call":
            pos[a, _pick(series, spot0, rng.uniform(1.05, 1.2), True, er)] -= q
            coll_share[a] = 1.0
        else:  # long vol
            pos[a, _pick(series, spot0, rng.uniform(0.8, 0.95), False, er)] += q
            if rng.random() < 0.5:
                pos[a, _pick(series, spot0, rng.uniform(1.05, 1.2), True, er)] += q
    near = rng.random(n) < 0.35
    ratio = np.where(near, rng.uniform(1.05, 1.30, n), rng.uniform(1.5, 3.5, n))
    volatile = rng.random(n) < coll_share
    kind_names = [names[k] for k in kinds]
    return Population(kind_names, pos, np.where(volatile, -1.0, 0.0), np.zeros(n), ratio)


def size_collateral(pop: Population, spot0: float, haircut: float, marks: np.ndarray, mm_fn) -> Population:
    """Set each account's collateral so that equity / MM = its target ratio at the first bar.

    Accounts flagged volatile (``cash == -1`` from :func:`make_population`) hold the underlying (two passes: MM
    moves with the collateral's delta); the others quote cash. Long-vol books also get at least their premium's
    worth of cash so that none starts insolvent."""
    volatile = pop.cash < 0
    pos_value = pop.positions @ marks
    cash = np.zeros(pop.n)
    coll = np.zeros(pop.n)
    for _ in range(2):
        mm = mm_fn(pop.positions, coll)
        need = np.maximum(pop.target_ratio * mm - pos_value, 0.0) + 1.0
        coll = np.where(volatile, need / (spot0 * (1.0 - haircut)), 0.0)
    cash = np.where(volatile, 0.0, need)
    # covered calls: at least one unit of underlying per call sold
    return Population(pop.kind, pop.positions, cash, coll, pop.target_ratio)

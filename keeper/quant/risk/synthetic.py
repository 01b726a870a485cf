"""Synthetic books for the risk benchmark and tests (seeded, deterministic; no market data).

A book has ``n_underlyings`` underlyings (underlying 0 at 60,000, 1 at 3,000, further ones at 100), series spread
over strikes 0.6-1.6 x forward and expiries 1 day-1 year (puts, calls and a few forwards), accounts holding a
Poisson number of positions (mean ``positions_per_account``) long or short, plus stablecoin collateral and
collateral in the underlyings themselves.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from keeper.quant.risk.engine import (
    CALL,
    FORWARD,
    PUT,
    CollateralTable,
    RiskInputs,
    RiskParams,
    SeriesTable,
    model_values,
)


def synthetic_book(seed: int, n_accounts: int, n_series: int, positions_per_account: float = 8.0,
                   n_underlyings: int = 2, params: RiskParams = RiskParams()) -> RiskInputs:
    """A random but reproducible book (marks = model values x (1 + small noise))."""
    rng = np.random.Generator(np.random.PCG64(seed))
    forward = np.array([60000.0, 3000.0] + [100.0] * max(0, n_underlyings - 2))[:n_underlyings]
    und = rng.integers(0, n_underlyings, n_series)
    kind = rng.choice([PUT, CALL, FORWARD], size=n_series, p=[0.47, 0.47, 0.06])
    strike = forward[und] * rng.uniform(0.6, 1.6, n_series)
    expiry = rng.uniform(1.0 / 365.0, 1.0, n_series)
    series = SeriesTable(und, strike, expiry, kind, np.ones(n_series))
    vols = rng.uniform(0.4, 1.2, n_series)
    counts = np.minimum(rng.poisson(positions_per_account, n_accounts), n_series)
    rows = np.repeat(np.arange(n_accounts), counts)
    cols = np.concatenate([rng.choice(n_series, c, replace=False) for c in counts]) if counts.sum() else \
        np.zeros(0, dtype=np.int64)
    sizes = rng.choice([-1.0, 1.0], rows.size) * np.round(rng.lognormal(0.0, 1.0, rows.size), 3)
    sizes[sizes == 0] = 0.001
    positions = sp.csr_matrix((sizes, (rows, cols)), shape=(n_accounts, n_series))
    n_assets = 1 + n_underlyings
    coll_und = np.concatenate([[-1], np.arange(n_underlyings)])
    price = np.concatenate([[1.0], forward])
    haircut = np.concatenate([[0.0], np.full(n_underlyings, 0.15)])
    held = rng.random((n_accounts, n_assets)) < np.concatenate([[0.9], np.full(n_underlyings, 0.3)])
    amounts = held * rng.lognormal(np.log(20000.0), 1.0, (n_accounts, n_assets)) / price[None, :]
    draft = RiskInputs(series, positions, amounts, CollateralTable(price, haircut, coll_und), forward, vols,
                       np.zeros(n_series), params)
    marks = model_values(draft) * (1.0 + rng.normal(0.0, 0.01, n_series))
    return RiskInputs(series, positions, amounts, CollateralTable(price, haircut, coll_und), forward, vols, marks,
                      params)

"""VaR backtest of the risk engine on long daily closes: 1-day VaR99 of sample books against the next day's
realised P&L, with Kupiec's proportion-of-failures and Christoffersen's independence tests.

Pure (numpy/scipy; closes come in as arrays). Each day ``d`` (after a 30-day warm-up) the sample books are struck
afresh relative to that day's close (so every day's book has the same shape), the engine computes their VaR99 over a
one-day horizon (:func:`keeper.quant.risk.engine.compute_account_risk`, Merton Monte Carlo scenarios seeded by the day, default
``MertonParams``), and the realised P&L is the books' model value on day ``d + 1`` (next close, next day's vol, one
day less to expiry) minus their model value on day ``d``. Windows are one day long and consecutive, so they do not
overlap. Vol on day ``d``: the EWMA (lambda 0.94) realised vol of the closes up to ``d``, floored at 30 % and capped
at 200 % (a stand-in for the implied vol, which the daily files do not have).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import chi2

from keeper.quant.pricing import black76_price
from keeper.quant.risk.engine import (
    CALL,
    PUT,
    CollateralTable,
    RiskInputs,
    RiskParams,
    SeriesTable,
    compute_account_risk,
)
from keeper.quant.risk.scenarios import (
    DAYS_PER_YEAR,
    ewma_volatility,
    grid_scenarios,
    log_returns_from_closes,
    monte_carlo_scenarios,
)

DAY = 1.0 / 365.0
#: sample books: name -> list of (kind, strike as a fraction of spot, days to expiry, size); kind "spot" = collateral
BOOKS = {
    "short_atm_put": [(PUT, 1.00, 30, -1.0)],
    "short_otm_put": [(PUT, 0.90, 30, -1.0)],
    "long_straddle": [(PUT, 1.00, 30, 1.0), (CALL, 1.00, 30, 1.0)],
    "short_strangle": [(PUT, 0.90, 30, -1.0), (CALL, 1.10, 30, -1.0)],
    "covered_call": [("spot", 1.0, 0, 1.0), (CALL, 1.10, 30, -1.0)],
}


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def kupiec_pof(exceed: np.ndarray, p: float = 0.01) -> dict:
    """Kupiec's proportion-of-failures LR test: LR = -2 ln[(1-p)^(n-x) p^x / ((1-x/n)^(n-x) (x/n)^x)] ~ chi2(1)."""
    e = np.asarray(exceed, dtype=bool)
    n, x = int(e.size), int(e.sum())
    if n == 0:
        return {"n": 0, "exceedances": 0, "rate": 0.0, "lr": 0.0, "p_value": 1.0}
    phat = x / n
    lr = -2.0 * (_xlogy(n - x, 1 - p) + _xlogy(x, p) - _xlogy(n - x, 1 - phat) - _xlogy(x, phat))
    lr = max(lr, 0.0) + 0.0  # no negative zero
    return {"n": n, "exceedances": x, "rate": phat, "lr": lr, "p_value": float(chi2.sf(lr, 1))}


def christoffersen_independence(exceed: np.ndarray) -> dict:
    """Christoffersen's independence LR test on the exceedance sequence (first-order Markov vs independent) ~ chi2(1)."""
    e = np.asarray(exceed, dtype=np.int64)
    a, b = e[:-1], e[1:]
    n00 = int(np.sum((a == 0) & (b == 0)))
    n01 = int(np.sum((a == 0) & (b == 1)))
    n10 = int(np.sum((a == 1) & (b == 0)))
    n11 = int(np.sum((a == 1) & (b == 1)))
    tot = n00 + n01 + n10 + n11
    if tot == 0:
        return {"n00": 0, "n01": 0, "n10": 0, "n11": 0, "lr": 0.0, "p_value": 1.0}
    pi = (n01 + n11) / tot
    pi0 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi1 = n11 / (n10 + n11) if n10 + n11 else 0.0
    l_ind = _xlogy(n00 + n10, 1 - pi) + _xlogy(n01 + n11, pi)
    l_dep = _xlogy(n00, 1 - pi0) + _xlogy(n01, pi0) + _xlogy(n10, 1 - pi1) + _xlogy(n11, pi1)
    lr = max(-2.0 * (l_ind - l_dep), 0.0) + 0.0  # no negative zero
    return {"n00": n00, "n01": n01, "n10": n10, "n11": n11, "lr": lr, "p_value": float(chi2.sf(lr, 1))}


def ewma_vol_daily(closes: np.ndarray, lam: float = 0.94, floor: float = 0.30, cap: float = 2.0) -> np.ndarray:
    """Annualised EWMA vol known at each day's close (the risk engine's RiskMetrics EWMA, seeded by the first 30
    returns), floored and capped."""
    daily = ewma_volatility(log_returns_from_closes(closes), lam)
    return np.clip(daily * math.sqrt(DAYS_PER_YEAR), floor, cap)


def _book_arrays(spot: float):
    kinds, strikes, expiries, rows, cols, sizes, coll = [], [], [], [], [], [], np.zeros(len(BOOKS))
    for b, legs in enumerate(BOOKS.values()):
        for kind, k, days, size in legs:
            if kind == "spot":
                coll[b] += size
                continue
            rows.append(b)
            cols.append(len(kinds))
            sizes.append(size)
            kinds.append(kind)
            strikes.append(k * spot)
            expiries.append(days * DAY)
    return np.array(kinds), np.array(strikes), np.array(expiries), rows, cols, sizes, coll


@dataclass(frozen=True)
class VarBacktest:
    name: str
    days: int
    var: np.ndarray  # (days, books)
    pnl: np.ndarray
    exceed: np.ndarray
    tests: dict

    def to_json(self) -> dict:
        return {"name": self.name, "days": self.days, "books": list(BOOKS), "tests": self.tests}


def var_backtest(name: str, closes: np.ndarray, n_scenarios: int = 2000, warmup: int = 30,
                 progress=None) -> VarBacktest:
    """Run the backtest over every day with a next day (module docstring)."""
    closes = np.asarray(closes, dtype=np.float64)
    vol = ewma_vol_daily(closes)
    grid = grid_scenarios(0.15, n_underlyings=1)
    days = range(warmup, closes.size - 1)
    nb = len(BOOKS)
    var = np.zeros((len(days), nb))
    pnl = np.zeros((len(days), nb))
    for r, d in enumerate(days):
        S0, S1 = closes[d], closes[d + 1]
        kinds, K, T, rows, cols, sizes, coll = _book_arrays(S0)
        n = kinds.size
        st = SeriesTable(np.zeros(n, dtype=np.int64), K, T, kinds, np.ones(n))
        ca = CollateralTable(np.array([S0]), np.array([0.0]), np.array([0]))
        pos = sp.csr_matrix((sizes, (rows, cols)), shape=(nb, n))
        v0 = black76_price(S0, K, T, vol[d], kinds == CALL)
        inputs = RiskInputs(st, pos, coll[:, None], ca, np.array([S0]), np.full(n, vol[d]), v0, RiskParams())
        risk = compute_account_risk(inputs, monte_carlo_scenarios(d, n_scenarios, 1), grid, hashes=False)
        v1 = black76_price(S1, K, T - DAY, vol[d + 1], kinds == CALL)
        pnl[r] = np.asarray(pos @ (v1 - v0)).ravel() + coll * (S1 - S0)
        var[r] = risk.var
        if progress is not None:
            progress(1)
    exceed = -pnl > var
    tests = {}
    for b, book in enumerate(BOOKS):
        k = kupiec_pof(exceed[:, b], 0.01)
        c = christoffersen_independence(exceed[:, b])
        tests[book] = {"kupiec": k, "christoffersen": c,
                       "conditional_coverage_lr": k["lr"] + c["lr"],
                       "conditional_coverage_p": float(chi2.sf(k["lr"] + c["lr"], 2))}
    return VarBacktest(name, len(days), var, pnl, exceed, tests)

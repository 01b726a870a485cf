"""The protocol solvency index: aggregate figures for the whole book that keepers sign each block with the margin
root (issue 16, docs/risk.md "Solvency index").

* total equity, maintenance and initial margin over the attested accounts;
* the protocol's shortfall at risk: over the same tail scenarios the accounts are margined on, the loss
  ``L_s = sum over accounts of max(-(equity + P&L_s), 0)`` (what accounts ending below zero would owe), and its
  VaR 99 and ES 97.5;
* the insurance fund balance and the ratio fund / ES of the shortfall (how many times the fund covers the
  expected tail shortfall; infinite when the shortfall at risk is zero);
* how many accounts (and how much equity) the figures leave out, and why.

Pure: numbers in, numbers out (quote units as floats; the caller rounds once for the chain).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from keeper.quant.risk.engine import (
    AccountMap,
    AccountRisk,
    RiskInputs,
    exposure_matrix,
    model_values,
    revalue,
    shortfall_by_scenario,
)
from keeper.quant.risk.scenarios import ScenarioSet

VAR_LEVEL = 0.99
ES_LEVEL = 0.975


@dataclass(frozen=True)
class SolvencyIndex:
    """One block's solvency figures (quote units)."""

    total_equity: float
    total_maintenance: float
    total_initial: float
    shortfall_now: float  # sum of max(-equity, 0) today
    shortfall_var99: float  # VaR 99 of the protocol shortfall over the tail set
    shortfall_es975: float  # ES 97.5 of the protocol shortfall over the tail set
    fund: float
    coverage: float  # fund / shortfall_es975 (inf when the shortfall at risk is 0)
    accounts: int
    excluded_accounts: int = 0
    excluded_equity: float = 0.0
    excluded_reasons: dict = field(default_factory=dict)  # reason -> count

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["coverage"] = None if math.isinf(self.coverage) else self.coverage
        return d


def tail_measures(losses: np.ndarray, var_level: float = VAR_LEVEL, es_level: float = ES_LEVEL) -> tuple[float, float]:
    """(VaR, ES) of equally weighted scenario losses (positive = loss): VaR the ``ceil(n x level)``-th smallest
    loss, ES the mean of the ``ceil(n x (1 - level))`` largest."""
    x = np.sort(np.asarray(losses, dtype=np.float64))
    n = x.size
    if n == 0:
        raise ValueError("solvency: no scenarios")
    var = float(x[min(n - 1, max(0, math.ceil(n * var_level - 1e-9) - 1))])
    m = max(1, math.ceil(n * (1.0 - es_level) - 1e-9))
    es = float(np.sum(x[n - m:][::-1]) / m)
    return var, es


def solvency_index(inputs: RiskInputs, risk: AccountRisk, cash: np.ndarray, tail_set: ScenarioSet, fund: float,
                   excluded: dict | None = None, excluded_equity: float = 0.0, chunk: int = 256,
                   mapper: AccountMap | None = None, shortfall: np.ndarray | None = None) -> SolvencyIndex:
    """The index of the attested accounts: ``risk`` is their :func:`~keeper.quant.risk.engine.compute_account_risk`
    on ``inputs`` and ``tail_set``; ``cash`` their quote cash (added to equity as in the leaves); ``excluded`` the
    accounts left out of the attestation by reason (count) and ``excluded_equity`` their equity where known.
    ``shortfall``: the per-scenario shortfall of these accounts at equity + cash over ``tail_set`` when the risk run
    already summed it (``AccountRisk.tail_shortfall``, in ``chunk``-account chunks), else computed here."""
    equity = np.asarray(risk.equity, dtype=np.float64) + np.asarray(cash, dtype=np.float64)
    if shortfall is not None:  # already summed over these accounts and scenarios (the risk run's tail pass)
        losses = np.asarray(shortfall, dtype=np.float64)
        if losses.shape != (tail_set.n_scenarios,):
            raise ValueError(f"solvency: shortfall of shape {losses.shape}, expected ({tail_set.n_scenarios},)")
    else:
        dv = revalue(inputs, tail_set, None, model_values(inputs))
        losses = shortfall_by_scenario(exposure_matrix(inputs), dv, equity, chunk, mapper)
    var, es = tail_measures(losses)
    excluded = dict(excluded or {})
    return SolvencyIndex(
        total_equity=float(np.sum(equity)), total_maintenance=float(np.sum(risk.maintenance_margin)),
        total_initial=float(np.sum(risk.initial_margin)), shortfall_now=float(np.sum(np.maximum(-equity, 0.0))),
        shortfall_var99=var, shortfall_es975=es, fund=float(fund),
        coverage=(float(fund) / es) if es > 0 else math.inf, accounts=int(equity.size),
        excluded_accounts=int(sum(excluded.values())), excluded_equity=float(excluded_equity),
        excluded_reasons=excluded)

"""The protocol solvency index (keeper.quant.risk.solvency) against second computations: the shortfall of every
scenario recomputed account by account from dense P&L, and the tail measures from their definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from keeper.quant.risk.engine import (
    NO_UNDERLYING,
    PUT,
    CollateralTable,
    RiskInputs,
    SeriesTable,
    compute_account_risk,
    exposure_matrix,
    model_values,
    revalue,
)
from keeper.quant.risk.scenarios import grid_scenarios, monte_carlo_scenarios
from keeper.quant.risk.solvency import solvency_index, tail_measures


def _book():
    """Three accounts on one underlying at 2,000: a thin short put book, a well-funded short put book and a
    cash-only account."""
    series = SeriesTable(np.array([0]), [1900.0], [7 / 365], np.array([PUT]), [1.0])
    positions = sp.csr_matrix(np.array([[-10.0], [-10.0], [0.0]]))
    coll = np.array([[0.0], [1.0], [0.0]])
    ca = CollateralTable([2000.0], [0.1], np.array([0]))
    inputs = RiskInputs(series, positions, coll, ca, [2000.0], [0.8], [0.0])
    inputs = RiskInputs(series, positions, coll, ca, inputs.forward, inputs.vols, model_values(inputs))
    cash = np.array([500.0, 40000.0, 100.0])
    return inputs, cash


def test_tail_measures_follow_their_definitions():
    losses = np.arange(1, 201, dtype=float)  # 200 scenarios
    var, es = tail_measures(losses)
    assert var == 198.0  # the 198th smallest of 200 (ceil(200 x 0.99))
    assert es == pytest.approx(np.mean([200, 199, 198, 197, 196]))  # ceil(200 x 0.025) = 5 largest


def test_shortfall_at_risk_equals_an_account_by_account_recomputation():
    inputs, cash = _book()
    tail = monte_carlo_scenarios(7, 2000, 1)
    risk = compute_account_risk(inputs, tail, grid_scenarios(0.15, n_underlyings=1))
    idx = solvency_index(inputs, risk, cash, tail, fund=50_000.0, excluded={"unpriced_series": 2},
                         excluded_equity=1234.0)
    equity = risk.equity + cash
    pnl = exposure_matrix(inputs).toarray() @ revalue(inputs, tail, None, model_values(inputs))
    losses = np.array([sum(max(-(equity[a] + pnl[a, s]), 0.0) for a in range(3)) for s in range(pnl.shape[1])])
    var, es = tail_measures(losses)
    assert idx.shortfall_var99 == pytest.approx(var, rel=1e-12)
    assert idx.shortfall_es975 == pytest.approx(es, rel=1e-12)
    assert es > 0  # the thin short put book ends below zero in the tail
    assert idx.coverage == pytest.approx(50_000.0 / es)
    assert idx.total_equity == pytest.approx(float(np.sum(equity)))
    assert idx.total_maintenance == pytest.approx(float(np.sum(risk.maintenance_margin)))
    assert idx.total_initial == pytest.approx(float(np.sum(risk.initial_margin)))
    assert (idx.accounts, idx.excluded_accounts, idx.excluded_equity) == (3, 2, 1234.0)
    # only the thin book contributes: the well-funded one never ends below zero in these scenarios
    thin_only = np.maximum(-(equity[0] + pnl[0]), 0.0)
    assert np.allclose(losses, thin_only)


def test_a_fully_funded_book_has_no_shortfall_and_infinite_coverage():
    inputs, cash = _book()
    rich = np.array([1e9, 1e9, 1e9])
    tail = monte_carlo_scenarios(3, 500, 1)
    risk = compute_account_risk(inputs, tail, grid_scenarios(0.15, n_underlyings=1))
    idx = solvency_index(inputs, risk, rich, tail, fund=10.0)
    assert idx.shortfall_es975 == 0.0 and idx.shortfall_var99 == 0.0 and math.isinf(idx.coverage)
    assert idx.to_json()["coverage"] is None

"""Mark-to-model against mark-to-market: what a fat-finger trade on a thin series does to each mark.

Pure (numpy; no chain I/O). Given every account's positions, its collateral value and maintenance margin, the
model prices of the series and the book of the manipulated series after one trade far from fair value, it
compares

* a **naive last-trade mark** (the manipulated series marked at the trade price, every other series at model),
* the **hybrid mark** of :func:`keeper.quant.marks.hybrid_marks` (market mid only for a deep, tight book that agrees
  with the model; the model otherwise),

and lists the accounts healthy under the model that the naive mark would have put below maintenance margin,
and those the hybrid mark puts there (the protocol's answer: none).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from keeper.quant.marks import MarkReason, hybrid_marks


@dataclass(frozen=True)
class ThinBook:
    """The manipulated series' book right after the trade: last trade price, bid/ask and their sizes."""

    trade_price: float
    bid: float
    ask: float
    bid_size: float
    ask_size: float


def equity_under(marks: np.ndarray, positions: np.ndarray, collateral: np.ndarray) -> np.ndarray:
    """Equity per account: collateral value plus positions (accounts x series) times marks."""
    return collateral + positions @ marks


def manipulation_report(accounts: Sequence[str], positions: np.ndarray, collateral: np.ndarray,
                        maintenance: np.ndarray, model_price: np.ndarray, model_vega: np.ndarray,
                        series_index: int, book: ThinBook, series_label: str = "") -> dict:
    """Compare the naive last-trade mark with the hybrid mark after a fat-finger trade on ``series_index``.

    ``positions`` is accounts x series (contracts), ``collateral`` and ``maintenance`` per account (quote units,
    floats), ``model_price``/``model_vega`` per series. Returns a JSON-ready dict with both marks of the series,
    the hybrid mark's reason, and the account lists ``naive_would_liquidate`` / ``hybrid_liquidated`` (both
    restricted to accounts healthy under the model marks)."""
    positions = np.asarray(positions, float)
    collateral = np.asarray(collateral, float)
    maintenance = np.asarray(maintenance, float)
    model = np.asarray(model_price, float)
    n_series = model.shape[0]
    if positions.shape != (len(accounts), n_series):
        raise ValueError(f"positions shape {positions.shape} != ({len(accounts)}, {n_series})")
    if not 0 <= series_index < n_series:
        raise ValueError(f"series_index {series_index} outside [0, {n_series})")
    eq_model = equity_under(model, positions, collateral)
    healthy = eq_model >= maintenance

    naive = model.copy()
    naive[series_index] = book.trade_price
    eq_naive = equity_under(naive, positions, collateral)

    bid = np.full(n_series, np.nan)
    ask = np.full(n_series, np.nan)
    bsz = np.full(n_series, np.nan)
    asz = np.full(n_series, np.nan)
    bid[series_index], ask[series_index] = book.bid, book.ask
    bsz[series_index], asz[series_index] = book.bid_size, book.ask_size
    hyb = hybrid_marks(bid, ask, bsz, asz, model, model_vega=np.asarray(model_vega, float))
    eq_hybrid = equity_under(hyb.mark, positions, collateral)

    naive_liq = [a for a, h, e, m in zip(accounts, healthy, eq_naive, maintenance) if h and e < m]
    hybrid_liq = [a for a, h, e, m in zip(accounts, healthy, eq_hybrid, maintenance) if h and e < m]
    return {
        "series": series_label or f"#{series_index}",
        "trade_price": float(book.trade_price),
        "model_price": float(model[series_index]),
        "hybrid_mark": float(hyb.mark[series_index]),
        "hybrid_reason": MarkReason(int(hyb.reason[series_index])).name,
        "holders": int(np.count_nonzero(positions[:, series_index])),
        "healthy_under_model": int(healthy.sum()),
        "naive_would_liquidate": naive_liq,
        "hybrid_liquidated": hybrid_liq,
    }

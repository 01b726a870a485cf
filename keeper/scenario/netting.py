"""Cross-asset netting: the maintenance margin of each combined two-asset book against the sum of the margins of its
single-asset books (the netting credit), per account and in total.

:func:`netting_of_documents` measures it on the chain's actual books: the inputs documents the keepers attested at
each step of the scenario (archived under their hash) are split per underlying (each account's series and
collateral on that underlying, its cash in every part) and every part is run through the keepers' own risk
computation (:func:`keeper.attest.leaves.risk_run`: the same seeds, the correlated Monte Carlo set, the grid with
joint, single-asset and opposite moves, the correlation stress). Pure: the caller loads the documents.

:func:`netting_through_path` is the earlier offline study of a synthetic two-asset book along the path (kept for its
tests; the scenario reports the on-chain figures).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from keeper.attest.leaves import risk_run
from keeper.quant.risk.engine import (
    CALL,
    NO_UNDERLYING,
    PUT,
    CollateralTable,
    RiskInputs,
    SeriesTable,
    compute_account_risk,
    model_values,
)
from keeper.quant.risk.scenarios import correlation_stress_scenarios, grid_scenarios, monte_carlo_scenarios
from keeper.quant.risk.solvency import solvency_index

#: the book's kinds: (name, BTC leg (kind, strike/spot, size), ETH leg (kind, strike/spot, size), hedged across?)
BOOKS = (
    ("diversified short puts", (PUT, 0.85, -1.0), (PUT, 0.85, -20.0), False),
    ("BTC put vs short ETH put", (PUT, 0.9, 1.0), (PUT, 0.85, -25.0), True),
    ("short BTC put vs short ETH call", (PUT, 0.85, -1.0), (CALL, 1.15, -20.0), True),
    ("short ETH straddle, long BTC put", (PUT, 0.9, 0.5), (CALL, 1.0, -10.0), True),
)


def step_seconds_of(path) -> float:
    """The market time one step of a path stands for (median spacing of its times; a day for a one-step path)."""
    times = np.asarray(path.times, dtype=float)
    return float(np.median(np.diff(times))) if times.size > 1 else 86_400.0


def two_asset_book(n_accounts: int, seed: int) -> list[tuple[str, bool, tuple, tuple, float]]:
    """``n_accounts`` traders cycling through :data:`BOOKS`, each scaled by a seeded factor in [0.5, 2]:
    (name, hedged, BTC leg, ETH leg, scale)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_accounts):
        name, btc, eth, hedged = BOOKS[i % len(BOOKS)]
        out.append((name, hedged, btc, eth, float(rng.uniform(0.5, 2.0))))
    return out


def _inputs(book, spots: np.ndarray, vols: np.ndarray, strikes_at: np.ndarray, expiry: float,
            collateral: np.ndarray, prices: np.ndarray, haircuts: np.ndarray, legs: tuple[bool, bool]) -> RiskInputs:
    """The book's RiskInputs at ``spots`` (BTC, ETH); ``legs`` keeps the BTC and/or ETH legs (and their collateral)."""
    n = len(book)
    series_u, kinds, strikes = [], [], []
    rows, cols, data = [], [], []
    for i, (_, _, btc, eth, scale) in enumerate(book):
        for u, (kind, k, size) in enumerate((btc, eth)):
            if not legs[u]:
                continue
            j = len(series_u)
            series_u.append(u)
            kinds.append(kind)
            strikes.append(k * strikes_at[u])
            rows.append(i)
            cols.append(j)
            data.append(size * scale)
    m = len(series_u)
    table = SeriesTable(np.array(series_u, dtype=np.int64), strikes, [expiry] * m, np.array(kinds, dtype=np.int64),
                        [1.0] * m)
    keep = np.array([legs[0], legs[1], True], dtype=float)
    return RiskInputs(table, sp.csr_matrix((data, (rows, cols)), shape=(n, m)), collateral * keep[None, :],
                      CollateralTable(prices, haircuts, np.array([0, 1, NO_UNDERLYING])), spots,
                      [vols[u] for u in series_u], [0.0] * m)


def netting_through_path(spot_path: np.ndarray, vol_path: np.ndarray, step_seconds: float, *, n_accounts: int = 12,
                         seed: int = 11, btc_spot0: float = 40_000.0, btc_beta: float = 0.8, mc_paths: int = 1000,
                         haircuts: tuple[float, float] = (0.10, 0.15), fund: float = 50_000.0) -> dict:
    """Per step: total MM of the combined books, the sum of the single-asset books' MM, the netting credit and its
    share, and the solvency index (shortfall ES 97.5, coverage); plus per account at the first and the worst step.
    Options (30 days at the start) and strikes are fixed at the first step; marks are the model values."""
    spot_path, vol_path = np.asarray(spot_path, dtype=float), np.asarray(vol_path, dtype=float)
    if spot_path.size < 1 or spot_path.shape != vol_path.shape or np.any(spot_path <= 0):
        raise ValueError("netting: need a positive spot path with one vol per step")
    book = two_asset_book(n_accounts, seed)
    eth0 = float(spot_path[0])
    strikes_at = np.array([btc_spot0, eth0])
    collateral = np.array([[0.5 * s, 5.0 * s, 20_000.0 * s] for *_, s in book])  # WBTC, WETH, quote
    hc = np.array([haircuts[0], haircuts[1], 0.0])
    steps, accounts = [], {}
    worst_step, worst_total = 0, -np.inf
    for t, (eth, vol) in enumerate(zip(spot_path, vol_path)):
        btc = btc_spot0 * (eth / eth0) ** btc_beta
        spots = np.array([btc, eth])
        vols = np.array([0.8 * vol, vol])                      # BTC a little calmer than ETH
        expiry = max(30 / 365 - t * step_seconds / (365 * 86_400), 1 / 365)
        prices = np.array([btc, eth, 1.0])
        mc = monte_carlo_scenarios(seed * 1_000 + t, mc_paths, 2)
        stress = correlation_stress_scenarios(seed * 1_000 + t, mc_paths, 2)
        grid = grid_scenarios([0.15, 0.2])
        risks = {}
        for label, legs in (("combined", (True, True)), ("btc", (True, False)), ("eth", (False, True))):
            ri = _inputs(book, spots, vols, strikes_at, expiry, collateral, prices, hc, legs)
            ri = RiskInputs(ri.series, ri.positions, ri.collateral, ri.collateral_assets, ri.forward, ri.vols,
                            model_values(ri), ri.params)
            risks[label] = (ri, compute_account_risk(ri, mc, grid, stress_set=stress, hashes=False))
        ri, comb = risks["combined"]
        separate = risks["btc"][1].maintenance_margin + risks["eth"][1].maintenance_margin
        idx = solvency_index(ri, comb, np.zeros(len(book)), mc, fund)
        total = float(comb.maintenance_margin.sum())
        steps.append({"step": t, "eth": float(eth), "btc": float(btc), "mm_combined": total,
                      "mm_separate": float(separate.sum()), "netting_credit": float(separate.sum()) - total,
                      "shortfall_es975": float(idx.shortfall_es975),
                      "coverage": float(idx.coverage) if np.isfinite(idx.coverage) else None,
                      "total_equity": float(idx.total_equity)})
        if total > worst_total:
            worst_step, worst_total = t, total
        if t in (0,) or t == worst_step:
            accounts[t] = [{"account": i, "book": book[i][0], "hedged": book[i][1],
                            "mm_combined": float(comb.maintenance_margin[i]), "mm_separate": float(separate[i]),
                            "grid_combined": float(comb.grid_worst_loss[i]),
                            "grid_btc_book": float(risks["btc"][1].grid_worst_loss[i]),
                            "grid_eth_book": float(risks["eth"][1].grid_worst_loss[i])}
                           for i in range(len(book))]
    return {"steps": steps, "accounts_first": accounts[0], "accounts_worst": accounts[worst_step],
            "worst_step": worst_step, "btc_beta": btc_beta, "n_accounts": n_accounts}


def split_document(doc: dict, underlying: int) -> dict:
    """``doc`` with every account's book cut down to what moves with underlying ``underlying`` (an index of
    ``doc["underlyings"]``): its series on it and its collateral in assets that move with it; cash, state nonce,
    the market and the risk settings unchanged."""
    on_u = {int(s["id"]) for s in doc["series"] if int(s["underlying"]) == underlying}
    coll_u = {a["asset"] for a in doc["collateral_assets"]
              if a["underlying"] is not None and int(a["underlying"]) == underlying}
    accounts = [{**a, "positions": [p for p in a["positions"] if int(p[0]) in on_u],
                 "collateral": [c for c in a["collateral"] if c[0] in coll_u]} for a in doc["accounts"]]
    return {**doc, "accounts": accounts}


def netting_of_document(doc: dict) -> dict:
    """One attested document's netting: per account (document order) the MM of its combined book, of each
    single-underlying part (:func:`split_document`) and their sum, in whole quote units, and which underlyings
    its positions are on; the totals over the accounts holding positions on two or more underlyings
    (``two_asset``) and over every account (``all``)."""
    combined = risk_run(doc).risk.maintenance_margin
    parts = [risk_run(split_document(doc, u)).risk.maintenance_margin for u in range(len(doc["underlyings"]))]
    u_of = {int(s["id"]): int(s["underlying"]) for s in doc["series"]}
    accounts = []
    for i, a in enumerate(doc["accounts"]):
        held = sorted({u_of[int(p[0])] for p in a["positions"] if int(p[1])})
        accounts.append({"account": a["account"], "underlyings": [doc["underlyings"][u]["asset"] for u in held],
                         "mm_combined": float(combined[i]), "mm_parts": [float(p[i]) for p in parts],
                         "mm_separate": float(sum(p[i] for p in parts))})
    for x in accounts:
        x["netting_credit"] = x["mm_separate"] - x["mm_combined"]

    def total(rows):
        c, s = sum(r["mm_combined"] for r in rows), sum(r["mm_separate"] for r in rows)
        return {"accounts": len(rows), "mm_combined": c, "mm_separate": s, "netting_credit": s - c,
                "credit_share": (s - c) / s if s > 0 else 0.0}

    return {"block": int(doc["block"]["number"]), "accounts": accounts,
            "two_asset": total([x for x in accounts if len(x["underlyings"]) > 1]), "all": total(accounts)}


def netting_of_documents(docs: list[tuple[int, dict]]) -> dict:
    """The netting through the run from ``(step, decoded inputs document)`` pairs (the document attested at each
    step's block): per step the totals (:func:`netting_of_document`), and per account at the first step and at the
    step where the combined MM of all accounts peaked."""
    steps, per = [], {}
    for k, doc in docs:
        r = netting_of_document(doc)
        per[k] = r["accounts"]
        steps.append({"step": k, "block": r["block"], **{f"two_asset_{n}": v for n, v in r["two_asset"].items()},
                      **{f"all_{n}": v for n, v in r["all"].items()}})
    if not steps:
        return {"steps": [], "accounts_first": [], "accounts_worst": [], "worst_step": None}
    worst = max(steps, key=lambda x: x["all_mm_combined"])["step"]
    return {"steps": steps, "accounts_first": per[steps[0]["step"]], "accounts_worst": per[worst],
            "worst_step": worst}

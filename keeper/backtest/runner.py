"""One backtest run: path -> market -> population (sized at the first bar) -> replay of the policies.

Pure (no file I/O): the CLI and the benchmark call :func:`run_path` with an already validated :class:`PricePath`."""
from __future__ import annotations

import time

import numpy as np

from keeper.backtest.engine import POLICIES, BacktestConfig, Replay
from keeper.backtest.market import PricePath, build_market, list_series
from keeper.backtest.population import make_population, size_collateral

#: figures of the outcome table, in order: key -> column title
TABLE = {
    "liquidated_in_part": "part",
    "liquidated_in_full": "full",
    "healthy_liquidated": "healthy liq.",
    "healthy_beyond_tolerance": "healthy > 1 %",
    "fills_by_fund": "fund fills",
    "transfer": "to liquidators",
    "holder_loss": "holders' loss",
    "fund_drawdown": "fund drawdown",
    "fund_payouts": "fund payouts",
    "bad_debt": "bad debt",
    "minutes_below_mm_without_fill": "acct-min < MM",
    "max_minutes_below_mm_without_fill": "max wait min",
    "xfer_attested_share_median": "xfer/MM med",
    "xfer_attested_share_max": "xfer/MM max",
    "transfer_share_of_mm_median": "fair xfer/MM med",
    "transfer_share_of_mm_max": "fair xfer/MM max",
    "payout_to_deficit_median": "payout/deficit med",
}


def prepare(path: PricePath, n_accounts: int, cfg: BacktestConfig, seed: int = 0):
    """Market and population for ``path``. Each account's collateral puts equity / MM at its target ratio under
    the stricter of the engine's MM and the static margin (so every policy starts with every account healthy)."""
    series = list_series(float(path.close[0]), float(path.times[0]))
    market = build_market(path, series, seed=seed)
    pop = make_population(n_accounts, series, float(path.close[0]), seed=seed)
    probe = Replay(market, pop, cfg)
    probe.refit(0)
    _, _, vols0 = probe.model_prices(0)
    S0 = float(path.close[0])

    def mm_fn(pos, coll):
        engine = probe.risk(0, pos, coll, vols0)[0]
        static = cfg.static_rate * np.abs(pos).sum(axis=1) * S0 + np.maximum(-pos, 0.0) @ market.last_trade[0]
        return np.maximum(engine, static)

    pop = size_collateral(pop, S0, cfg.haircut, market.fair[0], mm_fn)
    return market, pop


def run_path(path: PricePath, n_accounts: int, cfg: BacktestConfig = BacktestConfig(), seed: int = 0,
             policies=POLICIES, progress=None, fit_workers: int = 0) -> dict:
    """Replay ``path``; returns per policy the figures (engine.Replay result) plus run metadata. ``fit_workers``:
    helper processes fitting the keepers' surfaces ahead of the replay (same results, :class:`Replay`)."""
    t0 = time.perf_counter()
    market, pop = prepare(path, n_accounts, cfg, seed)
    rp = Replay(market, pop, cfg, policies, progress, fit_workers=fit_workers)
    res = rp.run()
    return {
        "path": path.name, "underlying": path.underlying, "bars": len(path), "bar_seconds": path.bar_seconds,
        "accounts": n_accounts, "spot_first": float(path.close[0]), "spot_min": float(path.close.min()),
        "spot_last": float(path.close[-1]), "atm_vol_short_max": float(market.ref.short.max()),
        "atm_vol_long_max": float(market.ref.long.max()), "fair_vol_max": float(market.fair_vol.max()),
        "fat_finger": market.fat_finger, "margin_runs": int(rp.margin_bars.size), "surface_fits": rp.surface_fits,
        "surface_fit_failures": rp.surface_failures, "risk_runs": rp.risk_runs, "fresh_runs": rp.fresh_runs,
        "cadence_s": cfg.cadence_s, "seconds": time.perf_counter() - t0, "policies": res,
        "kinds": {k: int(sum(1 for x in pop.kind if x == k)) for k in sorted(set(pop.kind))},
    }


def outcome_table(result: dict) -> list[list]:
    """Rows [policy, figure...] of one path's outcome table (the figures in :data:`TABLE`)."""
    rows = []
    for name, fig in result["policies"].items():
        rows.append([name] + [fig.get(k) for k in TABLE])
    return rows

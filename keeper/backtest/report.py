"""Markdown tables of a backtest (pure: strings from result dicts; the CLI writes them to report.md)."""
from __future__ import annotations

from keeper.backtest.runner import TABLE


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 and not v.is_integer() else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def outcome_markdown(results: list[dict]) -> str:
    """One row per path and policy, columns of :data:`keeper.backtest.runner.TABLE`, plus the payout/deficit max."""
    cols = list(TABLE.values()) + ["payout/deficit max"]
    keys = list(TABLE) + ["payout_to_deficit_max"]
    lines = ["| path | policy | " + " | ".join(cols) + " |", "|---|---|" + "---:|" * len(cols)]
    for r in results:
        for k, (pol, fig) in enumerate(r["policies"].items()):
            lines.append(f"| {r['path'] if k == 0 else ''} | {pol} | " + " | ".join(_cell(fig.get(x)) for x in keys) + " |")
    return "\n".join(lines)


def paths_markdown(results: list[dict]) -> str:
    """Per path: bars, spot fall, reference vol peak, fund, fat-finger print, fits and runs, seconds."""
    lines = ["| path | bars | bar s | low / first | short ATM max | fund at start | fat finger (strike, price / fair) "
             "| margin runs | surface fits | risk runs | s |", "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in results:
        ff = r.get("fat_finger") or {}
        fund0 = next(iter(r["policies"].values()))["fund_before"]
        lines.append(f"| {r['path']} | {r['bars']} | {r['bar_seconds']:.0f} | {r['spot_min'] / r['spot_first']:.3f} | "
                     f"{r['atm_vol_short_max']:.2f} | {fund0:,.0f} | "
                     f"{ff.get('strike', 0):,.0f} P, {ff.get('price', 0):,.2f} / {ff.get('fair', 0):,.2f} | "
                     f"{r['margin_runs']} | {r['surface_fits']} | {r['risk_runs']} | {r.get('wall', r['seconds']):.0f} |")
    return "\n".join(lines)


def var_markdown(var_json: list[dict]) -> str:
    lines = ["| closes | book | days | exceedances | rate | Kupiec LR | p | Christoffersen LR | p |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for vb in var_json:
        for book, t in vb["tests"].items():
            k, c = t["kupiec"], t["christoffersen"]
            lines.append(f"| {vb['name']} | {book} | {k['n']} | {k['exceedances']} | {k['rate']:.4f} | {k['lr']:.2f} | "
                         f"{k['p_value']:.4f} | {c['lr']:.2f} | {c['p_value']:.4f} |")
    return "\n".join(lines)

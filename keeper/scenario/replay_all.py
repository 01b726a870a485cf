"""``backstop scenario --replay all``: the real crash paths on chain, one after another, in one summary table.

Each path of ``<shared>/price_paths`` (every ``*.csv`` but the long daily closes) runs as its own scenario on its
own fresh chain, into ``<out>/<path name>/``; this module picks the paths, turns each run's ``report.json`` into one
row and prints and writes the table (``replay-summary.json`` beside the runs). Rows:

* ``fund_before`` / ``fund_after``, ``fund_payouts``, ``bad_debt`` [quote units];
* ``transfer``: the value handed to bidders beyond the attested value, summed over fills (attested model value of
  the share bought minus the price paid, where positive) and ``max_transfer_share``: the largest single fill's
  transfer over the attested model value of its share; ``fill_xfer_mm_median`` / ``fill_xfer_mm_max``: issue 14's
  per-fill measure, each bid fill's ``fraction x (V - price)`` over the MM of the share bought (``V``: the price the
  (re)start it bid on began at), median and largest (``None`` without fills);
* ``liquidated_full`` / ``liquidated_partial`` / ``healthy_liquidated``: accounts;
* ``minutes_below_mm``: the longest time (chain minutes) any account's attested margin ratio stayed below 1 between
  the scenario's steps (a step below maintenance counts until the next step);
* ``auctions_running``: auctions still running when the run ended; ``invariants_ok``: every invariant held.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from rich.console import Console
from rich.table import Table

from keeper.data.paths import crash_path_names, shared_dir_default
from keeper.errors import BackstopError


class ReplayError(BackstopError, ValueError):
    """The real paths cannot be listed (no shared data folder, or no path in it)."""


def real_path_names(shared_dir: Optional[Path]) -> list[str]:
    """The crash paths of the shared data folder (``shared_dir``, default :func:`shared_dir_default`), sorted."""
    shared = Path(shared_dir) if shared_dir else shared_dir_default()
    names = crash_path_names(shared)
    if not names:
        raise ReplayError(f"--replay all: no crash path in {shared / 'price_paths'} (give --shared-data)")
    return names


def _longest_below(times: Sequence[float], ratios: Sequence[float]) -> float:
    """Longest stretch (seconds) with the ratio below 1: a step below maintenance counts until the next step."""
    best = run = 0.0
    for i, r in enumerate(ratios[: len(times)]):
        dt = (times[i + 1] - times[i]) if i + 1 < len(times) else 0.0
        if r is not None and r < 1.0:
            run += dt
            best = max(best, run)
        else:
            run = 0.0
    return best


def replay_row(name: str, report: Mapping[str, Any]) -> dict:
    """One table row from a run's ``report.json`` (its ``summary`` and ``record``)."""
    s, rec = report["summary"], report.get("record") or {}
    fills = s.get("fills") or []
    transfers = []
    for f in fills:
        value = float(f.get("model_value") or 0.0) * float(f.get("fraction") or 0.0)
        paid = float(f.get("price_paid") or 0.0) * float(f.get("fraction") or 0.0)
        transfers.append((max(value - paid, 0.0), value))
    times = rec.get("times") or []
    below = max((_longest_below(times, r) for r in (rec.get("margin_ratios") or {}).values()), default=0.0)
    invariants = s.get("invariants") or {}
    return {
        "path": name,
        "fund_before": s.get("insurance_fund_before"),
        "fund_after": s.get("insurance_fund_after"),
        "fund_payouts": s.get("insurance_fund_payouts"),
        "bad_debt": s.get("bad_debt"),
        "transfer": sum(t for t, _ in transfers),
        "max_transfer_share": max((t / v for t, v in transfers if v > 0), default=0.0),
        "fill_xfer_mm_median": (s.get("fill_transfer_share_of_mm") or {}).get("median"),
        "fill_xfer_mm_max": (s.get("fill_transfer_share_of_mm") or {}).get("max"),
        "liquidated_full": len(s.get("accounts_liquidated_full") or []),
        "liquidated_partial": len(s.get("accounts_liquidated_partial") or []),
        "healthy_liquidated": len(s.get("healthy_accounts_liquidated") or []),
        "minutes_below_mm": below / 60.0,
        "auctions_running": s.get("auctions_still_running"),
        "invariants_ok": all(bool(v.get("ok")) for v in invariants.values()),
        "failed_invariants": sorted(k for k, v in invariants.items() if not v.get("ok")),
    }


def failed_row(name: str, reason: str) -> dict:
    """The row of a path whose run did not finish."""
    return {"path": name, "error": reason, "invariants_ok": False}


def write_summary(out_dir: Path, rows: Sequence[dict]) -> Path:
    path = Path(out_dir) / "replay-summary.json"
    path.write_text(json.dumps({"paths": list(rows)}, indent=2, default=str))
    return path


def render_replay_table(rows: Sequence[dict], console=None) -> None:
    """The one summary table (rich)."""
    con = console or Console()
    t = Table(title="Backstop scenario --replay all: real crash paths on chain")
    cols = [("path", "path"), ("fund before", "fund_before"), ("fund after", "fund_after"), ("bad debt", "bad_debt"),
            ("transfer", "transfer"), ("max fill transfer", "max_transfer_share"),
            ("fill xfer/MM med", "fill_xfer_mm_median"), ("fill xfer/MM max", "fill_xfer_mm_max"),
            ("full", "liquidated_full"),
            ("partial", "liquidated_partial"), ("healthy liq.", "healthy_liquidated"),
            ("max min < MM", "minutes_below_mm"), ("running", "auctions_running"), ("invariants", "invariants_ok")]
    for head, _ in cols:
        t.add_column(head, justify="left" if head == "path" else "right")
    for r in rows:
        if "error" in r:
            t.add_row(r["path"], *(["-"] * (len(cols) - 2)), f"error: {r['error'][:60]}")
            continue
        cells = []
        for _, k in cols:
            v = r.get(k)
            if k in ("max_transfer_share", "fill_xfer_mm_median", "fill_xfer_mm_max"):
                cells.append("-" if v is None else f"{100 * v:.1f} %")
            elif k == "invariants_ok":
                cells.append("ok" if v else "FAILED: " + ", ".join(r.get("failed_invariants") or []))
            elif isinstance(v, float):
                cells.append(f"{v:,.1f}")
            else:
                cells.append(str(v))
        t.add_row(*cells)
    con.print(t)

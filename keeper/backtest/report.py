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


def target_rows(result: dict) -> list[dict]:
    """Issue 14's section-2 targets for each auction policy of one path result (pure; booleans and the figures they
    rest on). Transfer per fill is beyond the attested value, as a share of the MM bought; the holders' loss cap is
    ``0.15 x MM sold + penalty rate x proceeds`` (the most the chosen curve plus the penalty can take); bad debt is
    only a miss when the fund held at least the attested deficits; MTM is the last-trade baseline on the same path."""
    pols = result["policies"]
    mtm = pols.get("mark_to_market")
    rows = []
    for name, f in pols.items():
        if ":" not in name:
            continue
        liq = f["liquidated_in_part"] + f["liquidated_in_full"]
        row = {
            "path": result["path"], "policy": name,
            "healthy": f["healthy_liquidated"], "healthy_ok": f["healthy_liquidated"] == 0,
            "xfer_med": f["xfer_attested_share_median"], "xfer_max": f["xfer_attested_share_max"],
            "xfer_ok": f["xfer_attested_share_median"] <= 0.05 and f["xfer_attested_share_max"] <= 0.15,
            "payout_deficit_med": f["payout_to_deficit_median"], "payout_deficit_max": f["payout_to_deficit_max"],
            "loss": f["holder_loss_beyond_attested"], "loss_cap": f["holder_loss_cap"],
            "loss_ok": f["holder_loss_beyond_attested"] <= f["holder_loss_cap"] + 1e-6,
            "bad_debt": f["bad_debt"], "deficits": f["attested_deficits"], "fund0": f["fund_before"],
            "bad_debt_ok": f["bad_debt"] <= 1e-6 or f["fund_before"] < f["attested_deficits"],
            "max_wait_min": f["max_minutes_below_mm_without_fill"], "running_end": f["auctions_running_at_end"],
            "wait_ok": f["max_minutes_below_mm_without_fill"] <= 30.0 and not f["auctions_running_at_end"],
            "liquidated": liq, "transfer": f["transfer"],
        }
        if mtm is not None:
            row["mtm_liquidated"] = mtm["liquidated_in_part"] + mtm["liquidated_in_full"]
            row["mtm_transfer"] = mtm["transfer"]
            row["vs_mtm_ok"] = liq <= row["mtm_liquidated"] and f["transfer"] < mtm["transfer"]
        rows.append(row)
    return rows


def targets_markdown(results: list[dict]) -> str:
    """The section-2 targets per path and auction policy (:func:`target_rows`), a check mark where met."""
    ok = lambda b: "✓" if b else "✗"  # noqa: E731
    lines = ["| path | policy | healthy liq. | xfer/MM med | xfer/MM max | payout/deficit med | holders' loss / cap "
             "| bad debt (fund ≥ deficits?) | max wait min | vs MTM: liquidated, to liquidators |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        for t in target_rows(r):
            pdm = "–" if t["payout_deficit_med"] is None else f"{t['payout_deficit_med']:.2f}"
            vs = (f"{t['liquidated']} vs {t['mtm_liquidated']}, {t['transfer']:,.0f} vs {t['mtm_transfer']:,.0f} "
                  f"{ok(t['vs_mtm_ok'])}") if "mtm_liquidated" in t else "–"
            cover = "yes" if t["fund0"] >= t["deficits"] else "no"
            lines.append(
                f"| {t['path']} | {t['policy']} | {t['healthy']} {ok(t['healthy_ok'])} | {t['xfer_med']:.3f} | "
                f"{t['xfer_max']:.3f} {ok(t['xfer_ok'])} | {pdm} | {t['loss']:,.0f} / {t['loss_cap']:,.0f} "
                f"{ok(t['loss_ok'])} | {t['bad_debt']:,.0f} ({cover}) {ok(t['bad_debt_ok'])} | "
                f"{t['max_wait_min']:.1f} {ok(t['wait_ok'])} | {vs} |")
    return "\n".join(lines)


def summary_markdown(results: list[dict]) -> str:
    """All paths together, one row per policy: sums of counts and money, the median over paths of the per-fill
    median xfer/MM, the largest per-fill xfer/MM, paths with bad debt, the longest wait below MM, and how many paths
    meet each section-2 target (auction policies)."""
    pols = list(results[0]["policies"])
    lines = ["| policy | part | full | healthy liq. | healthy > 1 % | fund fills | to liquidators | holders' loss | fund payouts | "
             "bad debt | paths with bad debt | acct-min < MM | max wait min | xfer/MM med (median over paths) | "
             "xfer/MM max | fair xfer/MM max | paths meeting: healthy / xfer / loss cap / bad debt / wait / vs MTM |",
             "|---|" + "---:|" * 16 + "---|"]
    targets = {}
    for r in results:
        for t in target_rows(r):
            targets.setdefault(t["policy"], []).append(t)
    for p in pols:
        fs = [r["policies"][p] for r in results if p in r["policies"]]
        tot = lambda k: sum(f[k] for f in fs)  # noqa: E731
        med = sorted(f["xfer_attested_share_median"] for f in fs)
        tr = targets.get(p, [])
        cnt = lambda k: sum(1 for t in tr if t.get(k))  # noqa: E731
        met = (f"{cnt('healthy_ok')} / {cnt('xfer_ok')} / {cnt('loss_ok')} / {cnt('bad_debt_ok')} / "
               f"{cnt('wait_ok')} / {cnt('vs_mtm_ok')} of {len(tr)}") if tr else "–"
        lines.append(
            f"| {p} | {tot('liquidated_in_part'):,} | {tot('liquidated_in_full'):,} | {tot('healthy_liquidated'):,} | "
            f"{sum(f.get('healthy_beyond_tolerance', 0) for f in fs):,} | {tot('fills_by_fund'):,} | {tot('transfer'):,.0f} | {tot('holder_loss'):,.0f} | {tot('fund_payouts'):,.0f} | "
            f"{tot('bad_debt'):,.0f} | {sum(1 for f in fs if f['bad_debt'] > 0)} | "
            f"{tot('minutes_below_mm_without_fill'):,.0f} | {max(f['max_minutes_below_mm_without_fill'] for f in fs):,.1f} | "
            f"{med[len(med) // 2]:.3f} | {max(f['xfer_attested_share_max'] for f in fs):.3f} | "
            f"{max(f['transfer_share_of_mm_max'] for f in fs):.3f} | {met} |")
    return "\n".join(lines)

"""The scenario's four plots from its :class:`~keeper.scenario.report.ScenarioRecord` (matplotlib, Agg backend):
``spot.png`` (spot path with the crash marked), ``surface.png`` (vol smile per expiry before and after),
``margin_ratios.png`` (equity / maintenance margin per account over time), ``solvency.png`` (the posted solvency
index: fund against shortfall at risk) and ``auctions.png`` (each auction's
price against time with the bids marked). No chain I/O here."""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:
    from keeper.scenario.report import ScenarioRecord


@contextmanager
def _figure(path: Path, size: tuple[float, float], xlabel: str, ylabel: str, title: str,
            title_size: float | None = None) -> Iterator:
    """One figure with one axis, labelled and titled; written to ``path`` (110 dpi) and closed on exit."""
    fig, ax = plt.subplots(figsize=size)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def plot_spot(rec: ScenarioRecord, path: Path) -> Path:
    """Every underlying's spot relative to its start (left axis; the first underlying's ATM vol on the right) per
    step, the crash step marked."""
    with _figure(path, (8, 4), "step", "spot / spot at step 0", "Spot paths") as ax:
        steps = list(range(len(rec.spot)))
        series = rec.asset_spot or {"spot": rec.spot}
        for i, (sym, xs) in enumerate(series.items()):
            if xs and xs[0] > 0:
                ax.plot(steps[:len(xs)], [x / xs[0] for x in xs], color=["tab:blue", "tab:green", "tab:purple"][i % 3],
                        label=f"{sym} (start {xs[0]:,.0f})")
        if 0 <= rec.crash_step < len(rec.spot):
            ax.axvline(rec.crash_step, color="tab:red", ls=":", label="crash")
        if rec.atm_vol:
            ax2 = ax.twinx()
            ax2.plot(steps, rec.atm_vol, color="tab:orange", alpha=0.7, label="ATM vol")
            ax2.set_ylabel("ATM vol")
        ax.legend(loc="lower left")
    return path


def plot_surface(rec: ScenarioRecord, path: Path) -> Path:
    """Smile per expiry for each surface snapshot (solid: first, dashed: later ones)."""
    with _figure(path, (8, 4), "log-moneyness ln(K/F)", "implied vol",
                 "Vol surface before and after the crash") as ax:
        styles = ["-", "--", "-.", ":"]
        for si, snap in enumerate(rec.surfaces):
            for ei, T in enumerate(snap.expiries):
                ax.plot(snap.log_moneyness, snap.vols[ei], ls=styles[si % len(styles)],
                        color=f"C{(si * 3 + ei) % 10}", label=f"{snap.label} T={T:.3f}y")
        if rec.surfaces:
            ax.legend(fontsize=7, ncol=2)
    return path


def plot_margin_ratios(rec: ScenarioRecord, path: Path) -> Path:
    """Equity / maintenance margin per account per step (symmetric log scale, so negative equity shows; capped at
    100, accounts without margin requirement drawn at the cap), the liquidation line at 1."""
    with _figure(path, (8, 4.5), "step", "equity / maintenance margin",
                 "Account margin ratios (green long vol, red short vol, blue maker)") as ax:
        for acct, ratios in rec.margin_ratios.items():
            ys = [math.nan if r is None else max(min(r, 1e2), -1e2) if math.isfinite(r) else 1e2 for r in ratios]
            kind = rec.account_kind.get(acct, "")
            color = {"long_vol": "tab:green", "short_vol": "tab:red", "maker": "tab:blue"}.get(kind, "grey")
            ax.plot(range(len(ys)), ys, color=color, alpha=0.5, lw=0.9)
        ax.axhline(1.0, color="black", ls="--", lw=1, label="maintenance margin")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.legend(loc="lower left")
    return path


def plot_auctions(rec: ScenarioRecord, path: Path, decimals: int | None = None) -> Path:
    """Each auction's price against time since its start (restarted by resets), bids marked (o filled, x lost
    race / reverted)."""
    unit = 10 ** (rec.quote_decimals if decimals is None else decimals)
    with _figure(path, (8, 4.5), "seconds since auction start", "auction price of the whole lot (quote)",
                 "Dutch auctions: price and bids (o filled, x lost race; dotted: attested value)", 10) as ax:
        for i, a in enumerate(rec.auctions):
            if a.prices:
                ts = [t - a.start_t for t, _ in a.prices]
                ps = [p / unit for _, p in a.prices]
                ax.plot(ts, ps, color=f"C{i % 10}", lw=1, label=f"#{a.auction_id} {a.account[:8]}")
            for b in a.bids:
                marker = "o" if b.outcome == "filled" else "x"
                ax.scatter([b.t - a.start_t], [b.price / unit], color=f"C{i % 10}", marker=marker, zorder=3)
            if a.model_value:
                ax.axhline(a.model_value / unit, color=f"C{i % 10}", ls=":", lw=0.6)
        if rec.auctions:
            ax.legend(fontsize=7, ncol=2)
    return path


def plot_solvency(rec: ScenarioRecord, path: Path) -> Path:
    """The posted solvency index over chain time: the insurance fund against the protocol's shortfall at risk
    (ES 97.5 and VaR 99 of the accounts' deficits over the tail scenarios), in whole quote units."""
    d = rec.quote_decimals
    pts = sorted((x for x in rec.solvency if x["accounts"] > 0), key=lambda x: x["sequence"])
    with _figure(path, (8, 4), "chain time since the first index (s)", "quote units",
                 "Solvency index: fund vs shortfall at risk") as ax:
        if pts:
            t = [x["timestamp"] - pts[0]["timestamp"] for x in pts]
            ax.plot(t, [x["fund"] / 10**d for x in pts], color="tab:green", label="insurance fund")
            ax.plot(t, [x["shortfall_es975"] / 10**d for x in pts], color="tab:red", label="shortfall ES 97.5")
            ax.plot(t, [x["shortfall_var99"] / 10**d for x in pts], color="tab:orange", ls="--",
                    label="shortfall VaR 99")
            ax.legend(loc="upper left")
        else:
            ax.text(0.5, 0.5, "no solvency index posted", ha="center", va="center", transform=ax.transAxes)
    return path


def write_plots(rec: ScenarioRecord, out: Path) -> dict[str, Path]:
    """The four PNGs in ``out``, by name."""
    return {
        "spot": plot_spot(rec, out / "spot.png"),
        "surface": plot_surface(rec, out / "surface.png"),
        "margin_ratios": plot_margin_ratios(rec, out / "margin_ratios.png"),
        "auctions": plot_auctions(rec, out / "auctions.png"),
        "solvency": plot_solvency(rec, out / "solvency.png"),
    }

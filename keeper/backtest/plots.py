"""PNG plots of a backtest (matplotlib imported inside each function: the CLI stays light)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from keeper.backtest.var_backtest import BOOKS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fund_balance(results: list[dict], out: Path) -> Path:
    """Insurance fund over path time per policy, one panel per path."""
    plt = _plt()
    n = len(results)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, r in zip(axes.ravel(), results):
        hours = np.arange(r["bars"]) * r["bar_seconds"] / 3600.0
        for name, fig_ in r["policies"].items():
            ax.plot(hours, fig_["fund_series"], label=name, lw=1.2)
        ax.set_title(r["path"], fontsize=9)
        ax.set_xlabel("hours")
        ax.set_ylabel("fund")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    p = Path(out) / "fund_balance.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def liquidations(results: list[dict], out: Path) -> Path:
    """Accounts liquidated (in part / in full) and healthy accounts liquidated, per path and policy."""
    plt = _plt()
    names = [r["path"] for r in results]
    pols = list(results[0]["policies"])
    x = np.arange(len(names))
    w = 0.8 / len(pols)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4))
    for k, pol in enumerate(pols):
        part = [r["policies"][pol]["liquidated_in_part"] for r in results]
        full = [r["policies"][pol]["liquidated_in_full"] for r in results]
        healthy = [r["policies"][pol]["healthy_liquidated"] for r in results]
        ax.bar(x + k * w, full, w, label=f"{pol} full")
        ax.bar(x + k * w, part, w, bottom=full, alpha=0.5, label=f"{pol} part")
        ax.plot(x + k * w, healthy, "k_", ms=10)
    ax.set_xticks(x + w * (len(pols) - 1) / 2)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("accounts (black tick: healthy ones)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    p = Path(out) / "liquidations.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def var_exceedances(vbs: list, out: Path) -> Path:
    """Realised loss against VaR99 per day and book; exceedances marked."""
    plt = _plt()
    nb = vbs[0].var.shape[1]
    fig, axes = plt.subplots(len(vbs), nb, figsize=(3.2 * nb, 2.6 * len(vbs)), squeeze=False)

    for r, vb in enumerate(vbs):
        for b, book in enumerate(BOOKS):
            ax = axes[r, b]
            d = np.arange(vb.days)
            ax.plot(d, vb.var[:, b], lw=0.6, label="VaR99")
            ax.plot(d, -vb.pnl[:, b], lw=0.3, alpha=0.6, label="loss")
            e = vb.exceed[:, b]
            ax.plot(d[e], -vb.pnl[e, b], "r.", ms=3, label="exceedance")
            ax.set_title(f"{vb.name} {book}: {int(e.sum())}/{vb.days}", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    p = Path(out) / "var_exceedances.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p

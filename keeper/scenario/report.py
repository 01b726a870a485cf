"""Scenario report: the run's record, its summary (JSON), the printed tables; the PNG plots are
:mod:`keeper.scenario.plots`.

The scenario fills a :class:`ScenarioRecord` while it runs and at the end (:mod:`keeper.scenario.collect`, from chain
events and the keepers' archived inputs); this module turns it into ``report.json`` and a rich console summary, and
:func:`write_report` adds the four plots. No chain I/O here.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from keeper.scenario.plots import write_plots


@dataclass
class BidTrace:
    """One bid on an auction: time (s since scenario start), price paid per unit of lot (quote units for the
    full lot), the fraction of the lot asked, who bid and what happened (``filled``, ``lost_race``, ``reverted``)."""

    t: float
    price: int
    bidder: str
    fraction: float
    outcome: str
    tx: str = ""
    reason: str = ""
    attested_value: int | None = None  # the attested equity the price curve ran from at this bid (after resets)
    start_price: int | None = None  # the (re)start price the curve ran from: the attested model value V [quote units]
    maintenance: int | None = None  # the book's attested MM at that (re)start [quote units]


@dataclass
class AuctionTrace:
    """An auction as seen from its events: start price (the attested model value of the lot) and its decay."""

    auction_id: int
    account: str
    start_t: float
    start_price: int
    model_value: int
    prices: list[tuple[float, int]] = field(default_factory=list)
    bids: list[BidTrace] = field(default_factory=list)
    sold_fraction: float = 0.0
    paid: int = 0
    penalty: int = 0
    to_fund: int = 0
    bad_debt: int = 0
    ended: str = ""
    attestation_id: str = ""
    healthy_at_start: bool = False


@dataclass
class SurfaceSnapshot:
    """Vol smile per expiry on a log-moneyness grid, for the before/after plot."""

    label: str
    expiries: list[float]
    log_moneyness: list[float]
    vols: list[list[float]]  # vols[i][j]: expiry i, moneyness j


@dataclass
class ScenarioRecord:
    """Everything the scenario observed, filled as it runs; :func:`summarize` derives the report from it."""

    config: dict = field(default_factory=dict)
    chain: dict = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    spot: list[float] = field(default_factory=list)
    atm_vol: list[float] = field(default_factory=list)
    #: every risky asset's spot per step (symbol -> list), the first underlying's being ``spot``
    asset_spot: dict[str, list[float]] = field(default_factory=dict)
    crash_step: int = -1
    margin_ratios: dict[str, list[float]] = field(default_factory=dict)
    account_kind: dict[str, str] = field(default_factory=dict)
    surfaces: list[SurfaceSnapshot] = field(default_factory=list)
    auctions: list[AuctionTrace] = field(default_factory=list)
    breaches: list[dict] = field(default_factory=list)
    attestations: list[dict] = field(default_factory=list)
    insurance_fund_before: int = 0
    insurance_fund_after: int = 0
    fund_payouts: int = 0
    #: the buyer of last resort's account at the end (:func:`keeper.scenario.collect.fund_account_state`)
    fund_account: dict = field(default_factory=dict)
    #: each account's leaf at the last step the keepers attested: account -> (equity, maintenance) [quote base units]
    last_leaves: dict = field(default_factory=dict)
    manipulation: dict = field(default_factory=dict)
    invariants: dict = field(default_factory=dict)
    #: liquidation claims: recorded (one per bid), settled (by the liquidators themselves / by the scenario at the
    #: end), still pending after the run
    claims: dict = field(default_factory=dict)
    quote_decimals: int = 6
    notes: list[str] = field(default_factory=list)
    #: every solvency index posted with a margin root (``SolvencyIndexPosted``): sequence, timestamp, fund, shortfall
    #: ES 97.5 and VaR 99, total equity and MM (quote base units), accounts covered
    solvency: list[dict] = field(default_factory=list)
    #: per listed collateral asset, the haircut recommended from the keepers' attested prices over the run
    #: (keeper/quant/haircuts.py ``recommend_haircuts``) against the listed one: asset, listed, recommended (fractions),
    #: daily_vol, size (the listed cap, whole units), depth, closes used, action
    haircuts: list[dict] = field(default_factory=list)
    #: cross-asset netting on the chain's books (keeper/scenario/netting.py ``netting_of_documents``): per step the
    #: MM of the combined books against the sum of their single-underlying parts, over the two-asset accounts and
    #: over all, from the document the keepers attested at the step; per account at the first and the worst step
    cross_asset_netting: dict = field(default_factory=dict)


def append_ratio(ratios: list, n_steps: int, ratio: float) -> None:
    """Add an account's margin ratio of step ``n_steps - 1`` to its list: steps it had no leaf in are ``None``
    before its first leaf (it did not exist yet: a late trader, the fund's account before its first take) and the
    last ratio after it (its leaf was unchanged)."""
    ratios.extend([ratios[-1] if ratios else None] * (n_steps - 1 - len(ratios)))
    ratios.append(ratio)


def _money(x: int, decimals: int) -> float:
    return x / 10**decimals


def summarize(rec: ScenarioRecord) -> dict[str, Any]:
    """The report: accounts liquidated in part and in full, prices paid against the model value, penalties,
    insurance fund before/after (and whether fund after = before + penalties - payouts), bad debt, healthy
    accounts liquidated (must be none) and the mark-to-model vs mark-to-market comparison."""
    d = rec.quote_decimals
    full, partial = [], []
    fills = []
    for a in rec.auctions:
        if a.sold_fraction >= 1.0 - 1e-9:
            full.append(a.account)
        elif a.sold_fraction > 0:
            partial.append(a.account)
        for b in a.bids:
            if b.outcome == "filled":
                mv = a.model_value if b.attested_value is None else b.attested_value
                fills.append(
                    {
                        "auction": a.auction_id,
                        "account": a.account,
                        "bidder": b.bidder,
                        "fraction": b.fraction,
                        "price_paid": _money(b.price, d),
                        "model_value": _money(mv, d),
                        "discount_to_model": (1 - b.price / mv) if mv > 0 else None,
                        "t": b.t,
                        **_fill_transfer(b, d),
                    }
                )
    # an account can be auctioned more than once; its state is the union
    full_set = sorted(set(full))
    partial_set = sorted(set(partial) - set(full_set))
    penalties = sum(a.penalty for a in rec.auctions)
    to_fund = sum(a.to_fund for a in rec.auctions)
    bad_debt = sum(a.bad_debt for a in rec.auctions)
    expected_fund = rec.insurance_fund_before + to_fund - rec.fund_payouts
    healthy = sorted({a.account for a in rec.auctions if a.healthy_at_start and (a.sold_fraction > 0)})
    lost = sum(1 for a in rec.auctions for b in a.bids if b.outcome == "lost_race")
    return {
        "config": rec.config,
        "chain": rec.chain,
        "steps": len(rec.spot),
        "spot_start": rec.spot[0] if rec.spot else None,
        "spot_min": min(rec.spot) if rec.spot else None,
        "spot_end": rec.spot[-1] if rec.spot else None,
        "accounts": len(rec.margin_ratios),
        "breach_records": len(rec.breaches),
        "accounts_breached": len({b["account"] for b in rec.breaches}),
        "attestations": len(rec.attestations),
        "auctions": len(rec.auctions),
        "accounts_liquidated_full": full_set,
        "accounts_liquidated_partial": partial_set,
        "fills": fills,
        "fill_transfer_share_of_mm": _median_max([x["transfer_share_of_mm"] for x in fills
                                                  if x.get("transfer_share_of_mm") is not None]),
        # insolvent books (attested equity E < 0): what the bidder was paid over the attested deficit, per fill
        "insolvent_payout_to_deficit": _median_max([x["price_paid"] / x["model_value"] for x in fills
                                                    if x["model_value"] < 0 and x["price_paid"] < 0]),
        "lost_races": lost,
        "penalties": _money(penalties, d),
        "penalties_to_fund": _money(to_fund, d),
        "auctions_still_running": sum(1 for a in rec.auctions if not a.ended),
        "insurance_fund_before": _money(rec.insurance_fund_before, d),
        "insurance_fund_after": _money(rec.insurance_fund_after, d),
        "insurance_fund_payouts": _money(rec.fund_payouts, d),
        # the full check (with bad debt repaid from penalties) is the invariant computed from events, when present
        "insurance_fund_arithmetic_ok": (bool(rec.invariants["insurance_fund_arithmetic"]["ok"])
                                         if "insurance_fund_arithmetic" in rec.invariants
                                         else expected_fund == rec.insurance_fund_after),
        **_fund_account_summary(rec, d),
        "bad_debt": _money(bad_debt, d),
        "claims_recorded": rec.claims.get("recorded", 0),
        "claims_settled_by_liquidators": rec.claims.get("settled_by_liquidators", 0),
        "claims_settled_at_end": rec.claims.get("settled_at_end", 0),
        "claims_pending": rec.claims.get("pending", 0),
        "healthy_accounts_liquidated": healthy,
        "manipulation": rec.manipulation,
        "invariants": rec.invariants,
        "notes": rec.notes,
        "solvency": _solvency_summary(rec),
        "haircuts": rec.haircuts,
        "cross_asset_netting": rec.cross_asset_netting,
    }


def _fund_account_summary(rec: ScenarioRecord, decimals: int) -> dict[str, Any]:
    """The fund's account in the report: books taken, its positions, its equity and MM in the keepers' last leaf,
    whether it ends breached, and the fund's assets at the end (free balance + that equity): a loss of the account
    is a loss of the fund. Without a leaf of the account (the keepers never attested it) its equity, MM and the
    fund's assets are None, not 0."""
    fa = rec.fund_account
    if not fa:
        return {}
    attested = fa["equity"] is not None
    return {
        "fund_account": fa["address"],
        "fund_account_books_taken": fa["books_taken"],
        "fund_account_equity": _money(fa["equity"], decimals) if attested else None,
        "fund_account_maintenance": _money(fa["maintenance"], decimals) if attested else None,
        "fund_account_breached_at_end": fa["breached"],
        "fund_account_positions": fa["positions"],
        "insurance_fund_assets_after": _money(rec.insurance_fund_after + fa["equity"], decimals) if attested else None,
    }


def _fill_transfer(b: BidTrace, decimals: int) -> dict[str, Any]:
    """Issue 14's per-fill measure: the value handed to the bidder beyond the attested model value,
    ``fraction x (V - price)`` with ``V`` the price the (re)start it bid on began at, as a share of the maintenance
    margin of what it bought (``fraction x MM``); ``{}`` when the (re)start is unknown."""
    if b.start_price is None or not b.maintenance:
        return {}
    transfer = b.fraction * (b.start_price - b.price)
    return {"start_price": _money(b.start_price, decimals), "maintenance": _money(b.maintenance, decimals),
            "transfer": _money(transfer, decimals),
            "transfer_share_of_mm": transfer / (b.fraction * b.maintenance) if b.fraction > 0 else None}


def _median_max(xs: list[float]) -> dict[str, Any]:
    """``{"fills", "median", "max"}`` of a list (``None`` figures when it is empty)."""
    if not xs:
        return {"fills": 0, "median": None, "max": None}
    v = sorted(xs)
    n = len(v)
    med = v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])
    return {"fills": n, "median": med, "max": v[-1]}


def _solvency_summary(rec: ScenarioRecord) -> dict[str, Any]:
    """The solvency index over the run: how many were posted, the lowest coverage (fund / shortfall ES 97.5) and
    the largest shortfall ES seen, in whole quote units."""
    d = rec.quote_decimals
    covered = [x for x in rec.solvency if x["accounts"] > 0]
    cov = [x["fund"] / x["shortfall_es975"] for x in covered if x["shortfall_es975"] > 0]
    return {"posted": len(rec.solvency), "with_figures": len(covered),
            "min_coverage": min(cov) if cov else None,
            "max_shortfall_es975": _money(max((x["shortfall_es975"] for x in covered), default=0), d)}


def record_to_json(rec: ScenarioRecord) -> dict[str, Any]:
    """The raw record as JSON-ready data (dataclasses to dicts)."""
    return asdict(rec)


def write_report_json(out_dir: Path | str, summary: dict[str, Any], rec: ScenarioRecord) -> Path:
    """``report.json``: the summary and the raw record."""
    path = Path(out_dir) / "report.json"
    path.write_text(json.dumps({"summary": summary, "record": record_to_json(rec)}, indent=2, default=str))
    return path


def write_report(rec: ScenarioRecord, out_dir: Path | str) -> dict[str, Path]:
    """Write ``report.json`` (summary + raw record) and the four PNGs into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"report": out / "report.json", **write_plots(rec, out)}
    write_report_json(out, summarize(rec), rec)
    return paths


def render_summary(summary: dict[str, Any], console=None) -> None:
    """Print the final report as rich tables."""

    con = console or Console()
    t = Table(title="Backstop scenario: final report", show_header=False)
    t.add_column("item")
    t.add_column("value", justify="right")

    def fmt(x):
        return f"{x:,.2f}" if isinstance(x, float) else str(x)

    for key in (
        "steps",
        "spot_start",
        "spot_min",
        "spot_end",
        "accounts",
        "accounts_breached",
        "attestations",
        "auctions",
        "auctions_still_running",
        "lost_races",
        "penalties",
        "penalties_to_fund",
        "insurance_fund_before",
        "insurance_fund_after",
        "insurance_fund_payouts",
        "insurance_fund_arithmetic_ok",
        "fund_account_books_taken",
        "fund_account_equity",
        "fund_account_maintenance",
        "fund_account_breached_at_end",
        "insurance_fund_assets_after",
        "bad_debt",
        "claims_recorded",
        "claims_settled_by_liquidators",
        "claims_settled_at_end",
        "claims_pending",
    ):
        t.add_row(key.replace("_", " "), fmt(summary.get(key)))
    xf = summary.get("fill_transfer_share_of_mm") or {}
    if xf.get("fills"):
        t.add_row("bid fills' transfer / MM bought", f"median {xf['median']:.2%}, max {xf['max']:.2%} "
                                                      f"({xf['fills']} fills; target: median <= 5 %, max <= 15 %)")
    pd = summary.get("insolvent_payout_to_deficit") or {}
    if pd.get("fills"):
        t.add_row("insolvent books: paid / deficit", f"median {pd['median']:.2f}, max {pd['max']:.2f} "
                                                     f"({pd['fills']} fills)")
    t.add_row("liquidated in full", ", ".join(a[:10] for a in summary["accounts_liquidated_full"]) or "-")
    t.add_row("liquidated in part", ", ".join(a[:10] for a in summary["accounts_liquidated_partial"]) or "-")
    t.add_row("healthy accounts liquidated", str(len(summary["healthy_accounts_liquidated"])))
    con.print(t)
    if summary["fills"]:
        f = Table(title="Fills: price paid against model value")
        for col in ("auction", "account", "bidder", "fraction", "paid", "attested value", "discount", "xfer / MM"):
            f.add_column(col)
        for x in summary["fills"]:
            disc = x["discount_to_model"]
            xs = x.get("transfer_share_of_mm")
            f.add_row(
                str(x["auction"]),
                x["account"][:10],
                x["bidder"][:10],
                f"{x['fraction']:.2f}",
                f"{x['price_paid']:,.2f}",
                f"{x['model_value']:,.2f}",
                "-" if disc is None else f"{disc:.2%}",
                "-" if xs is None else f"{xs:.2%}",
            )
        con.print(f)
    m = summary.get("manipulation") or {}
    if m:
        con.print(
            f"[bold]Thin-book manipulation[/bold] on {m.get('series')}: trade at {m.get('trade_price')} vs model "
            f"{m.get('model_price')}; naive last-trade mark would liquidate {len(m.get('naive_would_liquidate', []))} "
            f"healthy account(s); hybrid mark liquidated {len(m.get('hybrid_liquidated', []))}."
        )
    if summary.get("haircuts"):
        h = Table(title="Collateral haircuts: listed against recommended from the keepers' prices over the run")
        for col in ("asset", "listed", "recommended", "daily vol", "cap / depth", "action"):
            h.add_column(col)
        for x in summary["haircuts"]:
            h.add_row(x["asset"], f"{x['listed']:.2%}", f"{x['recommended']:.2%}", f"{x['daily_vol']:.2%}",
                      f"{x['size'] / x['depth']:.2f}", x["action"])
        con.print(h)
    net = summary.get("cross_asset_netting") or {}
    if net.get("steps"):
        n = Table(title="Cross-asset netting on the attested books: MM of the combined books against the sum of "
                        "their single-asset parts")
        for col in ("step", "block", "2-asset accts", "MM combined", "MM separate", "credit", "all: combined",
                    "all: separate", "all: credit"):
            n.add_column(col)
        for x in net["steps"]:
            n.add_row(str(x["step"]), str(x["block"]), str(x["two_asset_accounts"]),
                      f"{x['two_asset_mm_combined']:,.0f}", f"{x['two_asset_mm_separate']:,.0f}",
                      f"{x['two_asset_netting_credit']:,.0f} ({x['two_asset_credit_share']:.0%})",
                      f"{x['all_mm_combined']:,.0f}", f"{x['all_mm_separate']:,.0f}",
                      f"{x['all_netting_credit']:,.0f} ({x['all_credit_share']:.0%})")
        con.print(n)
        w = [a for a in net.get("accounts_worst", []) if len(a["underlyings"]) > 1]
        if w:
            a = Table(title=f"Two-asset accounts at step {net['worst_step']} (the combined MM's peak)")
            for col in ("account", "MM combined", "MM parts", "credit"):
                a.add_column(col)
            for x in w:
                a.add_row(x["account"][:10], f"{x['mm_combined']:,.0f}",
                          " + ".join(f"{p:,.0f}" for p in x["mm_parts"]), f"{x['netting_credit']:,.0f}")
            con.print(a)
    inv = summary.get("invariants") or {}
    for k, v in inv.items():
        con.print(f"invariant {k}: {'[green]ok' if v.get('ok') else '[red]FAILED'}[/] {v.get('detail', '')}")

"""What the record holds at the end of a run, read from chain events and the archived inputs (not from the
scenario's own bookkeeping): every auction's trace (price curve restarted at resets, bids filled and races lost,
penalties, bad debt), breaches, attestations, the insurance fund, the liquidation claims, the invariants
(:mod:`keeper.scenario.checks`) and the smiles for the surface plot."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from keeper.attest.engine import smile_from
from keeper.chain.haircuts import read_listed
from keeper.data.paths import MarketPath
from keeper.quant.haircuts import CollateralMarket, recommend_haircuts
from keeper.quant.risk.engine import from_canonical
from keeper.quant.surface import VolSurface
from keeper.scenario.checks import run_checks
from keeper.scenario.config import ScenarioConfig
from keeper.scenario.netting import step_seconds_of
from keeper.scenario.report import (
    AuctionTrace,
    BidTrace,
    ScenarioRecord,
    SurfaceSnapshot,
)
from keeper.scenario.world import World
from keeper.units import SECONDS_PER_YEAR, WAD

#: log-moneyness grid of the surface snapshots
_KS = np.linspace(-0.4, 0.4, 17)
_END_REASONS = ["Restored", "SoldOut", "Cured", "CuredByDeposit"]


def _block_time(world: World, e) -> int:
    return int(world.w3.eth.get_block(e["blockNumber"])["timestamp"])


def auction_traces(world: World, t0: float, lost: list[dict], healthy_at: dict[int, bool]) -> list[AuctionTrace]:
    """Every auction from its events: the price curve (restarted by every reset from its fresh record), the bids
    (filled, from ``Bid``; lost races, from the liquidators' ``lost`` events), what it sold, penalties, what went
    to the fund, bad debt, and whether it started from a healthy leaf (``healthy_at``, from the checks)."""
    A = world.auction
    starts = {int(e["args"]["id"]): e for e in world.logs(A, "AuctionStarted")}
    ends = {int(e["args"]["id"]): e for e in world.logs(A, "AuctionEnded")}
    bids = world.logs(A, "Bid")
    resets = world.logs(A, "AuctionReset")
    bad_debts = world.logs(A, "BadDebtRecorded")
    tau = int(world.dep.params["auction_config"][1])
    traces = []
    for aid, e in sorted(starts.items()):
        a = e["args"]
        st = _block_time(world, e)
        tr = AuctionTrace(aid, a["account"], float(st - t0), int(a["startPrice"]), int(a["equity"]))
        end_t = _block_time(world, ends[aid]) if aid in ends else max(world.now(), st + 1)
        my_resets = [r for r in resets if int(r["args"]["id"]) == aid]
        # the price curve, restarted by every reset (redo) from its fresh record
        segs = [(st, int(a["startPrice"]), int(a["span"]))]
        segs += [(_block_time(world, r), int(r["args"]["startPrice"]), int(r["args"]["span"])) for r in my_resets]
        for i, (s0, top, span) in enumerate(segs):
            s1 = segs[i + 1][0] if i + 1 < len(segs) else end_t
            s1 = min(s1, s0 + tau + 60)
            for dt in range(0, max(s1 - s0, 1) + 1, max(1, (s1 - s0) // 40 or 1)):
                c = max(tau - dt, 0) / tau
                tr.prices.append((float(s0 - t0 + dt), int(top - math.ceil(span * (1 - c)))))
        my_bids = [b for b in bids if int(b["args"]["id"]) == aid]
        for b in my_bids:
            before = [r for r in my_resets if (r["blockNumber"], r["logIndex"]) < (b["blockNumber"], b["logIndex"])]
            seg = before[-1]["args"] if before else a  # the (re)start this bid was on
            tr.bids.append(BidTrace(float(_block_time(world, b) - t0), int(b["args"]["price"]), b["args"]["bidder"],
                                    int(b["args"]["fractionWad"]) / WAD, "filled", b["transactionHash"].hex(),
                                    attested_value=int(seg["equity"]), start_price=int(seg["startPrice"]),
                                    maintenance=int(seg["maintenance"])))
            tr.penalty += int(b["args"]["penalty"])
        for ev in lost:
            if int(ev.get("auction", -1)) == aid:
                tr.bids.append(BidTrace(float(ev["t"] - time.time() + world.now() - t0), int(ev.get("price", 0)),
                                        ev.get("bot", "?"), 0.0, "lost_race", ev.get("tx", ""), ev.get("reason", "")))
        if aid in ends:
            ea = ends[aid]["args"]
            tr.sold_fraction = int(ea["soldWad"]) / WAD
            tr.to_fund = int(ea["penalty"]) - int(ea["reward"])
            tr.ended = _END_REASONS[int(ea["reason"])]
        else:
            tr.sold_fraction = max((int(b["args"]["soldWad"]) for b in my_bids), default=0) / WAD
        tr.bad_debt = sum(int(x["args"]["amount"]) for x in bad_debts if int(x["args"]["auctionId"]) == aid)
        tr.healthy_at_start = bool(healthy_at.get(aid, False))
        traces.append(tr)
    return traces


def claim_counts(world: World, settled_at_end: int) -> dict:
    """Liquidation claims: recorded, settled (by the bidders themselves: the liquidator bots settle their own
    claims), settled by the scenario at the end, and still pending."""
    ch = world.ch
    recorded = world.logs(ch, "ClaimRecorded")
    settled = world.logs(ch, "ClaimSettled")
    return {
        "recorded": len(recorded), "settled": len(settled),
        "settled_by_liquidators": sum(1 for e in settled if world.w3.eth.get_transaction(
            e["transactionHash"])["from"] == e["args"]["holder"]),
        "settled_at_end": settled_at_end,
        "pending": sum(1 for h in {e["args"]["holder"] for e in recorded}
                       if int(ch.functions.claimOf(h).call()[1]) != 0)}


def collect(world: World, rec: ScenarioRecord, archive, fund_before: int, lost: list[dict]) -> None:
    """Fill ``rec`` from chain events and run the independent invariant checks (``lost``: the liquidators'
    ``lost_race`` events)."""
    A, ch = world.auction, world.ch
    t0 = rec.times[0] if rec.times else 0.0
    checks = run_checks(world, archive, fund_before)
    healthy_at = checks.pop("_healthy_at_start", {})
    rec.auctions = auction_traces(world, t0, lost, healthy_at)
    rec.breaches = [{"account": e["args"]["account"], "equity": int(e["args"]["equity"]),
                     "maintenance": int(e["args"]["maintenance"]), "block": int(e["blockNumber"])}
                    for e in world.logs(ch, "AccountBreached")]
    rec.attestations = [{"sequence": int(e["args"]["sequence"]), "root": "0x" + bytes(e["args"]["root"]).hex(),
                         "inputs_hash": "0x" + bytes(e["args"]["inputsHash"]).hex()}
                        for e in world.logs(ch, "MarginRootPosted")]
    fund_in = sum(int(x["args"]["amount"]) for x in world.logs(A, "FundReceived"))
    rec.fund_payouts = sum(int(x["args"]["paid"]) for x in world.logs(A, "ShortfallPaid"))
    rec.insurance_fund_after = int(A.functions.fundBalance().call())
    rec.insurance_fund_before = fund_before
    rec.fund_account = fund_account_state(world, rec.last_leaves)
    # the seed deposit happened before the path: penalties into the fund are the FundReceived of auctions
    rec.notes.append(f"fund income from events (incl. seed): {fund_in}")
    rec.claims.update(claim_counts(world, int(rec.claims.get("settled_at_end", 0))))
    rec.solvency = [{"sequence": int(e["args"]["sequence"]), "timestamp": int(e["args"]["timestamp"]),
                     "fund": int(e["args"]["index"]["fund"]),
                     "shortfall_es975": int(e["args"]["index"]["shortfallEs975"]),
                     "shortfall_var99": int(e["args"]["index"]["shortfallVar99"]),
                     "total_equity": int(e["args"]["index"]["totalEquity"]),
                     "total_maintenance": int(e["args"]["index"]["totalMaintenance"]),
                     "accounts": int(e["args"]["index"]["accounts"])}
                    for e in world.logs(ch, "SolvencyIndexPosted")]
    rec.invariants = checks


def fund_account_state(world: World, last_leaves: dict | None = None) -> dict:
    """The buyer of last resort's account at the end of the run (empty when none is set): books taken
    (``LastResortTaken``), its option positions and cash (effective: claims not yet delivered count), and its
    equity and MM in the keepers' leaf of the last step (``last_leaves``; the core records only breached leaves and
    proofs someone posted, so ``marginRecord`` of a healthy account is usually empty); the fund's assets are its free
    balance plus this account's equity."""
    A, ch = world.auction, world.ch
    if not any(i.get("name") == "fundAccount" for i in A.abi):
        return {}
    fa = A.functions.fundAccount().call()
    if int(fa, 16) == 0:
        return {}
    taken = world.logs(A, "LastResortTaken")
    by_id = {int(s["id"]): s for s in world.dep.series}
    positions = {}
    for sid in ch.functions.seriesOf(fa).call():
        q = int(ch.functions.positionOf(fa, sid).call())
        if q:
            s = by_id.get(int(sid), {})
            positions[str(sid)] = {"contracts": q / WAD, "strike": s.get("strike"), "expiry": s.get("expiry"),
                                   "is_call": s.get("is_call")}
    leaf = next((v for k, v in (last_leaves or {}).items() if str(k).lower() == fa.lower()), None)
    equity, maintenance = (int(leaf[0]), int(leaf[1])) if leaf is not None else (None, None)  # None: no leaf
    return {"address": fa, "books_taken": len(taken), "positions": positions,
            "cash": int(ch.functions.cashOf(fa).call()), "equity": equity, "maintenance": maintenance,
            "breached": bool(ch.functions.isBreached(fa).call())}


def step_documents(rec: ScenarioRecord, archive) -> list[tuple[int, dict]]:
    """``(step, decoded inputs document)`` of each step of the path: the document of the last margin root posted
    at or before the step's block (``rec.attestations``, from ``MarginRootPosted``), read from the archive by its
    hash; steps without one (or whose document is missing) are left out."""
    roots = sorted((int(a["sequence"]), a["inputs_hash"]) for a in rec.attestations)
    seqs = [q for q, _ in roots]
    out = []
    for k, b in enumerate(rec.blocks):
        i = int(np.searchsorted(seqs, b, side="right")) - 1
        if i < 0:
            continue
        blob = archive.get(roots[i][1])
        if blob is None:
            continue
        out.append((k, from_canonical(json.loads(blob))))
    return out


def run_description(cfg: ScenarioConfig, path: MarketPath, inline: bool, threshold: int, out: Path) -> dict:
    """The run's shape for the record's ``config``: path, keepers, liquidators, traders, clock, output folder."""
    return {
        "path": path.source, "steps": len(path), "jump": cfg.crash.jump if not cfg.replay else None,
        "worst_step_return": path.worst_return,
        "keepers": ("inline (3 keys, 2-of-3 signatures)" if inline else
                    f"3 keeper processes, {threshold}-of-3, set-up attested inline"),
        "liquidators": len(cfg.edges), "edges": list(cfg.edges), "liquidator_model": cfg.liquidators,
        "traders": cfg.n_short_vol + cfg.n_long_vol,
        "chain_step_seconds": cfg.chain_step_seconds, "out_dir": str(out)}


# ---------------------------------------------------------------------------------------------- surfaces
def market_surface(world: World, label: str, vol: float, spot: float) -> SurfaceSnapshot:
    """The market's smile (the path's ATM vol) per listed expiry, as of the chain's clock."""
    ks = list(_KS)
    expiries = sorted({round((s["expiry"] - world.now()) / SECONDS_PER_YEAR, 4) for s in world.dep.series})
    f = smile_from(vol)
    vols = [[float(v) for v in f(spot * np.exp(np.array(ks)), np.full(len(ks), T), np.full(len(ks), spot))]
            for T in expiries]
    return SurfaceSnapshot(label, expiries, ks, vols)


def _fitted_surface(doc, asset: str | None = None) -> dict | None:
    """The keeper's fitted surface in an archived inputs document (``backstop-inputs/2``: the surface of underlying
    ``asset``, or the first underlying's with one when ``asset`` is None; ``/1``: top level); None for documents
    without one (the scenario's own attestations price from a smile)."""
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("backstop-inputs/"):
        return None
    if doc.get("surface"):
        return doc["surface"]
    return next((u["surface"] for u in doc.get("underlyings") or [] if isinstance(u, dict) and u.get("surface")
                 and (asset is None or str(u.get("asset", "")).lower() == asset.lower())), None)


def keeper_surfaces(archive_dir: Path, asset: str | None = None) -> list[SurfaceSnapshot]:
    """The keepers' own fitted surfaces of underlying ``asset`` (the first with one when None; from their archived
    inputs): the first and the last of the path."""
    docs = []
    for f in archive_dir.glob("0x*.json"):
        try:
            d = json.loads(f.read_bytes())
        except ValueError:
            continue
        surface = _fitted_surface(d, asset)
        if surface:
            docs.append((int(d["block"]["number"]), surface))
    if len(docs) < 2:
        return []
    docs.sort(key=lambda x: x[0])
    out = []
    for label, (blk, doc) in (("keepers' fit, first", docs[0]), ("keepers' fit, last", docs[-1])):
        try:
            surf = VolSurface.from_canonical(doc)
        except (ValueError, KeyError):
            continue
        vols = []
        ts = [float(t) for t in surf.times]
        for t in ts:
            w = surf.total_variance(_KS, np.full(_KS.shape, t))
            vols.append([float(v) for v in np.sqrt(np.maximum(w, 0.0) / t)])
        out.append(SurfaceSnapshot(f"{label} (block {blk})", ts, [float(k) for k in _KS], vols))
    return out


def step_closes(block_numbers: list[int], event_blocks: np.ndarray, event_prices: np.ndarray) -> np.ndarray:
    """The last attested price at or before each step's block (``event_blocks`` ascending): one close per step of
    the path; steps before the first attestation are dropped."""
    idx = np.searchsorted(event_blocks, np.asarray(block_numbers), side="right") - 1
    return event_prices[idx[idx >= 0]]


def haircut_rows(world: World, rec: ScenarioRecord, path: MarketPath, depth: dict[str, float]) -> list[dict]:
    """Per listed collateral asset: the haircut recommended from the keepers' attested prices at each step of the
    run (``PricesPosted`` events; a step stands for the path's step of market time, scaled to a daily vol), its
    listed cap over ``depth``, against the listed haircut read from chain."""
    step_seconds = step_seconds_of(path)
    symbols = {c.symbol: world.dep.tokens[c.symbol]["address"] for c in world.dcfg.collateral}
    events = world.logs(world.ch, "PricesPosted")
    rows = []
    for asset in read_listed(world.ch, symbols):
        seen = [(int(e["blockNumber"]), int(p) / WAD) for e in events
                for a, p in zip(e["args"]["assets"], e["args"]["prices"]) if a.lower() == asset.address.lower()]
        blocks = np.array([b for b, _ in seen], dtype=np.int64)
        closes = step_closes(rec.blocks, blocks, np.array([p for _, p in seen]))
        if closes.size < 2 or asset.symbol not in depth:
            continue
        market = CollateralMarket(asset.symbol, closes, asset.cap / 10**asset.decimals, float(depth[asset.symbol]),
                                  asset.haircut_wad, period_days=step_seconds / 86_400)
        r = recommend_haircuts([market])[0]
        rows.append({"asset": r.symbol, "listed": r.listed_wad / WAD, "recommended": r.recommended_wad / WAD,
                     "listed_wad": r.listed_wad, "recommended_wad": r.recommended_wad, "daily_vol": r.daily_vol,
                     "size": r.size, "depth": r.depth, "closes": r.days, "action": r.action})
    return rows

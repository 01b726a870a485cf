"""One inputs document for the whole book across underlyings (issue 16): every listed underlying with its own spot,
surface and option chain, every series marked on its own underlying's surface at its expiry's forward, every listed
collateral asset priced (the quote asset at 1, an asset with a market at its attested spot, moving with it in every
scenario) and haircut, and the accounts that cannot be attested left out with a reason.

Pure: the caller (the keeper bot) reads prices, chains and the book; this module decides what is priced and how.
The document is :func:`keeper.attest.inputs.build_document`'s, so
:func:`keeper.attest.leaves.leaves_from_inputs` prices it and ``backstop verify`` recomputes it. Each underlying whose
surface was fitted on a chain also carries that chain's raw quotes (``quotes``, :func:`quotes_document`) and how it
was fitted (``fit``: the prior surface and the fit's configuration), an optional extension of
``backstop-inputs/2`` like ``forward_wad`` and ``fallback``: ``backstop verify`` refits the surface and re-derives
every vol and mark from them (docs/verify.md).

The hybrid mark (market mid or model price, :mod:`keeper.quant.marks`) carries a state from one attested document to
the next: each series records its ``hybrid`` state (``branch``, ``reason``, ``passes`` and the ``prev`` state it was
decided from, read from the previous attested document) and each underlying its configuration (``hybrid``), so
that a verifier re-derives each choice from the archived quotes and the previous document (docs/surface.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from keeper.attest.inputs import (
    SeriesMarks,
    accounts_document,
    build_document,
    forward_wad,
    mark_series,
    screen_series,
)
from keeper.data.feed import BlockRef
from keeper.quant.chains import OptionChain
from keeper.quant.marks import MARKET, MODEL, MarkConfig, MarkReason, state_from_document
from keeper.units import WAD

#: why an account is left out of a block's attestation
UNPRICED_SERIES = "unpriced_series"
BAD_MARKET_DATA = "bad_market_data"
#: an asset it holds (a series on it, or collateral in it) had its market data rejected this block, with no
#: fallback left (docs/keeper.md, "Fallback")
MARKET_DATA_REJECTED = "market_data_rejected"


@dataclass(frozen=True)
class AssetMarket:
    """What the keepers know of one listed asset this block: its attested spot and, for an option underlying, the
    fitted surface and the chain it was fitted on (for forwards and hybrid marks)."""

    asset: str
    spot_wad: int  # [WAD] quantized attested spot
    surface: Any = None  # keeper.quant.surface.VolSurface, None for a collateral-only asset
    chain: Optional[OptionChain] = None
    #: set when this asset is priced on its last attested market data (the fallback rule, docs/keeper.md):
    #: ``{"reason", "since_block", "source_block", "shock_widening"}``, written into the document's underlying
    fallback: Optional[dict] = None
    #: the previous attested surface the fit used as its prior (``fit_surface(chain, prior=)``), ``None`` for a
    #: cold start: archived with the quotes so that ``backstop verify`` refits the same surface
    prior: Any = None
    #: without a chain (an asset on fallback): each expiry's carry (forward / spot) from the last attested document,
    #: ``(expiry timestamps, carries)``, so its series stay priced on their forwards (:func:`carry_from_document`)
    carry: Optional[tuple] = None
    #: settlement prices of this asset's expired series, expiry -> price [quote per unit] (on chain, or the TWAP of
    #: attested prices the keepers would sign): they are valued at intrinsic against it
    settlement: Optional[Mapping[int, float]] = None


#: the option-chain columns archived per underlying (every array of :class:`OptionChain`, so that the chain a
#: verifier rebuilds is the one the keeper fitted and marked on, whatever columns the fit reads)
QUOTE_COLUMNS = ("expiry_ts", "strike", "is_call", "bid", "ask", "bid_size", "ask_size", "forward", "index_price",
                 "quote_ts", "mark", "open_interest", "bid_iv", "ask_iv", "mark_iv")


def quotes_document(chain: OptionChain) -> dict:
    """The raw quotes of ``chain`` as the inputs document archives them (``underlyings[i].quotes``): ``underlying``,
    ``asof``, ``spot``, ``instrument`` (names, may be empty) and one list per column of :data:`QUOTE_COLUMNS` in row
    order; a value the venue did not give (NaN) is ``null``. :func:`chain_from_quotes` is its exact inverse."""
    def col(name: str) -> list:
        arr = getattr(chain, name)
        if name == "is_call":
            return [bool(x) for x in arr.tolist()]
        return [float(x) if math.isfinite(x) else None for x in np.asarray(arr, dtype=np.float64).tolist()]

    return {"underlying": str(chain.underlying), "asof": float(chain.asof), "spot": float(chain.spot),
            "instrument": [str(x) for x in chain.instrument], **{c: col(c) for c in QUOTE_COLUMNS}}


def chain_from_quotes(d: Mapping[str, Any]) -> OptionChain:
    """The :class:`OptionChain` an archived ``quotes`` entry (:func:`quotes_document`, floats already decoded from
    canonical JSON) describes; raises ``ValueError`` on a malformed entry."""
    try:
        cols = {c: (np.array([bool(x) for x in d[c]], dtype=bool) if c == "is_call" else
                    np.array([np.nan if x is None else float(x) for x in d[c]], dtype=np.float64))
                for c in QUOTE_COLUMNS}
        return OptionChain(underlying=str(d["underlying"]), asof=float(d["asof"]), spot=float(d["spot"]),
                           instrument=tuple(str(x) for x in d.get("instrument") or ()), **cols)
    except (KeyError, TypeError) as e:
        raise ValueError(f"archived quotes: {type(e).__name__}: {e}") from None


def carry_from_document(doc: Mapping[str, Any], asset: str) -> Optional[tuple]:
    """``(expiry timestamps, forward / spot)`` of ``asset``'s series in an attested inputs document (its
    ``forward_wad`` over the asset's ``spot_wad``, one per expiry), or ``None`` when it has none: what an asset on
    fallback prices its series' forwards with."""
    unders = doc.get("underlyings") or []
    idx = next((i for i, u in enumerate(unders) if str(u["asset"]).lower() == asset.lower()), None)
    if idx is None:
        return None
    spot = int(unders[idx]["spot_wad"])
    by_expiry = {int(s["expiry"]): int(s["forward_wad"]) / spot for s in doc.get("series") or []
                 if int(s["underlying"]) == idx and "forward_wad" in s and spot > 0}
    if not by_expiry:
        return None
    exp = sorted(by_expiry)
    return np.array(exp, dtype=np.float64), np.array([by_expiry[e] for e in exp])


def fit_document(market: AssetMarket) -> dict:
    """How the archived surface was fitted (``underlyings[i].fit``): ``prior`` (the canonical prior surface, or
    ``None`` for a cold start) and ``config`` (the fit's ``SurfaceConfig`` as its fit report records it, ``None``
    when the surface has no report)."""
    rep = getattr(market.surface, "fit_report", None) or {}
    cfg = rep.get("config") if isinstance(rep, dict) else None
    return {"prior": market.prior.to_canonical() if market.prior is not None else None,
            "config": dict(cfg) if isinstance(cfg, dict) else None}


@dataclass(frozen=True)
class PortfolioInputs:
    """The document, the marks of the priced series (document order) and what was left out."""

    document: dict
    series: list
    marks: SeriesMarks
    accounts: list
    excluded: dict = field(default_factory=dict)  # reason -> [account]
    bad_series: list = field(default_factory=list)
    unpriced_series: list = field(default_factory=list)
    unpriced_collateral: list = field(default_factory=list)  # listed assets with no market: valued at 0


def hybrid_entry(market: bool, reason: int, passes: int, prev: Optional[dict]) -> dict:
    """A series' hybrid-mark state as the document records it (``series[i].hybrid``): ``branch`` (``market`` or
    ``model``), ``reason`` (the :class:`~keeper.quant.marks.MarkReason` name), ``passes`` and ``prev`` (the state of
    the previous attested document it was decided from, ``None``: none, a cold start for this series)."""
    return {"branch": MARKET if market else MODEL, "reason": MarkReason(int(reason)).name, "passes": int(passes),
            "prev": None if prev is None else {"branch": str(prev["branch"]), "passes": int(prev["passes"])}}


def build_portfolio_inputs(*, block: BlockRef, markets: Sequence[AssetMarket], series: Sequence[Any],
                           accounts: Sequence[Any], collateral: Mapping[str, Mapping[str, int]], quote_asset: str,
                           quote_decimals: int, risk: dict,
                           rejected: Optional[Mapping[str, str]] = None, previous: Optional[Mapping] = None,
                           mark_config: MarkConfig = MarkConfig()) -> PortfolioInputs:
    """The block's document over every underlying.

    ``series``: on-chain series (``series_id``, ``underlying``, ``strike`` [WAD], ``expiry``, ``is_call``);
    ``accounts``: snapshots (``account``, ``state_nonce``, ``cash``, ``collateral``, ``positions``);
    ``collateral``: listed asset -> ``{"decimals", "haircut" [WAD]}``. Underlyings are ordered by address so that
    every keeper writes the same document. A series whose underlying has no surface is unpriced and every account
    holding it is left out (``unpriced_series``); a series the surface gives no usable vol or mark is screened out
    with its holders (``bad_market_data``); a listed collateral asset with no market counts at zero value.

    ``rejected``: assets the keeper prices whose market data was rejected this block (asset -> reason) and that
    have no market in ``markets``: every account holding a series on one or collateral in one is left out
    (``market_data_rejected``) rather than valued without it; the rest of the book is attested.

    ``previous``: the previous attested inputs document (at least its ``block`` and ``series``; the one the last
    margin root on chain names), whose per-series hybrid state the marks continue from (``None``: a cold start);
    ``mark_config``: the hybrid mark's thresholds (``market.hybrid``), recorded in the document.
    """
    rejected_assets = {a.lower() for a in (rejected or {})} - {m.asset.lower() for m in markets}
    by_asset = {m.asset.lower(): m for m in markets}
    underlyings = sorted(by_asset.values(), key=lambda m: m.asset.lower())
    index = {m.asset.lower(): i for i, m in enumerate(underlyings)}
    now = int(block.timestamp)
    ordered = sorted(series, key=lambda s: s.series_id)
    priced, unpriced = [], []
    for s in ordered:
        m = by_asset.get(str(s.underlying).lower())
        (priced if m is not None and m.surface is not None else unpriced).append(s)
    vols: dict[int, float] = {}
    marks: dict[int, float] = {}
    market: dict[int, bool] = {}
    fwds: dict[int, float] = {}
    reasons: dict[int, int] = {}
    passes: dict[int, int] = {}
    prev_state: dict[int, Optional[dict]] = {}
    for m in underlyings:
        group = [s for s in priced if str(s.underlying).lower() == m.asset.lower()]
        if not group:
            continue
        was_market, was_passes, prev = state_from_document(previous, [s.series_id for s in group])
        sm = mark_series(group, m.surface, m.chain, m.spot_wad / WAD, now, m.carry, m.settlement,
                         prev_market=was_market, prev_passes=was_passes, config=mark_config)
        for s, v, k, x, f, r, p, q in zip(group, sm.vols, sm.marks, sm.market, sm.forwards, sm.reasons, sm.passes,
                                          prev):
            vols[s.series_id], marks[s.series_id], market[s.series_id], fwds[s.series_id] = v, k, x, f
            reasons[s.series_id], passes[s.series_id], prev_state[s.series_id] = r, p, q
    ids = [s.series_id for s in priced]
    merged = SeriesMarks([vols[i] for i in ids], [marks[i] for i in ids], [market[i] for i in ids],
                         [fwds[i] for i in ids], [reasons[i] for i in ids], [passes[i] for i in ids])
    unpriced_ids = {s.series_id for s in unpriced}
    excluded: dict[str, list[str]] = {}
    kept = []
    on_rejected = {s.series_id for s in unpriced if str(s.underlying).lower() in rejected_assets}
    for a in accounts:
        held = [int(sid) for sid, size in a.positions.items() if int(size) and int(sid) in unpriced_ids]
        if any(sid in on_rejected for sid in held) or any(
                str(c).lower() in rejected_assets and int(v) for c, v in a.collateral.items()):
            excluded.setdefault(MARKET_DATA_REJECTED, []).append(a.account)
        elif held:
            excluded.setdefault(UNPRICED_SERIES, []).append(a.account)
        else:
            kept.append(a)
    screened = screen_series(priced, merged, kept)
    if screened.unattestable:
        excluded[BAD_MARKET_DATA] = [a.account for a in screened.unattestable]
    merged, kept = screened.marks, screened.accounts
    coll_doc, unpriced_coll = [], []
    for asset in sorted(collateral, key=str.lower):
        info = collateral[asset]
        if asset.lower() == quote_asset.lower():
            und, price = None, "1"
        elif asset.lower() in index:
            und, price = index[asset.lower()], "0"
        else:
            und, price = None, "0"
            unpriced_coll.append(asset)
        coll_doc.append({"asset": asset, "decimals": int(info["decimals"]), "haircut": str(int(info["haircut"])),
                         "underlying": und, "price": price})
    series_doc = []
    for s, f, x, r, p in zip(priced, merged.forwards, merged.market, merged.reasons or [], merged.passes or []):
        fw = forward_wad(f, underlyings[index[str(s.underlying).lower()]].spot_wad)
        series_doc.append({"id": s.series_id, "underlying": index[str(s.underlying).lower()], "strike": str(s.strike),
                           "expiry": int(s.expiry), "is_call": bool(s.is_call), "forward_wad": str(fw),
                           "hybrid": hybrid_entry(x, r, p, prev_state[s.series_id])})
    doc = build_document(
        block=block, mc_seed=int(block.hash, 16),
        underlyings=[{"asset": m.asset, "spot_wad": m.spot_wad,
                      "surface": m.surface.to_canonical() if m.surface is not None else None,
                      **({"fallback": dict(m.fallback)} if m.fallback else {})} for m in underlyings],
        series=series_doc, vols=merged.vols, marks=merged.marks, collateral_assets=coll_doc,
        accounts=accounts_document(kept), quote_decimals=quote_decimals, risk=risk)
    for entry, m in zip(doc["underlyings"], underlyings):
        if m.chain is not None and m.surface is not None:  # the raw quotes the surface was fitted on, and how
            entry["quotes"] = quotes_document(m.chain)
            entry["fit"] = fit_document(m)
        # the hybrid mark's thresholds and the previous attested document its series' states continue from (in the
        # underlying entry: the document's float-carrying part, keeper.attest.leaves.canonical_inputs)
        entry["hybrid"] = {"config": mark_config.to_document(),
                           "previous_block": int(previous["block"]["number"]) if previous else None}
    return PortfolioInputs(doc, priced, merged, kept, excluded, screened.bad_series,
                           sorted(unpriced_ids), unpriced_coll)

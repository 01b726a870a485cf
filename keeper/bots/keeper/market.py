"""The keeper's market data of one block, asset by asset: the aggregated spot, for an option underlying its chain and
fitted surface (the previous attested surface as the fit's prior), and the one fallback rule when any of them is
rejected (docs/keeper.md, "Fallback"), which reads the previous attested inputs document (this keeper's archive, else
a peer's).

The functions after :class:`AssetMarkets` are pure.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

from eth_utils import keccak

from keeper.attest.portfolio import AssetMarket, carry_from_document
from keeper.data.feed import BlockRef, Skip
from keeper.data.sources import MarketData, listed_contracts
from keeper.quant.chains import OptionChain
from keeper.quant.risk.engine import from_canonical
from keeper.quant.surface import VolSurface, fit_surface as fit_vol_surface
from keeper.units import WAD, price_to_wad


@dataclass
class AssetFeed:
    """The market sources of one listed asset the keeper prices (``market.assets.<symbol>``): its spot sources
    and, for an option underlying, its option-chain source."""

    symbol: str
    asset: str  # token address
    data: MarketData
    spot_decimals: int = 2

    @property
    def options(self) -> bool:
        return self.data.chain_source is not None


@dataclass
class AssetOutcome:
    """What one cycle made of one asset: its market for the document (or ``None``), its fresh spot (for the Prices
    message; ``None`` when the spot itself was rejected) and why its own data was rejected (``None``: it was not)."""

    feed: AssetFeed
    market: Optional[AssetMarket]
    fresh_spot_wad: Optional[int]
    reason: Optional[str] = None
    spot: Optional[float] = None
    used: tuple = ()
    rejected: tuple = ()
    surface: Any = None


def skip_input(metrics, log, reason: str, **fields: Any) -> None:
    """Count and log one input left out (``reason``: the metric's label)."""
    metrics.skipped_inputs.labels(reason=reason).inc()
    log.warning("input_skipped", reason=reason, **fields)


class AssetMarkets:
    """Each priced asset's market of one block, and the previous attested document behind the prior and the
    fallback (read from ``archive``, else from a ``peers``' one). ``fit``: a surface fit to use instead of
    :func:`keeper.quant.surface.fit_surface` (tests set it to inject a surface). ``agreement``: when set, each
    asset is priced on the block's agreed quote set (docs/keeper.md, "Agreeing on one quote set")."""

    def __init__(self, cfg, chain, archive, peers, metrics, log,
                 fit: Optional[Callable[[OptionChain], Any]] = None, agreement=None) -> None:
        self.cfg = cfg
        self.chain = chain
        self.archive = archive
        self.peers = peers
        self.metrics = metrics
        self.log = log
        self.fit = fit
        #: the quote agreement step (:class:`keeper.bots.keeper.agreement.QuoteAgreement`), ``None`` when off
        self.agreement = agreement
        self._docs: dict[str, dict] = {}  # inputs hash -> {"block", "underlyings"} of documents built or read
        self._missing_docs: dict[str, int] = {}  # inputs hash -> block it was last looked for in vain

    def skip_input(self, reason: str, **fields: Any) -> None:
        skip_input(self.metrics, self.log, reason, **fields)

    def listed(self, feed: AssetFeed, block: BlockRef) -> tuple:
        """The contracts listed on chain for ``feed``'s asset and still live at ``block`` (from the state cache), which
        its chain source is asked to quote (:func:`keeper.data.sources.listed_contracts`)."""
        return listed_contracts(self.chain.state.series.values(), feed.asset, block.timestamp)

    def asset_outcome(self, feed: AssetFeed, block: BlockRef, prev: Optional[dict],
                       prev_entry: Optional[dict]) -> AssetOutcome:
        """Spot (aggregated), and for an option underlying its chain and surface; any of them rejected: the fallback
        rule (:meth:`fallback`) or no market for this asset this block."""
        n = block.number
        agg, skips = feed.data.spot(block)
        for s in skips:
            self.skip_input(s.reason, asset=feed.symbol, source=s.source, detail=s.detail, block=n)
        spot_wad = spot = None
        used = rej = ()
        reason = None
        if isinstance(agg, Skip):
            self.skip_input(agg.reason, asset=feed.symbol, source=agg.source, detail=agg.detail, block=n)
            reason = agg.reason
        else:
            if agg.rejected:
                self.metrics.skipped_inputs.labels(reason="outlier").inc(len(agg.rejected))
                self.log.warning("spot_outliers", asset=feed.symbol, rejected=list(agg.rejected), block=n)
            spot, used, rej = agg.price, agg.used, agg.rejected
            spot_wad = price_to_wad(spot, feed.spot_decimals)
        surface = chain_q = None
        if reason is None and feed.options:
            # a drawing source also quotes the series listed on chain, so that the hybrid mark finds them
            chain_q = feed.data.chain(block, spot, listed=self.listed(feed, block))
            if isinstance(chain_q, Skip):
                self.skip_input(chain_q.reason, asset=feed.symbol, source=chain_q.source, detail=chain_q.detail,
                                block=n)
                reason = chain_q.reason
        if reason is None and self.agreement is not None:  # price on the block's agreed quote set
            agreed = self.agreement.agree(feed.asset, n, spot, chain_q)
            if isinstance(agreed, str):
                reason = agreed
            else:
                spot, chain_q = agreed
                spot_wad = price_to_wad(spot, feed.spot_decimals)
        if reason is None and feed.options:
            prior = prior_surface(prev_entry)
            with self.metrics.stage("surface"):
                try:
                    surface = self.fit_surface(chain_q, prior)
                except Exception as exc:
                    self.skip_input("surface_fit_failed", asset=feed.symbol, detail=repr(exc)[:300], block=n)
                    reason = "surface_fit_failed"
            if surface is not None and not arbitrage_free(surface):
                arb = surface.fit_report.get("arbitrage", {})
                self.metrics.skipped_inputs.labels(reason="surface_arbitrage").inc()
                self.log.warning("surface_refused", reason="surface_arbitrage", asset=feed.symbol, block=n,
                                 butterfly_ok=arb.get("butterfly_ok"), calendar_ok=arb.get("calendar_ok"),
                                 min_g=arb.get("min_g"), calendar_min_gap=arb.get("calendar_min_gap"))
                reason = "surface_arbitrage"
        if reason is None:
            return AssetOutcome(feed, AssetMarket(feed.asset, spot_wad, surface, chain_q,
                                                  prior=prior_surface(prev_entry) if chain_q is not None else None),
                                spot_wad, None, spot, used, rej, surface)
        market = self.fallback(feed, block, prev, prev_entry, reason, spot_wad)
        shown = None if market is None else prior_surface(prev_entry, allow_fallback=True)
        return AssetOutcome(feed, market, spot_wad, reason, spot if spot is not None else
                            (market.spot_wad / WAD if market is not None else None), used, rej, shown)

    def fallback(self, feed: AssetFeed, block: BlockRef, prev: Optional[dict], prev_entry: Optional[dict],
                  reason: str, spot_wad: Optional[int]) -> Optional[AssetMarket]:
        """The one fallback rule for rejected market data (docs/keeper.md, "Fallback"): the asset's spot (when its own
        spot was rejected) and surface from the previous attested inputs document (the one the last margin root on
        chain names, so every keeper at this head uses the same), flagged in this document with its moves and vol
        shocks widened by ``1 + market.fallback_widening``, while the reused data is at most
        ``market.fallback_blocks`` blocks old; otherwise ``None`` (the asset's holders are left out)."""
        mc = self.cfg.market
        n = block.number
        if prev is None or prev_entry is None or mc.fallback_blocks <= 0:
            why = "no previous attested document" if prev is None or prev_entry is None else "fallback disabled"
        elif feed.options and not prev_entry.get("surface"):
            why = "no attested surface to fall back on"
        else:
            fb = prev_entry.get("fallback") or {}
            source = int(fb.get("source_block", prev["block"]["number"]))
            since = int(fb.get("since_block", int(prev["block"]["number"]) + 1))
            if n - source > mc.fallback_blocks:
                why = f"last good data of block {source} is older than {mc.fallback_blocks} blocks"
            else:
                surface = prior_surface(prev_entry, allow_fallback=True) if feed.options else None
                use_spot = spot_wad if spot_wad is not None else int(prev_entry["spot_wad"])
                flag = {"reason": reason, "since_block": since, "source_block": source,
                        "shock_widening": float(mc.fallback_widening)}
                self.metrics.skipped_inputs.labels(reason="market_fallback").inc()
                self.log.warning("market_fallback", asset=feed.symbol, block=n, **flag,
                                 spot_reused=spot_wad is None)
                carry = carry_from_document(prev, feed.asset) if feed.options else None
                return AssetMarket(feed.asset, use_spot, surface, None, flag, carry=carry)
        self.metrics.skipped_inputs.labels(reason="market_data_rejected").inc()
        self.log.warning("market_data_rejected", asset=feed.symbol, reason=reason, block=n, fallback=why)
        return None

    # -- the previous attested document (prior and fallback) -----------------------------------------------------
    def previous_document(self, block_number: int) -> Optional[dict]:
        """``{"block", "underlyings", "series"}`` of the inputs document named by the last margin root on chain (from this
        keeper's archive, else from a peer's ``/archive``, checked against the hash), or ``None``."""
        h = self.chain.state.last_root_inputs_hash
        if not h:
            return None
        if h in self._docs:
            return self._docs[h]
        if block_number - self._missing_docs.get(h, -10**9) < 5:
            return None
        blob = self.archive.get(h)
        if blob is None:
            for p in self.peers:
                got = p.archive(h)
                if got and "0x" + keccak(got).hex() == h:
                    blob = got
                    self.archive.put_bytes(got)
                    break
        if blob is None:
            self._missing_docs[h] = block_number
            self.log.info("previous_inputs_unavailable", inputs_hash=h, block=block_number)
            return None
        try:
            doc = from_canonical(json.loads(blob))
            part = {"block": doc["block"], "underlyings": doc["underlyings"], "series": doc.get("series", [])}
        except (ValueError, KeyError, TypeError) as exc:
            self._missing_docs[h] = block_number
            self.log.warning("previous_inputs_unreadable", inputs_hash=h, error=str(exc)[:200])
            return None
        self.remember_doc(h, part)
        return part

    def remember_doc(self, h: str, doc: dict) -> None:
        self._docs[h] = {"block": doc["block"], "underlyings": doc["underlyings"], "series": doc.get("series", [])}
        while len(self._docs) > 8:
            del self._docs[next(iter(self._docs))]

    def fit_surface(self, chain_q: OptionChain, prior=None):
        if self.fit is not None:
            return self.fit(chain_q)

        surface = fit_vol_surface(chain_q, prior=prior)
        if not surface.slices:
            raise ValueError("no expiry had enough clean quotes for a slice")
        return surface


def rejected_note(o: AssetOutcome) -> str:
    """The status line of an asset whose market data was rejected: what was missing, for which asset, why."""
    what = ("spot" if o.fresh_spot_wad is None else
            "surface" if o.reason in ("surface_fit_failed", "surface_arbitrage") else "option chain")
    return f"no usable {what} for {o.feed.symbol} ({o.reason})"


def arbitrage_free(surface) -> bool:
    """Whether the surface passed its own arbitrage checks (``fit_report["arbitrage"]``; a surface without a report,
    e.g. one a test injects, counts as checked)."""
    rep = getattr(surface, "fit_report", None) or {}
    arb = rep.get("arbitrage") if isinstance(rep, dict) else None
    return arb is None or bool(arb.get("butterfly_ok") and arb.get("calendar_ok"))


def prior_surface(entry: Optional[dict], allow_fallback: bool = False) -> Optional[VolSurface]:
    """The surface of an underlying entry of an attested document (``None`` without one; and, unless
    ``allow_fallback``, when that entry was itself a fallback: a prior is a surface fitted on its own block)."""
    if not entry or not entry.get("surface") or (entry.get("fallback") and not allow_fallback):
        return None
    try:
        return VolSurface.from_canonical(entry["surface"])
    except (ValueError, KeyError, TypeError):
        return None


def surface_status(surface) -> dict:
    return {"slices": len(surface.slices), "hash": "0x" + surface.hash().hex(), "fit": fit_summary(surface)}


def fit_summary(surface) -> dict:
    rep = getattr(surface, "fit_report", None) or {}
    out: dict[str, Any] = {}
    per = rep.get("slices") if isinstance(rep, dict) else None
    if isinstance(per, list):
        rmse = [s.get("rmse_vol_pts") for s in per if isinstance(s, dict) and s.get("rmse_vol_pts") is not None]
        if rmse:
            out["max_rmse_vol_pts"] = float(max(rmse))
    return out

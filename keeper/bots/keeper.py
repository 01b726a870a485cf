"""The keeper: one cycle per block (sync chain state, read market data, fit the surface, mark every series, price
every account, build and sign the attestation), the signature exchange with its peers, and submission.

Determinism: everything a leaf depends on is collected into one plain ``inputs`` document (block, quantized spot,
surface parameters, marks and vols per series, risk parameters, Monte Carlo seed = block hash, positions snapshot)
which is archived under its keccak hash (the ``inputsHash`` of the header). :func:`leaves_from_inputs` computes the
leaves from that document alone, so any keeper or account owner can recompute an attested number from the archive,
and two honest keepers with the same inputs produce the same root.

Attestation messages use ``sequence = block number`` and ``timestamp = block timestamp``, so every keeper signs the
same ``MarginRoot``/``Prices`` message for a block.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from apscheduler.schedulers.background import BackgroundScheduler
from eth_utils import keccak

from keeper.attest.inputs import Attestation, risk_document
from keeper.attest.leaves import RiskRun, canonical_inputs, risk_run, solvency_from_run, storable_leaves
from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
from keeper.chain.client import ChainClient, make_web3
from keeper.chain.deployment import load_deployment
from keeper.chain.sender import Sender
from keeper.codec.merkle import MarginLeaf, MerkleTree
from keeper.data.archive import InputsArchive
from keeper.data.feed import BlockRef, Skip
from keeper.data.sources import MarketData, build_market_data
from keeper.errors import SignatureRejected, TxFailed
from keeper.exchange.book import SignatureBook, should_submit
from keeper.exchange.client import PeerClient, diff_leaves
from keeper.exchange.codec import TypedDataCodec
from keeper.exchange.server import ExchangeServer, KeeperView
from keeper.ops.logging import get_logger
from keeper.ops.metrics import KeeperMetrics
from keeper.quant.chains import OptionChain
from keeper.quant.risk.engine import from_canonical
from keeper.quant.surface import VolSurface, fit_surface
from keeper.units import WAD, price_to_wad


# ------------------------------------------------------------------------------------------------------------
# The bot
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Pending:
    """A message this keeper signed and may have to submit."""

    kind: str
    sequence: int  # block number the message was built at
    message: dict
    digest: bytes
    signature: bytes
    payload: dict = field(default_factory=dict)
    posted_to: set = field(default_factory=set)
    done: bool = False


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


class KeeperBot:
    """One keeper. ``tick()`` is the scheduler job: on a new block it runs the cycle; every tick it exchanges
    signatures with the peers and submits what is due. Nothing raises out of ``tick()``."""

    def __init__(self, cfg, key, chain, market, sender, codec, book, view, archive, peers,
                 metrics, log, fit_surface: Optional[Callable[[OptionChain], Any]] = None) -> None:
        self.cfg = cfg
        self.key = key
        self.me = key.address
        self.chain = chain
        dep = chain.deployment
        if isinstance(market, MarketData):  # one asset: the one-asset config form's underlying
            sym = cfg.market.underlying or next(iter(cfg.market.asset_settings()))
            if sym not in dep.underlyings:
                raise ValueError(f"underlying {sym!r} is not in the deployment file's underlyings "
                                 f"{sorted(dep.underlyings)}")
            market = [AssetFeed(sym, dep.underlyings[sym], market, market.spot_decimals)]
        #: every asset priced, in address order (the document's order)
        self.feeds: list[AssetFeed] = sorted(market, key=lambda f: f.asset.lower())
        if not self.feeds:
            raise ValueError("no market asset configured")
        self.market = self.feeds[0].data
        self.sender = sender
        self.codec = codec
        self.book = book
        self.view = view
        self.archive = archive
        self.peers = peers
        self.metrics = metrics
        self.log = log
        self._fit = fit_surface
        self.last_block: Optional[int] = None
        self.pending: dict[tuple[str, int], Pending] = {}
        self.attestations: dict[int, Attestation] = {}
        self.up: set[str] = set()
        self._lock = threading.Lock()
        self._quote_decimals: Optional[int] = None
        self._reported_disagreement: set[tuple[str, int]] = set()
        self._unpriced_logged: set[str] = set()
        #: the first option underlying (the one-asset form's ``market.underlying``): legacy status fields
        self.underlying_asset = next((f.asset for f in self.feeds if f.options), self.feeds[0].asset)
        self._docs: dict[str, dict] = {}  # inputs hash -> {"block", "underlyings"} of documents built or read
        self._missing_docs: dict[str, int] = {}  # inputs hash -> block it was last looked for in vain
        self._last_run: Optional[RiskRun] = None

    # -- helpers ----------------------------------------------------------------------------------------------
    def _skip(self, reason: str, **fields: Any) -> None:
        self.metrics.skipped_inputs.labels(reason=reason).inc()
        self.log.warning("input_skipped", reason=reason, **fields)

    def quote_decimals(self) -> int:
        if self._quote_decimals is None:
            erc20 = [{"name": "decimals", "type": "function", "stateMutability": "view", "inputs": [],
                      "outputs": [{"name": "", "type": "uint8"}]}]
            c = self.chain.w3.eth.contract(address=self.chain.deployment.quote_asset, abi=erc20)
            self._quote_decimals = int(self.chain.rpc(lambda: c.functions.decimals().call()))
        return self._quote_decimals

    def quorum_size(self) -> int:
        return max(int(self.cfg.thresholds.quorum), int(self.chain.state.threshold or 0))

    def keepers(self) -> list[str]:
        ks = set(self.chain.state.keepers)
        return sorted(ks) if ks else sorted({self.me} | {p.address for p in self.peers if p.address})

    # -- the scheduler job ------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Poll for a new block; run the cycle on the latest one; exchange and submit. Never raises."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            try:
                head = self.chain.head()
            except Exception as exc:
                self.log.warning("rpc_unavailable", error=str(exc)[:200])
                self.view.update_status(rpc="down")
                return
            self.view.update_status(rpc="up")
            if head.number != self.last_block:
                t0 = time.perf_counter()
                try:
                    self.cycle(head)
                except Exception as exc:  # a bug or an RPC failure mid-cycle: log, retry on the next tick
                    self.log.error("cycle_failed", block=head.number, error=repr(exc)[:500])
                    self.metrics.cycle_seconds.labels(stage="failed").observe(time.perf_counter() - t0)
                    return
                self.metrics.cycle_seconds.labels(stage="total").observe(time.perf_counter() - t0)
            try:
                self.exchange_round(head.number)
                self.submit_due(head.number)
            except Exception as exc:
                self.log.error("exchange_failed", block=head.number, error=repr(exc)[:500])
        finally:
            self._lock.release()

    # -- the per-block cycle ----------------------------------------------------------------------------------
    def cycle(self, head) -> Optional[Attestation]:
        """Compute, archive and sign this block's attestation over every account and every priced asset (and prices /
        settlement when due). Bad market data of one asset leaves out that asset's holders (or, within the fallback
        rule, prices it on its last attested data); everything else is attested."""
        m = self.metrics
        block = BlockRef(head.number, head.hash, head.timestamp)
        with m.stage("chain"):
            fork = self.chain.sync(head)
        if fork is not None:
            for k in [k for k in self.pending if k[1] >= fork]:
                del self.pending[k]
            for s in [s for s in self.attestations if s >= fork]:
                del self.attestations[s]
        self.last_block = head.number
        m.last_block.set(head.number)
        state = self.chain.state
        self.view.update_status(block=head.number, block_hash=head.hash,
                                last_margin_sequence=state.last_margin_sequence)
        prev = self.previous_document(head.number)
        prev_u = {str(u["asset"]).lower(): u for u in prev["underlyings"]} if prev else {}
        outcomes: list[AssetOutcome] = []
        with m.stage("market"):
            for feed in self.feeds:
                outcomes.append(self._asset_outcome(feed, block, prev, prev_u.get(feed.asset.lower())))
        markets = [o.market for o in outcomes if o.market is not None]
        rejected = {o.feed.asset: o.reason for o in outcomes if o.market is None}
        fresh = {o.feed.asset: o.fresh_spot_wad for o in outcomes if o.fresh_spot_wad is not None}
        self._asset_status(outcomes)
        if not markets:
            self.view.update_status(spot=None, note="; ".join(_rejected_note(o) for o in outcomes) +
                                    ": no asset priced, nothing signed")
            return None
        dep = self.chain.deployment
        collateral = {a: {"decimals": int(info.get("decimals", 18)), "haircut": int(info.get("haircut", 0))}
                      for a, info in state.collateral_assets.items()}
        with m.stage("marks"):
            pi = build_portfolio_inputs(
                block=block, markets=markets, series=list(state.series.values()),
                accounts=list(state.accounts.values()), collateral=collateral, quote_asset=dep.quote_asset,
                quote_decimals=self.quote_decimals(), risk=risk_document(self.cfg.risk, self.cfg.risk.mc_diffusion_vol),
                rejected=rejected)
        self._log_excluded(pi, head.number)
        doc = pi.document
        accounts = pi.accounts
        att = None
        leaves: list[MarginLeaf] = []
        out_of_range: list = []
        if accounts:
            with m.stage("risk"):
                leaves, details, out_of_range = self.compute_leaves(doc)
            for l, why in out_of_range:
                self._skip("leaf_out_of_range", account=l.account, detail=why, block=head.number)
        inputs_hash = self.archive.put_bytes(canonical_inputs(doc))
        self._remember_doc(inputs_hash, doc)
        if accounts and leaves:
            with m.stage("sign"):
                tree = MerkleTree([l.hash() for l in leaves])
                att = Attestation(head.number, head.timestamp, inputs_hash, leaves, tree, markets[0].spot_wad, details)
                att.solvency = self._solvency(pi, out_of_range, head.number)
                att.quote_decimals = self.quote_decimals()  # rounds the index for its signed solvencyHash
                self.attestations[head.number] = att
                for s in [s for s in self.attestations if s < head.number - self.cfg.exchange.keep_blocks]:
                    del self.attestations[s]
                self._sign("margin", head.number, att.message(), {"attestation": head.number})
                self.view.publish(head.number, att.published())
            breached = att.breached()
            near = [l for l in leaves if not l.breached and l.maintenance > 0 and
                    l.equity < self.cfg.risk.near_margin_ratio * l.maintenance]
            m.accounts.set(len(leaves))
            m.breaches.set(len(breached))
            m.near_margin.set(len(near))
            self.view.update_status(
                accounts=len(leaves), breaches=[l.account for l in breached],
                near_margin=[l.to_json() for l in sorted(near, key=lambda l: l.equity - l.maintenance)[:20]],
                root=att.root, inputs_hash=inputs_hash,
                solvency=att.solvency.to_json() if att.solvency is not None else None)
        self._maybe_sign_prices(head, fresh)
        self._maybe_sign_settlements(head, fresh)
        first = next((o for o in outcomes if o.feed.asset == self.underlying_asset), outcomes[0])
        notes = [f"{_rejected_note(o)}: its holders left out" for o in outcomes if o.market is None]
        notes += [f"{o.feed.symbol} on its last attested market data ({o.reason})"
                  for o in outcomes if o.market is not None and o.market.fallback]
        self.view.update_status(spot=first.spot, spot_sources=list(first.used), spot_rejected=list(first.rejected),
                                surface=_surface_status(first.surface) if first.surface is not None else None,
                                excluded={k: len(v) for k, v in pi.excluded.items()},
                                note="; ".join(notes) if notes else "ok")
        self.log.info("cycle", block=head.number, spot=first.spot, assets=len(markets), accounts=len(accounts),
                      breaches=len(att.breached()) if att else 0, root=att.root if att else None)
        return att

    def _asset_outcome(self, feed: AssetFeed, block: BlockRef, prev: Optional[dict],
                       prev_entry: Optional[dict]) -> AssetOutcome:
        """Spot (aggregated), and for an option underlying its chain and surface; any of them rejected: the fallback
        rule (:meth:`_fallback`) or no market for this asset this block."""
        n = block.number
        agg, skips = feed.data.spot(block)
        for s in skips:
            self._skip(s.reason, asset=feed.symbol, source=s.source, detail=s.detail, block=n)
        spot_wad = spot = None
        used = rej = ()
        reason = None
        if isinstance(agg, Skip):
            self._skip(agg.reason, asset=feed.symbol, source=agg.source, detail=agg.detail, block=n)
            reason = agg.reason
        else:
            if agg.rejected:
                self.metrics.skipped_inputs.labels(reason="outlier").inc(len(agg.rejected))
                self.log.warning("spot_outliers", asset=feed.symbol, rejected=list(agg.rejected), block=n)
            spot, used, rej = agg.price, agg.used, agg.rejected
            spot_wad = price_to_wad(spot, feed.spot_decimals)
        surface = chain_q = None
        if reason is None and feed.options:
            chain_q = feed.data.chain(block, spot)
            if isinstance(chain_q, Skip):
                self._skip(chain_q.reason, asset=feed.symbol, source=chain_q.source, detail=chain_q.detail, block=n)
                reason = chain_q.reason
            else:
                prior = _prior_surface(prev_entry)
                with self.metrics.stage("surface"):
                    try:
                        surface = self._fit_surface(chain_q, prior)
                    except Exception as exc:
                        self._skip("surface_fit_failed", asset=feed.symbol, detail=repr(exc)[:300], block=n)
                        reason = "surface_fit_failed"
                if surface is not None and not _arbitrage_free(surface):
                    arb = surface.fit_report.get("arbitrage", {})
                    self.metrics.skipped_inputs.labels(reason="surface_arbitrage").inc()
                    self.log.warning("surface_refused", reason="surface_arbitrage", asset=feed.symbol, block=n,
                                     butterfly_ok=arb.get("butterfly_ok"), calendar_ok=arb.get("calendar_ok"),
                                     min_g=arb.get("min_g"), calendar_min_gap=arb.get("calendar_min_gap"))
                    reason = "surface_arbitrage"
        if reason is None:
            return AssetOutcome(feed, AssetMarket(feed.asset, spot_wad, surface, chain_q,
                                                  prior=_prior_surface(prev_entry) if chain_q is not None else None),
                                spot_wad, None, spot, used, rej, surface)
        market = self._fallback(feed, block, prev, prev_entry, reason, spot_wad)
        shown = None if market is None else _prior_surface(prev_entry, allow_fallback=True)
        return AssetOutcome(feed, market, spot_wad, reason, spot if spot is not None else
                            (market.spot_wad / WAD if market is not None else None), used, rej, shown)

    def _fallback(self, feed: AssetFeed, block: BlockRef, prev: Optional[dict], prev_entry: Optional[dict],
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
                surface = _prior_surface(prev_entry, allow_fallback=True) if feed.options else None
                use_spot = spot_wad if spot_wad is not None else int(prev_entry["spot_wad"])
                flag = {"reason": reason, "since_block": since, "source_block": source,
                        "shock_widening": float(mc.fallback_widening)}
                self.metrics.skipped_inputs.labels(reason="market_fallback").inc()
                self.log.warning("market_fallback", asset=feed.symbol, block=n, **flag,
                                 spot_reused=spot_wad is None)
                return AssetMarket(feed.asset, use_spot, surface, None, flag)
        self.metrics.skipped_inputs.labels(reason="market_data_rejected").inc()
        self.log.warning("market_data_rejected", asset=feed.symbol, reason=reason, block=n, fallback=why)
        return None

    def _asset_status(self, outcomes: list[AssetOutcome]) -> None:
        self.view.update_status(assets={
            o.feed.symbol: {"asset": o.feed.asset, "spot": o.spot, "spot_sources": list(o.used),
                            "spot_rejected": list(o.rejected), "rejected": o.reason,
                            "fallback": o.market.fallback if o.market is not None else None,
                            "surface": _surface_status(o.surface) if o.surface is not None else None}
            for o in outcomes})

    def _log_excluded(self, pi, block_number: int) -> None:
        for reason, accts in sorted(pi.excluded.items()):
            if not accts:
                continue
            self.metrics.skipped_inputs.labels(reason=reason).inc(len(accts))
            new = [a for a in accts if (reason, a) not in self._unpriced_logged]
            if reason != "unpriced_series" or new:  # unpriced: logged once per account, counted every block
                self._unpriced_logged.update((reason, a) for a in new)
                self.log.warning("input_skipped", reason=reason, accounts=accts[:50], count=len(accts),
                                 block=block_number)
        if pi.bad_series:
            self._skip("bad_market_data", series=pi.bad_series, block=block_number,
                       unattestable=len(pi.excluded.get("bad_market_data", [])))
            if pi.excluded.get("bad_market_data"):
                self.metrics.skipped_inputs.labels(reason="unattestable_account").inc(
                    len(pi.excluded["bad_market_data"]))

    # -- the previous attested document (prior and fallback) -----------------------------------------------------
    def previous_document(self, block_number: int) -> Optional[dict]:
        """``{"block", "underlyings"}`` of the inputs document named by the last margin root on chain (from this
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
            part = {"block": doc["block"], "underlyings": doc["underlyings"]}
        except (ValueError, KeyError, TypeError) as exc:
            self._missing_docs[h] = block_number
            self.log.warning("previous_inputs_unreadable", inputs_hash=h, error=str(exc)[:200])
            return None
        self._remember_doc(h, part)
        return part

    def _remember_doc(self, h: str, doc: dict) -> None:
        self._docs[h] = {"block": doc["block"], "underlyings": doc["underlyings"]}
        while len(self._docs) > 8:
            del self._docs[next(iter(self._docs))]

    def _fit_surface(self, chain_q: OptionChain, prior=None):
        if self._fit is not None:
            return self._fit(chain_q)

        surface = fit_surface(chain_q, prior=prior)
        if not surface.slices:
            raise ValueError("no expiry had enough clean quotes for a slice")
        return surface

    def compute_leaves(self, doc: dict):
        """Every account's leaf computed from the inputs document alone, those that cannot be stored on chain left
        out: ``(leaves, details, out_of_range)`` (:func:`risk_run`, :func:`storable_leaves`)."""
        run = risk_run(doc)
        self._last_run = run
        return storable_leaves(run.leaves, run.details)

    # -- the solvency index --------------------------------------------------------------------------------------
    def fund_balance(self) -> float:
        """The insurance fund's free balance (quote units), 0 without an auction module."""
        auction = self.chain.auction
        if auction is None:
            return 0.0
        raw = int(self.chain.rpc(lambda: auction.functions.fundBalance().call()))
        return raw / 10 ** self.quote_decimals()

    def _solvency(self, pi, out_of_range: list, block_number: int):
        """The solvency index of the attested accounts (keeper.quant.risk.solvency); ``None`` (logged) if it
        cannot be computed: it never stops the margin root."""
        run = self._last_run
        if run is None:
            return None
        try:
            excluded = {k: len(v) for k, v in pi.excluded.items() if v}
            if out_of_range:
                excluded["leaf_out_of_range"] = len(out_of_range)
            left_out = {a for v in pi.excluded.values() for a in v}
            eq = _known_equity(pi.document, [a for a in self.chain.state.accounts.values() if a.account in left_out])
            eq += sum(l.equity for l, _ in out_of_range) / 10 ** self.quote_decimals()
            return solvency_from_run(run, self.fund_balance(), excluded, eq,
                                     drop=[l.account for l, _ in out_of_range])
        except Exception as exc:
            self.log.warning("solvency_failed", block=block_number, error=repr(exc)[:300])
            return None

    def _sign(self, kind: str, seq: int, message: dict, payload: dict) -> Pending:
        digest = self.codec.digest(kind, message)
        sig = self.codec.sign(kind, message, self.key.account)
        self.book.add(kind, message, sig)
        p = Pending(kind, seq, message, digest, sig, payload)
        self.pending[(kind, seq)] = p
        window = len(self.keepers()) * self.cfg.exchange.takeover_blocks + 3
        for k in [k for k in self.pending if k[0] == kind and k[1] < seq - window]:
            del self.pending[k]
        return p

    def _maybe_sign_prices(self, head, fresh: dict[str, int]) -> None:
        """One ``Prices`` message for every asset with a fresh spot this block (address order; an asset priced on
        its last attested data is not re-attested), when the heartbeat is due or one of them moved by more than
        ``publish.price_deviation`` from its price on chain (or has none)."""
        if not fresh:
            return
        pub = self.cfg.publish
        state = self.chain.state
        assets = sorted(fresh, key=str.lower)
        due = head.number - state.last_price_sequence >= pub.prices_heartbeat_blocks
        for a in assets:
            if due:
                break
            onchain = self.chain.spot_price(a)
            due = onchain is None or abs(fresh[a] - onchain[0]) > pub.price_deviation * onchain[0]
        if due:
            msg = {"assets": assets, "prices": [int(fresh[a]) for a in assets], "sequence": head.number,
                   "timestamp": head.timestamp}
            self._sign("prices", head.number, msg, {})

    def _maybe_sign_settlements(self, head, fresh: dict[str, int]) -> None:
        """For each expiry past with a series whose underlying has a fresh spot and no settlement price yet: one
        ``SettlementPrices`` message over those underlyings."""
        if not self.cfg.publish.settlement:
            return
        pairs = sorted({(int(s.expiry), s.underlying) for s in self.chain.state.series.values()
                        if s.expiry <= head.timestamp and s.underlying in fresh}, key=lambda x: (x[0], x[1].lower()))
        if not pairs:
            return
        prices = self.chain.raw_batch_call([("settlementPrice", (u, e)) for e, u in pairs])
        todo: dict[int, list[str]] = {}
        for (e, u), p in zip(pairs, prices):
            if int(p) == 0:
                todo.setdefault(e, []).append(u)
        for e, unders in sorted(todo.items()):
            msg = {"underlyings": unders, "prices": [int(fresh[u]) for u in unders], "expiry": int(e),
                   "timestamp": head.timestamp}
            self._sign("settlement", head.number, msg, {"expiry": int(e)})

    # -- exchange ---------------------------------------------------------------------------------------------
    def exchange_round(self, head_number: int) -> None:
        """Push our signatures to every peer, pull theirs (verified before storing), note who is up, and log
        which leaves differ when a peer signed another root."""

        up = set()
        live = [p for p in self.pending.values() if not p.done]
        for peer in self.peers:
            ok = True
            for p in live:
                if peer.name not in p.posted_to:
                    st = peer.post_signature(p.kind, p.message, p.signature)
                    if st is None:
                        ok = False
                        break
                    if st in (200, 201):
                        p.posted_to.add(peer.name)
                book_seq = p.message.get("expiry", p.message.get("sequence"))
                got = peer.signatures(p.kind, int(book_seq))
                if got is None:
                    ok = False
                    break
                for msg, sig, _claimed in got:
                    try:
                        self.book.add(p.kind, msg, sig)
                    except SignatureRejected as exc:
                        self.metrics.skipped_inputs.labels(reason="bad_peer_signature").inc()
                        self.log.warning("peer_signature_rejected", peer=peer.name, reason=exc.reason)
            if ok and peer.health() is not None and peer.address:
                up.add(peer.address)
        self.up = up
        self.metrics.peers_up.set(len(up))
        self.view.update_status(peers={p.name: bool(p.address in up) for p in self.peers})
        latest = max((p for p in live if p.kind == "margin"), key=lambda p: p.sequence, default=None)
        if latest is not None:
            self.metrics.signatures_held.set(self.book.count("margin", latest.sequence, latest.digest))
            self._check_disagreement(latest)

    def _check_disagreement(self, p: Pending) -> None:

        for digest, msg, sigs in self.book.entries("margin", p.sequence):
            if digest == p.digest:
                continue
            for signer in sigs:
                if (signer, p.sequence) in self._reported_disagreement:
                    continue
                self._reported_disagreement.add((signer, p.sequence))
                self.metrics.disagreements.inc()
                peer = next((x for x in self.peers if x.address == signer), None)
                theirs = peer.attestation(p.sequence) if peer is not None else None
                mine = self.attestations.get(p.sequence)
                diff = diff_leaves([l.to_json() for l in mine.leaves], theirs.get("leaves", [])) \
                    if (mine is not None and theirs) else None
                self.log.warning("keepers_disagree", block=p.sequence, peer=signer, my_root=p.message["root"],
                                 their_root=msg.get("root"), leaf_diff=diff)

    # -- submission -------------------------------------------------------------------------------------------
    def submit_due(self, head_number: int) -> None:
        """Submit the newest margin attestation (and prices / settlements) that has a quorum, when this keeper's
        turn in the rotation has come and the chain does not have it yet."""
        for kind in ("margin", "prices", "settlement"):
            cands = sorted((p for p in self.pending.values() if p.kind == kind and not p.done),
                           key=lambda p: p.sequence, reverse=True)
            for p in cands:
                if self._try_submit(p, head_number):
                    break

    def _try_submit(self, p: Pending, head_number: int) -> bool:

        f = self.chain.ch.functions
        if p.kind == "margin":
            att = self.attestations.get(p.sequence)
            if att is None:
                p.done = True
                return False
            on_chain = int(self.chain.rpc(lambda: f.lastMarginAttestation().call())[0])
            if on_chain >= p.sequence:  # already posted (by a peer, or before a restart)
                p.done = True
                return False
            breached = [l for l in att.breached() if not self._already_breached(l)]
            if not breached and p.sequence - on_chain < self.cfg.publish.root_every_blocks:
                return False  # nothing due: no new breach and the last root on chain is recent enough
        elif p.kind == "prices":
            on_chain = int(self.chain.rpc(lambda: f.lastPriceAttestation().call())[0])
            if on_chain >= p.sequence:
                p.done = True
                return False
        else:
            unders = list(p.message["underlyings"])
            if all(int(x) for x in self.chain.raw_batch_call([("settlementPrice", (u, p.payload["expiry"]))
                                                               for u in unders])):
                p.done = True
                return False
        sigs = self.book.quorum(p.kind, int(p.message.get("expiry", p.message.get("sequence"))), p.digest,
                                self.quorum_size())
        if sigs is None:
            return False
        # live for this message: peers that answered the last poll AND signed this very digest (a dead, stuck or
        # dissenting keeper is skipped in the rotation at once)
        signed = {signer for d, _m, sigs in self.book.entries(p.kind, int(p.message.get("expiry",
                                                                                        p.message.get("sequence"))))
                  if d == p.digest for signer in sigs}
        if not should_submit(self.me, p.sequence, head_number, self.keepers(), self.up & signed,
                             self.cfg.exchange.takeover_blocks):
            return True  # someone else's turn: do not fall back to older sequences either
        try:
            if p.kind == "margin":
                call, label = self._margin_call(att, breached, sigs)
            elif p.kind == "prices":
                msg = p.message
                call, label = f.postPrices(msg["assets"], msg["prices"], msg["sequence"], msg["timestamp"], sigs), \
                    "postPrices"
            else:
                msg = p.message
                call, label = f.postSettlementPrices(msg["underlyings"], msg["prices"], msg["expiry"],
                                                     msg["timestamp"], sigs), "postSettlementPrices"
            receipt = self.sender.call(call, label)
        except TxFailed as exc:
            p.done = True
            self.metrics.submissions.labels(outcome="failed").inc()
            self.log.warning("submission_failed", kind=p.kind, sequence=p.sequence, error=str(exc)[:300])
            return False
        p.done = True
        self.metrics.submissions.labels(outcome="ok").inc()
        self.log.info("submitted", kind=p.kind, sequence=p.sequence, tx="0x" + bytes(receipt["transactionHash"]).hex(),
                      block=int(receipt["blockNumber"]),
                      breached=[l.account for l in breached] if p.kind == "margin" else None)
        if p.kind == "margin" and breached:
            self._start_auctions(breached)
        return True

    def _start_auctions(self, breached: list[MarginLeaf]) -> None:
        """Start the liquidation auction of each newly registered breach (the starter earns the reward); another
        starter may have been faster, which is logged, not an error."""

        auction = self.chain.auction
        if auction is None or not self.cfg.publish.start_auctions:
            return
        for l in breached:
            if l.account in self.chain.state.open_auctions:
                continue
            try:
                r = self.sender.call(auction.functions.start(l.account), "startAuction")
                self.metrics.submissions.labels(outcome="auction_started").inc()
                self.log.info("auction_started", account=l.account, block=int(r["blockNumber"]))
            except TxFailed as exc:
                self.log.warning("auction_start_failed", account=l.account, error=str(exc)[:300])

    def _already_breached(self, leaf: MarginLeaf) -> bool:
        rec = self.chain.state.breached.get(leaf.account)
        return rec is not None and int(rec.get("stateNonce", -1)) == leaf.state_nonce

    def _margin_call(self, att: Attestation, breached: list[MarginLeaf], sigs: bytes):
        f = self.chain.ch.functions
        h = att.header()
        header = (bytes.fromhex(h["inputsHash"][2:]), h["sequence"], h["timestamp"], h["leafCount"])
        # the solvency index signed with the root (its struct hash is the message's solvencyHash)
        sh, solvency = bytes.fromhex(h["solvencyHash"][2:]), att.solvency_struct()
        if not breached:
            return f.postMarginRoot(att.tree.root, header, sh, solvency, sigs), "postMarginRoot"
        by_hash = {l.hash(): l for l in breached}
        ordered, proof, flags = att.tree.multiproof(list(by_hash))
        leaves = [by_hash[h_].as_tuple() for h_ in ordered]
        return f.postMarginBatch(header, sh, solvency, leaves, proof, flags, sigs), "postMarginBatch"


def _rejected_note(o: AssetOutcome) -> str:
    """The status line of an asset whose market data was rejected: what was missing, for which asset, why."""
    what = ("spot" if o.fresh_spot_wad is None else
            "surface" if o.reason in ("surface_fit_failed", "surface_arbitrage") else "option chain")
    return f"no usable {what} for {o.feed.symbol} ({o.reason})"


def _arbitrage_free(surface) -> bool:
    """Whether the surface passed its own arbitrage checks (``fit_report["arbitrage"]``; a surface without a report,
    e.g. one a test injects, counts as checked)."""
    rep = getattr(surface, "fit_report", None) or {}
    arb = rep.get("arbitrage") if isinstance(rep, dict) else None
    return arb is None or bool(arb.get("butterfly_ok") and arb.get("calendar_ok"))


def _prior_surface(entry: Optional[dict], allow_fallback: bool = False) -> Optional[VolSurface]:
    """The surface of an underlying entry of an attested document (``None`` without one; and, unless
    ``allow_fallback``, when that entry was itself a fallback: a prior is a surface fitted on its own block)."""
    if not entry or not entry.get("surface") or (entry.get("fallback") and not allow_fallback):
        return None
    try:
        return VolSurface.from_canonical(entry["surface"])
    except (ValueError, KeyError, TypeError):
        return None


def _surface_status(surface) -> dict:
    return {"slices": len(surface.slices), "hash": "0x" + surface.hash().hex(), "fit": _fit_summary(surface)}


def _known_equity(doc: dict, accounts) -> float:
    """What is known of the equity of accounts left out of a document: quote cash plus their collateral that the
    document prices, at its haircut value (their positions could not be priced)."""
    dec = int(doc["quote_decimals"])
    spots = [int(u["spot_wad"]) / WAD for u in doc["underlyings"]]
    value = {}
    for c in doc["collateral_assets"]:
        price = spots[int(c["underlying"])] if c["underlying"] is not None else float(c["price"])
        value[str(c["asset"]).lower()] = (price * (1 - int(c["haircut"]) / WAD), int(c["decimals"]))
    total = 0.0
    for a in accounts:
        total += int(a.cash) / 10**dec
        for asset, amount in a.collateral.items():
            px, d = value.get(str(asset).lower(), (0.0, 18))
            total += int(amount) / 10**d * px
    return total


def _fit_summary(surface) -> dict:
    rep = getattr(surface, "fit_report", None) or {}
    out: dict[str, Any] = {}
    per = rep.get("slices") if isinstance(rep, dict) else None
    if isinstance(per, list):
        rmse = [s.get("rmse_vol_pts") for s in per if isinstance(s, dict) and s.get("rmse_vol_pts") is not None]
        if rmse:
            out["max_rmse_vol_pts"] = float(max(rmse))
    return out


# ------------------------------------------------------------------------------------------------------------
# Assembly and scheduling
# ------------------------------------------------------------------------------------------------------------
def build_keeper(cfg, key, *, w3=None, log=None, metrics=None, deployment=None, bot_class=None):
    """Wire a :class:`KeeperBot` (or ``bot_class``, a subclass) from a config and a key: chain client, tx sender,
    market data, codec, signature book, HTTP view and server (not started), peers, archive."""

    log = log or get_logger("keeper", address=key.address)
    metrics = metrics or KeeperMetrics()
    dep = deployment or load_deployment(cfg.chain.deployment_file)
    w3 = w3 or make_web3(cfg.chain.rpc_url, cfg.chain.request_timeout_s)
    chain = ChainClient(w3, dep, cfg.chain, metrics=metrics, log=log)
    sender = Sender(w3, key.account, settings=cfg.chain, chain_id=dep.chain_id, metrics=metrics, log=log)
    market = build_feeds(cfg, dep, chain)
    codec = TypedDataCodec(dep.chain_id, dep.clearinghouse)
    keepers = {key.address} | {p.address for p in cfg.exchange.peers}
    book = SignatureBook(codec, keepers, keep=cfg.exchange.keep_blocks)
    view = KeeperView(key.address)
    archive = InputsArchive(cfg.archive_dir)
    peers = [PeerClient(p.name, p.url, p.address, cfg.exchange.request_timeout_s) for p in cfg.exchange.peers]
    bot = (bot_class or KeeperBot)(cfg, key, chain, market, sender, codec, book, view, archive, peers, metrics, log)
    server = ExchangeServer(book, view, archive, cfg.exchange.host, cfg.exchange.port, log=log,
                            on_reject=lambda reason: metrics.skipped_inputs.labels(reason=f"post_{reason}").inc())
    return bot, server


def build_feeds(cfg, dep, chain) -> list[AssetFeed]:
    """One :class:`AssetFeed` per configured asset (``market.asset_settings()``), its symbol resolved through the
    deployment file's ``underlyings``, then ``collateral``; an unknown symbol is a ``ValueError``."""
    feeds = []
    for sym, a in cfg.market.asset_settings().items():
        addr = dep.underlyings.get(sym) or dep.collateral.get(sym)
        if addr is None:
            raise ValueError(f"market asset {sym!r} is neither in the deployment file's underlyings "
                             f"{sorted(dep.underlyings)} nor its collateral {sorted(dep.collateral)}")
        data = build_market_data(a, onchain_reader=lambda addr=addr: chain.spot_price(addr),
                                 max_age_s=cfg.thresholds.max_staleness_s)
        feeds.append(AssetFeed(sym, addr, data, int(a.spot_decimals)))
    if len({f.asset for f in feeds}) != len(feeds):
        raise ValueError("two market assets name the same token")
    return feeds


def sync_keeper_set(bot: KeeperBot) -> None:
    """Register the on-chain keeper set with the signature book (after the first sync)."""
    if bot.chain.state.keepers:
        bot.book.set_keepers(bot.chain.state.keepers)


def run_scheduler(bot: KeeperBot, interval_s: float, stop: Optional[threading.Event] = None) -> None:
    """Run ``bot.tick`` every ``interval_s`` with apscheduler: one cycle at a time (``max_instances=1``), missed
    runs coalesced into one; returns when ``stop`` is set (or on KeyboardInterrupt)."""

    def job() -> None:
        bot.tick()
        sync_keeper_set(bot)


    sched = BackgroundScheduler(job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
                                timezone=timezone.utc)
    sched.add_job(job, "interval", seconds=interval_s, id="keeper-tick", next_run_time=datetime.now(timezone.utc))
    sched.start()
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sched.shutdown(wait=True)

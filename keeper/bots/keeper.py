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

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from apscheduler.schedulers.background import BackgroundScheduler

from keeper.attest.inputs import (
    Attestation,
    build_inputs,
    mark_series,
    risk_document,
    screen_series,
)
from keeper.attest.leaves import canonical_inputs, leaves_from_inputs, storable_leaves
from keeper.chain.client import ChainClient, make_web3
from keeper.chain.deployment import load_deployment
from keeper.chain.sender import Sender
from keeper.codec.merkle import MarginLeaf, MerkleTree
from keeper.data.archive import InputsArchive
from keeper.data.sources import BlockRef, MarketData, Skip, build_market_data
from keeper.errors import SignatureRejected, TxFailed
from keeper.exchange.book import SignatureBook, should_submit
from keeper.exchange.client import PeerClient, diff_leaves
from keeper.exchange.codec import TypedDataCodec
from keeper.exchange.server import ExchangeServer, KeeperView
from keeper.ops.logging import get_logger
from keeper.ops.metrics import KeeperMetrics
from keeper.quant.chains import OptionChain
from keeper.quant.surface import fit_surface
from keeper.units import price_to_wad


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


class KeeperBot:
    """One keeper. ``tick()`` is the scheduler job: on a new block it runs the cycle; every tick it exchanges
    signatures with the peers and submits what is due. Nothing raises out of ``tick()``."""

    def __init__(self, cfg, key, chain, market: MarketData, sender, codec, book, view, archive, peers,
                 metrics, log, fit_surface: Optional[Callable[[OptionChain], Any]] = None) -> None:
        self.cfg = cfg
        self.key = key
        self.me = key.address
        self.chain = chain
        self.market = market
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
        dep = chain.deployment
        sym = cfg.market.underlying
        if sym not in dep.underlyings:
            raise ValueError(f"underlying {sym!r} is not in the deployment file's underlyings {sorted(dep.underlyings)}")
        self.underlying_asset = dep.underlyings[sym]

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
        """Compute, archive and sign this block's attestation (and prices / settlement when due)."""
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
        with m.stage("market"):
            agg, skips = self.market.spot(block)
            for s in skips:
                self._skip(s.reason, source=s.source, detail=s.detail, block=head.number)
            if isinstance(agg, Skip):
                self._skip(agg.reason, source=agg.source, detail=agg.detail, block=head.number)
                self.view.update_status(spot=None, note="no usable spot: nothing signed")
                return None
            if agg.rejected:
                m.skipped_inputs.labels(reason="outlier").inc(len(agg.rejected))
                self.log.warning("spot_outliers", rejected=list(agg.rejected), block=head.number)
            spot = agg.price
            spot_wad = price_to_wad(spot, self.cfg.market.spot_decimals)
            chain_q = self.market.chain(block, spot)
            if isinstance(chain_q, Skip):
                self._skip(chain_q.reason, source=chain_q.source, detail=chain_q.detail, block=head.number)
                self.view.update_status(spot=spot, note="no usable option chain: nothing signed")
                return None
        with m.stage("surface"):
            try:
                surface = self._fit_surface(chain_q)
            except Exception as exc:
                self._skip("surface_fit_failed", detail=repr(exc)[:300], block=head.number)
                self.view.update_status(spot=spot, note="surface fit failed: nothing signed")
                return None
        series = sorted((s for s in state.series.values() if s.underlying == self.underlying_asset),
                        key=lambda s: s.series_id)
        priced_ids = {s.series_id for s in series}
        with m.stage("marks"):
            try:
                marks = mark_series(series, surface, chain_q, spot, head.timestamp)
            except ValueError as exc:
                self._skip("no_mark", detail=str(exc), block=head.number)
                return None
        accounts = []
        for a in state.accounts.values():
            if any(sid not in priced_ids for sid in a.positions):
                if a.account not in self._unpriced_logged:  # log once per account, count every block
                    self._unpriced_logged.add(a.account)
                    self.log.warning("input_skipped", reason="unpriced_series", account=a.account, block=head.number)
                self.metrics.skipped_inputs.labels(reason="unpriced_series").inc()
                continue
            accounts.append(a)
        screened = screen_series(series, marks, accounts)
        if screened.bad_series:
            marks, accounts = screened.marks, screened.accounts
            self._skip("bad_market_data", series=screened.bad_series, block=head.number,
                       unattestable=len(screened.unattestable),
                       accounts=[a.account for a in screened.unattestable[:50]])
            if screened.unattestable:
                m.skipped_inputs.labels(reason="unattestable_account").inc(len(screened.unattestable))
        coll_doc = self._collateral_doc(spot_wad)
        doc = build_inputs(block=block, spot_wad=spot_wad, surface_doc=surface.to_canonical(), series=series,
                           marks=marks, accounts=accounts, collateral_assets=coll_doc,
                           quote_decimals=self.quote_decimals(),
                           risk=risk_document(self.cfg.risk, self.cfg.risk.mc_diffusion_vol),
                           underlying_asset=self.underlying_asset)
        att = None
        if accounts:
            with m.stage("risk"):
                leaves, details, out_of_range = self.compute_leaves(doc)
            for l, why in out_of_range:
                self._skip("leaf_out_of_range", account=l.account, detail=why, block=head.number)
        if accounts and leaves:
            with m.stage("sign"):
                inputs_hash = self.archive.put_bytes(canonical_inputs(doc))
                tree = MerkleTree([l.hash() for l in leaves])
                att = Attestation(head.number, head.timestamp, inputs_hash, leaves, tree, spot_wad, details)
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
                root=att.root, inputs_hash=inputs_hash)
        else:
            self.archive.put_bytes(canonical_inputs(doc))
        self._maybe_sign_prices(head, spot_wad)
        self._maybe_sign_settlements(head, spot_wad, series)
        self.view.update_status(spot=spot, spot_sources=list(agg.used), spot_rejected=list(agg.rejected),
                                surface={"slices": len(surface.slices),
                                         "hash": "0x" + surface.hash().hex(),
                                         "fit": _fit_summary(surface)},
                                note="ok")
        self.log.info("cycle", block=head.number, spot=spot, accounts=len(accounts),
                      breaches=len(att.breached()) if att else 0, root=att.root if att else None)
        return att

    def _fit_surface(self, chain_q: OptionChain):
        if self._fit is not None:
            return self._fit(chain_q)

        surface = fit_surface(chain_q)
        if not surface.slices:
            raise ValueError("no expiry had enough clean quotes for a slice")
        return surface

    def compute_leaves(self, doc: dict):
        """Every account's leaf computed from the inputs document alone, those that cannot be stored on chain left
        out: ``(leaves, details, out_of_range)`` (:func:`leaves_from_inputs`, :func:`storable_leaves`)."""
        leaves, details = leaves_from_inputs(doc)
        return storable_leaves(leaves, details)

    def _collateral_doc(self, spot_wad: int) -> list[dict]:
        dep = self.chain.deployment
        out = []
        for asset, info in sorted(self.chain.state.collateral_assets.items()):
            moves = asset == self.underlying_asset
            price = "1" if asset == dep.quote_asset else "0"  # other assets are not priced: valued at zero
            out.append({"asset": asset, "decimals": int(info.get("decimals", 18)),
                        "haircut": str(int(info.get("haircut", 0))), "underlying": 0 if moves else None,
                        "price": price})
        return out

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

    def _maybe_sign_prices(self, head, spot_wad: int) -> None:
        pub = self.cfg.publish
        state = self.chain.state
        due = head.number - state.last_price_sequence >= pub.prices_heartbeat_blocks
        if not due:
            onchain = self.chain.spot_price(self.underlying_asset)
            due = onchain is None or abs(spot_wad - onchain[0]) > pub.price_deviation * onchain[0]
        if due:
            msg = {"assets": [self.underlying_asset], "prices": [spot_wad], "sequence": head.number,
                   "timestamp": head.timestamp}
            self._sign("prices", head.number, msg, {})

    def _maybe_sign_settlements(self, head, spot_wad: int, series) -> None:
        if not self.cfg.publish.settlement:
            return
        expiries = sorted({s.expiry for s in series if s.expiry <= head.timestamp})
        if not expiries:
            return
        prices = self.chain.raw_batch_call([("settlementPrice", (self.underlying_asset, int(e))) for e in expiries])
        for e, p in zip(expiries, prices):
            if int(p) == 0:
                msg = {"underlyings": [self.underlying_asset], "prices": [spot_wad], "expiry": int(e),
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
            if int(self.chain.rpc(lambda: f.settlementPrice(self.underlying_asset, p.payload["expiry"]).call())):
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
    underlying = dep.underlyings.get(cfg.market.underlying)
    market = build_market_data(cfg.market, onchain_reader=(lambda: chain.spot_price(underlying)) if underlying else None,
                               max_age_s=cfg.thresholds.max_staleness_s)
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

"""The keeper bot (docs/keeper.md): :class:`KeeperBot` composes its parts, one job each: the per-block cycle
(:mod:`.cycle`, with each asset's market data and the fallback in :mod:`.market`), the signature exchange
(:mod:`.exchange_round`) and submission (:mod:`.submitter`); :func:`build_keeper` wires one from a config and a key;
the loop is :mod:`.scheduler`.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from keeper.attest.inputs import Attestation
from keeper.bots.keeper.agreement import QuoteAgreement
from keeper.bots.keeper.cycle import KeeperCycle
from keeper.bots.keeper.exchange_round import ExchangeRound
from keeper.bots.keeper.market import AssetFeed, AssetMarkets
from keeper.bots.keeper.messages import Pending, SignedMessages
from keeper.bots.keeper.submitter import Submitter
from keeper.chain.client import ChainClient, make_web3
from keeper.chain.deployment import load_deployment
from keeper.chain.sender import Sender
from keeper.data.archive import InputsArchive
from keeper.data.sources import MarketData, build_market_data
from keeper.exchange.book import SignatureBook
from keeper.exchange.client import PeerClient
from keeper.exchange.codec import TypedDataCodec
from keeper.exchange.server import ExchangeServer, KeeperView
from keeper.ops.logging import get_logger
from keeper.ops.metrics import KeeperMetrics
from keeper.quant.chains import OptionChain


class KeeperBot:
    """One keeper. ``tick()`` is the scheduler job: on a new block it runs the cycle; every tick it exchanges
    signatures with the peers and submits what is due. Nothing raises out of ``tick()``.

    Its parts: ``markets`` (:class:`AssetMarkets`), ``block_cycle`` (:class:`KeeperCycle`), ``messages``
    (:class:`SignedMessages`: what it signed), ``exchange`` (:class:`ExchangeRound`), ``submitter``
    (:class:`Submitter`). ``fit_surface``: a surface fit to use instead of the real one (tests)."""

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
        self._lock = threading.Lock()
        self.messages = SignedMessages(codec, key.account, book, cfg.exchange.takeover_blocks,
                                       keepers=lambda: self.submitter.keepers())
        agreement = (QuoteAgreement(self.me, lambda: self.submitter.keepers(), peers, view, metrics, log,
                                    wait_s=cfg.exchange.agreement_wait_s) if cfg.exchange.quote_agreement else None)
        self.markets = AssetMarkets(cfg, chain, archive, peers, metrics, log, fit_surface, agreement)
        self.block_cycle = KeeperCycle(cfg, chain, self.feeds, self.markets, archive, self.messages, view, metrics,
                                       log)
        self.exchange = ExchangeRound(peers, book, self.messages, view, metrics, log)
        self.submitter = Submitter(cfg, chain, sender, book, self.messages, self.me, peers,
                                   peers_up=lambda: self.exchange.up, metrics=metrics, log=log)

    @property
    def last_block(self) -> Optional[int]:
        """The last block the cycle ran on."""
        return self.block_cycle.last_block

    @property
    def attestations(self) -> dict[int, Attestation]:
        """This keeper's attestations by block."""
        return self.messages.attestations

    @property
    def pending(self) -> dict[tuple[str, int], Pending]:
        """The messages it signed by ``(kind, block)``."""
        return self.messages.pending

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
                    self.block_cycle.run(head)
                except Exception as exc:  # a bug or an RPC failure mid-cycle: log, retry on the next tick
                    self.log.error("cycle_failed", block=head.number, error=repr(exc)[:500])
                    self.metrics.cycle_seconds.labels(stage="failed").observe(time.perf_counter() - t0)
                    return
                self.metrics.cycle_seconds.labels(stage="total").observe(time.perf_counter() - t0)
            try:
                self.exchange.run(head.number)
                self.submitter.submit_due(head.number)
                self.submitter.settle_expired(head)
            except Exception as exc:
                self.log.error("exchange_failed", block=head.number, error=repr(exc)[:500])
        finally:
            self._lock.release()


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

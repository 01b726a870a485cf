"""The keeper's per-block cycle: sync the chain state, take each asset's market (:mod:`.market`), build the inputs
document, compute every account's leaf from that document alone, the Merkle root and the solvency index, archive the
document under its keccak (the header's ``inputsHash``) and sign the ``MarginRoot``; ``Prices`` and
``SettlementPrices`` messages when due.

Determinism: everything a leaf depends on is collected into one plain ``inputs`` document (block, quantized spot,
surface parameters, marks and vols per series, risk parameters, Monte Carlo seed = block hash, positions snapshot),
so any keeper or account owner can recompute an attested number from the archive, and two honest keepers with the
same inputs produce the same root. Messages use ``sequence = block number`` and ``timestamp = block timestamp``, so
every keeper signs the same ``MarginRoot``/``Prices`` message for a block.

:func:`known_equity` is pure.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from keeper.attest.inputs import Attestation, risk_document
from keeper.attest.leaves import RiskRun, canonical_inputs, risk_run, solvency_from_run, storable_leaves
from keeper.attest.portfolio import build_portfolio_inputs
from keeper.bots.keeper.market import (
    AssetFeed,
    AssetMarkets,
    AssetOutcome,
    rejected_note,
    skip_input,
    surface_status,
)
from keeper.bots.keeper.messages import SignedMessages
from keeper.codec.merkle import MarginLeaf, MerkleTree, leaf_hashes
from keeper.data.feed import BlockRef
from keeper.errors import SettlementUnavailable
from keeper.quant.marks import MarkConfig, branch_counts
from keeper.ops.pool import RiskPool
from keeper.quant.settlement import settlement_price
from keeper.units import WAD


class KeeperCycle:
    """The cycle over ``feeds`` (:class:`~keeper.bots.keeper.market.AssetFeed`, in address order), their market
    data from ``markets``, the document archived in ``archive``, what it signs kept in ``messages``, its outcome
    shown in ``view``."""

    def __init__(self, cfg, chain, feeds: list[AssetFeed], markets: AssetMarkets, archive,
                 messages: SignedMessages, view, metrics, log) -> None:
        self.cfg = cfg
        self.chain = chain
        self.feeds = feeds
        self.markets = markets
        self.archive = archive
        self.messages = messages
        self.view = view
        self.metrics = metrics
        self.log = log
        self.last_block: Optional[int] = None
        #: the first option underlying (the one-asset form's ``market.underlying``): legacy status fields
        self.underlying_asset = next((f.asset for f in feeds if f.options), feeds[0].asset)
        self._quote_decimals: Optional[int] = None
        self._unpriced_logged: set[str] = set()
        self._last_run: Optional[RiskRun] = None
        #: threads of the risk run (``risk.workers``; not part of the document, the leaves are the same bits)
        self.risk_pool = RiskPool(getattr(cfg.risk, "workers", 1))

    def _skip(self, reason: str, **fields) -> None:
        skip_input(self.metrics, self.log, reason, **fields)

    def quote_decimals(self) -> int:
        if self._quote_decimals is None:
            erc20 = [{"name": "decimals", "type": "function", "stateMutability": "view", "inputs": [],
                      "outputs": [{"name": "", "type": "uint8"}]}]
            c = self.chain.w3.eth.contract(address=self.chain.deployment.quote_asset, abi=erc20)
            self._quote_decimals = int(self.chain.rpc(lambda: c.functions.decimals().call()))
        return self._quote_decimals

    def run(self, head) -> Optional[Attestation]:
        """Compute, archive and sign this block's attestation over every account and every priced asset (and prices /
        settlement when due). Bad market data of one asset leaves out that asset's holders (or, within the fallback
        rule, prices it on its last attested data); everything else is attested."""
        m = self.metrics
        block = BlockRef(head.number, head.hash, head.timestamp)
        with m.stage("chain"):
            fork = self.chain.sync(head)
        if fork is not None:
            self.messages.drop_from(fork)
        self.last_block = head.number
        m.last_block.set(head.number)
        state = self.chain.state
        self.view.update_status(block=head.number, block_hash=head.hash,
                                last_margin_sequence=state.last_margin_sequence)
        prev = self.markets.previous_document(head.number)
        prev_u = {str(u["asset"]).lower(): u for u in prev["underlyings"]} if prev else {}
        outcomes: list[AssetOutcome] = []
        with m.stage("market"):
            for feed in self.feeds:
                outcomes.append(self.markets.asset_outcome(feed, block, prev, prev_u.get(feed.asset.lower())))
        markets = self._with_settlements([o.market for o in outcomes if o.market is not None], head)
        rejected = {o.feed.asset: o.reason for o in outcomes if o.market is None}
        fresh = {o.feed.asset: o.fresh_spot_wad for o in outcomes if o.fresh_spot_wad is not None}
        self.asset_status(outcomes)
        if not markets:
            self.view.update_status(spot=None, note="; ".join(rejected_note(o) for o in outcomes) +
                                    ": no asset priced, nothing signed")
            return None
        dep = self.chain.deployment
        collateral = {a: {"decimals": int(info.get("decimals", 18)), "haircut": int(info.get("haircut", 0))}
                      for a, info in state.collateral_assets.items()}
        with m.stage("marks"):
            pi = build_portfolio_inputs(
                block=block, markets=markets, series=list(state.series.values()),
                accounts=list(state.accounts.values()), collateral=collateral, quote_asset=dep.quote_asset,
                quote_decimals=self.quote_decimals(), risk=risk_document(self.cfg.risk),
                rejected=rejected, previous=prev, mark_config=MarkConfig(**self.cfg.market.hybrid.model_dump()))
        self._log_excluded(pi, head.number)
        doc = pi.document
        accounts = pi.accounts
        marks = branch_counts(doc)
        for asset, counts in marks.items():
            for branch, n in counts.items():
                m.marks.labels(asset=asset, branch=branch).set(n)
        self.view.update_status(marks=marks)
        att = None
        leaves: list[MarginLeaf] = []
        out_of_range: list = []
        if accounts:
            with m.stage("risk"):
                leaves, details, out_of_range = self.compute_leaves(doc)
            for l, why in out_of_range:
                self._skip("leaf_out_of_range", account=l.account, detail=why, block=head.number)
        inputs_hash = self.archive.put_bytes(canonical_inputs(doc))
        self.markets.remember_doc(inputs_hash, doc)
        if accounts and leaves:
            with m.stage("sign"):
                tree = MerkleTree(leaf_hashes(leaves))
                att = Attestation(head.number, head.timestamp, inputs_hash, leaves, tree, markets[0].spot_wad, details)
                att.solvency = self._solvency(pi, out_of_range, head.number)
                att.quote_decimals = self.quote_decimals()  # rounds the index for its signed solvencyHash
                self.messages.keep_attestation(att, self.cfg.exchange.keep_blocks)
                self.messages.sign("margin", head.number, att.message(), {"attestation": head.number})
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
        notes = [f"{rejected_note(o)}: its holders left out" for o in outcomes if o.market is None]
        notes += [f"{o.feed.symbol} on its last attested market data ({o.reason})"
                  for o in outcomes if o.market is not None and o.market.fallback]
        self.view.update_status(spot=first.spot, spot_sources=list(first.used), spot_rejected=list(first.rejected),
                                surface=surface_status(first.surface) if first.surface is not None else None,
                                excluded={k: len(v) for k, v in pi.excluded.items()},
                                note="; ".join(notes) if notes else "ok")
        self.log.info("cycle", block=head.number, spot=first.spot, assets=len(markets), accounts=len(accounts),
                      breaches=len(att.breached()) if att else 0, root=att.root if att else None)
        return att

    def asset_status(self, outcomes: list[AssetOutcome]) -> None:
        self.view.update_status(assets={
            o.feed.symbol: {"asset": o.feed.asset, "spot": o.spot, "spot_sources": list(o.used),
                            "spot_rejected": list(o.rejected), "rejected": o.reason,
                            "fallback": o.market.fallback if o.market is not None else None,
                            "surface": surface_status(o.surface) if o.surface is not None else None}
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

    def compute_leaves(self, doc: dict):
        """Every account's leaf computed from the inputs document alone, those that cannot be stored on chain left
        out: ``(leaves, details, out_of_range)`` (:func:`risk_run`, :func:`storable_leaves`)."""
        run = risk_run(doc, mapper=self.risk_pool)
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
            eq = known_equity(pi.document, [a for a in self.chain.state.accounts.values() if a.account in left_out])
            eq += sum(l.equity for l, _ in out_of_range) / 10 ** self.quote_decimals()
            return solvency_from_run(run, self.fund_balance(), excluded, eq,
                                     drop=[l.account for l, _ in out_of_range], mapper=self.risk_pool)
        except Exception as exc:
            self.log.warning("solvency_failed", block=block_number, error=repr(exc)[:300])
            return None

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
            self.messages.sign("prices", head.number, msg, {})

    def _maybe_sign_settlements(self, head, fresh: dict[str, int]) -> None:
        """For each expiry past with a series whose underlying has a fresh spot and no settlement price yet: one
        ``SettlementPrices`` message over those underlyings."""
        if not self.cfg.publish.settlement:
            return
        pairs = sorted({(int(s.expiry), s.underlying) for s in self.chain.state.series.values()
                        if s.expiry <= head.timestamp and s.underlying in fresh}, key=lambda x: (x[0], x[1].lower()))
        if not pairs:
            return
        todo: dict[int, list[tuple[str, int]]] = {}
        for e, u in pairs:
            if not self.chain.state.settlement_price(u, e):
                todo.setdefault(e, []).append((u, self._settlement_price(u, e, fresh[u], head.number)))
        for e, rows in sorted(todo.items()):
            msg = {"underlyings": [u for u, _ in rows], "prices": [p for _, p in rows], "expiry": int(e),
                   "timestamp": head.timestamp}
            self.messages.sign("settlement", head.number, msg, {"expiry": int(e)})

    def _with_settlements(self, markets: list, head) -> list:
        """Each market with the settlement prices of its expired series that accounts still hold: the one on chain,
        else the attested-price TWAP the keepers sign (:meth:`_settlement_price`'s rule without the spot fallback);
        the document values those series at intrinsic against it (docs/keeper.md, "Expiry settlement")."""
        state = self.chain.state
        held = {int(sid) for a in state.accounts.values() for sid, size in a.positions.items() if size}
        pairs = sorted({(s.underlying, int(s.expiry)) for sid, s in state.series.items()
                        if sid in held and s.expiry <= head.timestamp})
        if not pairs:
            return markets
        by_asset: dict[str, dict[int, float]] = {}
        for u, e in pairs:
            price = state.settlement_price(u, e)
            if not price:
                try:
                    price = settlement_price(state.price_history.get(u, []), e)
                except SettlementUnavailable:
                    continue
            by_asset.setdefault(u.lower(), {})[e] = price / WAD
        return [dataclasses.replace(m, settlement=by_asset[m.asset.lower()]) if m.asset.lower() in by_asset else m
                for m in markets]

    def _settlement_price(self, underlying: str, expiry: int, fresh_wad: int, block: int) -> int:
        """The documented settlement price (docs/keeper.md, "Expiry settlement"): the time-weighted average of the
        keeper-attested prices over the 30 minutes before expiry (:func:`keeper.quant.settlement.settlement_price`,
        from the chain's ``PricesPosted``, so every keeper signs the same number); when the attestations cover too
        little of the window, this block's fresh attested-quality spot, logged."""
        try:
            return settlement_price(self.chain.state.price_history.get(underlying, []), int(expiry))
        except SettlementUnavailable as exc:
            self.log.warning("settlement_twap_unavailable", underlying=underlying, expiry=int(expiry), block=block,
                             detail=str(exc), fallback="fresh spot")
            return int(fresh_wad)


def known_equity(doc: dict, accounts) -> float:
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

"""What the liquidator reads from the chain, as a status: the market (attested spots, its own vol), an account's
holdings, its own free margin and claim, an auction's state (and whether the buyer of last resort is due), and from
them the :class:`~keeper.bots.liquidator.model.LotStatus` its model decides on
(:func:`keeper.bots.liquidator.model.decide_lot`). Reads only, except that :meth:`free_margin` may first record the
liquidator's own leaf (``refresh_margin``: :meth:`keeper.bots.liquidator.execution.BidExecution.refresh_margin`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from keeper.bots.liquidator.model import LotStatus
from keeper.bots.liquidator.valuation import (
    MarketView,
    Portfolio,
    SeriesSpec,
    flat_vol,
    gas_cost_quote,
)
from keeper.units import WAD


@dataclass(frozen=True)
class AuctionState:
    """One running auction as the chain shows it now: its quote (price and the fraction a bid may take now, WAD)
    and the frozen record (``auctionOf``: equity and initial margin at the breach, quote units; sold fraction,
    WAD)."""

    account: str
    auction_id: int
    price: int  # [quote base units] for the whole original lot
    allowed_wad: int  # [wad] the most a bid may take now
    equity: int  # [quote base units]
    initial: int  # [quote base units]
    sold_wad: int  # [wad]

    @property
    def remaining(self) -> float:
        """The fraction of the original lot still for sale."""
        return (WAD - self.sold_wad) / WAD


def market_smile(path: Path):
    """The vol lookup of a market file ``{spot, atm_vol, skew, curvature}`` (the liquidator's own smile:
    ``atm (1 + skew k + curvature k^2)`` in log-moneyness ``k``, at least 5 %); raises ``ValueError``/``KeyError``
    on a bad file and ``OSError`` when it cannot be read."""
    m = json.loads(path.read_text())
    atm = float(m["atm_vol"])
    skew, curv = float(m.get("skew", -0.15)), float(m.get("curvature", 0.4))
    if not (np.isfinite(atm) and atm > 0 and np.isfinite(skew) and np.isfinite(curv)):
        raise ValueError(f"{path.name}: atm_vol must be > 0 and skew, curvature finite")

    def vol_fn(strike, expiry, forward):
        k = np.log(np.asarray(strike, float) / np.asarray(forward, float))
        return np.maximum(atm * (1 + skew * k + curv * k * k), 0.05) + 0 * np.asarray(expiry, float)

    return vol_fn


class ChainStatus:
    """The liquidator's reads of the clearinghouse ``ch`` and the auction module ``auction`` (web3 contracts), for
    the liquidator at ``address``; ``full``: the deployment's ``.full.json`` (tokens, quote decimals);
    ``may_hold_claim``: whether ``claimOf(self)`` needs reading again (set at start and after every fill)."""

    def __init__(self, w3, ch, auction, settings, full: dict, quote_asset: str, address: str,
                 emit: Callable[..., None], refresh_margin: Callable[[str], bool]) -> None:
        self.w3 = w3
        self.ch = ch
        self.auction = auction
        self.s = settings
        self.full = full
        self.quote_asset = quote_asset
        self.decimals = int(full.get("quote_decimals", 6))
        self.address = address
        self.emit = emit
        self.refresh_margin = refresh_margin
        self.series: dict[int, SeriesSpec] = {}
        self.token_decimals: dict[str, int] = {t["address"].lower(): int(t["decimals"])
                                               for t in full.get("tokens", {}).values()}
        self.may_hold_claim = True
        # index of the `done` flag in auctionOf's struct (a module where the completing bid leaves `finish` to call)
        fields = next((i["outputs"][0].get("components", []) for i in auction.abi
                       if i.get("type") == "function" and i.get("name") == "auctionOf"), [])
        self._done_field = next((k for k, c in enumerate(fields) if c.get("name") == "done"), None)

    def market(self) -> MarketView:
        """Spots from the clearinghouse's attested prices, vol from the market file's ATM vol and smile (the
        liquidator's own smile parameters, :func:`market_smile`), else the configured flat vol; an underlying other
        than the deployment's first with a ``market_<symbol>.json`` beside the market file gets its own smile."""
        spots: dict[str, float] = {}
        for t in self.full.get("tokens", {}).values():
            addr = t["address"]
            if addr.lower() == self.quote_asset.lower():
                continue
            try:
                p, _ts = self.ch.functions.spotPrice(addr).call()
                if int(p) > 0:
                    spots[addr] = int(p) / WAD
            except Exception:  # noqa: BLE001 - an unpriced asset is simply absent
                pass
        vol_fn = flat_vol(self.s.vol)
        own: dict[str, object] = {}
        if self.s.market_file and Path(self.s.market_file).is_file():
            try:
                vol_fn = market_smile(Path(self.s.market_file))
            except (OSError, ValueError, KeyError) as e:
                self.emit("market_file_unreadable", error=str(e))
            first = str(self.full.get("underlying", "")).lower()
            for sym, t in self.full.get("tokens", {}).items():
                f = Path(self.s.market_file).with_name(f"market_{sym}.json")
                if t["address"].lower() in (first, self.quote_asset.lower()) or not f.is_file():
                    continue
                try:  # another underlying's own smile (the scenario writes market_<symbol>.json beside market.json)
                    own[t["address"]] = market_smile(f)
                except (OSError, ValueError, KeyError) as e:
                    self.emit("market_file_unreadable", file=str(f), error=str(e))
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        return MarketView(spots, vol_fn, now, self.quote_asset, own)

    def series_spec(self, sid: int) -> SeriesSpec:
        if sid not in self.series:
            s = self.ch.functions.series(sid).call()
            # Series(address underlying, uint64 expiry, bool isCall, uint128 strike)
            self.series[sid] = SeriesSpec.from_chain(sid, s[0], int(s[3]), int(s[1]), bool(s[2]))
        return self.series[sid]

    def holdings(self, account: str) -> Portfolio:
        """The account's current portfolio as held in the clearinghouse."""
        positions = {}
        for sid in self.ch.functions.seriesOf(account).call():
            size = int(self.ch.functions.positionOf(account, int(sid)).call())
            if size:
                self.series_spec(int(sid))
                positions[int(sid)] = size / WAD
        collateral = {}
        for asset in self.ch.functions.collateralAssetsOf(account).call():
            if asset.lower() == self.quote_asset.lower():
                continue
            amt = int(self.ch.functions.collateralOf(account, asset).call())
            if amt:
                collateral[asset] = amt / 10 ** self.token_decimals.get(asset.lower(), 18)
        return Portfolio(positions, collateral, int(self.ch.functions.cashOf(account).call()))

    def free_margin(self) -> int:
        """Own headroom as the auction computes it: fresh margin record (equity - maintenance), or, without
        option positions, the haircut collateral value; scaled by ``margin_safety``."""
        eq, mm, _n, at = self.ch.functions.marginRecord(self.address).call()
        cfg = self.auction.functions.config().call()
        now = int(self.w3.eth.get_block("latest")["timestamp"])
        max_age = int(cfg[10])
        if int(at) != 0 and now <= int(at) + max_age:
            head = int(eq) - int(mm)
        elif not self.ch.functions.seriesOf(self.address).call():
            head = int(self.ch.functions.collateralValue(self.address).call())
        elif self.refresh_margin(self.address):  # holding options: record a fresh leaf of our own first
            eq, mm, _n, at = self.ch.functions.marginRecord(self.address).call()
            head = int(eq) - int(mm) if int(at) != 0 else 0
        else:
            return 0
        return int(max(head, 0) * self.s.margin_safety)


    def keeper_urls(self) -> list[str]:
        """Keepers' HTTP APIs: the configured list, plus a JSON list re-read from ``keeper_urls_file``."""
        urls = list(self.s.keeper_urls)
        if self.s.keeper_urls_file:
            try:
                urls += [str(u) for u in json.loads(Path(self.s.keeper_urls_file).read_text())]
            except (OSError, ValueError):
                pass
        return urls


    def own_claim(self) -> tuple[str, int] | None:
        """``(source, fractionWad)`` of this bot's unsettled claim (a fraction of the source's frozen book), or
        None. A bid records a claim instead of moving the bought share: it counts in the bot's effective book at
        once (the views and the keepers' leaves include it) and reaches its own storage by ``settleClaim``."""
        source, fraction, _share = self.ch.functions.claimOf(self.address).call()
        if int(fraction) == 0:
            self.may_hold_claim = False
            return None
        return str(source), int(fraction)

    def auction_status(self, account: str) -> str:
        """The auction of ``account`` on chain: ``none``, ``running`` (bids may still come), or ``done`` (the bids
        sold what they may and only ``finish`` is left, on an auction module that separates the two)."""
        # Auction(starter, startedAt, ..., done): startedAt == 0 means none
        a = self.auction.functions.auctionOf(account).call()
        if int(a[1]) == 0:
            return "none"
        return "done" if self._done_field is not None and bool(a[self._done_field]) else "running"

    def auction_running(self, account: str) -> bool:
        """Whether bids on ``account``'s auction may still come (it exists and its sale is not complete)."""
        return self.auction_status(account) == "running"


    def auction_state(self, account: str, price: int, allowed_wad: int) -> AuctionState:
        """The auction of ``account`` at its current ``quote`` (``price``, ``allowed_wad``)."""
        a = self.auction.functions.auctionOf(account).call()
        # Auction(starter, startedAt, expectedNonce, equity, maintenance, soldWad, initial, rewardPromised, id, ...)
        return AuctionState(account, int(a[8]), int(price), int(allowed_wad), int(a[3]), int(a[6]), int(a[5]))

    def last_resort_due(self, account: str) -> bool:
        """``lastResortDue(account)``: the auction is at its floor or tail after the configured resets with a fund
        account set, so ``redo`` is refused and ``takeAsLastResort`` (anyone may call it) takes the book. False on a
        module without the buyer of last resort."""
        if not any(i.get("name") == "lastResortDue" for i in self.auction.abi):
            return False
        return bool(self.auction.functions.lastResortDue(account).call())

    def lot_status(self, st: AuctionState) -> LotStatus:
        """What the model decides on (:func:`keeper.bots.liquidator.model.decide_lot`): the auction ``st``, the
        account's current holdings and their series, the market as the liquidator sees it, gas for one bid and its
        own free margin."""
        held = self.holdings(st.account)
        mkt = self.market()
        native = mkt.spots.get(self.full.get("underlying", ""), 2000.0)
        gas = gas_cost_quote(self.s.gas_per_bid, int(self.s.gas_price_gwei * 1e9), native, self.decimals)
        return LotStatus(auction_id=st.auction_id, account=st.account, now=int(mkt.now), price=st.price,
                         allowed_wad=st.allowed_wad, equity=st.equity, initial=st.initial, sold_wad=st.sold_wad,
                         holdings=held, series=dict(self.series), market=mkt, quote_decimals=self.decimals,
                         gas_cost=gas, free_margin=self.free_margin(), min_fraction=self.s.min_fraction)

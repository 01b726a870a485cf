"""The scenario's driver: the market data the bots read, the fat-finger trade on a thin series, the market path one
step at a time (market files, the clock, attestations, auction ticks, the per-step record), the settling ticks
after the path, and the end of the run (auctions whose sale is complete finished, pending claims settled)."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keeper.attest.engine import smile_from
from keeper.codec.merkle import MarginLeaf
from keeper.data.paths import MarketPath
from keeper.errors import DeployError, TxFailed
from keeper.quant.pricing import black76_greeks
from keeper.scenario.collect import market_surface
from keeper.scenario.config import ScenarioConfig, market_files
from keeper.scenario.keepers import Attestor
from keeper.scenario.manipulation import ThinBook, manipulation_report
from keeper.scenario.processes import ProcessKeepers
from keeper.scenario.report import ScenarioRecord, append_ratio
from keeper.scenario.world import World
from keeper.units import SECONDS_PER_YEAR


def _write_json_atomically(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def write_market_file(out: Path, spot: float, vol: float, others: dict[str, tuple[float, float]] | None = None
                      ) -> None:
    """What the bots read as public market data: ``market.json`` (the first underlying's spot, ATM vol and the
    smile's shape; the liquidators, and the keepers' option chain) and ``spot.json`` (the keepers' spot source), and
    for every other underlying in ``others`` (symbol -> (spot, ATM vol)) its own pair of files
    (:func:`market_files`), which its keeper sources read."""
    files = [(True, "", spot, vol)] + [(False, sym, p, v) for sym, (p, v) in (others or {}).items()]
    for first, sym, p, v in files:
        market, spot_file = market_files(out, sym, first)
        _write_json_atomically(market, {"spot": p, "atm_vol": v, "skew": -0.15, "curvature": 0.4})
        _write_json_atomically(spot_file, {"price": round(p, 2), "volume": 1.0})


def write_world_market(world: World, out: Path, spot: float, vol: float) -> None:
    """:func:`write_market_file` for every underlying of ``world`` when the first is at ``spot`` and ``vol``."""
    m = world.market(spot, vol)
    write_market_file(out, spot, vol, {sym: m[sym] for sym in world.underlyings()[1:]})


# ---------------------------------------------------------------------------------------------- manipulation
def fat_finger(world: World, attestor: Attestor, spot: float, vol: float, say: Callable[[str], None]) -> dict:
    """A fat-finger buy of a thin series far above fair value; compare the naive and hybrid marks. Returns the
    comparison (:func:`keeper.scenario.manipulation.manipulation_report`) with the accounts the attestation right
    after the trade registered as breached."""
    att = attestor.attest(spot, vol, post_prices=False)
    book0 = world.read_book()
    near = np.array([0 < x.maintenance and x.equity < 1.5 * x.maintenance for x in att.leaves])
    short_near = np.where(near[:, None], np.maximum(-book0.positions, 0), 0).sum(axis=0)
    j0 = int(np.argmax(short_near)) if short_near.max() > 0 else 0
    sid = book0.series_ids[j0]
    fair = world.model_price(sid, spot, vol)
    px = fair + 0.05 * world.series_market(sid, spot, vol)[0]
    buyer = world.actor("long-01") if any(a.role == "long-01" for a in world.actors) else world.actor("maker")
    maker = world.actor("maker")
    world.trade(maker, buyer, sid, -0.1, px, 10_000, att)
    say(f"fat-finger trade: 0.1 x series {sid} at {px:.2f} (model {fair:.2f})")
    # every account's exposure, and the naive vs hybrid comparison on the last attested margins
    book = world.read_book()
    att2 = attestor.attest(spot, vol, post_prices=False)  # hybrid mark: the thin book is marked to model
    leaves = {x.account: x for x in att2.leaves}
    sids = book.series_ids
    s_all = world.series_map()
    t = np.array([max(s_all[s]["expiry"] - world.now(), 1) / SECONDS_PER_YEAR for s in sids])
    strikes = np.array([s_all[s]["strike"] for s in sids])
    fv = np.array([world.series_market(s, spot, vol) for s in sids])  # each series' own underlying
    vols = np.array([float(smile_from(v)(np.array([k]), np.array([tt]), np.array([f]))[0])
                     for k, tt, (f, v) in zip(strikes, t, fv)])
    g = black76_greeks(fv[:, 0], strikes, t, vols, np.array([s_all[s]["is_call"] for s in sids]))
    d = 10**world.dep.quote_decimals
    mm = np.array([leaves[a].maintenance / d for a in book.accounts])
    eq = np.array([leaves[a].equity / d for a in book.accounts])
    pos_val = book.positions @ np.asarray(g.price)
    coll = eq - pos_val  # everything but the option positions, as attested
    j = sids.index(sid)
    rep = manipulation_report(book.accounts, book.positions, coll, mm, np.asarray(g.price), np.asarray(g.vega), j,
                              ThinBook(px, fair * 0.9, px, 0.5, 0.1), f"series {sid} (K={s_all[sid]['strike']:.0f}"
                              f" {'C' if s_all[sid]['is_call'] else 'P'})")
    rep["attested_breaches_after_trade"] = sorted(x.account for x in att2.leaves if x.equity < x.maintenance)
    rep["block"] = int(world.w3.eth.block_number)
    return rep


# ---------------------------------------------------------------------------------------------- the path
def auction_activity(world: World) -> int:
    """Number of auction starts, bids and ends so far (resets do not count: an unsold auction being reset
    again and again is no progress)."""
    return sum(len(world.logs(world.auction, n)) for n in ("AuctionStarted", "Bid", "AuctionEnded"))


def auctions_running(world: World) -> int:
    return len(world.logs(world.auction, "AuctionStarted")) - len(world.logs(world.auction, "AuctionEnded"))


def breached(leaves: list[MarginLeaf]) -> int:
    return sum(1 for x in leaves if x.equity < x.maintenance)


@dataclass
class Driver:
    """Drives the market path on ``world``: every step the market files, the clock, an attestation (inline by the
    :class:`Attestor`, or awaited from the keeper processes) and the step's record; then auction ticks while
    auctions run or accounts are below maintenance. ``status`` is the run's live status."""

    world: World
    cfg: ScenarioConfig
    path: MarketPath
    rec: ScenarioRecord
    out: Path
    status: dict
    attestor: Attestor
    keepers: ProcessKeepers | None
    inline: bool

    def attest(self, spot: float, vol: float, post_prices: bool) -> list[MarginLeaf]:
        """This block's leaves: attested here (inline) or by the keeper processes."""
        if self.inline:
            return self.attestor.attest(spot, vol, post_prices=post_prices).leaves
        return self.keepers.step()

    def record_step(self, leaves: list[MarginLeaf], spot: float, vol: float) -> None:
        rec = self.rec
        rec.times.append(float(self.world.now()))
        rec.blocks.append(int(self.world.w3.eth.block_number))
        rec.spot.append(spot)
        rec.atm_vol.append(vol)
        for sym, (p, v) in self.world.market(spot, vol).items():
            rec.asset_spot.setdefault(sym, []).append(p)
        n = len(rec.spot)
        for x in leaves:
            rec.last_leaves[x.account] = (int(x.equity), int(x.maintenance))
            r = x.equity / x.maintenance if x.maintenance > 0 else float("inf")
            append_ratio(rec.margin_ratios.setdefault(x.account, []), n, r)

    def run_path(self, live_update: Callable[[], None]) -> None:
        cfg, w = self.cfg, self.world
        for k in range(len(self.path)):
            spot, vol = float(self.path.spot[k]), float(self.path.atm_vol[k])
            # the step's market data is written before its block is mined, so the keepers' cycle on that block
            # reads this step's spot and smile (they re-read both files every cycle)
            write_world_market(w, self.out, spot, vol)
            if k > 0:
                w.advance(cfg.chain_step_seconds)
            self.status.update(phase="path", step=k, spot=spot, vol=vol)
            leaves = self.attest(spot, vol, post_prices=True)
            self.record_step(leaves, spot, vol)
            self.status["breached"] = breached(leaves)
            live_update()
            # let auctions run: small clock ticks; the keepers re-attest so bidders' margin records stay fresh
            ticks = 0
            time.sleep(cfg.tick_wait_s)
            idle, last = 0, auction_activity(w)
            while ticks < cfg.auction_ticks and idle < cfg.idle_ticks and \
                    (auctions_running(w) > 0 or self.status["breached"]):
                w.advance(cfg.auction_tick_seconds)
                self.status["breached"] = breached(self.attest(spot, vol, post_prices=False))
                live_update()
                time.sleep(cfg.tick_wait_s)
                ticks += 1
                now = auction_activity(w)
                idle = idle + 1 if now == last else 0
                last = now
            if k == 0:
                self.rec.surfaces.append(market_surface(w, "market before", vol, spot))
        peak = int(np.argmax(self.path.atm_vol))
        self.rec.surfaces.append(market_surface(w, "market after (peak vol)", float(self.path.atm_vol[peak]),
                                                float(self.path.spot[peak])))

    def settle(self, live_update: Callable[[], None]) -> None:
        """After the path: tick the clock (keepers attesting at the last step's market) while auctions run."""
        cfg = self.cfg
        self.status["phase"] = "settling"
        for _ in range(cfg.auction_ticks):
            if auctions_running(self.world) == 0:
                break
            self.world.advance(cfg.auction_tick_seconds)
            self.attest(float(self.path.spot[-1]), float(self.path.atm_vol[-1]), post_prices=False)
            live_update()
            time.sleep(cfg.tick_wait_s)


# ---------------------------------------------------------------------------------------------- end of the run
def _call_or_note(world: World, fn, what: str, notes: list[str], note: str) -> int:
    """Send ``fn`` from the owner's key (1 when it went through); a revert is noted, not raised."""
    try:
        world.owner.call(fn, what)
        return 1
    except (DeployError, TxFailed) as e:
        notes.append(f"{note}: {e}")
        return 0


def finish_completed_auctions(world: World, notes: list[str]) -> int:
    """End every auction whose sale is complete but which nobody finished yet (``finish``, anyone may; on an
    auction module where the completing bid leaves that to a separate call). Returns how many were ended."""
    auction = world.auction
    if not any(i.get("name") == "finish" for i in auction.abi):
        return 0
    comps = next(i["outputs"][0]["components"] for i in auction.abi if i.get("name") == "auctionOf")
    k = next((j for j, c in enumerate(comps) if c["name"] == "done"), None)
    n = 0
    for acct in dict.fromkeys(e["args"]["account"] for e in world.logs(auction, "AuctionStarted")):
        a = auction.functions.auctionOf(acct).call()
        if int(a[1]) != 0 and k is not None and a[k]:
            n += _call_or_note(world, auction.functions.finish(acct), f"finish {acct[:10]}", notes,
                               f"auction of {acct} not finished at the end")
    return n


def settle_pending_claims(world: World, notes: list[str], say: Callable[[str], None]) -> int:
    """Deliver every liquidation claim still pending (holders from ``ClaimRecorded`` events, pending per
    ``claimOf``) with ``settleClaim`` from the owner's key (anyone may call it), so that the report's books are
    the accounts' own storage. Returns how many were settled; a failure is noted, not raised (the checks read
    raw storage and the claim ledger, so they stay exact and show it)."""
    ch = world.ch
    n = 0
    for h in dict.fromkeys(e["args"]["holder"] for e in world.logs(ch, "ClaimRecorded")):
        if int(ch.functions.claimOf(h).call()[1]) == 0:
            continue
        n += _call_or_note(world, ch.functions.settleClaim(h), f"settleClaim {h[:10]}", notes,
                           f"claim of {h} not settled at the end")
    if n:
        say(f"settled {n} liquidation claim(s) still pending")
    return n

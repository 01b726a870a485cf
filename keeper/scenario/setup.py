"""Set-up of a scenario run: the chain, the deployment, the actors and their keys, the keepers' inline attestor, and
the book (deposits, the genesis attestation, trades between short-vol and long-vol traders and with the maker,
top-ups to each trader's target margin ratio)."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from eth_account import Account

from keeper.chain.deploy import (
    CollateralSpec,
    DeployConfig,
    SeriesPlan,
    deploy,
    derive_keys,
    load_artifacts,
    web3_for,
)
from keeper.chain.local import LocalChain, ensure_chain, free_port
from keeper.chain.sender import Sender
from keeper.data.archive import InputsArchive
from keeper.data.paths import MarketPath
from keeper.scenario.config import ScenarioConfig
from keeper.attest.engine import Attestation
from keeper.scenario.keepers import Attestor, InlineKeepers
from keeper.scenario.world import Actor, World


def start_chain(cfg: ScenarioConfig, out: Path, say: Callable[[str], None]) -> LocalChain:
    """A fresh local chain on a free port (or the node at ``cfg.rpc_url``) with enough accounts for every actor."""
    url = cfg.rpc_url or f"http://127.0.0.1:{free_port()}"
    say(f"starting {cfg.backend} at {url}")
    return ensure_chain(url, cfg.backend, accounts=8 + cfg.n_short_vol + cfg.n_long_vol, log_dir=out / "logs")


@dataclass
class Deployed:
    """What :func:`deploy_world` made: the world, the keepers' keys, the inputs archive and the inline attestor
    (set-up, inline mode)."""

    world: World
    keeper_keys: list[str]
    archive: InputsArchive
    attestor: Attestor


def deploy_world(chain: LocalChain, cfg: ScenarioConfig, path: MarketPath, out: Path, archive_dir: Path,
                 say: Callable[[str], None]) -> Deployed:
    """Derive every key from the chain's mnemonic, deploy the protocol (``deployment.json`` in ``out``) and name
    the actors: key 0 owns, keys 1-3 are the keepers, then two liquidators, the maker, the shorts and the longs."""
    w3 = web3_for(chain.url)
    keys = derive_keys(chain.mnemonic, 7 + cfg.n_short_vol + cfg.n_long_vol)
    addr = [Account.from_key(k).address for k in keys]
    keeper_keys = keys[1:4]
    # the minimum short-leg headroom (5 % of notional), so that set-up can place some traders close to margin;
    # WETH and WBTC listed (haircuts 15 % and 10 %), the same 20 series (strikes 80-120 %, 14 and 45 days, puts and
    # calls) on each
    spot0 = float(path.spot[0])
    dcfg = DeployConfig(spot0=spot0, short_margin_fraction=0.05, auction_floor=cfg.auction_floor,
                        auction_tau=cfg.auction_tau, fund_seed=cfg.fund_seed,
                        collateral=(CollateralSpec("WETH", 18, 0.15, 100_000, spot0),
                                    CollateralSpec("WBTC", 8, 0.10, 5_000, cfg.btc_spot0)),
                        series=tuple(SeriesPlan(k, d, c, u) for u in (None, "WBTC") for d in (14.0, 45.0)
                                     for k in (0.8, 0.9, 1.0, 1.1, 1.2) for c in (True, False)))
    dep = deploy(w3, keys[0], addr[1:4], dcfg, rpc_url=chain.url, deployment_file=out / "deployment.json",
                 progress=say)
    abi = json.loads((out / "deployment.json").read_text())["abi"]
    token_abi = load_artifacts(["TestERC20"])["TestERC20"].abi
    roles = ([("liquidator-1", "liquidator"), ("liquidator-2", "liquidator"), ("maker", "maker")]
             + [(f"short-{i + 1:02d}", "short_vol") for i in range(cfg.n_short_vol)]
             + [(f"long-{i + 1:02d}", "long_vol") for i in range(cfg.n_long_vol)])
    world = World(w3, dcfg, dep,
                  ch=w3.eth.contract(address=dep.clearinghouse, abi=abi["clearinghouse"]),
                  auction=w3.eth.contract(address=dep.auction, abi=abi["auction"]),
                  tokens={s: w3.eth.contract(address=t["address"], abi=token_abi) for s, t in dep.tokens.items()},
                  owner=Sender(w3, keys[0]),
                  actors=[Actor(role, kind, k, a, Sender(w3, k))
                          for (role, kind), k, a in zip(roles, keys[4:], addr[4:])],
                  btc_symbol="WBTC", btc_beta=cfg.btc_beta, btc_vol_ratio=cfg.btc_vol_ratio)
    archive = InputsArchive(archive_dir)
    keepers = InlineKeepers(w3, world.ch, keeper_keys, dep.threshold, world.owner, archive)
    return Deployed(world, keeper_keys, archive, Attestor(world, keepers, cfg.mc_paths))


def deployment_record(chain: LocalChain, world: World) -> dict:
    """The ``chain`` section of the record."""
    dep = world.dep
    return {"url": chain.url, "backend": chain.backend, "chain_id": dep.chain_id, "clearinghouse": dep.clearinghouse,
            "auction": dep.auction, "deploy_block": dep.block, "keepers": dep.keepers, "threshold": dep.threshold}


def find_series(world: World, strike_pct: float, days: float, is_call: bool, underlying: str | None = None) -> int:
    """The listed series on ``underlying`` (a symbol; default the first underlying) nearest to ``strike_pct`` of its
    deployment spot and ``days`` to expiry."""
    dep = world.dep
    sym = underlying or world.dcfg.underlying_symbol
    addr = dep.tokens[sym]["address"].lower()
    spot0 = next(c.spot for c in world.dcfg.collateral if c.symbol == sym) if sym != world.dcfg.underlying_symbol \
        else world.dcfg.spot0
    best = min((s for s in dep.series if str(s["underlying"]).lower() == addr),
               key=lambda s: (abs(s["strike"] / spot0 - strike_pct)
                              + abs((s["expiry"] - dep.timestamp) / 86400 - days) / 100
                              + (0 if s["is_call"] == is_call else 10)))
    return int(best["id"])


#: the short-vol traders' books, cycled by index (``i % 4``): which legs each sells (or buys) and on which asset;
#: a leg is (underlying symbol, strike / spot, put?, sign): -1 sold to a long-vol trader or the maker, +1 bought
#: from the maker
SHORT_BOOKS = (
    ("ETH short puts", (("WETH", None, -1),)),
    ("BTC short puts", (("WBTC", None, -1),)),
    ("short ETH put, long BTC put (hedged across assets)", (("WBTC", 0.9, +0.5), ("WETH", None, -1))),
    ("short ETH and BTC puts (diversified)", (("WETH", None, -0.5), ("WBTC", None, -0.5))),
)
#: contracts of the second underlying per contract of the first at the same notional (its spot / the first's)
_BTC_PER_ETH = 1 / 20


def plan_trades(world: World, rng: np.random.Generator) -> list[tuple]:
    """Every short-vol trader's legs: ``(actor, series id, size)`` with size < 0 sold, > 0 bought. Each trader
    draws a size of 10-30 ETH contracts (a BTC leg is the same notional), a strike of 80 or 90 % and 14 or 45 days;
    its book is :data:`SHORT_BOOKS` ``[i % 4]``."""
    plans = []
    for i, a in enumerate(x for x in world.actors if x.kind == "short_vol"):
        pct, days = (0.9 if i % 3 else 0.8), (14 if i % 2 else 45)
        size = float(rng.choice([10, 15, 20, 30]))
        for sym, k, sign in SHORT_BOOKS[i % 4][1]:
            sid = find_series(world, k or pct, days, False, sym)
            plans.append((a, sid, sign * size * (_BTC_PER_ETH if sym == "WBTC" else 1.0)))
    return plans


def trade_rounds(trades: list[tuple]) -> list[list[tuple]]:
    """``(maker actor, taker actor, series, maker size)`` trades in rounds in which no account trades twice (a
    trade changes both parties' state nonces, so each needs a proof from an attestation after its last trade);
    greedy, and each account's trades keep their order (a trade waits while an earlier one of either party does:
    a hedge bought first is paid for before the leg it hedges is sold)."""
    rounds: list[list[tuple]] = []
    left = list(trades)
    while left:
        used: set[str] = set()
        now, later = [], []
        for t in left:
            parties = {t[0].address, t[1].address}
            (later if parties & used else now).append(t)
            used |= parties
        rounds.append(now)
        left = later
    return rounds


def attest_funded(world: World, attestor: Attestor, spot: float, vol: float, trading: dict[str, float]
                  ) -> Attestation:
    """Attest after every short-vol trader whose previewed leaf (:meth:`Attestor.attest` without posting) is short
    of its initial margin plus ``trading[address]`` (whole quote units: what its next trade needs, for a trader
    about to trade) or of its maintenance margin (any other) deposited the gap plus 2 % in quote: the set-up never
    has an account registered as breached (a breached book holds its quote deposits apart, so top-ups would not
    reach it) and every trade finds its headroom."""
    d = 10**world.dep.quote_decimals
    preview = attestor.attest(spot, vol, post_prices=False, post=False)
    funded = False
    for a in world.actors:
        if a.kind != "short_vol":
            continue
        lf = preview.leaf_of(a.address)
        if a.address in trading:
            need = lf.initial * 1.02 + trading[a.address] * d - lf.equity
        else:
            need = lf.maintenance * 1.02 - lf.equity
        if need > 0:
            world.fund(a, world.dcfg.quote_symbol, need / d + 10)
            funded = True
    if not funded:  # the book did not move: the preview is this block's attestation
        attestor.keepers.post_batch(preview)
        return preview
    return attestor.attest(spot, vol, post_prices=False)


def leg_need(world: World, sid: int, size: float, spot: float, vol: float, short_margin_fraction: float) -> float:
    """What a trade of ``size`` contracts of ``sid`` needs of its trader's headroom (whole quote units): a sale its
    premium plus ``short_margin_fraction`` of its notional (with 5 % and 50 to spare), a purchase its premium
    (10 % and 50 to spare)."""
    f, _v = world.series_market(sid, spot, vol)
    prem = world.model_price(sid, spot, vol) * abs(size)
    return (prem + short_margin_fraction * f * abs(size)) * 1.05 + 50 if size < 0 else prem * 1.1 + 50


@dataclass
class Book:
    """The book after set-up: each short trader's target margin ratio and how many accounts were attested."""

    target_ratios: dict[str, float]
    accounts: int


def setup_book(world: World, attestor: Attestor, path: MarketPath, seed: int,
               say: Callable[[str], None]) -> Book:
    """Deposits (USDC; WETH for two shorts, WBTC for two), genesis attestation, trades on both underlyings between
    short-vol and long-vol traders and with the maker (:func:`plan_trades`, :func:`trade_rounds`), then top-ups that
    put every trader at its target margin ratio (a few just above maintenance)."""
    rng = np.random.default_rng(seed)
    dcfg = world.dcfg
    spot, vol = float(path.spot[0]), float(path.atm_vol[0])
    say("funding the market maker, traders and liquidators")
    shorts = [a for a in world.actors if a.kind == "short_vol"]
    longs = [a for a in world.actors if a.kind == "long_vol"]
    maker = world.actor("maker")
    for a in world.actors:
        if a.kind == "liquidator":
            world.fund(a, dcfg.quote_symbol, 400_000)
        elif a.kind == "maker":
            world.fund(a, dcfg.quote_symbol, 2_000_000)
            world.fund(a, dcfg.underlying_symbol, 200)
            world.fund(a, "WBTC", 5)
    # short-vol books across both underlyings (SHORT_BOOKS): short puts on either, both, or a short ETH put hedged
    # by a long BTC put; sizes in contracts
    plans = plan_trades(world, rng)
    reqs: dict[str, float] = {}
    for a, sid, size in plans:
        reqs[a.address] = reqs.get(a.address, 0.0) + leg_need(world, sid, size, spot, vol,
                                                                dcfg.short_margin_fraction)
    market = world.market(spot, vol)
    for a in shorts:
        need = reqs[a.address]
        if a.role.endswith(("03", "07")):  # two shorts post WETH collateral: wrong-way risk in a crash
            world.fund(a, dcfg.underlying_symbol, need / spot / (1 - 0.15) * 1.02)
        elif a.role.endswith(("02", "10")):  # two post WBTC (short-02 sells BTC puts: wrong-way in BTC)
            world.fund(a, "WBTC", need / market["WBTC"][0] / (1 - 0.10) * 1.02)
        else:
            world.fund(a, dcfg.quote_symbol, need)
    for a in longs:
        world.fund(a, dcfg.quote_symbol, 20_000)
    # risky collateral carries its own margin (IM > 0): top up so that equity - IM covers the trade's need
    att = attestor.attest(spot, vol)
    d = 10**world.dep.quote_decimals
    for a in shorts:
        lf = att.leaf_of(a.address)
        short = reqs[a.address] - (lf.equity - lf.initial) / d
        if short > 0:
            world.fund(a, dcfg.quote_symbol, short * 1.05 + 10)
    say("genesis attestation (prices and every account's margin)")
    att = attestor.attest(spot, vol)
    # each short sells its legs to the long-vol traders in turn (the maker once they are all used) and buys its
    # hedges from the maker; in rounds with a fresh attestation between them (no account trades twice in one)
    say("trading: short-vol traders sell puts on both underlyings to long-vol traders and the market maker, "
        "and buy BTC puts from the maker")
    trades, k = [], 0
    for a, sid, size in plans:
        if size < 0:
            buyer = longs[k % len(longs)] if longs and k < 2 * len(longs) else maker
            k += 1
            trades.append((a, buyer, sid, size))  # the short trader signs the quote (size < 0: sells)
        else:
            trades.append((maker, a, sid, -size))  # the maker sells the hedge
    nonce = 1
    for r, batch in enumerate(trade_rounds(trades)):
        if r:  # a trader whose earlier leg left it short of this leg's headroom deposits the gap first
            needs = {}
            for q_maker, taker, sid, msize in batch:  # the short trader is the quote's maker when it sells
                trader, size = (q_maker, msize) if q_maker.kind == "short_vol" else (taker, -msize)
                needs[trader.address] = leg_need(world, sid, size, spot, vol, dcfg.short_margin_fraction)
            att = attest_funded(world, attestor, spot, vol, needs)
        for q_maker, taker, sid, msize in batch:
            world.trade(q_maker, taker, sid, msize, world.model_price(sid, spot, vol), nonce, att)
            nonce += 1
    # nobody is registered as breached by the set-up (a breached book holds its quote deposits apart)
    att = attest_funded(world, attestor, spot, vol, {})
    say("top-ups to each trader's target margin ratio")
    leaves = {x.account: x for x in att.leaves}
    targets = {}
    for i, a in enumerate(shorts):
        # a third of the shorts just above maintenance, the rest comfortably above
        r = float(rng.uniform(1.08, 1.25)) if i % 3 == 0 else float(rng.uniform(1.6, 3.5))
        targets[a.address] = r
        lf = leaves[a.address]
        gap = (r * lf.maintenance - lf.equity) / 10**world.dep.quote_decimals
        if gap > 0:
            world.fund(a, dcfg.quote_symbol, gap)
    att = attestor.attest(spot, vol)
    breached = [x.account for x in att.leaves if x.equity < x.maintenance]
    if breached:
        say(f"warning: {len(breached)} account(s) below maintenance after set-up")
    return Book(targets, len(att.leaves))

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
    DeployConfig,
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
    # the minimum short-leg headroom (5 % of notional), so that set-up can place some traders close to margin
    dcfg = DeployConfig(spot0=float(path.spot[0]), short_margin_fraction=0.05, auction_floor=cfg.auction_floor,
                        auction_tau=cfg.auction_tau)
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
                          for (role, kind), k, a in zip(roles, keys[4:], addr[4:])])
    archive = InputsArchive(archive_dir)
    keepers = InlineKeepers(w3, world.ch, keeper_keys, dep.threshold, world.owner, archive)
    return Deployed(world, keeper_keys, archive, Attestor(world, keepers, cfg.mc_paths))


def deployment_record(chain: LocalChain, world: World) -> dict:
    """The ``chain`` section of the record."""
    dep = world.dep
    return {"url": chain.url, "backend": chain.backend, "chain_id": dep.chain_id, "clearinghouse": dep.clearinghouse,
            "auction": dep.auction, "deploy_block": dep.block, "keepers": dep.keepers, "threshold": dep.threshold}


def find_series(world: World, strike_pct: float, days: float, is_call: bool) -> int:
    """The listed series nearest to ``strike_pct`` of the deployment spot and ``days`` to expiry."""
    dep, spot0 = world.dep, world.dcfg.spot0
    best = min(dep.series, key=lambda s: (abs(s["strike"] / spot0 - strike_pct)
                                          + abs((s["expiry"] - dep.timestamp) / 86400 - days) / 100
                                          + (0 if s["is_call"] == is_call else 10)))
    return int(best["id"])


@dataclass
class Book:
    """The book after set-up: each short trader's target margin ratio and how many accounts were attested."""

    target_ratios: dict[str, float]
    accounts: int


def setup_book(world: World, attestor: Attestor, path: MarketPath, seed: int,
               say: Callable[[str], None]) -> Book:
    """Deposits, genesis attestation, trades between short-vol and long-vol traders and with the maker,
    then top-ups that put every trader at its target margin ratio (a few just above maintenance)."""
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
    # short-vol books: puts (crash-exposed) and some straddles; sizes in contracts
    plans = []
    for i, a in enumerate(shorts):
        put = find_series(world, 0.9 if i % 3 else 0.8, 14 if i % 2 else 45, False)
        size = float(rng.choice([10, 15, 20, 30]))
        plans.append((a, put, size))
    reqs = {}
    for a, sid, size in plans:
        prem = world.model_price(sid, spot, vol) * size
        need = (prem + dcfg.short_margin_fraction * spot * size) * 1.05 + 50
        reqs[a.address] = need
        if a.role.endswith(("03", "07")):  # two shorts post WETH collateral: wrong-way risk in a crash
            world.fund(a, dcfg.underlying_symbol, need / spot / (1 - 0.15) * 1.02)
        else:
            world.fund(a, dcfg.quote_symbol, need)
    for a in longs:
        world.fund(a, dcfg.quote_symbol, 20_000)
    # risky collateral carries its own margin (IM > 0): top up so that equity - IM covers the trade's need
    att = attestor.attest(spot, vol)
    d = 10**world.dep.quote_decimals
    for a, _sid, _size in plans:
        lf = att.leaf_of(a.address)
        short = reqs[a.address] - (lf.equity - lf.initial) / d
        if short > 0:
            world.fund(a, dcfg.quote_symbol, short * 1.05 + 10)
    say("genesis attestation (prices and every account's margin)")
    att = attestor.attest(spot, vol)
    # round 1: each short sells its puts to a long trader or, when longs run out, to the maker
    say("trading: short-vol traders sell puts to long-vol traders and the market maker")
    nonce = 1
    counterparties = list(longs)
    maker_used = False
    pending = []
    for a, sid, size in plans:
        if counterparties:
            buyer = counterparties.pop(0)
        elif not maker_used:
            buyer, maker_used = maker, True
        else:
            pending.append((a, sid, size))
            continue
        price = world.model_price(sid, spot, vol)
        # the short trader is the maker of the quote (signs size < 0: sells), the buyer takes it
        world.trade(a, buyer, sid, -size, price, nonce, att)
        nonce += 1
    # further rounds: remaining shorts sell to the maker, one per fresh attestation
    for a, sid, size in pending:
        att = attestor.attest(spot, vol, post_prices=False)
        world.trade(a, maker, sid, -size, world.model_price(sid, spot, vol), nonce, att)
        nonce += 1
    att = attestor.attest(spot, vol, post_prices=False)
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

"""What shapes a scenario run: :class:`ScenarioConfig`, the output folder and the market path it drives."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from keeper.chain.deploy import DeployConfig
from keeper.data.paths import (
    CrashConfig,
    MarketPath,
    crash_path,
    read_price_bars,
    replay_path,
    shared_dir_default,
    resolve_price_path,
)


@dataclass
class ScenarioConfig:
    """Everything that shapes a run (see docs/scenario.md)."""

    out_dir: str | None = None
    rpc_url: str | None = None  # None: start a fresh local chain on a free port
    backend: str = "anvil"
    n_short_vol: int = 18
    n_long_vol: int = 12
    crash: CrashConfig = field(default_factory=lambda: CrashConfig(n_steps=16, crash_step=5, jump=-0.30,
                                                                   vol_spike=2.0, step_seconds=3600.0))
    replay: str | None = None
    replay_window_bars: int | None = 600
    shared_dir: str | None = None
    chain_step_seconds: int = 900
    auction_tick_seconds: int = 30
    #: ticks per crash step: enough for a round to pass its floor ((1 - floor) x tau = 540 s at the defaults), reset
    #: and be taken by the buyer of last resort inside the step (a step's ticks stop after ``idle_ticks`` quiet ones)
    auction_ticks: int = 40
    idle_ticks: int = 4  # stop ticking a step after this many ticks without any auction event
    tick_wait_s: float = 0.6
    #: the two liquidators' edges over their (hedging) valuation, as shares of the lot's value: the backtest's hedging
    #: bidders' (docs/risk-efficacy.md); an edge above the span the auction moves by (0.10 MM) never fills
    edges: tuple[float, ...] = (0.005, 0.01)
    #: the liquidator processes' model (issue 14's three cases): ``hedging`` (the bot's default valuation),
    #: ``conservative`` (aversion 0.15 x the unhedged lot's worst stress loss) or ``none`` (no bidder at all: the bots
    #: only start and reset auctions and call the buyer of last resort)
    liquidators: str = "hedging"
    #: the insurance fund's seed deposit at deployment [quote units] (``DeployConfig.fund_seed``)
    fund_seed: float = DeployConfig.fund_seed
    #: the auction's floor (cusp) and linear descent time, passed to the deployment (``DeployConfig``); the floor is
    #: the deployment's default, the chosen design (docs/auctions.md)
    auction_floor: float = DeployConfig.auction_floor
    auction_tau: int = 600
    manipulation: bool = True
    manipulation_step: int | None = None
    mc_paths: int = 1000
    seed: int = 11
    live: bool = True
    keep_chain: bool = False
    keepers: str = "process"  # "process": three `keeper run` processes (2-of-3); "inline": in this process
    keeper_timeout_s: float = 40.0
    #: whole units of each listed collateral sellable per day, for the haircut recommendation of the report
    #: (keeper/quant/haircuts.py; market depth is not on chain)
    collateral_depth: dict[str, float] = field(default_factory=lambda: {"WETH": 20_000.0, "WBTC": 1_000.0})
    #: the second underlying (BTC, collateral WBTC): its spot at the path's start, and how it follows the path
    #: (:func:`btc_of`): ``BTC = btc_spot0 * (ETH / ETH_0) ** btc_beta``, its ATM vol ``btc_vol_ratio`` x ETH's
    btc_spot0: float = 40_000.0
    btc_beta: float = 0.8
    btc_vol_ratio: float = 0.8


def btc_of(eth_spot, eth_vol, eth_spot0: float, btc_spot0: float, beta: float, vol_ratio: float):
    """The second underlying's spot and ATM vol at an ETH spot and vol (scalars or arrays): BTC moves with ETH at
    ``beta`` in log terms (a -30 % ETH jump is a -24.8 % BTC jump at beta 0.8), its vol is ``vol_ratio`` x ETH's
    (BTC a little calmer, as in the offline study, keeper/scenario/netting.py). Deterministic, so that a replayed
    ETH crash drives both underlyings and ``Scenario.attest(spot, vol)`` stays a function of the ETH market."""
    return btc_spot0 * (eth_spot / eth_spot0) ** beta, vol_ratio * eth_vol


def market_files(out: Path, symbol: str, first: bool) -> tuple[Path, Path]:
    """``(market file, spot file)`` of one underlying: ``market.json``/``spot.json`` for the first (what the
    liquidators read too), ``market_<symbol>.json``/``spot_<symbol>.json`` for another."""
    if first:
        return out / "market.json", out / "spot.json"
    return out / f"market_{symbol}.json", out / f"spot_{symbol}.json"


def default_out_dir() -> Path:
    return Path("out") / f"scenario-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def build_path(cfg: ScenarioConfig) -> MarketPath:
    """The market path: a replayed real crash when ``cfg.replay`` names one, else the synthetic crash."""
    if cfg.replay:
        shared = Path(cfg.shared_dir) if cfg.shared_dir else shared_dir_default()
        f = resolve_price_path(cfg.replay, shared)
        return replay_path(read_price_bars(f), cfg.crash.n_steps, spot0=cfg.crash.spot0,
                           base_vol=cfg.crash.base_vol, window_bars=cfg.replay_window_bars,
                           step_seconds=cfg.crash.step_seconds)
    return crash_path(cfg.crash)

"""Offline replay of a population through a price path under several liquidation policies (no chain).

Pure (numpy + the project's quant engine; no file or network I/O). Policies, on the same path, quotes and books:

* auction policies ``<design>:<liquidator>``: keepers fit the SVI surface (:func:`keeper.quant.surface.fit_surface`)
  to the quotes, mark with the hybrid mark (:func:`keeper.quant.marks.hybrid_marks`), margin with the risk engine
  (:func:`keeper.quant.risk.engine.compute_account_risk`, ES/grid); a breached account is sold in partial Dutch
  auctions priced by :mod:`keeper.quant.auction_math`. ``design`` is ``today`` (the deployed contracts: span ``E``
  solvent / ``MM`` insolvent, floor 0.4, endless resets) or ``backstop`` (the chosen design, :data:`CHOSEN`:
  risk-sized span ``kappa MM``, floor, and the insurance fund's account as buyer of last resort after a stated
  number of resets). ``liquidator`` is ``conservative`` (two bidders valuing with
  :func:`keeper.bots.liquidator.valuation.value_portfolio`), ``hedging`` (two bidders valuing with
  :func:`keeper.bots.liquidator.hedging.value_hedged`) or ``none`` (nobody bids); both bidders decide with
  :class:`keeper.bots.liquidator.strategies.EdgeStrategy`;
* ``mark_to_market``: last-trade marks, the same margin engine (same vols, so the same MM for the same book), and a
  breached account sells the share :func:`keeper.quant.auction_math.allowed_fraction` allows at market (bid for longs,
  ask for shorts, with impact beyond top-of-book depth);
* ``static``: MM = ``static_rate`` x option notional + the last-trade mark of short options, last-trade equity,
  and a breached account is liquidated in full at market.

Cadence (docs/risk-efficacy.md): equity and breaches at every bar; the full margin run every ``cadence_s`` of path
time (every bar where bars are coarser); the surface is refitted at those runs only when the standing book was
requoted since the last fit. Every policy's book of account ``a`` is the population's book ``a`` scaled by ``lambda_a``
(every sale is a pro-rata share of positions and collateral), and the engine's MM is exactly
``lambda (B + A) (1 + t lambda g / (lambda g + G))`` with ``B + A`` (ES/grid base plus add-ons) and the gross cash
gamma ``g`` of the unscaled book (docs/risk.md), so one engine run on the population's rows serves every policy, and
MM after a sale between runs is that formula at the new ``lambda``, not an approximation. Auction time moves in
``tick_s`` ticks inside each bar (spot and surface constant within a bar); an auction started at a bar runs its
first ticks in that bar.
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np
import scipy.sparse as sp

from keeper.backtest.market import Market
from keeper.backtest.population import Population
from keeper.bots.liquidator.hedging import HedgingAppetite, value_hedged
from keeper.bots.liquidator.strategies import EdgeStrategy, LotQuote
from keeper.bots.liquidator.valuation import (
    LotValuation,
    MarketView,
    Portfolio,
    RiskAppetite,
    SeriesSpec,
    gas_cost_quote,
    make_quote,
    value_portfolio,
)
from keeper.errors import SurfaceFitError
from keeper.quant import auction_math as am
from keeper.quant.chains import OptionChain
from keeper.quant.marks import hybrid_marks
from keeper.quant.pricing import black76_greeks, black76_price
from keeper.quant.risk.engine import (
    CALL,
    PUT,
    CollateralTable,
    RiskInputs,
    RiskParams,
    SeriesTable,
    compute_account_risk,
)
from keeper.quant.risk.scenarios import grid_scenarios, monte_carlo_scenarios
from keeper.quant.surface import SurfaceConfig, fit_surface
from keeper.units import SECONDS_PER_YEAR, WAD

DEC = 6
UNIT = 10**DEC


@dataclass(frozen=True)
class AuctionDesign:
    """Auction rules of one design. ``span_mm``: the price of the whole book moves by at most ``span_mm x MM``
    (:func:`keeper.quant.auction_math.span_for_risk`); ``None`` keeps today's span (``E`` solvent, ``MM``
    insolvent). ``cusp``: floor of the curve factor (reset below it); ``tau``: linear descent; ``tail``: reset after
    this many seconds. ``last_resort_after``: after this many resets the fund's account takes what is left at the
    fresh attested value at the next floor; ``None``: resets forever (today). ``top_at_model_value``: the price starts
    at the book's attested model value (collateral at the attested spot, not haircut: the haircut is a margin charge,
    not part of what the book is worth to a buyer) instead of its equity; the allowed fraction is still computed
    from the equity."""

    name: str
    span_mm: float | None = None
    cusp: float = 0.4
    tau: int = 600
    tail: int = 1200
    last_resort_after: int | None = None
    top_at_model_value: bool = False


#: the deployed contracts (docs/auctions.md)
TODAY = AuctionDesign("today", None, 0.4, 600, 1200, None, False)
#: the design chosen from the backtest (docs/risk-efficacy.md, "Chosen design")
CHOSEN = AuctionDesign("backstop", 0.10, 0.1, 600, 1200, 1, True)
DESIGNS = {"today": TODAY, "backstop": CHOSEN}
LIQUIDATORS = ("hedging", "conservative", "none")

#: default policies: the chosen design with each liquidator model and none, today's design with each liquidator
#: model, and the two market baselines
POLICIES = ("backstop:hedging", "backstop:conservative", "backstop:none", "today:hedging", "today:conservative",
            "mark_to_market", "static")


def parse_policy(name: str) -> tuple[str, AuctionDesign | None, str | None]:
    """``(kind, design, liquidator)`` of a policy name: ``mark_to_market``/``static`` (market kinds) or
    ``<design>:<liquidator>`` with a design of :data:`DESIGNS` and a liquidator of :data:`LIQUIDATORS`."""
    if name in ("mark_to_market", "static"):
        return name, None, None
    design, _, liq = name.partition(":")
    if design not in DESIGNS or liq not in LIQUIDATORS:
        raise ValueError(f"unknown policy {name!r} (mark_to_market, static or <{'|'.join(DESIGNS)}>:"
                         f"<{'|'.join(LIQUIDATORS)}>)")
    return "auction", DESIGNS[design], liq


@dataclass(frozen=True)
class BacktestConfig:
    """Knobs of one replay (defaults: the deployment's auction configuration, docs/auctions.md)."""

    cadence_s: float = 900.0
    n_scenarios: int = 2000
    grid_range: float = 0.15
    haircut: float = 0.15
    penalty: float = 0.05
    buffer: float = 0.10
    chip: float = 0.001
    tick_s: int = 30
    edges: tuple = (0.02, 0.025)  # conservative liquidators
    aversion: float = 0.25
    liquidator_haircut: float = 0.10
    hedging_edges: tuple = (0.005, 0.01)  # hedging liquidators
    hedging: HedgingAppetite = HedgingAppetite()
    static_rate: float = 0.10
    fund_frac: float = 0.05  # insurance fund = this share of the population's total MM at the first bar
    impact: float = 0.5  # extra half spreads per multiple of top-of-book depth taken
    seed: int = 0
    revalue_move: float = 0.005  # liquidators revalue a lot when spot moved 0.5 % (or the surface changed)
    lor_hedge_cost: float = 0.0005  # the fund's account pays this share of spot on every delta-hedge trade
    fit_xatol: float = 1e-3  # SVI outer search tolerance of the backtest's fits (keepers: 1e-6; see docs)
    fit_frtol: float = 1e-5
    drain_s: float = 1800.0  # chain time simulated after the last bar (auctions still running are then counted)
    fresh_breach: bool = True  # a book newly breached between full runs is re-run at the bar's spot before a sale
    healthy_tolerance: float = 0.01  # the keepers' mark tolerance of the "healthy" count (share of the fair MM)
    margin_move: float | None = 0.02  # a full margin run also at a bar whose spot moved 2 % since the last run


@dataclass
class Fill:
    policy: str
    bar: int
    account: int
    fraction: float  # of the book on offer (original book of the auction / the whole book at market)
    amount: float  # paid by the buyer (negative: paid to the buyer)
    fair_value: float  # fair value of what was bought
    transfer: float  # fair value bought - price paid (what the buyer received counts as negative price)
    penalty: float
    mm_bought: float
    insolvent: bool
    deficit: float  # attested deficit of the share bought (insolvent books), else 0
    fund_paid: float
    bad_debt: float
    healthy: bool
    full: bool
    attested_value: float = 0.0  # attested (keepers') value of the share bought
    xfer_attested: float = 0.0  # attested value bought - price paid: transfer beyond the attested value
    buyer: str = "liquidator"  # liquidator | fund (buyer of last resort) | market
    wait_s: float = 0.0  # time the account had been below MM without a fill when this fill came
    # the "healthy" yardstick and the keepers' view of the book on offer at the fill's bar (before the sale):
    fair_equity: float = 0.0  # reference prices, haircut collateral, escrow
    fair_mm: float = 0.0  # the engine's MM with the reference vols at the bar's spot
    keeper_equity: float = 0.0  # the policy's marks (hybrid / last trade), haircut collateral, escrow
    keeper_mm: float = 0.0  # the MM the policy held for the book at the bar

    def to_json(self) -> dict:
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in self.__dict__.items()}


@dataclass
class FundAccount:
    """The insurance fund's own clearinghouse account (buyer of last resort): positions, underlying collateral,
    cash (its purchases and sales; the fund's free balance stands behind it) and its delta hedge (in the
    underlying, marked to spot every bar)."""

    pos: np.ndarray
    coll: float = 0.0
    cash: float = 0.0
    hedge: float = 0.0
    spot: float = 0.0
    mm: float = 0.0
    received: float = 0.0  # payouts the fund made to this account (insolvent books)
    taken: int = 0
    peak_gross: float = 0.0
    worst_headroom: float = math.inf  # min over margin runs of (fund balance + account equity - its MM)
    hedge_costs: float = 0.0


@dataclass
class PolicyState:
    name: str
    kind: str
    design: AuctionDesign | None
    liquidator: str | None
    pos: np.ndarray
    cash: np.ndarray
    coll: np.ndarray
    mm: np.ndarray
    scale: np.ndarray  # lambda: the book is the population's book times this
    fund: float
    fund0: float
    lor: FundAccount
    since: np.ndarray  # time the account was first seen below MM without a fill since (NaN: not below)
    deficit: float = 0.0
    fills: list = field(default_factory=list)
    auctions: dict = field(default_factory=dict)
    fund_series: list = field(default_factory=list)
    liq_series: list = field(default_factory=list)
    breach_minutes: float = 0.0
    max_wait_s: float = 0.0
    penalties_to_fund: float = 0.0
    fund_payouts: float = 0.0
    repaid: float = 0.0
    rewards: float = 0.0
    resets: int = 0
    auctions_started: int = 0
    liquidated_part: set = field(default_factory=set)
    liquidated_full: set = field(default_factory=set)


def _chain(market: Market, i: int) -> OptionChain:
    """The standing book at bar ``i`` as an option chain (quoted at its requote bar, against that bar's spot)."""
    s, p = market.series, market.path
    n = s.n
    q = int(market.quote_bar[i])
    t = float(p.times[q])
    S = float(p.close[q])
    nan = np.full(n, np.nan)
    return OptionChain(underlying=p.underlying, asof=t, spot=S, quote_ts=np.full(n, t), expiry_ts=s.expiry_ts,
                       strike=s.strike, is_call=s.is_call, bid=market.bid[i], ask=market.ask[i],
                       bid_size=market.bid_size[i], ask_size=market.ask_size[i], mark=nan, forward=np.full(n, S),
                       index_price=np.full(n, S), open_interest=np.zeros(n), bid_iv=nan, ask_iv=nan, mark_iv=nan)


def margin_points(times: np.ndarray, cadence_s: float, close: np.ndarray | None = None,
                  move: float | None = None) -> np.ndarray:
    """Bars where the full margin runs: the first bar, then the first bar at or after each ``cadence_s`` mark, and
    (with ``close`` and ``move``) every bar whose close moved more than ``move`` (relative) from the close of the
    last run before it (a crash bar between two cadence marks gets its run at once)."""
    rel = times - times[0]
    slot = np.floor(rel / cadence_s + 1e-9).astype(np.int64)
    on = np.concatenate([[True], slot[1:] != slot[:-1]])
    if close is None or move is None:
        return np.flatnonzero(on)
    out = []
    ref = float(close[0])
    for i in range(close.size):
        if on[i] or abs(float(close[i]) / ref - 1.0) > move:
            out.append(i)
            ref = float(close[i])
    return np.asarray(out, dtype=np.int64)


def scaled_mm(base: np.ndarray, gross_gamma: np.ndarray, lam: np.ndarray, params: RiskParams = RiskParams()):
    """The engine's MM of a book scaled by ``lam`` from the unscaled book's ``base`` (MM / gamma multiplier: ES or
    grid loss plus add-ons, all homogeneous of degree 1) and gross cash gamma ``g``:
    ``lam base (1 + t lam g / (lam g + G))`` (module docstring)."""
    lg = lam * gross_gamma
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(lg > 0, lg / (lg + params.gamma_scale), 0.0)
    return lam * base * (1.0 + params.gamma_tightening * frac)


def split_mm(mm: np.ndarray, multiplier: np.ndarray, params: RiskParams = RiskParams()):
    """``(base, gross cash gamma)`` of an engine run (inverse of :func:`scaled_mm` at ``lam = 1``)."""
    x = np.asarray(multiplier, float) - 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(x > 0, params.gamma_scale * x / np.maximum(params.gamma_tightening - x, 1e-300), 0.0)
    return np.asarray(mm, float) / np.asarray(multiplier, float), g


def conservative_value(portfolio: Portfolio, series, market: MarketView, appetite: RiskAppetite,
                       quote_decimals: int):
    """:func:`keeper.bots.liquidator.valuation.value_portfolio` for a one-underlying lot, every stress point in one
    vectorised pricing call instead of one call per point (the same formula: sticky-moneyness vols, spot and vol
    shocks together, worst loss, ``aversion x`` it; equal to the unit, ``tests/backtest/test_liquidator_models.py``).
    Lots on several underlyings go to ``value_portfolio`` itself."""
    ids = sorted(portfolio.positions)
    unders = {series[j].underlying for j in ids} | {k for k in portfolio.collateral
                                                    if k.lower() != market.quote_asset.lower()}
    if len(unders) > 1 or not ids:
        return value_portfolio(portfolio, series, market, appetite, quote_decimals)
    scale = 10**quote_decimals
    u = next(iter(unders))
    S = market.spot(u)
    size = np.array([float(portfolio.positions[j]) for j in ids])
    strike = np.array([series[j].strike for j in ids])
    is_call = np.array([series[j].is_call for j in ids], dtype=bool)
    t = np.maximum(np.array([float(series[j].expiry_ts) for j in ids]) - market.now, 0.0) / SECONDS_PER_YEAR
    ss = np.array([0.0] + [float(x) for x in appetite.spot_shocks])
    vs = np.array([0.0] + [float(x) for x in appetite.vol_shocks])
    fwd = S * (1.0 + ss)  # (n_s,)
    kk = strike[None, :] * S / fwd[:, None]  # sticky moneyness: K relative to the shocked forward
    tt = np.broadcast_to(np.maximum(t, 1e-12), kk.shape)
    vol0 = np.asarray(market.vol(kk, tt, np.full(kk.shape, S)), float)  # (n_s, n_pos)
    vol = vol0[:, None, :] * (1.0 + vs)[None, :, None]
    vol = np.where(np.isfinite(vol) & (vol > 0), vol, np.nan)
    if np.isnan(vol).any():
        raise ValueError("vol surface returned no usable vol for some series")
    px = black76_price(fwd[:, None, None], strike[None, None, :], t[None, None, :], vol, is_call[None, None, :])
    coll_amt = sum(float(a) for k, a in portfolio.collateral.items() if k.lower() != market.quote_asset.lower())
    hc = appetite.haircut(u, market.quote_asset)
    vals = np.sum(size[None, None, :] * px, axis=2)  # (n_s, n_v)
    colls = coll_amt * S * (1.0 + ss) * (1.0 - hc)
    quote_cash = sum(float(a) for k, a in portfolio.collateral.items() if k.lower() == market.quote_asset.lower())
    pos = float(vals[0, 0])
    coll = float(coll_amt * S * (1.0 - hc)) + quote_cash
    base = pos + coll
    worst = 0.0
    for a in range(1, ss.size):
        for b in range(1, vs.size):
            worst = max(worst, base - (float(vals[a, b]) + float(colls[a]) + quote_cash))
    pos_i = math.floor(pos * scale)
    coll_i = math.floor(coll * scale)
    stress = math.ceil(worst * scale)
    return LotValuation(pos_i + coll_i + int(portfolio.cash), pos_i, coll_i, int(portfolio.cash), stress,
                        math.ceil(appetite.aversion * stress))


def _fit_job(chain: OptionChain, config: SurfaceConfig):
    """One keepers' surface fit (module level: run in a helper process by :meth:`Replay.run` with ``fit_workers``)."""
    return fit_surface(chain, config)


class Replay:
    """One path, one population, several policies (see module docstring). ``run()`` returns the result dict.

    ``fit_workers`` > 0: the keepers' surface fits, which depend on the market alone (the standing book at the fit
    bars of :meth:`fit_plan`), are computed ahead in that many helper processes while the replay runs, and taken in
    order; each is the same ``fit_surface`` call on the same chain, so the results are the same as fitting in line.
    """

    def __init__(self, market: Market, pop: Population, cfg: BacktestConfig = BacktestConfig(),
                 policies=POLICIES, progress=None, fit_workers: int = 0):
        self.m, self.cfg, self.policies, self.progress = market, cfg, tuple(policies), progress
        self.fit_workers = fit_workers
        self._fits_ahead = None  # {bar: future of its fit}
        for p in self.policies:
            parse_policy(p)
        s = market.series
        self.n_series = s.n
        self.series_table_kind = np.where(s.is_call, CALL, PUT)
        self.specs = {j: SeriesSpec(j, "UND", float(s.strike[j]), int(s.expiry_ts[j]), bool(s.is_call[j]))
                      for j in range(s.n)}
        self.pop = pop
        self.gross0 = np.abs(pop.positions).sum(axis=1) + np.abs(pop.coll)
        self.margin_bars = margin_points(market.path.times, cfg.cadence_s, market.path.close, cfg.margin_move)
        self.grid = grid_scenarios(cfg.grid_range, n_underlyings=1)
        self.strategies = {"conservative": [EdgeStrategy(e) for e in cfg.edges],
                           "hedging": [EdgeStrategy(e) for e in cfg.hedging_edges], "none": []}
        self.appetite = RiskAppetite(aversion=cfg.aversion, haircuts={"UND": cfg.liquidator_haircut})
        self.surface_config = SurfaceConfig(outer_xatol=cfg.fit_xatol, outer_frtol=cfg.fit_frtol)
        self.surface = None
        self.surface_fits = 0
        self._fitted_quote_bar = -1
        self._val_cache: dict = {}
        self._vol_tab = None
        self.surface_failures = 0
        self.risk_runs = 0
        self.prev_market = None
        self.curves = {d.name: am.Curve(am.CurveKind.LINEAR, tau=d.tau) for d in DESIGNS.values()}
        # seconds after an auction's start from which it resets (floor reached: the curve factor is below the cusp,
        # exactly as the contract compares it, or the tail passed); the factor never rises, so this is a threshold
        self.reset_s = {d.name: next(el for el in range(d.tail + 2) if el > d.tail or
                                     am.curve_factor(self.curves[d.name], el) < Fraction(str(d.cusp)))
                        for d in DESIGNS.values()}
        self._mm_split = None  # (base, gross gamma) of the population's rows at the keepers' vols, last run
        self._pending_healthy = []  # fills of this bar waiting for the fair-vol MM of their books
        self._mc = None  # (bar, Monte Carlo scenario set of that bar)
        self.fresh_runs = 0  # engine runs restricted to a few rows at a bar's spot (breach checks, yardstick)
        self._delta = None
        self._t_override = None  # chain time of the drain after the last bar

    # ------------------------------------------------------------------ engine calls
    def _vols(self, i: int, surface) -> np.ndarray:
        T = np.maximum(self.m.expiry_years(i), 1e-9)
        if surface is None:
            return self.m.fair_vol[i]
        v = surface.implied_vol(self.m.series.strike, T, self.m.path.close[i])
        return np.where(np.isfinite(v) & (v > 0), v, self.m.fair_vol[i] if self.surface is None else np.nan)

    def risk_full(self, i: int, pos: np.ndarray, coll: np.ndarray, vols: np.ndarray, series=None):
        """The risk engine's :class:`AccountRisk` of the rows of ``pos`` at bar ``i`` with ``vols``. ``series``:
        indices of the listed series the columns of ``pos`` (and ``vols``) are, default all; an account's figures
        depend only on the series it holds and its collateral, so a run on the series some rows hold gives those
        rows' figures (``tests/backtest/test_fresh_margin.py``)."""
        cfg, m = self.cfg, self.m
        S = float(m.path.close[i])
        T = np.maximum(m.expiry_years(i), 0.0)
        j = np.arange(self.n_series) if series is None else np.asarray(series)
        k = j.size
        st = SeriesTable(np.zeros(k, dtype=np.int64), m.series.strike[j], T[j], self.series_table_kind[j],
                         np.ones(k))
        ca = CollateralTable(np.array([1.0, S]), np.array([0.0, cfg.haircut]), np.array([-1, 0]))
        n = pos.shape[0]
        inputs = RiskInputs(st, sp.csr_matrix(pos), np.column_stack([np.zeros(n), coll]), ca, np.array([S]),
                            vols, m.fair[i][j], RiskParams())
        if self._mc is None or self._mc[0] != i:  # seeded per bar: every run at one bar draws the same set
            self._mc = (i, monte_carlo_scenarios(cfg.seed * 1_000_003 + i, cfg.n_scenarios, 1))
        self.risk_runs += 1
        return compute_account_risk(inputs, self._mc[1], self.grid, hashes=False)

    def row_split(self, i: int, rows: np.ndarray, vols: np.ndarray):
        """``(base, gross cash gamma)`` (:func:`split_mm`) of the population's ``rows`` at bar ``i``'s spot with the
        per-series ``vols``, from one engine run restricted to those rows and the series they hold."""
        rows = np.asarray(rows, dtype=np.int64)
        pos = self.pop.positions[rows]
        used = np.flatnonzero(np.any(pos != 0, axis=0))
        if used.size == 0:
            used = np.array([0])
        self.fresh_runs += 1
        r = self.risk_full(i, pos[:, used], self.pop.coll[rows], np.asarray(vols)[used], series=used)
        return split_mm(r.maintenance_margin, r.gamma_multiplier)

    def risk(self, i: int, pos: np.ndarray, coll: np.ndarray, vols: np.ndarray):
        """MM and IM per row of ``pos`` from the risk engine at bar ``i`` with ``vols`` (no hashes: nothing signed)."""
        r = self.risk_full(i, pos, coll, vols)
        return np.asarray(r.maintenance_margin), np.asarray(r.initial_margin)

    def refit(self, i: int) -> None:
        """Refit the keepers' surface to the standing book, only when it was requoted since the last fit."""
        q = int(self.m.quote_bar[i])
        if q == self._fitted_quote_bar:
            return
        self._fitted_quote_bar = q
        try:
            if self._fits_ahead is not None and i in self._fits_ahead:
                self.surface = self._fits_ahead.pop(i).result()
            else:
                self.surface = fit_surface(_chain(self.m, i), self.surface_config)
            self.surface_fits += 1
        except (SurfaceFitError, ValueError, FloatingPointError):
            self.surface_failures += 1  # the keeper keeps its last good surface

    def fit_plan(self) -> list[int]:
        """The bars where :meth:`refit` fits, in order: margin bars whose standing book was requoted since the last
        fit (a failed fit is not retried on the same book, so this depends on the market alone)."""
        out, last = [], self._fitted_quote_bar
        for i in self.margin_bars.tolist():
            q = int(self.m.quote_bar[i])
            if q != last:
                out.append(int(i))
                last = q
        return out

    def model_prices(self, i: int):
        T = np.maximum(self.m.expiry_years(i), 1e-9)
        vols = self._vols(i, self.surface)
        vols = np.where(np.isfinite(vols), vols, self.m.fair_vol[i])
        g = black76_greeks(self.m.path.close[i], self.m.series.strike, T, vols, self.m.series.is_call)
        self._delta = np.asarray(g.delta, float)
        return np.asarray(g.price, float), np.asarray(g.vega, float), vols

    # ------------------------------------------------------------------ helpers
    def equity(self, st: PolicyState, marks: np.ndarray, S: float, escrow: np.ndarray | None = None) -> np.ndarray:
        e = st.cash + st.coll * S * (1.0 - self.cfg.haircut) + st.pos @ marks
        return e if escrow is None else e + escrow

    def fair_value(self, pos, cash, coll, i) -> float:
        return float(cash + coll * self.m.path.close[i] + pos @ self.m.fair[i])

    def market_price(self, pos, cash, coll, i) -> float:
        """What the market pays for a whole book now: longs at the bid, shorts at the ask, impact beyond depth,
        collateral at spot less the same impact rate (0.5 % by default)."""
        m, k = self.m, self.cfg.impact
        bid = np.nan_to_num(m.bid[i], nan=0.0)
        ask = m.ask[i]
        half = 0.5 * (ask - np.where(np.isnan(m.bid[i]), 0.0, m.bid[i]))
        excess_b = np.maximum(np.abs(pos) / np.maximum(m.bid_size[i], 1e-9) - 1.0, 0.0)
        excess_a = np.maximum(np.abs(pos) / np.maximum(m.ask_size[i], 1e-9) - 1.0, 0.0)
        sell = np.maximum(bid - k * half * excess_b, 0.0)
        buy = ask + k * half * excess_a
        px = np.where(pos > 0, sell, buy)
        return float(cash + coll * m.path.close[i] * 0.995 + pos @ px)

    def _set_scale(self, st: PolicyState, a: int, keep: float) -> None:
        st.scale[a] *= keep
        ms = self._mm_split
        st.mm[a] = float(scaled_mm(ms[0][a:a + 1], ms[1][a:a + 1], st.scale[a:a + 1])[0]) if keep > 0 else 0.0

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        if self.fit_workers <= 0:
            return self._run()
        with ProcessPoolExecutor(self.fit_workers) as ex:
            self._fits_ahead = {i: ex.submit(_fit_job, _chain(self.m, i), self.surface_config)
                                for i in self.fit_plan()}
            try:
                return self._run()
            finally:
                for f in self._fits_ahead.values():
                    f.cancel()
                self._fits_ahead = None

    def _run(self) -> dict:
        m, cfg, pop = self.m, self.cfg, self.pop
        n = pop.n
        nb = len(m.path)
        self.refit(0)
        _, _, vols0 = self.model_prices(0)
        r0 = self.risk_full(0, pop.positions, pop.coll, vols0)
        self._mm_split = split_mm(r0.maintenance_margin, r0.gamma_multiplier)
        mm0 = np.asarray(r0.maintenance_margin, float)
        fund0 = cfg.fund_frac * float(mm0.sum())
        states = {}
        for p in self.policies:
            kind, design, liq = parse_policy(p)
            states[p] = PolicyState(p, kind, design, liq, pop.positions.copy(), pop.cash.copy(), pop.coll.copy(),
                                    mm0.copy(), np.ones(n), fund0, fund0, FundAccount(np.zeros(self.n_series)),
                                    np.full(n, np.nan))
        margin_set = set(self.margin_bars.tolist())
        self._states = states
        last_margin = 0
        for i in range(nb):
            if i in margin_set:
                last_margin = i
                if i > 0:
                    self.refit(i)
                model, vega, vols = self.model_prices(i)
                if i > 0:
                    self._run_margins(i, states, vols, model)
            else:
                model, vega, vols = self.model_prices(i)
            age = m.path.times[i] - m.path.times[m.quote_bar[i]]
            hyb = hybrid_marks(m.bid[i], m.ask[i], m.bid_size[i], m.ask_size[i], model, self.prev_market,
                               model_vega=vega, quote_age=age)
            self.prev_market = hyb.market
            self._cur = (i, last_margin, vols)
            self._marks = hyb.mark
            if cfg.fresh_breach and last_margin != i:
                self._confirm_breaches(i, states, vols, hyb.mark)
            for st in states.values():
                if st.kind == "auction":
                    self._work_fund_account(st, i)
                    filled, breached = self._step_auction(st, i, hyb.mark)
                else:
                    filled, breached = self._step_market(st, i, m.last_trade[i])
                self._track_waits(st, i, filled, breached)
                st.fund_series.append(st.fund + self._lor_equity(st, i, hyb.mark))
                st.liq_series.append(len(st.fills))
            self._resolve_healthy(i)
            if self.progress is not None:
                self.progress(1)
        self._drain(states, hyb.mark)
        return self._result(states)

    def _drain(self, states: dict, marks: np.ndarray) -> None:
        """Chain time goes on for ``drain_s`` after the path's last bar at its last prices (steps of one bar, at
        least 5 minutes): auctions keep running, bids and the buyer of last resort keep acting, so "an auction
        still running 30 minutes after the last bar" is measured, not assumed. Waits below MM are counted on."""
        i = len(self.m.path) - 1
        step = max(self.m.path.bar_seconds, 300.0)
        t_last = float(self.m.path.times[i])
        for k in range(1, int(self.cfg.drain_s // step) + 1):
            self._t_override = t_last + k * step
            if self.cfg.fresh_breach:
                self._confirm_breaches(i, states, self._cur[2], marks, span_s=step)
            for st in states.values():
                if st.kind == "auction":
                    self._work_fund_account(st, i)
                    filled, breached = self._step_auction(st, i, marks, span_s=step)
                    self._track_waits(st, i, filled, breached, span_s=step)
            self._resolve_healthy(i)
        self._t_override = None

    def _confirm_breaches(self, i: int, states: dict, vols: np.ndarray, marks: np.ndarray,
                          span_s: float | None = None) -> None:
        """Between full margin runs the keepers' MM of a book is the last run's, at that run's spot. A book that
        this held MM shows newly breached (no auction running yet; for mark-to-market: any breach) is re-run at
        this bar's spot before anything is sold: one engine run on those population rows and the series they hold
        (every policy's book of row ``a`` is that row scaled, so one run serves every policy), and the row's MM
        becomes that run's in every engine-margined policy until the next full run. Without it a book whose MM
        fell with a rising spot (or whose fresh MM is lower for any reason) is sold on a stale MM. The same for a
        book whose auction resets in this bar: the reset (and the buyer of last resort's take) needs a fresh breach
        record, so it is priced and sized on the MM at this bar's spot, and a book that record shows healthy is
        cured instead."""
        S = float(self.m.path.close[i])
        t0 = float(self.m.path.times[i]) if self._t_override is None else self._t_override
        last_tick = t0 + (max(1, int((span_s or self.m.path.bar_seconds) // self.cfg.tick_s)) - 1) * self.cfg.tick_s
        cand = np.zeros(self.pop.n, dtype=bool)
        for st in states.values():
            if st.kind == "static":
                continue
            if st.kind == "auction":
                escrow = np.zeros(st.cash.size)
                for a, au in st.auctions.items():
                    escrow[a] = au["C"] / UNIT
                eq = self.equity(st, marks, S, escrow)
                idle = np.ones(st.cash.size, dtype=bool)
                reset_s = self.reset_s[st.design.name]
                for a, au in st.auctions.items():  # running: only a reset in this bar takes a fresh record
                    idle[a] = int(last_tick - au["start"]) >= reset_s
            else:
                eq = self.equity(st, self.m.last_trade[i], S)
                idle = True
            has_book = (st.scale > 0) & ((np.abs(st.pos).sum(axis=1) > 0) | (st.coll != 0))
            cand |= (eq < st.mm) & has_book & idle
        rows = np.flatnonzero(cand)
        if rows.size == 0:
            return
        base, g = self.row_split(i, rows, vols)
        self._mm_split[0][rows] = base
        self._mm_split[1][rows] = g
        for st in states.values():
            if st.kind != "static":
                st.mm[rows] = scaled_mm(base, g, st.scale[rows])

    def _book_view(self, st: PolicyState, a: int, i: int, escrow: float, keeper_marks) -> dict:
        """The book on offer at a fill, before the sale, for the "healthy" yardstick (evaluated once per bar for
        every fill of the bar, :meth:`_resolve_healthy`): fair equity, the keepers' equity and held MM, lambda."""
        S = float(self.m.path.close[i])
        base = st.cash[a] + escrow + st.coll[a] * S * (1 - self.cfg.haircut)
        return {"fair_equity": float(base + st.pos[a] @ self.m.fair[i]),
                "keeper_equity": float(base + st.pos[a] @ keeper_marks), "keeper_mm": float(st.mm[a]),
                "lam": float(st.scale[a])}

    def _defer_healthy(self, fill: Fill, a: int, view: dict) -> None:
        fill.fair_equity, fill.keeper_equity, fill.keeper_mm = (view["fair_equity"], view["keeper_equity"],
                                                                view["keeper_mm"])
        self._pending_healthy.append((fill, a, view["lam"]))

    def _resolve_healthy(self, i: int) -> None:
        """The yardstick of "healthy" for this bar's fills: the engine's MM of each book on offer with the
        reference vols **at this bar's spot** (one engine run on the rows filled this bar, any policy, and the
        series they hold; the book is the row scaled by the policy's lambda before the sale); healthy iff the fair
        equity is at least that MM."""
        if not self._pending_healthy:
            return
        rows = np.unique([a for _, a, _ in self._pending_healthy])
        base, g = self.row_split(i, rows, self.m.fair_vol[i])
        at = {int(a): k for k, a in enumerate(rows)}
        for fill, a, lam in self._pending_healthy:
            k = at[int(a)]
            fill.fair_mm = float(scaled_mm(base[k:k + 1], g[k:k + 1], np.array([lam]))[0])
            fill.healthy = bool(fill.fair_equity >= fill.fair_mm)
        self._pending_healthy = []

    def _run_margins(self, i: int, states: dict, vols: np.ndarray, marks: np.ndarray) -> None:
        """One engine run on the population's rows (every policy's books are scaled copies of them) plus the fund
        accounts' books; each policy's MM is :func:`scaled_mm` of its own scales."""
        lor = [st for st in states.values() if st.kind == "auction" and np.any(st.lor.pos != 0)]
        rows = np.vstack([self.pop.positions] + [st.lor.pos[None, :] for st in lor])
        coll = np.concatenate([self.pop.coll] + [np.array([st.lor.coll]) for st in lor])
        r = self.risk_full(i, rows, coll, vols)
        n = self.pop.n
        base, g = split_mm(r.maintenance_margin[:n], r.gamma_multiplier[:n])
        self._mm_split = (base, g)
        S = float(self.m.path.close[i])
        for st in states.values():
            if st.kind != "static":
                st.mm = scaled_mm(base, g, st.scale)
        for k, st in enumerate(lor):
            st.lor.mm = float(r.maintenance_margin[n + k])
            eq = st.lor.cash + st.lor.coll * S * (1 - self.cfg.haircut) + st.lor.pos @ marks
            st.lor.worst_headroom = min(st.lor.worst_headroom, st.fund + eq - st.lor.mm)
        if "static" in states:
            st = states["static"]
            st.mm = self._static_mm(st, i)

    def _static_mm(self, st: PolicyState, i: int) -> np.ndarray:
        S = float(self.m.path.close[i])
        notional = np.abs(st.pos).sum(axis=1) * S
        short_mark = np.maximum(-st.pos, 0.0) @ self.m.last_trade[i]
        return self.cfg.static_rate * notional + short_mark

    def _track_waits(self, st: PolicyState, i: int, filled: np.ndarray, breached: np.ndarray,
                     span_s: float | None = None) -> None:
        """Account-minutes below MM without a fill, and the longest time an account waited below MM for a fill
        (from the bar it was first seen below, or its last partial fill, to the end of the bar it still waits at)."""
        bar_s = span_s or self.m.path.bar_seconds
        t_end = (float(self.m.path.times[i]) if self._t_override is None else self._t_override) + bar_s
        st.breach_minutes += bar_s / 60.0 * float(np.sum(breached & ~filled))
        st.since[~breached] = np.nan
        waiting = breached & ~filled & np.isfinite(st.since)
        if waiting.any():
            st.max_wait_s = max(st.max_wait_s, float(np.max(t_end - st.since[waiting])))

    # ------------------------------------------------------------------ auction policies
    def _step_auction(self, st: PolicyState, i: int, marks: np.ndarray, span_s: float | None = None):
        cfg, m, design = self.cfg, self.m, st.design
        S = float(m.path.close[i])
        t0 = float(m.path.times[i]) if self._t_override is None else self._t_override
        escrow = np.zeros(st.cash.size)
        for a, au in st.auctions.items():
            escrow[a] = au["C"] / UNIT
        eq = self.equity(st, marks, S, escrow)
        has_book = (st.scale > 0) & ((np.abs(st.pos).sum(axis=1) > 0) | (st.coll != 0))
        breached = (eq < st.mm) & has_book
        filled = np.zeros(st.cash.size, dtype=bool)
        newly = breached & np.isnan(st.since)
        st.since[newly] = t0
        for a in list(st.auctions):
            if not breached[a]:
                self._end_auction(st, a)  # healthy again: cured (a bid would revert AccountHealthy)
        mm_units = np.ceil(st.mm * UNIT)
        for a in np.flatnonzero(breached):
            if int(a) not in st.auctions:
                self._start(st, int(a), float(eq[a]), float(mm_units[a]), t0, S=S)
        curve = self.curves[design.name]
        reset_s = self.reset_s[design.name]
        n_ticks = max(1, int((span_s or m.path.bar_seconds) // cfg.tick_s))
        bidders = self.strategies[st.liquidator]
        for a in list(st.auctions):
            au = st.auctions[a]
            val = None
            for tick in range(n_ticks):
                now = t0 + tick * cfg.tick_s
                el = int(now - au["start"])
                if el < 0:
                    continue
                if el >= reset_s:  # = curve factor below the cusp, or past the tail (self.reset_s)
                    e_book = float(eq[a]) - au["C"] / UNIT
                    self._restart(st, a, e_book, now)
                    au = st.auctions[a]
                    val = None
                    el = 0
                    if design.last_resort_after is not None and am.last_resort_due(au["resets"] - 1,
                                                                                   design.last_resort_after):
                        g = am.last_resort_fraction(au["E"], au["T"], au["C"], au["lam"], au["top"])
                        if g > 0:
                            self._fill_auction(st, a, au, i, g, au["top"], now, buyer="fund")
                            filled[a] = True
                        elif a in st.auctions:
                            self._end_auction(st, a)
                        break
                if not bidders:
                    continue
                p = am.price(curve, au["top"], au["span"], el)
                allowed = am.allowed_fraction(au["E"], au["T"], au["S"], au["C"], p, au["lam"])
                if allowed <= 0:
                    break
                if val is None:
                    val = self._cached_value(st, a, au, i)
                if self._bid(st, a, au, i, p, allowed, val, now, bidders):
                    filled[a] = True
                    break  # one fill per account and bar (the book changed: revalue next bar)
        return filled, breached

    def _start(self, st, a, e, mm_units, now, carry=0, resets=0, S=0.0):
        cfg, design = self.cfg, st.design
        equity = math.floor(e * UNIT)
        top = math.floor((e + cfg.haircut * float(st.coll[a]) * S) * UNIT) if design.top_at_model_value else equity
        mm = int(mm_units)
        span = am.span_for(top, mm) if design.span_mm is None else am.span_for_risk(top, mm,
                                                                                    int(design.span_mm * WAD))
        st.auctions[a] = {
            "start": now, "top": top, "E": equity, "span": span, "mm": mm,
            "T": am.target_margin(mm, int(cfg.buffer * WAD)), "S": 0, "C": carry, "lam": int(cfg.penalty * WAD),
            "pos": st.pos[a].copy(), "cash": float(st.cash[a]), "coll": float(st.coll[a]),
            "reward_owed": am.starter_reward(0, int(cfg.chip * WAD), mm), "im": int(mm * 1.5), "resets": resets,
        }
        if resets == 0:
            st.auctions_started += 1

    def _restart(self, st, a, e_book, now):
        au = st.auctions[a]
        st.resets += 1
        self._start(st, a, e_book, math.ceil(float(st.mm[a]) * UNIT), now, carry=au["C"], resets=au["resets"] + 1,
                    S=float(self.m.path.close[self._cur[0]]))

    def _end_auction(self, st, a):
        au = st.auctions.pop(a)
        st.cash[a] += au["C"] / UNIT

    def _cached_value(self, st, a, au, i):
        """The liquidators' valuation of the lot on offer, reused while their inputs stand: same fitted surface,
        spot within ``revalue_move`` of the last valuation; a lot that is a pro-rata share of the valued one (after
        partial sales or a reset) scales it (value and every charge are homogeneous of degree 1 in the book)."""
        S = float(self.m.path.close[i])
        gross = float(np.abs(au["pos"]).sum() + abs(au["coll"]) + abs(au["cash"]) / 1e6)
        key = (st.liquidator, a)
        got = self._val_cache.get(key)
        if got is not None:
            fits, S0, gross0, val0 = got
            if fits == self.surface_fits and abs(S / S0 - 1.0) < self.cfg.revalue_move and gross0 > 0:
                f = gross / gross0
                return replace(val0, value=math.floor(val0.value * f), positions_value=math.floor(val0.positions_value * f),
                               collateral_value=math.floor(val0.collateral_value * f), cash=math.floor(val0.cash * f),
                               stress_loss=math.ceil(val0.stress_loss * f), risk_charge=math.ceil(val0.risk_charge * f))
        val = self._value_lot(au, i, st.liquidator)
        self._val_cache[key] = (self.surface_fits, S, gross, val)
        return val

    def _liquidator_vol(self, i):
        """The liquidators' vol lookup: the fitted surface (the same public quotes the keepers fit) tabulated once
        per bar on a log-moneyness grid per listed expiry and interpolated (the surface's own ``implied_vol`` costs
        ~0.4 ms a call and a valuation makes 21)."""
        if self._vol_tab is not None and self._vol_tab[0] == (i, self.surface_fits):
            return self._vol_tab[1]
        m = self.m
        T = np.maximum(m.expiry_years(i), 1e-9)
        texp = np.unique(T)
        kg = np.linspace(-3.0, 3.0, 1201)
        S = float(m.path.close[i])
        tab = {}
        for t in texp:
            v = self.surface.implied_vol(S * np.exp(kg), np.full(kg.size, t), np.full(kg.size, S)) \
                if self.surface is not None else np.full(kg.size, np.nan)
            if not np.all(np.isfinite(v)):
                v = np.where(np.isfinite(v), v, float(np.nanmedian(m.fair_vol[i])))
            tab[float(t)] = v

        keys = np.array(sorted(tab))
        rows = np.vstack([tab[float(k)] for k in keys])

        def vol(strike, expiry, forward):
            strike, expiry, forward = np.broadcast_arrays(np.asarray(strike, float), np.asarray(expiry, float),
                                                          np.asarray(forward, float))
            k = np.log(strike / forward).ravel()
            which = np.argmin(np.abs(expiry.ravel()[:, None] - keys[None, :]), axis=1)  # nearest listed expiry
            out = np.empty(k.shape)
            for w in np.unique(which):
                sel = which == w
                out[sel] = np.interp(k[sel], kg, rows[w])
            return out.reshape(strike.shape)

        self._vol_tab = ((i, self.surface_fits), vol)
        return vol

    def _value_lot(self, au, i, liquidator):
        m = self.m
        positions = {int(j): float(au["pos"][j]) for j in np.flatnonzero(au["pos"])}
        port = Portfolio(positions, {"UND": au["coll"]} if au["coll"] else {}, int(math.floor(au["cash"] * UNIT)))
        view = MarketView({"UND": float(m.path.close[i])}, self._liquidator_vol(i), float(m.path.times[i]), "USD")
        if liquidator == "hedging":
            return value_hedged(port, self.specs, view, self.cfg.hedging, DEC)
        return conservative_value(port, self.specs, view, self.appetite, DEC)

    def _bid(self, st, a, au, i, p, allowed, val, now, strategies) -> bool:
        gas = gas_cost_quote(700_000, 10**9, 2000.0, DEC)
        remaining = WAD - au["S"]
        # no strategy can bid above A - edge |A| (EdgeStrategy.limit_price with zero gas): skip the quote then
        adj = float(val.value - val.risk_charge)
        if p > math.floor(adj - min(s.edge for s in strategies) * abs(adj)):
            return False
        for strat in strategies:
            q = make_quote(auction_id=a, account=str(a), now=int(now), auction_price=p, valuation=val, gas_cost=gas,
                           free_margin=10**18, max_fraction=allowed / WAD)
            q = LotQuote(**{**q.to_json(), "margin_per_lot": max(p, 0) + max(au["im"] - au["top"], 0)})
            if au["E"] < 0 and allowed < remaining:
                continue
            d = strat.decide(q)
            if not d.bid:
                continue
            g = allowed if d.fraction >= q.max_fraction - 1e-12 else min(int(d.fraction * WAD), allowed)
            if au["E"] < 0:
                g = remaining
            self._fill_auction(st, a, au, i, g, p, now)
            return True
        return False

    def _fill_auction(self, st, a, au, i, g, p, now, buyer="liquidator"):
        amount = am.bid_amount(g, p)
        frac_orig = g / WAD
        share_now = g / (WAD - au["S"])  # of what the account holds now
        fv = frac_orig * self.fair_value(au["pos"], au["cash"], au["coll"], i)
        view = self._book_view(st, a, i, au["C"] / UNIT, self._marks)
        insolvent = au["E"] < 0
        fund_paid = bad = penalty = 0.0
        lor = st.lor
        if amount > 0:
            split = am.split_bid(amount, au["lam"], au["reward_owed"], int(st.fund * UNIT))
            au["reward_owed"] -= split.reward
            au["C"] += split.to_account
            repaid, kept = am.repay_deficit(split.to_fund, int(round(st.deficit * UNIT)))
            st.deficit -= repaid / UNIT
            st.fund += kept / UNIT
            st.repaid += repaid / UNIT
            st.penalties_to_fund += split.to_fund / UNIT
            st.rewards += split.reward / UNIT
            penalty = split.penalty / UNIT
            received = -amount / UNIT
        else:
            owed = -amount
            from_escrow = min(au["C"], owed)
            au["C"] -= from_escrow
            split = am.split_bid(-(owed - from_escrow), au["lam"], 0, int(st.fund * UNIT))
            fund_paid, bad = split.fund_pays / UNIT, split.bad_debt / UNIT
            st.fund -= fund_paid
            st.fund_payouts += fund_paid
            st.deficit += bad
            received = (from_escrow + split.fund_pays) / UNIT
        transfer = fv + received if amount <= 0 else fv - amount / UNIT
        if buyer == "fund":  # the fund's account pays (or is paid) and takes the share
            lor.cash -= amount / UNIT if amount > 0 else -received
            lor.received += fund_paid
            lor.pos += share_now * st.pos[a]
            lor.coll += share_now * st.coll[a]
            lor.cash += share_now * st.cash[a]
            lor.taken += 1
            lor.spot = float(self.m.path.close[i])
            lor.peak_gross = max(lor.peak_gross, float(np.abs(lor.pos).sum()))
        # the account hands over the share
        keep = 1.0 - share_now
        st.pos[a] *= keep
        st.cash[a] *= keep
        st.coll[a] *= keep
        self._set_scale(st, a, keep)
        au["S"] += g
        full = au["S"] >= WAD
        (st.liquidated_full if full else st.liquidated_part).add(a)
        if full:
            st.liquidated_part.discard(a)
        att = frac_orig * au["top"] / UNIT
        wait = now - st.since[a] if np.isfinite(st.since[a]) else 0.0
        st.max_wait_s = max(st.max_wait_s, wait)
        done = full or am.allowed_fraction(au["E"], au["T"], au["S"], au["C"], p, au["lam"]) <= 0
        st.since[a] = np.nan if done else now  # restored (or sold out): no longer waiting below MM
        st.fills.append(Fill(st.name, i, a, frac_orig, amount / UNIT, fv, transfer, penalty,
                             frac_orig * au["mm"] / UNIT, insolvent, -frac_orig * au["E"] / UNIT if insolvent else 0.0,
                             fund_paid, bad, False, full, att, att - amount / UNIT, buyer, wait))
        self._defer_healthy(st.fills[-1], a, view)
        if done:
            self._end_auction(st, a)

    # ------------------------------------------------------------------ the fund's account
    def _work_fund_account(self, st: PolicyState, i: int) -> None:
        """The buyer of last resort's rule, every bar: mark its delta hedge to the new spot, sell its collateral at
        spot less 0.5 %, close its options at the standing quote up to top-of-book size per series (longs at the
        bid, shorts at the ask; a long with no bid waits), then re-hedge the options' delta (model delta on the
        keepers' vols) in the underlying at ``lor_hedge_cost`` of spot per unit traded."""
        lor = st.lor
        if not (np.any(lor.pos != 0) or lor.coll != 0 or lor.hedge != 0):
            return
        m = self.m
        S = float(m.path.close[i])
        lor.cash += lor.hedge * (S - lor.spot)
        lor.spot = S
        if lor.coll != 0:
            lor.cash += lor.coll * S * 0.995
            lor.coll = 0.0
        bid, ask = m.bid[i], m.ask[i]
        sell = np.where(np.isnan(bid), 0.0, np.minimum(np.maximum(lor.pos, 0.0), m.bid_size[i]))
        buy = np.minimum(np.maximum(-lor.pos, 0.0), m.ask_size[i])
        lor.cash += float(sell @ np.nan_to_num(bid)) - float(buy @ ask)
        lor.pos = lor.pos - sell + buy
        lor.pos[np.abs(lor.pos) < 1e-12] = 0.0
        target = -float(lor.pos @ self._delta)
        cost = abs(target - lor.hedge) * S * self.cfg.lor_hedge_cost
        lor.cash -= cost
        lor.hedge_costs += cost
        lor.hedge = target

    def _lor_equity(self, st: PolicyState, i: int, marks: np.ndarray) -> float:
        lor = st.lor
        if lor.taken == 0:
            return 0.0
        S = float(self.m.path.close[i])
        return lor.cash + lor.coll * S + float(lor.pos @ marks) + lor.hedge * (S - lor.spot)

    # ------------------------------------------------------------------ market policies
    def _step_market(self, st: PolicyState, i: int, marks: np.ndarray):
        cfg = self.cfg
        S = float(self.m.path.close[i])
        t0 = float(self.m.path.times[i])
        if st.name == "static":
            st.mm = self._static_mm(st, i)
        eq = self.equity(st, marks, S)
        has_book = (np.abs(st.pos).sum(axis=1) > 0) | (st.coll > 0)
        breached = (eq < st.mm) & has_book
        filled = np.zeros(st.cash.size, dtype=bool)
        st.since[breached & np.isnan(st.since)] = t0
        for a in np.flatnonzero(breached):
            pos, cash, coll = st.pos[a], float(st.cash[a]), float(st.coll[a])
            p = self.market_price(pos, cash, coll, i)
            if st.name == "static" or eq[a] < 0 or p <= 0:
                g = 1.0
            else:
                top = math.floor(eq[a] * UNIT)
                T = am.target_margin(math.ceil(st.mm[a] * UNIT), int(cfg.buffer * WAD))
                gw = am.allowed_fraction(top, T, 0, 0, math.floor(p * UNIT), int(cfg.penalty * WAD))
                g = gw / WAD
                if g <= 0:
                    continue
            view = self._book_view(st, a, i, 0.0, marks)
            fv = g * self.fair_value(pos, cash, coll, i)
            amount = g * p
            fund_paid = bad = penalty = 0.0
            if amount > 0:
                penalty = math.ceil(amount * UNIT * cfg.penalty) / UNIT
                repaid, kept = am.repay_deficit(int(penalty * UNIT), int(round(st.deficit * UNIT)))
                st.deficit -= repaid / UNIT
                st.repaid += repaid / UNIT
                st.fund += kept / UNIT
                st.penalties_to_fund += penalty
                net = amount - penalty
            else:
                split = am.split_bid(math.floor(amount * UNIT), 0, 0, int(st.fund * UNIT))
                fund_paid, bad = split.fund_pays / UNIT, split.bad_debt / UNIT
                st.fund -= fund_paid
                st.fund_payouts += fund_paid
                st.deficit += bad
                net = 0.0
            transfer = fv - amount
            mm_bought = g * float(st.mm[a])
            keep = 1.0 - g
            st.pos[a] *= keep
            st.coll[a] *= keep
            st.cash[a] = st.cash[a] * keep + net
            if st.name == "static":
                st.mm[a] *= keep
                st.scale[a] *= keep
            else:
                self._set_scale(st, a, keep)
            full = g >= 1.0
            if full:
                st.pos[a] = 0.0
                st.coll[a] = 0.0
                st.scale[a] = 0.0
                st.mm[a] = 0.0
                st.liquidated_full.add(a)
                st.liquidated_part.discard(a)
            elif a not in st.liquidated_full:
                st.liquidated_part.add(a)
            filled[a] = True
            att = g * float(eq[a])
            st.since[a] = np.nan  # sold what restores the target (or everything) at once
            st.fills.append(Fill(st.name, i, a, g, amount, fv, transfer, penalty, mm_bought, eq[a] < 0 or p <= 0,
                                 max(-att, 0.0) if eq[a] < 0 else 0.0, fund_paid, bad, False, full, att,
                                 att - amount, "market", 0.0))
            self._defer_healthy(st.fills[-1], a, view)
        return filled, breached

    # ------------------------------------------------------------------ result
    def _result(self, states: dict) -> dict:
        out = {}
        last = len(self.m.path) - 1
        for name, st in states.items():
            # auctions still running at the end: their escrow goes back to the accounts (books stay for sale)
            running = len(st.auctions)
            for a in list(st.auctions):
                self._end_auction(st, a)
            fills = st.fills
            lor = st.lor
            # the fund's account at the end: its book at what the market pays for it now, its hedge marked
            lor_end = 0.0
            if lor.taken:
                S = float(self.m.path.close[last])
                lor_end = (self.market_price(lor.pos, lor.cash, lor.coll, last) + lor.hedge * (S - lor.spot)
                           - abs(lor.hedge) * S * self.cfg.lor_hedge_cost)
            lor_loss = lor.received - lor_end  # what the fund paid into its account and did not get back
            ext = [f for f in fills if f.buyer != "fund"]
            share = np.array([f.transfer / f.mm_bought for f in ext if f.mm_bought > 0])
            share_att = np.array([f.xfer_attested / f.mm_bought for f in fills if f.mm_bought > 0])
            insolvent = [f for f in fills if f.insolvent and f.deficit > 0]
            ratio = [(-f.amount) / f.deficit for f in insolvent]
            deficits = float(sum(f.deficit for f in insolvent))
            mm_sold = float(sum(f.mm_bought for f in fills))
            price_pos = float(sum(max(f.amount, 0.0) for f in fills))
            lossbeyond = float(sum(f.xfer_attested + f.penalty for f in fills))
            out[name] = {
                "liquidated_in_part": len(st.liquidated_part),
                "liquidated_in_full": len(st.liquidated_full),
                "fills": len(fills),
                "fills_by_fund": len(fills) - len(ext),
                "healthy_liquidated": len({f.account for f in fills if f.healthy}),
                # healthy at fair value by more than the keepers' mark tolerance (docs/risk-efficacy.md)
                "healthy_beyond_tolerance": len({f.account for f in fills if f.healthy and f.fair_equity >
                                                 f.fair_mm * (1.0 + self.cfg.healthy_tolerance)}),
                "healthy_margin_max": max([f.fair_equity / f.fair_mm - 1.0 for f in fills
                                           if f.healthy and f.fair_mm > 0], default=None),
                "transfer": float(sum(f.transfer for f in ext)),
                "transfer_to_fund": float(sum(f.transfer for f in fills if f.buyer == "fund")),
                "penalties": float(sum(f.penalty for f in fills)),
                "holder_loss": float(sum(f.transfer + f.penalty for f in fills)),
                "holder_loss_beyond_attested": lossbeyond,
                "holder_loss_cap": (0.15 * mm_sold + self.cfg.penalty * price_pos),
                "mm_sold": mm_sold,
                "fund_before": st.fund0,
                "fund_after": st.fund + lor_end,
                "fund_free_after": st.fund,
                "fund_account_value_end": lor_end,
                "fund_account_loss": lor_loss,
                "fund_account_books_taken": lor.taken,
                "fund_account_peak_gross": lor.peak_gross,
                "fund_account_worst_headroom": (None if not math.isfinite(lor.worst_headroom)
                                                else float(lor.worst_headroom)),
                "fund_account_positions_end": {int(j): float(lor.pos[j]) for j in np.flatnonzero(lor.pos)},
                "fund_account_hedge_costs": lor.hedge_costs,
                "fund_drawdown": float(st.fund0 - min([st.fund0] + st.fund_series)),
                "fund_payouts": st.fund_payouts - lor.received + lor_loss,
                "penalties_to_fund": st.penalties_to_fund,
                "starter_rewards": st.rewards,
                "bad_debt_repaid": st.repaid,
                "bad_debt": float(sum(f.bad_debt for f in fills)),
                "bad_debt_outstanding": st.deficit,
                "attested_deficits": deficits,
                "minutes_below_mm_without_fill": st.breach_minutes,
                "max_minutes_below_mm_without_fill": st.max_wait_s / 60.0,
                "transfer_share_of_mm_median": float(np.median(share)) if share.size else 0.0,
                "transfer_share_of_mm_max": float(np.max(share)) if share.size else 0.0,
                "xfer_attested_share_median": float(np.median(share_att)) if share_att.size else 0.0,
                "xfer_attested_share_max": float(np.max(share_att)) if share_att.size else 0.0,
                "payout_to_deficit_median": float(np.median(ratio)) if ratio else None,
                "payout_to_deficit_max": float(np.max(ratio)) if ratio else None,
                "auctions_started": st.auctions_started if st.kind == "auction" else None,
                "auction_resets": st.resets if st.kind == "auction" else None,
                "auctions_running_at_end": running if st.kind == "auction" else None,
                "fund_series": st.fund_series,
                "liq_series": st.liq_series,
                "fill_list": [f.to_json() for f in fills],
            }
        return out

"""Offline replay of a population through a price path under three liquidation policies (no chain).

Pure (numpy + the project's quant engine; no file or network I/O). Policies, on the same path, quotes and books:

* ``backstop``: keepers fit the SVI surface (:func:`keeper.surface.fit_surface`) to the quotes, mark with the hybrid
  mark (:func:`keeper.marks.hybrid_marks`), margin with the risk engine (:func:`keeper.risk.compute_account_risk`,
  ES/grid); a breached account is sold in partial Dutch auctions priced by :mod:`keeper.auction_math` (linear curve,
  floor, tail, resets from a fresh record), and two liquidators value each lot with
  :func:`keeper.liquidator.value_portfolio` and decide with :class:`keeper.strategies.EdgeStrategy`;
* ``mark_to_market``: last-trade marks, the same margin engine (same vols, so the same MM for the same book), and a
  breached account sells the share :func:`keeper.auction_math.allowed_fraction` allows at market (bid for longs,
  ask for shorts, with impact beyond top-of-book depth);
* ``static``: MM = ``static_rate`` x option notional + the last-trade mark of short options, last-trade equity,
  and a breached account is liquidated in full at market.

Cadence (docs/risk-efficacy.md): equity and breaches at every bar; the full margin run and the surface fit every
``cadence_s`` of path time (every bar where bars are coarser); MM between runs is the last run's, scaled pro rata
when a liquidation sells a share of the book. Auction time moves in ``tick_s`` ticks inside each bar (spot and
surface constant within a bar).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from keeper import auction_math as am
from keeper.backtest.market import SECONDS_PER_YEAR, Market
from keeper.backtest.population import Population
from keeper.chains import OptionChain
from keeper.liquidator import (MarketView, Portfolio, RiskAppetite, SeriesSpec, gas_cost_quote, make_quote,
                               surface_vol, value_portfolio)
from keeper.marks import hybrid_marks
from keeper.pricing import black76_greeks
from keeper.risk import CALL, PUT, CollateralTable, RiskInputs, RiskParams, SeriesTable, compute_account_risk
from keeper.risk_scenarios import grid_scenarios, monte_carlo_scenarios
from keeper.strategies import EdgeStrategy, LotQuote
from keeper.surface import SurfaceFitError, fit_surface

DEC = 6
UNIT = 10**DEC
WAD = am.WAD
RAY = am.RAY
POLICIES = ("backstop", "mark_to_market", "static")


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
    auction_tau: int = 600
    auction_cusp: float = 0.4
    auction_tail: int = 1200
    tick_s: int = 30
    edges: tuple = (0.02, 0.025)
    aversion: float = 0.25
    liquidator_haircut: float = 0.10
    static_rate: float = 0.10
    fund_frac: float = 0.05  # insurance fund = this share of the population's total MM at the first bar
    impact: float = 0.5  # extra half spreads per multiple of top-of-book depth taken
    seed: int = 0
    revalue_move: float = 0.005  # liquidators revalue a lot when spot moved 0.5 % (or the surface changed)


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
    deficit: float  # attested deficit (insolvent books), else 0
    fund_paid: float
    bad_debt: float
    healthy: bool
    full: bool

    def to_json(self) -> dict:
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in self.__dict__.items()}


@dataclass
class PolicyState:
    name: str
    pos: np.ndarray
    cash: np.ndarray
    coll: np.ndarray
    mm: np.ndarray
    fund: float
    fund0: float
    deficit: float = 0.0
    fills: list = field(default_factory=list)
    auctions: dict = field(default_factory=dict)
    fund_series: list = field(default_factory=list)
    liq_series: list = field(default_factory=list)
    breach_minutes: float = 0.0
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


def margin_points(times: np.ndarray, cadence_s: float) -> np.ndarray:
    """Bars where the full margin runs: the first bar, then the first bar at or after each ``cadence_s`` mark."""
    rel = times - times[0]
    slot = np.floor(rel / cadence_s + 1e-9).astype(np.int64)
    return np.flatnonzero(np.concatenate([[True], slot[1:] != slot[:-1]]))


class Replay:
    """One path, one population, three policies (see module docstring). ``run()`` returns the result dict."""

    def __init__(self, market: Market, pop: Population, cfg: BacktestConfig = BacktestConfig(),
                 policies=POLICIES, progress=None):
        self.m, self.cfg, self.policies, self.progress = market, cfg, tuple(policies), progress
        s = market.series
        self.n_series = s.n
        self.series_table_kind = np.where(s.is_call, CALL, PUT)
        self.specs = {j: SeriesSpec(j, "UND", float(s.strike[j]), int(s.expiry_ts[j]), bool(s.is_call[j]))
                      for j in range(s.n)}
        self.pop = pop
        self.margin_bars = margin_points(market.path.times, cfg.cadence_s)
        self.grid = grid_scenarios(cfg.grid_range, n_underlyings=1)
        self.strategies = [EdgeStrategy(e) for e in cfg.edges]
        self.appetite = RiskAppetite(aversion=cfg.aversion, haircuts={"UND": cfg.liquidator_haircut})
        self.surface = None
        self.surface_fits = 0
        self._fitted_quote_bar = -1
        self._val_cache: dict = {}
        self._vol_tab = None
        self.surface_failures = 0
        self.risk_runs = 0
        self.prev_market = None
        self.curve = am.Curve(am.CurveKind.LINEAR, tau=cfg.auction_tau)

    # ------------------------------------------------------------------ engine calls
    def _vols(self, i: int, surface) -> np.ndarray:
        T = np.maximum(self.m.expiry_years(i), 1e-9)
        if surface is None:
            return self.m.fair_vol[i]
        v = surface.implied_vol(self.m.series.strike, T, self.m.path.close[i])
        return np.where(np.isfinite(v) & (v > 0), v, self.m.fair_vol[i] if self.surface is None else np.nan)

    def risk(self, i: int, pos: np.ndarray, coll: np.ndarray, vols: np.ndarray):
        """MM and IM per row of ``pos`` from the risk engine at bar ``i`` with ``vols`` (no hashes: nothing signed)."""
        cfg, m = self.cfg, self.m
        S = float(m.path.close[i])
        T = np.maximum(m.expiry_years(i), 0.0)
        st = SeriesTable(np.zeros(self.n_series, dtype=np.int64), m.series.strike, T, self.series_table_kind,
                         np.ones(self.n_series))
        ca = CollateralTable(np.array([1.0, S]), np.array([0.0, cfg.haircut]), np.array([-1, 0]))
        n = pos.shape[0]
        inputs = RiskInputs(st, sp.csr_matrix(pos), np.column_stack([np.zeros(n), coll]), ca, np.array([S]),
                            vols, m.fair[i], RiskParams())
        mc = monte_carlo_scenarios(cfg.seed * 1_000_003 + i, cfg.n_scenarios, 1)
        self.risk_runs += 1
        r = compute_account_risk(inputs, mc, self.grid, hashes=False)
        return np.asarray(r.maintenance_margin), np.asarray(r.initial_margin)

    def refit(self, i: int) -> None:
        """Refit the keepers' surface to the standing book, only when it was requoted since the last fit."""
        q = int(self.m.quote_bar[i])
        if q == self._fitted_quote_bar:
            return
        self._fitted_quote_bar = q
        try:
            self.surface = fit_surface(_chain(self.m, i))
            self.surface_fits += 1
        except (SurfaceFitError, ValueError, FloatingPointError):
            self.surface_failures += 1  # the keeper keeps its last good surface

    def model_prices(self, i: int):
        T = np.maximum(self.m.expiry_years(i), 1e-9)
        vols = self._vols(i, self.surface)
        vols = np.where(np.isfinite(vols), vols, self.m.fair_vol[i])
        g = black76_greeks(self.m.path.close[i], self.m.series.strike, T, vols, self.m.series.is_call)
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

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        m, cfg, pop = self.m, self.cfg, self.pop
        n = pop.n
        nb = len(m.path)
        bar_min = m.path.bar_seconds / 60.0
        self.refit(0)
        _, _, vols0 = self.model_prices(0)
        mm0, _ = self.risk(0, pop.positions, pop.coll, vols0)
        fund0 = cfg.fund_frac * float(mm0.sum())
        states = {p: PolicyState(p, pop.positions.copy(), pop.cash.copy(), pop.coll.copy(), mm0.copy(), fund0, fund0)
                  for p in self.policies}
        margin_set = set(self.margin_bars.tolist())
        fair_mm_cache: dict = {}
        self._fair_ctx = (fair_mm_cache, states)
        last_margin = 0
        for i in range(nb):
            S = float(m.path.close[i])
            if i in margin_set:
                last_margin = i
                if i > 0:
                    self.refit(i)
                model, vega, vols = self.model_prices(i)
                self._run_margins(i, states, vols)
                fair_mm_cache.clear()
            else:
                model, vega, vols = self.model_prices(i)
            age = m.path.times[i] - m.path.times[m.quote_bar[i]]
            hyb = hybrid_marks(m.bid[i], m.ask[i], m.bid_size[i], m.ask_size[i], model, self.prev_market,
                               model_vega=vega, quote_age=age)
            self.prev_market = hyb.market
            self._cur = (i, last_margin, vols)
            for name, st in states.items():
                if name == "backstop":
                    filled, breached = self._step_backstop(st, i, hyb.mark, vols)
                else:
                    filled, breached = self._step_market(st, i, m.last_trade[i])
                st.breach_minutes += bar_min * float(np.sum(breached & ~filled))
                st.fund_series.append(st.fund)
                st.liq_series.append(len(st.fills))
            if self.progress is not None:
                self.progress(1)
        return self._result(states)

    def _run_margins(self, i: int, states: dict, vols: np.ndarray) -> None:
        """One engine run on the distinct books of the policies that use the engine's MM."""
        users = [st for st in states.values() if st.name != "static"]
        if users:
            rows, owners = [users[0].pos], [(users[0], np.arange(users[0].pos.shape[0]))]
            colls = [users[0].coll]
            for st in users[1:]:
                diff = np.flatnonzero(np.any(st.pos != users[0].pos, axis=1) | (st.coll != users[0].coll))
                st.mm = users[0].mm  # placeholder, overwritten below
                rows.append(st.pos[diff])
                colls.append(st.coll[diff])
                owners.append((st, diff))
            mm, _ = self.risk(i, np.vstack(rows), np.concatenate(colls), vols)
            base = mm[:rows[0].shape[0]]
            users[0].mm = base.copy()
            off = rows[0].shape[0]
            for st, diff in owners[1:]:
                st.mm = base.copy()
                st.mm[diff] = mm[off:off + diff.size]
                off += diff.size
        if "static" in states:
            st = states["static"]
            st.mm = self._static_mm(st, i)

    def _static_mm(self, st: PolicyState, i: int) -> np.ndarray:
        S = float(self.m.path.close[i])
        notional = np.abs(st.pos).sum(axis=1) * S
        short_mark = np.maximum(-st.pos, 0.0) @ self.m.last_trade[i]
        return self.cfg.static_rate * notional + short_mark

    def fair_mm(self, st: PolicyState, a: int) -> float:
        """Maintenance margin of account ``a``'s current book with the reference vols (the yardstick of
        "healthy"), from one engine run per policy and margin interval, scaled pro rata since."""
        cache, _ = self._fair_ctx
        i, last_margin, _ = self._cur
        key = st.name
        if key not in cache:
            mm, _ = self.risk(last_margin, st.pos, st.coll, self.m.fair_vol[last_margin])
            cache[key] = (mm, np.abs(st.pos).sum(axis=1).copy())
        mm, gross = cache[key]
        g_now = np.abs(st.pos[a]).sum()
        return float(mm[a] * (g_now / gross[a] if gross[a] > 0 else 1.0))

    def is_healthy(self, st: PolicyState, a: int, i: int, escrow: float = 0.0) -> bool:
        S = float(self.m.path.close[i])
        fair_eq = st.cash[a] + escrow + st.coll[a] * S * (1 - self.cfg.haircut) + st.pos[a] @ self.m.fair[i]
        return bool(fair_eq >= self.fair_mm(st, a))

    # ------------------------------------------------------------------ backstop policy
    def _step_backstop(self, st: PolicyState, i: int, marks: np.ndarray, vols: np.ndarray):
        cfg, m = self.cfg, self.m
        S = float(m.path.close[i])
        t0 = float(m.path.times[i])
        escrow = np.zeros(st.cash.size)
        for a, au in st.auctions.items():
            escrow[a] = au["C"] / UNIT
        eq = self.equity(st, marks, S, escrow)
        breached = eq < st.mm
        filled = np.zeros(st.cash.size, dtype=bool)
        # auctions: cure / reset / bids, in auction ticks inside the bar
        for a in list(st.auctions):
            au = st.auctions[a]
            if not breached[a]:
                self._end_auction(st, a)  # healthy again: cured (a bid would revert LA_AccountHealthy)
                continue
            val = None
            for tick in range(max(1, int(m.path.bar_seconds // cfg.tick_s))):
                now = t0 + tick * cfg.tick_s
                el = int(now - au["start"])
                c = am.curve_factor(self.curve, el)
                if c < cfg.auction_cusp or el > cfg.auction_tail:
                    self._restart(st, a, i, eq[a] - au["C"] / UNIT, now)
                    st.resets += 1
                    au = st.auctions[a]
                    val = None
                    el = 0
                p = am.price(self.curve, au["top"], au["span"], el)
                allowed = am.allowed_fraction(au["top"], au["T"], au["S"], au["C"], p, au["lam"])
                if allowed <= 0:
                    break
                if val is None:
                    val = self._cached_value(a, au, i)
                got = self._bid(st, a, au, i, p, allowed, val, now)
                if got:
                    filled[a] = True
                    if a not in st.auctions:
                        break
                    au = st.auctions[a]
                    break  # one fill per account and bar (the book changed: revalue next bar)
        # new breaches start auctions at this bar's record
        mm_units = np.ceil(st.mm * UNIT)
        for a in np.flatnonzero(breached & ~filled):
            if a in st.auctions or np.abs(st.pos[a]).sum() == 0 and st.coll[a] == 0:
                continue
            self._start(st, int(a), i, float(eq[a]), float(mm_units[a]), t0)
        return filled, breached

    def _start(self, st, a, i, e, mm_units, now, carry=0):
        cfg = self.cfg
        top = math.floor(e * UNIT)
        mm = int(mm_units)
        st.auctions[a] = {
            "start": now, "top": top, "span": am.span_for(top, mm), "mm": mm,
            "T": am.target_margin(mm, int(cfg.buffer * WAD)), "S": 0, "C": carry, "lam": int(cfg.penalty * WAD),
            "pos": st.pos[a].copy(), "cash": float(st.cash[a]), "coll": float(st.coll[a]),
            "reward_owed": am.starter_reward(0, int(cfg.chip * WAD), mm), "im": int(mm * 1.5),
        }
        st.auctions_started += 1

    def _restart(self, st, a, i, e_book, now):
        au = st.auctions[a]
        mm = float(st.mm[a])
        self._start(st, a, i, e_book, math.ceil(mm * UNIT), now, carry=au["C"])
        st.auctions_started -= 1

    def _end_auction(self, st, a):
        au = st.auctions.pop(a)
        st.cash[a] += au["C"] / UNIT

    def _cached_value(self, a, au, i):
        """The liquidators' valuation of the lot on offer, reused while their inputs stand: same fitted surface,
        spot within ``revalue_move`` of the last valuation; a lot that is a pro-rata share of the valued one (after
        partial sales or a reset) scales it (value and stress loss are homogeneous of degree 1 in the book)."""
        S = float(self.m.path.close[i])
        gross = float(np.abs(au["pos"]).sum() + abs(au["coll"]) + abs(au["cash"]) / 1e6)
        got = self._val_cache.get(a)
        if got is not None:
            fits, S0, gross0, val0 = got
            if fits == self.surface_fits and abs(S / S0 - 1.0) < self.cfg.revalue_move and gross0 > 0:
                f = gross / gross0
                return replace(val0, value=math.floor(val0.value * f), positions_value=math.floor(val0.positions_value * f),
                               collateral_value=math.floor(val0.collateral_value * f), cash=math.floor(val0.cash * f),
                               stress_loss=math.ceil(val0.stress_loss * f), risk_charge=math.ceil(val0.risk_charge * f))
        val = self._value_lot(au, i)
        self._val_cache[a] = (self.surface_fits, S, gross, val)
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

        def vol(strike, expiry, forward):
            strike, expiry, forward = np.broadcast_arrays(np.asarray(strike, float), np.asarray(expiry, float),
                                                          np.asarray(forward, float))
            k = np.log(strike / forward)
            out = np.empty(k.shape)
            for j in np.ndindex(k.shape):
                t = min(tab, key=lambda x: abs(x - expiry[j]))
                out[j] = np.interp(k[j], kg, tab[t])
            return out

        self._vol_tab = ((i, self.surface_fits), vol)
        return vol

    def _value_lot(self, au, i):
        m = self.m
        positions = {int(j): float(au["pos"][j]) for j in np.flatnonzero(au["pos"])}
        port = Portfolio(positions, {"UND": au["coll"]} if au["coll"] else {}, int(math.floor(au["cash"] * UNIT)))
        view = MarketView({"UND": float(m.path.close[i])}, self._liquidator_vol(i), float(m.path.times[i]), "USD")
        return value_portfolio(port, self.specs, view, self.appetite, DEC)

    def _bid(self, st, a, au, i, p, allowed, val, now) -> bool:
        gas = gas_cost_quote(700_000, 10**9, 2000.0, DEC)
        remaining = WAD - au["S"]
        # no strategy can bid above A - edge |A| (EdgeStrategy.limit_price with zero gas): skip the quote then
        adj = float(val.value - val.risk_charge)
        if p > math.floor(adj - min(self.cfg.edges) * abs(adj)):
            return False
        for strat in self.strategies:
            q = make_quote(auction_id=a, account=str(a), now=int(now), auction_price=p, valuation=val, gas_cost=gas,
                           free_margin=10**18, max_fraction=allowed / WAD)
            q = LotQuote(**{**q.to_json(), "margin_per_lot": max(p, 0) + max(au["im"] - au["top"], 0)})
            if au["top"] < 0 and allowed < remaining:
                continue
            d = strat.decide(q)
            if not d.bid:
                continue
            g = allowed if d.fraction >= q.max_fraction - 1e-12 else min(int(d.fraction * WAD), allowed)
            if au["top"] < 0:
                g = remaining
            self._fill_auction(st, a, au, i, g, p)
            return True
        return False

    def _fill_auction(self, st, a, au, i, g, p):
        cfg = self.cfg
        amount = am.bid_amount(g, p)
        frac_orig = g / WAD
        share_now = g / (WAD - au["S"])  # of what the account holds now
        fv = frac_orig * self.fair_value(au["pos"], au["cash"], au["coll"], i)
        healthy = self.is_healthy(st, a, i, au["C"] / UNIT)
        insolvent = au["top"] < 0
        fund_paid = bad = penalty = 0.0
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
        # the account hands over the share
        keep = 1.0 - share_now
        st.pos[a] *= keep
        st.cash[a] *= keep
        st.coll[a] *= keep
        st.mm[a] *= keep
        au["S"] += g
        full = au["S"] >= WAD
        (st.liquidated_full if full else st.liquidated_part).add(a)
        if full:
            st.liquidated_part.discard(a)
        st.fills.append(Fill("backstop", i, a, frac_orig, amount / UNIT, fv, transfer, penalty,
                             frac_orig * au["mm"] / UNIT, insolvent, -au["top"] / UNIT if insolvent else 0.0,
                             fund_paid, bad, healthy, full))
        done = full or am.allowed_fraction(au["top"], au["T"], au["S"], au["C"], p, au["lam"]) <= 0
        if done:
            self._end_auction(st, a)

    # ------------------------------------------------------------------ market policies
    def _step_market(self, st: PolicyState, i: int, marks: np.ndarray):
        cfg = self.cfg
        S = float(self.m.path.close[i])
        if st.name == "static":
            st.mm = self._static_mm(st, i)
        eq = self.equity(st, marks, S)
        has_book = (np.abs(st.pos).sum(axis=1) > 0) | (st.coll > 0)
        breached = (eq < st.mm) & has_book
        filled = np.zeros(st.cash.size, dtype=bool)
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
            healthy = self.is_healthy(st, a, i)
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
            st.mm[a] *= keep
            full = g >= 1.0
            if full:
                st.pos[a] = 0.0
                st.coll[a] = 0.0
                st.liquidated_full.add(a)
                st.liquidated_part.discard(a)
            elif a not in st.liquidated_full:
                st.liquidated_part.add(a)
            filled[a] = True
            st.fills.append(Fill(st.name, i, a, g, amount, fv, transfer, penalty, mm_bought, eq[a] < 0 or p <= 0,
                                 max(-p, 0.0) if p <= 0 else 0.0, fund_paid, bad, healthy, full))
        return filled, breached

    # ------------------------------------------------------------------ result
    def _result(self, states: dict) -> dict:
        out = {}
        for name, st in states.items():
            # auctions still running at the end: their escrow goes back to the accounts (books stay for sale)
            running = len(st.auctions)
            for a in list(st.auctions):
                self._end_auction(st, a)
            fills = st.fills
            share = np.array([f.transfer / f.mm_bought for f in fills if f.mm_bought > 0])
            insolvent = [f for f in fills if f.insolvent and f.deficit > 0]
            ratio = [(-f.amount) / f.deficit for f in insolvent]
            out[name] = {
                "liquidated_in_part": len(st.liquidated_part),
                "liquidated_in_full": len(st.liquidated_full),
                "fills": len(fills),
                "healthy_liquidated": len({f.account for f in fills if f.healthy}),
                "transfer": float(sum(f.transfer for f in fills)),
                "penalties": float(sum(f.penalty for f in fills)),
                "holder_loss": float(sum(f.transfer + f.penalty for f in fills)),
                "fund_before": st.fund0,
                "fund_after": st.fund,
                "fund_drawdown": float(st.fund0 - min([st.fund0] + st.fund_series)),
                "fund_payouts": st.fund_payouts,
                "penalties_to_fund": st.penalties_to_fund,
                "starter_rewards": st.rewards,
                "bad_debt_repaid": st.repaid,
                "bad_debt": float(sum(f.bad_debt for f in fills)),
                "bad_debt_outstanding": st.deficit,
                "minutes_below_mm_without_fill": st.breach_minutes,
                "transfer_share_of_mm_median": float(np.median(share)) if share.size else 0.0,
                "transfer_share_of_mm_max": float(np.max(share)) if share.size else 0.0,
                "payout_to_deficit_median": float(np.median(ratio)) if ratio else None,
                "payout_to_deficit_max": float(np.max(ratio)) if ratio else None,
                "auctions_started": st.auctions_started if name == "backstop" else None,
                "auction_resets": st.resets if name == "backstop" else None,
                "auctions_running_at_end": running if name == "backstop" else None,
                "fund_series": st.fund_series,
                "liq_series": st.liq_series,
                "fill_list": [f.to_json() for f in fills],
            }
        return out

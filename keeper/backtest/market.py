"""The backtest's market: a reference ("true") vol surface that moves with the price path, and the quotes and
trades the keepers and baselines see around it.

Pure numpy (no I/O). Everything is vectorised over bars x series, drawn from one seeded generator.

Reference surface (documented in docs/risk-efficacy.md):

* realised vol ``rv(t)``: EWMA of squared bar log returns with a half-life of ``rv_half_life_h`` hours of path time,
  annualised; ``rv_ref`` is its median over the first ``ref_hours`` of the path (the calm before the crash);
* short-dated ATM vol ``s(t) = base * clip((rv / rv_ref) ** elasticity, floor, cap / base)`` (sub-linear response:
  realised vol of minute bars in a crash reaches several hundred per cent, implied vol does not);
* long-dated ATM vol ``l(t) = base * clip((rv / rv_ref) ** long_elasticity, floor, long_cap / base)``;
* term structure ``atm(T) = l + (s - l) exp(-T / term_days)`` (inverted in a crash, flat when calm);
* smile in standardised moneyness ``x = ln(K/F) / (atm sqrt(T))`` clipped to +-4:
  ``vol = atm (1 + skew x + curvature x^2)``, with the skew steepening with the vol ratio ``s / base``.

Quotes: centre = fair price + noise (a fraction of the half spread); half spread = max(tick, 1.5 vol points of vega,
2 % of fair) widened by the vol ratio; top-of-book depth falls with |x| (far wings are thin) and in stress; the bid
is absent when the centre is within a half spread of zero. Trades: each series trades per bar with a probability
that grows with its depth (thin series trade rarely, so their last trade goes stale) at the bid or the ask.
Manipulation: one fat-finger print per path, at the crash low (lowest close), on the thinnest put series, at fair +
``fat_finger_spot_frac`` of spot (the scenario's fat finger), with its book left as thin as it was.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from keeper.quant.pricing import black76_greeks, black76_price
from keeper.units import SECONDS_PER_YEAR

#: pre-crash ATM vol levels (fractions) by underlying: the typical Deribit DVOL range before these crashes
BASE_VOL = {"BTC": 0.60, "ETH": 0.75}


@dataclass(frozen=True)
class PricePath:
    """A validated price path: bar open times (unix s), closes, the bar length and a name."""

    name: str
    underlying: str
    times: np.ndarray
    close: np.ndarray
    bar_seconds: float

    @property
    def crash_index(self) -> int:
        """Bar of the lowest close."""
        return int(np.argmin(self.close))

    def __len__(self) -> int:
        return int(self.close.shape[0])


def validate_bars(name: str, times: np.ndarray, close: np.ndarray, underlying: str = "") -> PricePath:
    """Check a path (>= 3 bars, finite positive closes, strictly increasing times with no gap larger than 1.5 bars)
    and return it; raises ``ValueError`` with one readable line otherwise."""
    times = np.asarray(times, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    if close.size < 3:
        raise ValueError(f"{name}: needs at least 3 bars, got {close.size}")
    if times.shape != close.shape:
        raise ValueError(f"{name}: times and closes differ in length")
    bad = np.flatnonzero(~np.isfinite(close) | (close <= 0))
    if bad.size:
        raise ValueError(f"{name}: non-positive or non-finite price {close[bad[0]]!r} at row {int(bad[0]) + 1}")
    d = np.diff(times)
    if np.any(d <= 0):
        i = int(np.flatnonzero(d <= 0)[0])
        raise ValueError(f"{name}: timestamps not increasing at row {i + 2}")
    bar = float(np.median(d))
    if np.any(d > 1.5 * bar):
        i = int(np.flatnonzero(d > 1.5 * bar)[0])
        raise ValueError(f"{name}: gap of {d[i] / bar:.1f} bars after row {i + 1} (bars of {bar:.0f} s)")
    if not underlying:
        up = name.upper()
        underlying = "BTC" if up.startswith("BTC") else "ETH" if up.startswith("ETH") else "BTC"
    return PricePath(name, underlying, times, close, bar)


@dataclass(frozen=True)
class VolModel:
    """Parameters of the reference surface (see the module docstring)."""

    base_vol: float = 0.0  # 0: BASE_VOL of the underlying
    rv_half_life_h: float = 12.0
    ref_hours: float = 24.0
    elasticity: float = 0.5
    long_elasticity: float = 0.25
    floor: float = 0.75
    cap: float = 2.0  # short-dated ATM never above 200 %
    long_cap: float = 1.2
    term_days: float = 20.0
    skew: float = -0.05  # per standard deviation of moneyness
    skew_stress: float = 0.5  # skew x (1 + skew_stress (s/base - 1))
    curvature: float = 0.015


@dataclass(frozen=True)
class ReferenceVols:
    """Short- and long-dated ATM vol per bar."""

    short: np.ndarray
    long: np.ndarray
    base: float


def reference_atm(path: PricePath, model: VolModel = VolModel()) -> ReferenceVols:
    """ATM vol levels per bar from the path's realised vol (module docstring)."""
    base = model.base_vol or BASE_VOL.get(path.underlying, 0.7)
    r = np.diff(np.log(path.close), prepend=math.log(path.close[0]))
    lam = 0.5 ** (path.bar_seconds / (model.rv_half_life_h * 3600.0))
    n_ref = max(2, int(model.ref_hours * 3600.0 / path.bar_seconds))
    seed = float(np.mean(r[1:n_ref + 1] ** 2)) if r.size > 2 else 1e-8
    var = np.empty_like(r)
    v = seed
    # EWMA as a first-order filter (scipy-free loop on <= 10k bars is ~2 ms)
    for i in range(r.size):
        v = lam * v + (1.0 - lam) * r[i] * r[i]
        var[i] = v
    rv = np.sqrt(np.maximum(var, 1e-16) * SECONDS_PER_YEAR / path.bar_seconds)
    ref = float(np.median(rv[:n_ref])) or 1e-8
    ratio = rv / ref
    short = base * np.clip(ratio ** model.elasticity, model.floor, model.cap / base)
    long = base * np.clip(ratio ** model.long_elasticity, model.floor, model.long_cap / base)
    return ReferenceVols(short, long, base)


def reference_vol(strike, expiry_years, forward, short, long, base, model: VolModel = VolModel()) -> np.ndarray:
    """Reference Black-76 vol (arrays broadcast: strike/expiry per series, short/long/forward per bar)."""
    t = np.maximum(np.asarray(expiry_years, dtype=np.float64), 1e-9)
    atm = long + (short - long) * np.exp(-t * 365.0 / model.term_days)
    x = np.clip(np.log(np.asarray(strike) / np.asarray(forward)) / (atm * np.sqrt(t)), -4.0, 4.0)
    skew = model.skew * (1.0 + model.skew_stress * (short / base - 1.0))
    return atm * (1.0 + skew * x + model.curvature * x * x)


@dataclass(frozen=True)
class SeriesSet:
    """Listed option series of one path: strike, expiry (unix s), call flag."""

    strike: np.ndarray
    expiry_ts: np.ndarray
    is_call: np.ndarray

    @property
    def n(self) -> int:
        return int(self.strike.size)


def list_series(spot0: float, t0: float, expiries_days=(14.0, 45.0),
                strikes_pct=tuple(np.round(np.arange(0.60, 1.401, 0.05), 2))) -> SeriesSet:
    """Puts and calls at ``strikes_pct`` of the first close (rounded to 3 significant figures), each expiry."""
    k = np.array([float(f"{spot0 * p:.3g}") for p in strikes_pct])
    strike, expiry, call = [], [], []
    for d in expiries_days:
        for kk in k:
            for c in (False, True):
                strike.append(kk)
                expiry.append(t0 + d * 86400.0)
                call.append(c)
    return SeriesSet(np.array(strike), np.array(expiry), np.array(call, dtype=bool))


@dataclass(frozen=True)
class QuoteModel:
    """Spreads, depth, noise and trading intensity of the simulated option market."""

    tick_frac: float = 0.00025  # minimum half spread as a fraction of spot
    half_spread_vol: float = 0.015  # 1.5 vol points of vega
    half_spread_rel: float = 0.02
    noise: float = 0.3  # centre noise, in half spreads
    depth_usd: float = 1.5e6  # top-of-book notional at the money, calm
    depth_decay: float = 1.2  # depth ~ exp(-|x| / decay)
    depth_noise: float = 0.5  # lognormal sigma
    trade_rate_per_min: float = 0.15  # at the money, calm; proportional to relative depth
    fat_finger_spot_frac: float = 0.05
    requote_move: float = 0.005  # the book is requoted when spot moved 0.5 % since the last requote ...
    requote_s: float = 3600.0  # ... or an hour passed


@dataclass(frozen=True)
class Market:
    """Everything per bar (rows) and series (columns): reference vol and fair price, quotes, last trade."""

    path: PricePath
    series: SeriesSet
    ref: ReferenceVols
    fair_vol: np.ndarray
    fair: np.ndarray
    bid: np.ndarray  # NaN: no bid
    ask: np.ndarray
    bid_size: np.ndarray
    ask_size: np.ndarray
    last_trade: np.ndarray  # last trade price so far (fair at the first bar: the opening mark)
    traded: np.ndarray  # bool: a trade printed in this bar
    quote_bar: np.ndarray  # bar of the last requote (the standing book's time)
    fat_finger: dict = field(default_factory=dict)

    @property
    def spot(self) -> np.ndarray:
        return self.path.close

    def expiry_years(self, i: int) -> np.ndarray:
        return (self.series.expiry_ts - self.path.times[i]) / SECONDS_PER_YEAR


def build_market(path: PricePath, series: SeriesSet, seed: int = 0, vol_model: VolModel = VolModel(),
                 quotes: QuoteModel = QuoteModel(), fat_finger: bool = True) -> Market:
    """Reference surface, quotes and trades for every bar of ``path`` (module docstring)."""
    rng = np.random.default_rng([seed, 14])
    ref = reference_atm(path, vol_model)
    S = path.close[:, None]
    T = (series.expiry_ts[None, :] - path.times[:, None]) / SECONDS_PER_YEAR
    K = series.strike[None, :]
    vol = reference_vol(K, T, S, ref.short[:, None], ref.long[:, None], ref.base, vol_model)
    g = black76_greeks(S, K, T, vol, series.is_call[None, :])
    fair = np.asarray(g.price, dtype=np.float64)
    vega = np.asarray(g.vega, dtype=np.float64)
    stress = (ref.short / ref.base)[:, None]
    half = np.maximum.reduce([quotes.tick_frac * S * np.ones_like(fair), quotes.half_spread_vol * vega,
                              quotes.half_spread_rel * fair]) * stress
    shape = fair.shape
    centre = np.maximum(fair + quotes.noise * half * rng.standard_normal(shape), 0.0)
    bid = centre - half
    bid = np.where(bid > 0.0, bid, np.nan)
    ask = centre + half
    atm = ref.long[:, None] + (ref.short - ref.long)[:, None] * np.exp(-T * 365.0 / vol_model.term_days)
    x = np.abs(np.log(K / S)) / (atm * np.sqrt(np.maximum(T, 1e-9)))
    depth0 = quotes.depth_usd / S * np.exp(-x / quotes.depth_decay) / stress
    bid_size = depth0 * np.exp(quotes.depth_noise * rng.standard_normal(shape))
    ask_size = depth0 * np.exp(quotes.depth_noise * rng.standard_normal(shape))
    # the book stands between requotes (spot move or time): quotes of the last requote bar
    qb = requote_bars(path, quotes)
    bid, ask, bid_size, ask_size = bid[qb], ask[qb], bid_size[qb], ask_size[qb]
    rel_depth = np.exp(-x / quotes.depth_decay) / stress
    p_trade = 1.0 - np.exp(-quotes.trade_rate_per_min * rel_depth * path.bar_seconds / 60.0)
    traded = rng.random(shape) < p_trade
    side_buy = rng.random(shape) < 0.5
    trade_px = np.where(side_buy, ask, np.where(np.isnan(bid), 0.5 * ask, bid))
    trade_px = np.where(traded, trade_px, np.nan)
    trade_px[0] = fair[0]  # opening marks: the first bar's fair prices
    traded[0] = True
    ff = {}
    if fat_finger:
        i = path.crash_index
        puts = np.flatnonzero(~series.is_call & (series.strike < path.close[i]) & (fair[i] > 0))
        if puts.size == 0:  # every listed put in the money at the low: the lowest strikes
            puts = np.flatnonzero(~series.is_call & (series.strike == series.strike.min()))
        j = int(puts[np.argmin(np.minimum(bid_size[i, puts], ask_size[i, puts]))])
        price = float(fair[i, j] + quotes.fat_finger_spot_frac * path.close[i])
        trade_px[i, j] = price
        traded[i, j] = True
        ff = {"bar": i, "series": j, "strike": float(series.strike[j]), "is_call": False,
              "expiry_ts": float(series.expiry_ts[j]), "price": price, "fair": float(fair[i, j]),
              "depth": float(min(bid_size[i, j], ask_size[i, j]))}
    last = _ffill(trade_px)
    return Market(path, series, ref, vol, fair, bid, ask, bid_size, ask_size, last, traded, qb, ff)


def requote_bars(path: PricePath, quotes: QuoteModel = QuoteModel()) -> np.ndarray:
    """Per bar, the bar of the book's last requote (spot moved by ``requote_move`` or ``requote_s`` passed)."""
    qb = np.zeros(len(path), dtype=np.int64)
    last = 0
    for i in range(1, len(path)):
        if (abs(path.close[i] / path.close[last] - 1.0) > quotes.requote_move
                or path.times[i] - path.times[last] >= quotes.requote_s):
            last = i
        qb[i] = last
    return qb


def _ffill(a: np.ndarray) -> np.ndarray:
    """Forward-fill NaN down the rows (first row must be finite)."""
    idx = np.where(np.isfinite(a), np.arange(a.shape[0])[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    return a[idx, np.arange(a.shape[1])[None, :]]


def fair_prices_at(market: Market, i: int, spot: float | None = None) -> np.ndarray:
    """Fair prices of every series at bar ``i`` (optionally at another spot, same reference vols)."""
    if spot is None:
        return market.fair[i]
    T = market.expiry_years(i)
    vol = reference_vol(market.series.strike, T, spot, market.ref.short[i], market.ref.long[i], market.ref.base)
    return black76_price(spot, market.series.strike, T, vol, market.series.is_call)

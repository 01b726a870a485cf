"""Measurements of the vol surface: fake-quote robustness and fit quality (pure numpy, no I/O).

Used by ``benchmarks/bench_surface.py`` (the tables of docs/surface.md) and by ``tests/quant``.

* :func:`inject_quotes` replaces the book of one or more series with a fake two-sided quote at ``factor`` times a
  reference ("fair") price, with a given relative half-spread and size on both sides, quoted at the chain's
  valuation time.
* :func:`attack_effect` fits the clean and the attacked chain and reports, over every *other* quote (two-sided, own
  bid and ask IVs solvable, absolute Black-76 delta between 0.1 and 0.9, not at an attacked expiry/strike), the move
  of the fitted IV in vol points and relative to the limit ``min(1 vol point, half the quote's bid-ask IV width)``,
  and over every other series the move of the hybrid mark (:func:`keeper.quant.marks.mark_chain`, previous state = the
  clean fit's) relative to ``1 vol point x vega``.
* :func:`inside_band_share` is the share of two-sided quotes whose fitted IV lies inside the quote's bid-ask IV band
  (compared in price space: Black-76 is increasing in vol, so the model price lies in ``[bid, ask]`` exactly when
  the model vol lies in ``[iv(bid), iv(ask)]``, also where a side has no IV because it sits below intrinsic value).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from keeper.quant.chains import OptionChain
from keeper.quant.implied_vol import implied_vol
from keeper.quant.marks import mark_chain, model_prices
from keeper.quant.pricing import black76_greeks, black76_price
from keeper.quant.surface import VolSurface, fitted_forward
from keeper.units import SECONDS_PER_YEAR

#: Injected-quote factors of the fair price (the issue's 0.1x .. 10x, with the near-fair band where a fake is hard
#: to tell from a real quote).
FACTORS = (0.1, 0.33, 0.5, 0.8, 0.9, 1.12, 1.33, 2.0, 3.0, 10.0)
#: Relative half-spreads: tight (1 % wide market) and wide (20 % wide market).
SPREADS = {"tight": 0.005, "wide": 0.10}
#: Top-of-book size of the fake quote on both sides (contracts): deep and thin.
SIZES = {"deep": 100.0, "thin": 0.5}


def scaled_surface(surface: VolSurface, vol_factor: float, asof: float | None = None) -> VolSurface:
    """The surface with every implied vol times ``vol_factor`` (total variance times its square: SVI ``a`` and ``b``
    scale, the smile's shape stays) as it was fitted at ``asof`` (default: the surface's own): each slice's maturity
    is longer by ``surface.asof - asof`` at the same vols. A previous block's surface in a market that moved since."""
    asof = surface.asof if asof is None else float(asof)
    dt = (surface.asof - asof) / SECONDS_PER_YEAR
    slices = []
    for s in surface.slices:
        f2 = vol_factor * vol_factor * (s.t + dt) / s.t
        slices.append(replace(s, t=s.t + dt, params=replace(s.params, a=s.params.a * f2, b=s.params.b * f2)))
    return VolSurface(underlying=surface.underlying, asof=asof, slices=tuple(slices))


def two_sided(chain: OptionChain) -> np.ndarray:
    return np.isfinite(chain.bid) & np.isfinite(chain.ask) & (chain.bid > 0.0) & (chain.ask > 0.0) & (
        chain.bid <= chain.ask)


def model_price_at_quote(chain: OptionChain, surface) -> np.ndarray:
    """Black-76 price of every row on the surface vol, at the row's forward (checked against put-call parity, as
    the surface was fitted on) and quote-time maturity."""
    t = chain.quote_expiry_years
    fwd = fitted_forward(chain, surface)
    vol = surface.implied_vol(chain.strike, t, fwd)
    ok = np.isfinite(vol) & (t > 0.0)
    price = black76_price(fwd, chain.strike, np.where(ok, t, 1.0), np.where(ok, vol, 0.5), chain.is_call)
    return np.where(ok, price, np.nan)


def inside_band(chain: OptionChain, price: np.ndarray) -> np.ndarray:
    """Per row: the price (model or venue mark) lies inside ``[bid, ask]`` (False where not two-sided or NaN)."""
    return two_sided(chain) & (price >= chain.bid) & (price <= chain.ask)


def inside_band_share(chain: OptionChain, surface) -> dict[str, float]:
    """Share of two-sided quotes with the fitted IV inside the bid-ask IV band, and the same for the venue's mark
    price (Deribit's mark: a reference, not an input of the fit)."""
    two = two_sided(chain)
    model = inside_band(chain, model_price_at_quote(chain, surface))
    venue = inside_band(chain, chain.mark)
    return {"n": int(two.sum()), "model": float(model[two].mean()), "venue_mark": float(venue[two].mean())}


#: Moneyness buckets of :func:`inside_band_buckets`: standardized log-moneyness ``z = ln(K/F) / (iv sqrt t)``.
BUCKETS = (("z<-2", -np.inf, -2.0), ("-2..-0.5", -2.0, -0.5), ("atm", -0.5, 0.5), ("0.5..2", 0.5, 2.0),
           ("z>2", 2.0, np.inf))


def inside_band_buckets(chain: OptionChain, surface) -> list[dict]:
    """Inside-band counts of the model and of the venue's mark per expiry and moneyness bucket (:data:`BUCKETS`,
    ``z`` from the model vol at the quote's maturity), over all two-sided quotes."""
    two = two_sided(chain)
    t = chain.quote_expiry_years
    fwd = fitted_forward(chain, surface)
    model_iv = surface.implied_vol(chain.strike, t, fwd)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.log(chain.strike / fwd) / (model_iv * np.sqrt(t))
    model = inside_band(chain, model_price_at_quote(chain, surface))
    venue = inside_band(chain, chain.mark)
    out = []
    for e in np.unique(chain.expiry_ts[two]):
        for label, lo, hi in BUCKETS:
            m = two & (chain.expiry_ts == e) & (z >= lo) & (z < hi)
            if m.any():
                out.append({"expiry_ts": float(e), "bucket": label, "n": int(m.sum()), "model": int(model[m].sum()),
                            "venue_mark": int(venue[m].sum())})
    return out


def inject_quotes(chain: OptionChain, rows: Sequence[int], factor: float, fair: np.ndarray, half_spread: float,
                  size: float) -> OptionChain:
    """The chain with the book of each of ``rows`` replaced by a fake quote ``factor * fair * (1 -+ half_spread)``
    of ``size`` contracts on both sides, quoted now (venue IVs unknown: NaN)."""
    rows = np.asarray(rows, dtype=np.int64)
    arrays = {}
    for name in ("bid", "ask", "bid_size", "ask_size", "quote_ts", "bid_iv", "ask_iv"):
        arrays[name] = np.array(getattr(chain, name), dtype=np.float64)
    mid = factor * np.asarray(fair, dtype=np.float64)[rows]
    arrays["bid"][rows] = mid * (1.0 - half_spread)
    arrays["ask"][rows] = mid * (1.0 + half_spread)
    arrays["bid_size"][rows] = size
    arrays["ask_size"][rows] = size
    arrays["quote_ts"][rows] = chain.asof
    arrays["bid_iv"][rows] = np.nan
    arrays["ask_iv"][rows] = np.nan
    return replace(chain, **arrays)


@dataclass(frozen=True)
class AttackEffect:
    """Worst effect of an injection on the other quotes and marks."""

    worst_iv_move_pts: float  # largest |fitted IV move| of another quote (vol points)
    median_iv_move_pts: float
    median_iv_move_same_expiry_pts: float  # median move of the other quotes of the attacked expiry
    worst_iv_ratio: float  # largest move / min(1 vol pt, half the quote's IV width): <= 1 passes
    worst_mark_ratio: float  # largest |mark move| / (1 vol pt * vega) over other series: <= 1 passes
    worst_mark_ratio_steady: float  # the same over the series whose market/model choice did not switch
    switches: int  # other series whose hybrid mark switched between market and model
    n_quotes: int  # other quotes measured
    n_series: int  # other series with a mark before and after

    @property
    def passes(self) -> bool:
        return self.worst_iv_ratio <= 1.0 and self.worst_mark_ratio <= 1.0


@dataclass(frozen=True)
class Baseline:
    """What :func:`attack_effect` needs from the clean chain (computed once per chain)."""

    chain: OptionChain
    surface: object
    iv: np.ndarray  # fitted IV per row at expiry_years
    fair: np.ndarray  # model price per row at the quote's maturity (the injection's reference)
    measured: np.ndarray  # bool: a quote whose IV move is measured
    limit: np.ndarray  # per row: min(0.01, half the bid-ask IV width)
    mark: np.ndarray
    market: np.ndarray
    vega: np.ndarray


def baseline(chain: OptionChain, fit: Callable[[OptionChain], object]) -> Baseline:
    surface = fit(chain)
    t = chain.expiry_years
    fwd = fitted_forward(chain, surface)
    iv = surface.implied_vol(chain.strike, t, fwd)
    tq = chain.quote_expiry_years
    two = two_sided(chain)
    iv_bid = implied_vol(np.where(two, chain.bid, 1.0), fwd, chain.strike, tq, chain.is_call).vol
    iv_ask = implied_vol(np.where(two, chain.ask, 1.0), fwd, chain.strike, tq, chain.is_call).vol
    delta = np.abs(black76_greeks(fwd, chain.strike, np.where(t > 0, t, 1.0),
                                  np.where(np.isfinite(iv), iv, 0.5), chain.is_call).delta)
    measured = two & np.isfinite(iv_bid) & np.isfinite(iv_ask) & np.isfinite(iv) & (delta >= 0.1) & (delta <= 0.9)
    limit = np.minimum(0.01, 0.5 * (iv_ask - iv_bid))
    marks = mark_chain(chain, surface)
    _, vega = model_prices(chain, surface)
    return Baseline(chain=chain, surface=surface, iv=iv, fair=model_price_at_quote(chain, surface),
                    measured=measured, limit=limit, mark=marks.mark, market=marks.market, vega=vega)


def attack_effect(base: Baseline, rows: Sequence[int], factor: float, half_spread: float, size: float,
                  fit: Callable[[OptionChain], object]) -> AttackEffect:
    chain = base.chain
    attacked = inject_quotes(chain, rows, factor, base.fair, half_spread, size)
    surface = fit(attacked)
    # the model price on the attacked chain's own checked forward (a fake quote at the money is one strike of the
    # parity check), as an implied vol on the clean chain's forward: the move in price, in vol points
    t = chain.expiry_years
    f_att, f_base = fitted_forward(attacked, surface), fitted_forward(chain, base.surface)
    iv = surface.implied_vol(chain.strike, t, f_att)
    if not np.array_equal(f_att, f_base):
        ok = np.isfinite(iv) & (t > 0.0)
        price = black76_price(f_att, chain.strike, np.where(ok, t, 1.0), np.where(ok, iv, 0.5), chain.is_call)
        iv = np.where(ok, implied_vol(np.where(ok, price, 1.0), f_base, chain.strike, np.where(ok, t, 1.0),
                                      chain.is_call).vol, np.nan)
    same_point = np.zeros(len(chain), dtype=bool)
    for r in rows:
        same_point |= (chain.expiry_ts == chain.expiry_ts[r]) & (chain.strike == chain.strike[r])
    q = base.measured & ~same_point
    move = np.abs(iv - base.iv)[q]
    same = (chain.expiry_ts == chain.expiry_ts[rows[0]])[q]
    move = np.where(np.isfinite(move), move, np.inf)
    marks = mark_chain(attacked, surface, prev_market=base.market)
    s = ~same_point & np.isfinite(base.mark) & (base.vega > 0.0)
    dm = np.abs(marks.mark - base.mark)[s]
    dm = np.where(np.isfinite(dm), dm, np.inf)
    mark_ratio = dm / (0.01 * base.vega[s])
    steady = (marks.market == base.market)[s]
    return AttackEffect(
        worst_iv_move_pts=float(move.max() * 100.0) if move.size else 0.0,
        median_iv_move_pts=float(np.median(move) * 100.0) if move.size else 0.0,
        median_iv_move_same_expiry_pts=float(np.median(move[same]) * 100.0) if same.any() else 0.0,
        worst_iv_ratio=float((move / base.limit[q]).max()) if move.size else 0.0,
        worst_mark_ratio=float(mark_ratio.max()) if mark_ratio.size else 0.0,
        worst_mark_ratio_steady=float(mark_ratio[steady].max()) if steady.any() else 0.0,
        switches=int((~steady).sum()),
        n_quotes=int(q.sum()), n_series=int(s.sum()))


def attack_targets(chain: OptionChain, base: Baseline) -> dict[str, dict[str, list[int]]]:
    """Rows to attack: in the *thin* expiry (the first expiry at least 12 hours out: about one day on these chains)
    and the *deep* one (the expiry with the most two-sided quotes), the out-of-the-money quote nearest the money
    (``liquid``, about 50 delta) and the two-sided out-of-the-money quote nearest 15 delta (``wing``); for collusion,
    the wing quote and its out-of-the-money neighbour on the same side."""
    two = two_sided(chain) & np.isfinite(base.fair)
    otm = np.where(chain.is_call, chain.strike >= chain.forward, chain.strike < chain.forward)
    t = chain.expiry_years
    expiries = [e for e in np.unique(chain.expiry_ts) if t[chain.expiry_ts == e][0] >= 0.5 / 365.0
                and int((two & otm & (chain.expiry_ts == e)).sum()) >= 8]
    thin = expiries[0]
    deep = max(expiries, key=lambda e: (int((two & (chain.expiry_ts == e)).sum()), -e))
    delta = black76_greeks(chain.forward, chain.strike, np.where(t > 0, t, 1.0),
                           np.where(np.isfinite(base.iv), base.iv, 0.5), chain.is_call).delta
    out: dict[str, dict[str, list[int]]] = {}
    for label, e in (("thin", thin), ("deep", deep)):
        cand = np.flatnonzero(two & otm & (chain.expiry_ts == e))
        ad = np.abs(delta[cand])
        liquid = int(cand[np.argmin(np.abs(ad - 0.5))])
        wing = int(cand[np.argmin(np.abs(ad - 0.15))])
        same_side = cand[(chain.is_call[cand] == chain.is_call[wing]) & (cand != wing)]
        neighbour = int(same_side[np.argmin(np.abs(chain.strike[same_side] - chain.strike[wing]))])
        out[label] = {"liquid": [liquid], "wing": [wing], "collusion": sorted([wing, neighbour])}
    return out


def attack_table(chain: OptionChain, fit: Callable[[OptionChain], object], factors: Sequence[float] = FACTORS,
                 spreads: dict[str, float] | None = None, sizes: dict[str, float] | None = None,
                 targets: Sequence[str] = ("liquid", "wing", "collusion")) -> list[dict]:
    """Every combination of expiry (thin, deep), target, factor, spread and size: one row each."""
    spreads = SPREADS if spreads is None else spreads
    sizes = SIZES if sizes is None else sizes
    base = baseline(chain, fit)
    rows_out = []
    for expiry_label, by_target in attack_targets(chain, base).items():
        for target in targets:
            rows = by_target[target]
            for factor in factors:
                for spread_label, hs in spreads.items():
                    for size_label, size in sizes.items():
                        eff = attack_effect(base, rows, factor, hs, size, fit)
                        rows_out.append({"expiry": expiry_label, "target": target, "rows": rows, "factor": factor,
                                         "spread": spread_label, "size": size_label, "effect": eff})
    return rows_out


def summarize(table: list[dict]) -> dict[str, float]:
    """Worst and median figures over a table of :func:`attack_table` rows."""
    eff = [r["effect"] for r in table]
    if not eff:
        return {}
    return {
        "n": len(eff),
        "passes": sum(e.passes for e in eff),
        "worst_iv_move_pts": max(e.worst_iv_move_pts for e in eff),
        "median_worst_iv_move_pts": float(np.median([e.worst_iv_move_pts for e in eff])),
        "worst_iv_ratio": max(e.worst_iv_ratio for e in eff),
        "worst_mark_ratio": max(e.worst_mark_ratio for e in eff),
        "worst_mark_ratio_steady": max(e.worst_mark_ratio_steady for e in eff),
        "iv_passes": sum(e.worst_iv_ratio <= 1.0 for e in eff),
    }


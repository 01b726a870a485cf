"""Fit quality on all two-sided quotes of the real chains (issue 15 item 2) and the put-call-parity check of the
venue forward (``SurfaceConfig(parity_forward=True)``: measured, off by default because of what a fake quote at the
money can then do to in-the-money marks, asserted here too).

References are independent of the fit: the venue's own quotes and mark prices, a pure-Python Black-76 (``math.erf``)
for the inside-band recount, and put-call parity computed by hand from the raw book for the forward check.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from keeper.data.deribit import load_deribit_csv
from keeper.quant import surface_eval as ev
from keeper.quant.chains import OptionChain
from keeper.quant.pricing import black76_price
from keeper.quant.surface import LEGACY_CONFIG, SurfaceConfig, fit_surface, fitted_forward
from keeper.units import SECONDS_PER_YEAR

BTC_0514 = "deribit_BTC_20200514T0541Z.csv"
BTC_0521 = "deribit_BTC_20200521T2319Z.csv"
ETH = "deribit_ETH_20240108T1119Z.csv"
# issue 15 item 2: Deribit's own mark inside the band minus 1 percentage point
TARGETS = {BTC_0514: 0.955, BTC_0521: 0.968, ETH: 0.980}
# what the fit reaches today (docs/surface.md): a floor, so a regression fails even where the target is not met
REACHED = {BTC_0514: 0.953, BTC_0521: 0.960, ETH: 0.960}
PARITY = SurfaceConfig(parity_forward=True)


@pytest.fixture(scope="module")
def fits(shared_data):
    out = {}
    for name in TARGETS:
        chain = load_deribit_csv(shared_data / "option_chains" / name).chain
        out[name] = (chain, fit_surface(chain))
    return out


def _black76(f: float, k: float, t: float, vol: float, call: bool) -> float:
    s = vol * math.sqrt(t)
    d1 = (math.log(f / k) + 0.5 * s * s) / s
    n = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
    c = f * n(d1) - k * n(d1 - s)
    return c if call else c - (f - k)


def _inside_recount(chain: OptionChain, surface) -> tuple[int, int, int]:
    """(two-sided quotes, model price inside [bid, ask], venue mark inside), row by row in pure Python."""
    fwd = fitted_forward(chain, surface)
    n = model_in = venue_in = 0
    for i in range(len(chain)):
        bid, ask = float(chain.bid[i]), float(chain.ask[i])
        if not (math.isfinite(bid) and math.isfinite(ask) and 0.0 < bid <= ask):
            continue
        n += 1
        t = (float(chain.expiry_ts[i]) - float(chain.quote_ts[i])) / SECONDS_PER_YEAR
        vol = float(surface.implied_vol(chain.strike[i], t, fwd[i]))
        price = _black76(float(fwd[i]), float(chain.strike[i]), t, vol, bool(chain.is_call[i]))
        model_in += bid <= price <= ask
        venue_in += bid <= float(chain.mark[i]) <= ask
    return n, model_in, venue_in


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_inside_band_share_against_the_venue_mark(fits, name):
    chain, surface = fits[name]
    share = ev.inside_band_share(chain, surface)
    n, model_in, venue_in = _inside_recount(chain, surface)
    assert share["n"] == n and share["model"] == pytest.approx(model_in / n, abs=1.0 / n)
    assert share["venue_mark"] == venue_in / n
    assert TARGETS[name] == pytest.approx(round(venue_in / n - 0.01, 3), abs=0.001)  # the target
    assert share["model"] >= REACHED[name], share
    # the previous fit (least squares + MAD, no robustness) is better by at most one quote (BTC 05-14: the weight cap)
    legacy = ev.inside_band_share(chain, fit_surface(chain, LEGACY_CONFIG))
    assert share["model"] >= legacy["model"] - 1.0 / n - 1e-12
    pytest.xfail(f"issue 15 target {TARGETS[name]:.1%} not reached: {share['model']:.1%} (docs/surface.md: one SVI "
                 "slice per expiry cannot pass through every tight quote)")


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_parity_checked_forward_reaches_the_btc_0514_target(fits, name):
    """With each expiry's forward checked against put-call parity, BTC 2020-05-14 reaches its target (the weekly
    22MAY20/29MAY20 venue forwards lie above most near-the-money strikes' parity bounds); on the other chains the
    check is the identity (same surface, bit for bit)."""
    chain, surface = fits[name]
    checked = fit_surface(chain, PARITY)
    share = ev.inside_band_share(chain, checked)
    n, model_in, _ = _inside_recount(chain, checked)
    assert share["model"] == pytest.approx(model_in / n, abs=1.0 / n)
    if name == BTC_0514:
        assert share["model"] >= TARGETS[name] > ev.inside_band_share(chain, surface)["model"], share
    else:
        assert checked.hash() == surface.hash()
    arb = checked.fit_report["arbitrage"]
    assert arb["butterfly_ok"] and arb["calendar_ok"]


def test_why_the_parity_check_is_off_by_default(fits):
    """The cost: a tight call at 3x fair on the ~50-delta strike of BTC 05-14's deep expiry (22MAY20) takes that
    strike out of the parity check, the forward moves back towards the venue's, and in-the-money marks move with
    it by more than 1 vol pt x vega; with the venue forward (default) the same attack stays within the limit."""
    chain, _ = fits[BTC_0514]
    base_on = ev.baseline(chain, lambda ch: fit_surface(ch, PARITY))
    base_off = ev.baseline(chain, fit_surface)
    rows = ev.attack_targets(chain, base_off)["deep"]["liquid"]
    assert chain.strike[rows[0]] == 9500.0 and chain.is_call[rows[0]]
    on = ev.attack_effect(base_on, rows, 3.0, ev.SPREADS["tight"], 100.0, lambda ch: fit_surface(ch, PARITY))
    off = ev.attack_effect(base_off, rows, 3.0, ev.SPREADS["tight"], 100.0, fit_surface)
    attacked = ev.inject_quotes(chain, rows, 3.0, base_on.fair, ev.SPREADS["tight"], 100.0)
    e = chain.expiry_ts == chain.expiry_ts[rows[0]]
    assert not np.array_equal(attacked.parity_checked_forward()[e], chain.parity_checked_forward()[e])
    assert on.worst_mark_ratio > 1.0 and off.worst_mark_ratio <= 1.0, (on, off)
    assert off.worst_iv_ratio <= 1.0


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_fitted_surface_passes_the_arbitrage_checks(fits, name):
    chain, surface = fits[name]
    arb = surface.fit_report["arbitrage"]
    assert arb["butterfly_ok"] and arb["calendar_ok"], arb
    # second computation: call prices convex in strike on each slice and non-decreasing in maturity
    strikes = np.linspace(math.exp(-1.5), math.exp(1.5), 1201)  # evenly spaced strikes (forward 1)
    k = np.log(strikes)
    prev = None
    for sl in surface.slices:
        c = black76_price(1.0, strikes, sl.t, np.sqrt(sl.params.total_variance(k) / sl.t), True)
        d2 = c[2:] - 2.0 * c[1:-1] + c[:-2]
        assert float(np.min(d2)) > -1e-12
        if prev is not None:
            assert np.all(c - prev >= -1e-12)
        prev = c


# ---------------------------------------------------------------------------------------------------------------
# The forward: the venue's unless the quotes' put-call parity contradicts it
# ---------------------------------------------------------------------------------------------------------------

def _synthetic_chain(true_f: float, venue_f: float, vol: float = 0.6, days: float = 7.0, rel_half_spread=0.01):
    asof = 1.7e9
    strikes = np.arange(80.0, 121.0, 2.5)
    t = days / 365.0
    n = strikes.size
    k = np.concatenate([strikes, strikes])
    call = np.concatenate([np.ones(n, bool), np.zeros(n, bool)])
    fair = black76_price(true_f, k, t, vol, call)
    half = np.maximum(rel_half_spread * fair, 0.01)
    nan = np.full(2 * n, np.nan)
    return OptionChain(
        underlying="X", asof=asof, spot=true_f, quote_ts=np.full(2 * n, asof),
        expiry_ts=np.full(2 * n, asof + t * SECONDS_PER_YEAR), strike=k, is_call=call, bid=fair - half,
        ask=fair + half, bid_size=np.full(2 * n, 10.0), ask_size=np.full(2 * n, 10.0), mark=fair,
        forward=np.full(2 * n, venue_f), index_price=np.full(2 * n, true_f), open_interest=nan, bid_iv=nan,
        ask_iv=nan, mark_iv=nan)


def test_parity_consistent_venue_forward_is_kept_exactly():
    chain = _synthetic_chain(100.0, 100.04)  # within every strike's parity bounds
    assert np.array_equal(chain.parity_checked_forward(), chain.forward)
    assert chain.with_parity_checked_forward() is chain


def _near_bounds(chain: OptionChain, n: int = 5):
    fv = float(np.median(chain.forward))
    ks = sorted({float(k) for k in chain.strike}, key=lambda k: (abs(math.log(k / fv)), k))[:n]
    out = []
    for k in ks:
        c = int(np.flatnonzero(chain.is_call & (chain.strike == k))[0])
        p = int(np.flatnonzero(~chain.is_call & (chain.strike == k))[0])
        out.append((k + chain.bid[c] - chain.ask[p], k + chain.ask[c] - chain.bid[p]))
    return fv, out


def test_venue_forward_contradicted_by_parity_moves_into_the_median_strikes_bounds():
    chain = _synthetic_chain(100.0, 101.5)  # 1.5 % off: every near strike's parity bounds exclude it
    fv, bounds = _near_bounds(chain)
    assert all(hi < fv for _, hi in bounds)
    fwd = chain.parity_checked_forward()
    assert np.all(fwd == fwd[0]) and fwd[0] == pytest.approx(float(np.median([hi for _, hi in bounds])), rel=1e-12)
    assert 100.0 < fwd[0] < fv
    # the fit on the checked forward prices more quotes inside their books than on the venue forward
    good = ev.inside_band_share(chain, fit_surface(chain, PARITY))["model"]
    bad = ev.inside_band_share(chain, fit_surface(chain))["model"]
    assert good > bad


def test_one_fake_quote_moves_the_forward_at_most_to_a_neighbouring_strikes_correction():
    chain = _synthetic_chain(100.0, 100.04)
    atm_call = int(np.flatnonzero(chain.is_call & (chain.strike == 100.0))[0])

    def faked(ch, factor):
        bid, ask = np.array(ch.bid), np.array(ch.ask)
        bid[atm_call] *= factor
        ask[atm_call] *= factor
        return OptionChain(**{**{f: getattr(ch, f) for f in ch.__dataclass_fields__}, "bid": bid, "ask": ask})

    for factor in (0.5, 0.8, 1.25, 3.0):
        assert np.array_equal(faked(chain, factor).parity_checked_forward(), chain.forward), factor  # 1 of 5
    chain = _synthetic_chain(100.0, 101.5)
    fv, bounds = _near_bounds(chain)
    honest = sorted(hi - fv for k, (lo, hi) in zip(sorted(set(chain.strike), key=lambda k: (abs(math.log(k / fv)), k)),
                                                     bounds) if k != 100.0)
    for factor in (0.5, 1.25, 3.0):
        shift = faked(chain, factor).parity_checked_forward()[0] - fv
        assert honest[1] - 1e-12 <= shift <= honest[2] + 1e-12, factor


def test_real_chains_parity_check_by_hand(fits):
    """BTC 2020-05-14: the weekly 22MAY20 and 29MAY20 forwards (Deribit's interpolation between futures) lie above
    the parity bounds of most strikes near the money and move down into the median strike's bounds; every other
    expiry of the three chains keeps the venue forward. Recomputed from the raw book in pure Python."""
    for name, (chain, _) in fits.items():
        checked = chain.parity_checked_forward()
        for e in chain.expiries():
            rows = np.flatnonzero(chain.expiry_ts == e)
            fv = float(np.median(chain.forward[rows]))
            book = {}
            for i in rows:
                b, a = float(chain.bid[i]), float(chain.ask[i])
                if math.isfinite(b) and math.isfinite(a) and 0.0 < b <= a:
                    book[(float(chain.strike[i]), bool(chain.is_call[i]))] = (b, a)
            ks = sorted({k for k, c in book if (k, not c) in book}, key=lambda k: (abs(math.log(k / fv)), k))[:5]
            corr = []
            for k in ks:
                lo = k + book[(k, True)][0] - book[(k, False)][1]
                hi = k + book[(k, True)][1] - book[(k, False)][0]
                corr.append(min(max(fv, lo), hi) - fv)
            shift = sorted(corr)[len(corr) // 2] if len(corr) >= 3 else 0.0
            day = int((e - chain.asof) // 86400)
            f_new = float(np.median(checked[rows]))
            assert f_new == pytest.approx(fv + shift, rel=1e-12, abs=1e-9), (name, day)
            if name == BTC_0514 and day in (8, 15):  # 22MAY20, 29MAY20
                assert fv - 4.0 < f_new < fv - 0.5, (name, day, fv, f_new)
            else:
                assert np.array_equal(checked[rows], chain.forward[rows]), (name, day)

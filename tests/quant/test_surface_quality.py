"""Fit quality on all two-sided quotes of the real chains (issue 15 item 2) and the put-call-parity check of the
venue forward that the fit prices on.

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
from keeper.quant.surface import LEGACY_CONFIG, fit_surface, fitted_forward
from keeper.units import SECONDS_PER_YEAR

BTC_0514 = "deribit_BTC_20200514T0541Z.csv"
BTC_0521 = "deribit_BTC_20200521T2319Z.csv"
ETH = "deribit_ETH_20240108T1119Z.csv"
# issue 15 item 2: Deribit's own mark inside the band minus 1 percentage point
TARGETS = {BTC_0514: 0.955, BTC_0521: 0.968, ETH: 0.980}
# what the fit reaches today (docs/surface.md): a floor, so a regression fails even where the target is not met
REACHED = {BTC_0514: 0.988, BTC_0521: 0.960, ETH: 0.960}


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
    # the previous fit (venue forward, least squares + MAD) is never better
    legacy = ev.inside_band_share(chain, fit_surface(chain, LEGACY_CONFIG))
    assert share["model"] >= legacy["model"]
    if name != BTC_0514:
        pytest.xfail(f"issue 15 target {TARGETS[name]:.1%} not reached: {share['model']:.1%} (docs/surface.md: one SVI "
                     "slice per expiry cannot pass through every tight quote)")
    assert share["model"] >= TARGETS[name], share


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


def test_venue_forward_contradicted_by_parity_is_replaced():
    chain = _synthetic_chain(100.0, 101.5)  # 1.5 % off: every near strike's parity bounds exclude it
    fwd = chain.parity_checked_forward()
    assert np.all(fwd == fwd[0]) and fwd[0] == pytest.approx(100.0, abs=1e-9)  # symmetric spreads: mids give F
    _, by_expiry = chain.forward_by_expiry()
    assert by_expiry[0] == pytest.approx(100.0, abs=1e-9)
    # the fit on the checked forward prices the quotes inside their books; on the venue forward it misses
    good = ev.inside_band_share(chain, fit_surface(chain))["model"]
    bad = ev.inside_band_share(chain, fit_surface(chain, LEGACY_CONFIG))["model"]
    assert good == 1.0 and bad < 0.9


def test_one_fake_quote_cannot_move_the_forward():
    chain = _synthetic_chain(100.0, 100.04)
    atm_call = int(np.flatnonzero(chain.is_call & (chain.strike == 100.0))[0])
    for factor in (0.5, 0.8, 1.25, 3.0):
        bid, ask = np.array(chain.bid), np.array(chain.ask)
        bid[atm_call] *= factor
        ask[atm_call] *= factor
        fake = OptionChain(**{**{f: getattr(chain, f) for f in chain.__dataclass_fields__}, "bid": bid, "ask": ask})
        assert np.array_equal(fake.parity_checked_forward(), chain.forward), factor  # one strike of five
    # nor pull a contradicted venue forward off the honest strikes' estimate
    chain = _synthetic_chain(100.0, 101.5)
    bid, ask = np.array(chain.bid), np.array(chain.ask)
    bid[atm_call] *= 1.25
    ask[atm_call] *= 1.25
    fake = OptionChain(**{**{f: getattr(chain, f) for f in chain.__dataclass_fields__}, "bid": bid, "ask": ask})
    assert fake.parity_checked_forward()[0] == pytest.approx(100.0, abs=1e-9)


def test_real_chains_parity_check_by_hand(fits):
    """BTC 2020-05-14: the weekly 22MAY20 and 29MAY20 forwards (Deribit's interpolation between futures) lie above
    the parity bounds of most strikes near the money and are replaced; every other expiry of the three chains keeps
    the venue forward. Recounted from the raw book in pure Python."""
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
            below = sum(1 for k in ks if k + book[(k, True)][1] - book[(k, False)][0] < fv)
            above = sum(1 for k in ks if k + book[(k, True)][0] - book[(k, False)][1] > fv)
            changed = not np.array_equal(checked[rows], chain.forward[rows])
            day = int((e - chain.asof) // 86400)
            if name == BTC_0514 and day in (8, 15):  # 22MAY20, 29MAY20
                assert changed and below >= 3, (name, day)
                f_new = float(np.median(checked[rows]))
                assert fv - 35.0 < f_new < fv - 20.0  # ~ 9322 / 9325 against the venue's 9351 / 9352
            else:
                assert not changed and below < 3 and above < 3, (name, day)

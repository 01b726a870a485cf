"""Robust surface: one fake quote (or two colluding ones) must not move the other quotes' fitted vols.

Each attack really happens (the previous fit, ``LEGACY_CONFIG``, is moved by it: checked in the same test) and is
caught by the robust fit. References are independent of the robust machinery: the clean chain's fit, and a
hand-computed neighbour statistic.
"""
from __future__ import annotations

import numpy as np
import pytest

from keeper.quant import surface_eval as ev
from keeper.data.deribit import load_deribit_csv
from keeper.quant.surface import (
    LEGACY_CONFIG,
    SliceQuotes,
    SurfaceConfig,
    SVIParams,
    capped_weights,
    fit_surface,
    local_jumps,
)

BTC_0514 = "deribit_BTC_20200514T0541Z.csv"
ETH = "deribit_ETH_20240108T1119Z.csv"


def _legacy(chain):
    return fit_surface(chain, LEGACY_CONFIG)


@pytest.fixture(scope="module")
def bases(shared_data):
    out = {}
    for name in (BTC_0514, ETH):
        chain = load_deribit_csv(shared_data / "option_chains" / name).chain
        new, old = ev.baseline(chain, fit_surface), ev.baseline(chain, _legacy)
        out[name] = (chain, new, old, ev.attack_targets(chain, new))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The attack: a tight quote at 3x fair in the 1-day expiry of BTC 2020-05-14
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("factor", [3.0, 0.1])
def test_one_tight_fake_quote_in_the_one_day_expiry_moves_no_other_quote(bases, factor):
    chain, new, old, targets = bases[BTC_0514]
    rows = targets["thin"]["liquid"]
    assert chain.expiry_years[rows[0]] * 365 == pytest.approx(26.3 / 24, abs=0.01)  # the 15MAY20 expiry
    before = ev.attack_effect(old, rows, factor, ev.SPREADS["tight"], 100.0, _legacy)
    after = ev.attack_effect(new, rows, factor, ev.SPREADS["tight"], 100.0, fit_surface)
    assert before.worst_iv_move_pts > 10.0  # the attack moves the previous fit by more than 10 vol points
    assert after.n_quotes == before.n_quotes > 50
    # robust fit: no other quote between 10 and 90 delta moves by more than min(1 vol pt, half its IV width)
    assert after.worst_iv_ratio <= 1.0, after
    assert after.worst_iv_move_pts < 0.5
    # and the fake quote is rejected (outlier or filter), not fitted
    attacked = ev.inject_quotes(chain, rows, factor, new.fair, ev.SPREADS["tight"], 100.0)
    fitted = fit_surface(attacked)
    model = fitted.implied_vol(chain.strike[rows], chain.expiry_years[rows], chain.forward[rows])
    assert abs(float(model[0] - new.iv[rows[0]])) < 0.01  # the fitted vol at the attacked strike barely moves


def test_fake_quote_in_a_deep_expiry_is_ignored(bases):
    chain, new, old, targets = bases[ETH]
    rows = targets["deep"]["liquid"]
    before = ev.attack_effect(old, rows, 0.1, ev.SPREADS["tight"], 100.0, _legacy)
    after = ev.attack_effect(new, rows, 0.1, ev.SPREADS["tight"], 100.0, fit_surface)
    assert before.worst_iv_move_pts > 5.0
    assert after.worst_iv_ratio <= 1.0 and after.worst_mark_ratio <= 1.0, after


def test_two_colluding_quotes_do_less_damage_than_before(bases):
    chain, new, old, targets = bases[BTC_0514]
    rows = targets["thin"]["collusion"]
    assert len(rows) == 2 and chain.expiry_ts[rows[0]] == chain.expiry_ts[rows[1]]
    for factor in (3.0, 10.0):
        before = ev.attack_effect(old, rows, factor, ev.SPREADS["tight"], 100.0, _legacy)
        after = ev.attack_effect(new, rows, factor, ev.SPREADS["tight"], 100.0, fit_surface)
        assert before.worst_iv_move_pts > 10.0
        assert after.worst_iv_move_pts < 0.25 * before.worst_iv_move_pts, (before, after)


def test_robust_fit_keeps_the_arbitrage_checks_under_attack(bases):
    chain, new, _, targets = bases[ETH]
    for key in ("liquid", "collusion"):
        attacked = ev.inject_quotes(chain, targets["thin"][key], 0.5, new.fair, ev.SPREADS["tight"], 100.0)
        arb = fit_surface(attacked).fit_report["arbitrage"]
        assert arb["butterfly_ok"] and arb["calendar_ok"]


# ---------------------------------------------------------------------------------------------------------------
# Synthetic slice: the robust fit of a dirty slice equals the fit of the clean slice
# ---------------------------------------------------------------------------------------------------------------

def _slice(iv, k, half, t=0.01):
    return SliceQuotes(expiry_ts=round(t * 365 * 86400.0), t=t, forward=100.0, k=k, iv_mid=iv, iv_bid=iv - half,
                       iv_ask=iv + half, weight=1.0 / (2.0 * half), rows=np.arange(k.size))


def test_tight_fake_in_a_wide_synthetic_slice_is_an_outlier_and_changes_nothing():
    """A 1-day-like slice with 4 vol point wide markets and 1 vol point noise; one quote replaced by a tight
    (0.5 vol point wide) quote 25 vol points below: the previous fit follows it, the robust one flags it and
    matches the fit of the slice without that quote."""
    true = SVIParams(a=0.0001, b=0.01, rho=-0.2, m=0.0, sigma=0.05)
    t = 0.003
    k = np.linspace(-0.25, 0.25, 17)
    rng = np.random.default_rng(8)
    iv = np.sqrt(true.total_variance(k) / t) + rng.normal(0.0, 0.01, k.size)
    half = np.full(k.size, 0.04)
    bad = 9
    iv_d, half_d = iv.copy(), half.copy()
    iv_d[bad] -= 0.25
    half_d[bad] = 0.0025
    dirty, clean = _slice(iv_d, k, half_d, t), _slice(iv, k, half, t).select(np.arange(k.size) != bad)
    robust = fit_surface([dirty])
    legacy = fit_surface([dirty], LEGACY_CONFIG)
    ref = fit_surface([clean])
    others = np.arange(k.size) != bad

    def vols(s):
        return np.sqrt(s.slices[0].params.total_variance(k) / t)[others]

    assert robust.fit_report["outliers"] == 1
    assert np.max(np.abs(vols(legacy) - vols(ref))) > 0.05  # the previous fit bends by > 5 vol points
    assert np.max(np.abs(vols(robust) - vols(ref))) < 1e-3  # the robust fit is the clean fit (to 0.1 vol pt)


def test_clean_synthetic_slice_needs_no_robust_step():
    """On clean quotes (noise well inside the bid-ask band) no quote is screened and the robust fit equals the plain
    weighted least squares."""
    true = SVIParams(a=0.02, b=0.15, rho=-0.4, m=0.05, sigma=0.2)
    k = np.linspace(-0.8, 0.6, 30)
    iv = np.sqrt(true.total_variance(k) / 0.5) + np.random.default_rng(1).normal(0.0, 0.002, k.size)
    sq = _slice(iv, k, np.full(k.size, 0.01), t=0.5)
    robust = fit_surface([sq])
    plain = fit_surface([sq], SurfaceConfig(robust=False))
    assert robust.fit_report["outliers"] == 0
    assert robust.slices[0].params == plain.slices[0].params


def test_local_jumps_and_capped_weights_by_hand():
    k = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    iv = np.array([1.0, 1.0, 1.0, 3.0, 1.0, 1.0])  # one spike
    sq = _slice(iv, k, np.full(6, 0.1))
    jumps = local_jumps(sq)
    # the spike: its neighbours' line says 1 (two-sided), the left pair 1, the right pair 1 -> jump 2
    assert jumps[3] == pytest.approx(2.0)
    # quote 2 agrees with its left pair (both 1): jump 0 although its right neighbour is the spike
    assert jumps[2] == pytest.approx(0.0)
    # quote 4 has one quote on its right: two-sided line (3 and 1) says 2 -> 1; left pair (1, 3) says 5 -> 4
    assert jumps[4] == pytest.approx(1.0)
    # two-sided statistic of quote 2: lines (1,3) -> 2, (1,4) -> 1, (0,3) -> 7/3, (0,4) -> 1: median of the
    # distances 1, 0, 4/3, 0 is 0.5 (the spike shows); the spike itself: lines (2,4) (2,5) (1,4) (1,5) all say 1
    two = local_jumps(sq, two_sided=True)
    assert two[2] == pytest.approx(0.5) and two[3] == pytest.approx(2.0)
    w = np.array([1.0, 2.0, 3.0, 100.0, 4.0, 5.0])
    capped = capped_weights(SliceQuotes(0.0, 0.1, 100.0, k, iv, iv, iv, w), SurfaceConfig(weight_cap=1.0))
    # quote 3's neighbours (2 each side) weigh 2, 3, 4, 5: capped at their median 3.5; the others keep theirs
    assert capped[3] == pytest.approx(3.5)
    assert np.array_equal(capped[[0, 1, 2, 4, 5]], w[[0, 1, 2, 4, 5]])


# ---------------------------------------------------------------------------------------------------------------
# Fit quality: inside the bid-ask IV band, short expiries
# ---------------------------------------------------------------------------------------------------------------

def test_inside_band_in_price_space_equals_inside_in_vol_space(shared_data):
    """surface_eval compares model and quotes in price space; in vol space (bid and ask IVs solved independently by
    scipy's brentq on Black-76 with scipy's norm) the verdict is the same for every quote with both IVs."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    chain = load_deribit_csv(shared_data / "option_chains" / "deribit_BTC_20200521T2319Z.csv").chain
    surface = fit_surface(chain)
    t = chain.quote_expiry_years
    model_iv = surface.implied_vol(chain.strike, t, chain.forward)
    in_price = ev.inside_band(chain, ev.model_price_at_quote(chain, surface))

    def black(f, k, tt, v, call):
        s = v * np.sqrt(tt)
        d1 = np.log(f / k) / s + 0.5 * s
        c = f * norm.cdf(d1) - k * norm.cdf(d1 - s)
        return c if call else c - (f - k)

    checked = 0
    for i in np.flatnonzero(ev.two_sided(chain)):
        f, k, tt, call = chain.forward[i], chain.strike[i], t[i], bool(chain.is_call[i])
        try:
            lo = brentq(lambda v: black(f, k, tt, v, call) - chain.bid[i], 1e-4, 20.0, xtol=1e-13)
            hi = brentq(lambda v: black(f, k, tt, v, call) - chain.ask[i], 1e-4, 20.0, xtol=1e-13)
        except ValueError:
            continue
        if min(abs(model_iv[i] - lo), abs(model_iv[i] - hi)) < 1e-9:
            continue  # on the edge to the solver's tolerance
        assert in_price[i] == (lo <= model_iv[i] <= hi), i
        checked += 1
    assert checked > 150


def test_expiry_under_twelve_hours_gets_its_own_slice(shared_data):
    """BTC 2020-05-21: the 22MAY20 expiry is 8.6 hours out. It gets its own slice (from 1 hour), so its quotes are
    no longer marked with the next day's vols (previously 60 % inside the band)."""
    chain = load_deribit_csv(shared_data / "option_chains" / "deribit_BTC_20200521T2319Z.csv").chain
    first = chain.expiry_ts.min()
    assert chain.expiry_years[chain.expiry_ts == first][0] * 8760 == pytest.approx(8.6, abs=0.1)
    new, old = fit_surface(chain), fit_surface(chain, LEGACY_CONFIG)
    assert new.slices[0].expiry_ts == first and old.slices[0].expiry_ts != first
    m = ev.two_sided(chain) & (chain.expiry_ts == first)
    inside_new = ev.inside_band(chain, ev.model_price_at_quote(chain, new))[m].mean()
    inside_old = ev.inside_band(chain, ev.model_price_at_quote(chain, old))[m].mean()
    assert inside_old == pytest.approx(0.6) and inside_new >= 0.85
    arb = new.fit_report["arbitrage"]
    assert arb["butterfly_ok"] and arb["calendar_ok"]


# keccak-256 of the canonical surfaces: the previous fit (commit ef61879, before the robust fit) and the current one.
# A deliberate change of the fit changes CURRENT (update it and say so in the commit); LEGACY must never change.
LEGACY_HASHES = {
    "deribit_BTC_20200514T0541Z.csv": "6f9809643a44f20593af464c12e949c9fd1b2c46e2a7143c704c6c159cc1f3b7",
    "deribit_BTC_20200521T2319Z.csv": "5dce4e689c4a73b9cef9c337e4d2790895bbfbfd8c161e4f7667ace4c4d0ccad",
    "deribit_ETH_20240108T1119Z.csv": "e062414b207680d00552ff7e754ee7bf5082cd039cbef5fa69f0c1256436738a",
}
CURRENT_HASHES = {
    "deribit_BTC_20200514T0541Z.csv": "1207319a782a5670921bace60762f745bcf4f266169db5571347b230a7bef26e",
    "deribit_BTC_20200521T2319Z.csv": "3ad32f0043b3c884f09df969b6d333aef34e95d1f71ca00f9e190402b183e41c",
    "deribit_ETH_20240108T1119Z.csv": "310d6fd86ae53e230e4a4b3f790776b5c88e79df5c325492c1e2b4d2cbc2c7b2",
}


@pytest.mark.parametrize("name", sorted(LEGACY_HASHES))
def test_surface_hashes_legacy_and_current(shared_data, name):
    chain = load_deribit_csv(shared_data / "option_chains" / name).chain
    assert fit_surface(chain, LEGACY_CONFIG).hash().hex() == LEGACY_HASHES[name]
    assert fit_surface(chain).hash().hex() == CURRENT_HASHES[name]

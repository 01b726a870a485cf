"""Collateral haircuts (keeper/quant/haircuts.py): monotonicity, bounds, closed form, EWMA on real closes."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import lfilter

from keeper.quant.haircuts import HaircutParams, haircut_from_closes, recommended_haircut

vols = st.floats(0.0, 0.5)
sizes = st.floats(0.0, 1e7)
depths = st.floats(1e-3, 1e7)


@settings(max_examples=300, deadline=None)
@given(v1=vols, v2=vols, q=sizes, d=depths)
def test_haircut_non_decreasing_in_vol(v1, v2, q, d):
    lo, hi = sorted((v1, v2))
    assert recommended_haircut(lo, q, d) <= recommended_haircut(hi, q, d)


@settings(max_examples=300, deadline=None)
@given(v=vols, q1=sizes, q2=sizes, d=depths)
def test_haircut_non_decreasing_in_size_held(v, q1, q2, d):
    lo, hi = sorted((q1, q2))
    assert recommended_haircut(v, lo, d) <= recommended_haircut(v, hi, d)


@settings(max_examples=300, deadline=None)
@given(v=vols, q=sizes, d1=depths, d2=depths)
def test_haircut_non_increasing_in_book_depth(v, q, d1, d2):
    lo, hi = sorted((d1, d2))
    assert recommended_haircut(v, q, lo) >= recommended_haircut(v, q, hi)


def test_haircut_sweeps_are_monotone_and_strict_inside_the_bounds():
    params = HaircutParams(min_haircut=0.02, max_haircut=0.6)
    vol_sweep = recommended_haircut(np.linspace(0.0, 0.3, 301), 1000.0, 5000.0, params)
    size_sweep = recommended_haircut(0.04, np.linspace(0.0, 1e5, 301), 5000.0, params)
    depth_sweep = recommended_haircut(0.04, 1000.0, np.linspace(10.0, 1e5, 301), params)
    assert np.all(np.diff(vol_sweep) >= 0) and np.all(np.diff(size_sweep) >= 0)
    assert np.all(np.diff(depth_sweep) <= 0)
    for sweep in (vol_sweep, size_sweep, depth_sweep):
        assert sweep.min() >= 0.02 and sweep.max() <= 0.6
        inside = (sweep > 0.02) & (sweep < 0.6)
        assert inside.sum() > 10                               # the sweeps do cross the interior
    assert vol_sweep[0] == pytest.approx(0.1 * math.sqrt(0.2), rel=1e-14)   # no vol: impact only
    assert float(recommended_haircut(0.0, 0.0, 5000.0, params)) == 0.02    # floor reached
    assert float(recommended_haircut(0.3, 1e5, 5000.0, params)) == 0.6     # cap reached


def test_haircut_closed_form_at_a_point():
    # sigma 4%/day, 2,000 held against 8,000/day of depth: 1.25 liquidation days, impact 0.1 * sqrt(0.25)
    expected = 1.0 - math.exp(-2.33 * 0.04 * math.sqrt(1.25)) + 0.1 * 0.5
    assert float(recommended_haircut(0.04, 2000.0, 8000.0)) == pytest.approx(expected, rel=1e-14)
    assert float(recommended_haircut(0.0, 0.0, 1.0)) == 0.0       # a stablecoin with no vol and no size


def test_bad_haircut_inputs_raise():
    with pytest.raises(ValueError):
        recommended_haircut(float("nan"), 1.0, 1.0)
    with pytest.raises(ValueError):
        recommended_haircut(0.01, 1.0, 0.0)
    with pytest.raises(ValueError):
        HaircutParams(min_haircut=0.5, max_haircut=0.4)


@pytest.mark.parametrize("name", ["BTCUSD", "ETHUSD"])
def test_haircut_from_real_closes_uses_todays_ewma_vol(shared_data, name):
    with open(shared_data / "price_paths" / f"{name}_daily.csv", newline="") as fh:
        closes = np.array([float(row["close"]) for row in csv.DictReader(fh)])
    r = np.diff(np.log(closes))
    var0 = np.mean(r[:30] ** 2)
    var, _ = lfilter([0.06], [1, -0.94], r ** 2, zi=[0.94 * var0])  # independent EWMA recursion
    sigma = math.sqrt(var[-1])
    assert 0.005 < sigma < 0.2                                   # a daily crypto vol, not an annual one
    size, depth = 500.0, 2000.0
    expected = 1.0 - math.exp(-2.33 * sigma * math.sqrt(1.25)) + 0.1 * math.sqrt(0.25)
    assert haircut_from_closes(closes, size, depth) == pytest.approx(expected, rel=1e-10)


def test_daily_closes_take_the_last_attested_price_of_each_utc_day():
    from keeper.quant.haircuts import daily_closes

    day = 86_400
    ts = np.array([3 * day + 50, 1 * day + 10, 1 * day + 9_000, 3 * day + 10, 2 * day, 2 * day + day - 1])
    px = np.array([5.0, 1.0, 2.0, 4.0, 3.0, 3.5])
    days, closes = daily_closes(ts, px)
    assert days.tolist() == [1, 2, 3] and closes.tolist() == [2.0, 3.5, 5.0]
    with pytest.raises(ValueError):
        daily_closes(ts, -px)


def test_haircut_wad_rounds_up_to_a_basis_point():
    from keeper.quant.haircuts import haircut_wad

    assert haircut_wad(0.1) == 10**17                       # 0.1's float is a few ulps above 0.1: still 10 %
    assert haircut_wad(0.10001) == 1001 * 10**14 and haircut_wad(0.123449) == 1235 * 10**14
    assert haircut_wad(0.0) == 0
    with pytest.raises(ValueError):
        haircut_wad(1.0)


def test_recommendations_compare_with_the_listed_haircut_and_name_bad_data():
    from keeper.quant.haircuts import CollateralMarket, recommend_haircuts

    rng = np.random.default_rng(4)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.04, 60)))
    r = np.diff(np.log(closes))
    var0 = np.mean(r[:30] ** 2)
    var, _ = lfilter([0.06], [1, -0.94], r ** 2, zi=[0.94 * var0])
    h = 1.0 - math.exp(-2.33 * math.sqrt(var[-1]) * math.sqrt(1.5)) + 0.1 * math.sqrt(0.5)
    bp = math.ceil(h * 10_000 - 1e-6)
    recs = recommend_haircuts([CollateralMarket("A", closes, 500.0, 1000.0, 10**17),
                               CollateralMarket("B", closes, 500.0, 1000.0, 9 * 10**17),
                               CollateralMarket("C", closes, 500.0, 1000.0, bp * 10**14)])
    assert [x.recommended_wad for x in recs] == [bp * 10**14] * 3
    assert [x.action for x in recs] == ["raise", "lower", "keep"]
    with pytest.raises(ValueError, match="^D: need at least two daily closes"):
        recommend_haircuts([CollateralMarket("D", closes[:1], 1.0, 1.0, 0)])
    with pytest.raises(ValueError, match="^E: "):
        recommend_haircuts([CollateralMarket("E", closes, 1.0, 0.0, 0)])


def test_closes_sampled_hourly_are_scaled_to_a_daily_vol():
    from keeper.quant.haircuts import CollateralMarket, daily_closes, recommend_haircuts

    rng = np.random.default_rng(9)
    ts = 3600 * (472_222 + np.arange(48)) + rng.integers(0, 3000, 48)           # one attestation per hour
    px = 2000 * np.exp(np.cumsum(rng.normal(0, 0.01, 48)))
    _, hourly = daily_closes(ts, px, period_seconds=3600)
    assert hourly.size == 48 and np.array_equal(hourly, px)
    r = np.diff(np.log(hourly))
    var, _ = lfilter([0.06], [1, -0.94], r ** 2, zi=[0.94 * np.mean(r[:30] ** 2)])
    rec = recommend_haircuts([CollateralMarket("X", hourly, 10.0, 100.0, 0, period_days=1 / 24)])[0]
    assert rec.daily_vol == pytest.approx(math.sqrt(var[-1]) * math.sqrt(24), rel=1e-12)

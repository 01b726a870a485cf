"""The correlation stress in the keepers' margin (issue 16 item 1): an inputs document that spans two underlyings and
carries ``risk.stress_correlation`` is margined on max(ES, grid, stress ES, 0); the leaves equal a second computation
that builds the stress set by hand through the engine's public API; a document without the field (or with one
underlying) is margined exactly as before; a book short on both underlyings needs more margin under it."""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from keeper.attest.leaves import leaves_from_inputs, risk_run, shock_factors, widen_scenarios
from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
from keeper.data.feed import BlockRef
from keeper.quant.risk.engine import compute_account_risk, to_quote_units
from keeper.quant.risk.scenarios import MertonParams, correlation_stress_scenarios
from keeper.quant.surface import CANONICAL_VERSION, VolSurface
from keeper.units import SECONDS_PER_YEAR, WAD

NOW = 1_800_000_000
ETH, BTC, USD = ("0x" + c * 40 for c in ("e", "b", "a"))
Series = namedtuple("Series", "series_id underlying strike expiry is_call")
Acct = namedtuple("Acct", "account state_nonce cash collateral positions")
RISK = {"var_confidence": 0.99, "es_confidence": 0.975, "im_multiplier": 1.5, "horizon_days": 1.0, "mc_paths": 600,
        "mc_diffusion_vol": 0.7, "grid_spot_range": 0.15, "grid_vol_range": 0.25}


def _surface(name, vol, forward):
    slices = [{"expiry_ts": NOW + t * SECONDS_PER_YEAR, "t": t, "forward": forward, "a": vol * vol * t, "b": 0.0,
               "rho": 0.0, "m": 0.0, "sigma": 0.1} for t in (0.02, 0.5)]
    return VolSurface.from_canonical({"version": CANONICAL_VERSION, "underlying": name, "asof": NOW, "slices": slices})


def _doc(risk, markets=None):
    d7 = NOW + 7 * 86400
    series = [Series(1, ETH, 1900 * WAD, d7, False), Series(2, BTC, 38000 * WAD, d7, False)]
    accounts = [Acct("0x" + "01" * 20, 1, 20_000 * 10**6, {}, {1: -5 * WAD, 2: -WAD // 4}),  # short both: adds up
                Acct("0x" + "02" * 20, 1, 20_000 * 10**6, {}, {1: -5 * WAD, 2: WAD // 4})]   # hedged across
    markets = markets or [AssetMarket(ETH, 2000 * WAD, _surface("ETH", 0.8, 2000.0)),
                          AssetMarket(BTC, 40000 * WAD, _surface("BTC", 0.6, 40000.0))]
    return build_portfolio_inputs(block=BlockRef(9, "0x" + "7c" * 32, NOW), markets=markets, series=series,
                                  accounts=accounts, collateral={USD: {"decimals": 6, "haircut": 0}},
                                  quote_asset=USD, quote_decimals=6, risk=risk).document


def test_the_stress_enters_the_leaves_as_a_second_computation_says():
    doc = _doc({**RISK, "stress_correlation": 1.0})
    run = risk_run(doc)
    r = doc["risk"]
    stress = widen_scenarios(correlation_stress_scenarios(int(doc["mc_seed"]), r["mc_paths"], 2,
                                                          MertonParams(diffusion_vol=r["mc_diffusion_vol"]),
                                                          horizon=1 / 365, rho=1.0), shock_factors(doc["underlyings"]))
    by_hand = compute_account_risk(run.inputs, run.tail, run.grid, stress_set=stress)
    mm = to_quote_units(by_hand.maintenance_margin, 6, "ceil")
    assert [l.maintenance for l in run.leaves] == [int(x) for x in mm]
    assert np.all(by_hand.maintenance_margin >= compute_account_risk(run.inputs, run.tail, run.grid).maintenance_margin)


def test_short_on_both_underlyings_needs_more_and_documents_without_the_field_are_unchanged():
    # over 3 days the Monte Carlo tail outgrows the grid's fixed moves (docs/risk.md): there the stress binds
    three_days = {**RISK, "horizon_days": 3.0}
    plain = _doc(three_days)
    assert "stress_correlation" not in plain["risk"]
    stressed = _doc({**three_days, "stress_correlation": 1.0})
    lp, ls = leaves_from_inputs(plain)[0], leaves_from_inputs(stressed)[0]
    assert ls[0].maintenance > lp[0].maintenance  # the legs add up when the assets move together
    assert ls[1].maintenance >= lp[1].maintenance  # max(): never less
    assert [l.equity for l in ls] == [l.equity for l in lp]  # marks and equity do not depend on it
    # one underlying: nothing to stress, the same leaves with or without the field
    one = [AssetMarket(ETH, 2000 * WAD, _surface("ETH", 0.8, 2000.0))]
    a, b = _doc(dict(RISK), one), _doc({**RISK, "stress_correlation": 1.0}, one)
    assert [l.hash() for l in leaves_from_inputs(a)[0]] == [l.hash() for l in leaves_from_inputs(b)[0]]

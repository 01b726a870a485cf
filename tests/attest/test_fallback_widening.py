"""The fallback flag of an underlying (docs/keeper.md, "Fallback"): ``leaves_from_inputs`` widens that underlying's
scenario moves by ``1 + shock_widening``, so a verifier recomputes the widened margins from the document alone.
Second computation: the grid's spot moves are k/3 x range (docs/risk.md), so a one-underlying book whose margin is
its grid loss gets exactly the loss of the grid at range x (1 + w)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from keeper.attest.inputs import build_document
from keeper.attest.leaves import leaves_from_inputs, risk_run, shock_factors, widen_scenarios
from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
from keeper.data.feed import BlockRef
from keeper.quant.risk.scenarios import grid_scenarios

from test_portfolio_inputs import BTC, ETH, MARKETS, NOW, RISK, USD, build, flat_surface

WAD = 10**18


def _flag(doc, asset, w):
    d = copy.deepcopy(doc)
    for u in d["underlyings"]:
        if u["asset"] == asset:
            u["fallback"] = {"reason": "surface_arbitrage", "since_block": 76, "source_block": 75,
                             "shock_widening": w}
    return d


def test_widening_scales_only_the_flagged_underlying():
    g = grid_scenarios(0.15, 0.25, n_underlyings=2, horizon=1 / 365)
    w = widen_scenarios(g, np.array([1.5, 1.0]))
    assert np.array_equal(w.log_spot[:, 0], 1.5 * g.log_spot[:, 0]) and np.array_equal(w.log_spot[:, 1],
                                                                                           g.log_spot[:, 1])
    assert np.array_equal(w.vol_shock[:, 0], 1.5 * g.vol_shock[:, 0]) and np.array_equal(w.weight, g.weight)
    assert widen_scenarios(g, np.ones(2)) is g
    assert shock_factors([{"asset": "a"}, {"asset": "b", "fallback": {"shock_widening": 0.25}}]).tolist() == [1, 1.25]


def test_a_flagged_underlying_widens_the_margins_of_its_holders_only():
    doc = build(MARKETS).document
    btc_i = [u["asset"] for u in doc["underlyings"]].index(BTC)
    plain = {l.account: l for l in leaves_from_inputs(doc)[0]}
    flagged = {l.account: l for l in leaves_from_inputs(_flag(doc, BTC, 0.5))[0]}
    a = "0x" + "01" * 20  # short ETH puts, long a BTC call, BTC collateral
    assert flagged[a].equity == plain[a].equity and flagged[a].model_value == plain[a].model_value
    assert flagged[a].maintenance > plain[a].maintenance
    c = "0x" + "03" * 20  # nothing on BTC: unchanged
    assert flagged[c] == plain[c]
    assert doc["underlyings"][btc_i]["asset"] == BTC


def test_widened_grid_loss_of_a_short_put_by_hand():
    """One short ETH put: the grid worst loss with the flag equals the worst weighted loss over the grid's moves,
    each log move x 1.5, repriced by py_vollib's Black-76 one day later (vol range 0: vol unchanged)."""
    from collections import namedtuple

    from py_vollib.black import black as vollib_black

    from keeper.units import SECONDS_PER_YEAR

    d30 = NOW + 30 * 86400
    Series = namedtuple("Series", "series_id underlying strike expiry is_call")
    Acct = namedtuple("Acct", "account state_nonce cash collateral positions")
    risk = dict(RISK, grid_vol_range=0.0, mc_paths=100)
    p = build_portfolio_inputs(block=BlockRef(77, "0x" + "5a" * 32, NOW),
                               markets=[AssetMarket(ETH, 2000 * WAD, flat_surface("ETH", 0.8, 2000.0))],
                               series=[Series(1, ETH, 2000 * WAD, d30, False)],
                               accounts=[Acct("0x" + "01" * 20, 1, 10**11, {}, {1: -WAD})],
                               collateral={USD: {"decimals": 6, "haircut": 0}}, quote_asset=USD, quote_decimals=6,
                               risk=risk)
    flagged = risk_run(_flag(p.document, ETH, 0.5))
    t, h = 30 * 86400 / SECONDS_PER_YEAR, 1.0 / 365.0
    now = vollib_black("p", 2000.0, 2000.0, t, 0.0, 0.8)
    worst = 0.0
    for frac, weight in [(k / 3, 1.0) for k in range(-3, 4)] + [(-2.0, 0.35), (2.0, 0.35)]:
        f = 2000.0 * (1.0 + frac * 0.15) ** 1.5  # the log move log1p(frac x 0.15), widened x 1.5
        worst = max(worst, weight * (vollib_black("p", f, 2000.0, t - h, 0.0, 0.8) - now))  # short: loss = rise
    assert flagged.risk.grid_worst_loss[0] == pytest.approx(worst, rel=1e-9)
    assert worst > risk_run(p.document).risk.grid_worst_loss[0]


@pytest.mark.parametrize("w", [-0.1, float("nan"), float("inf")])
def test_a_bad_widening_is_never_signed_or_priced(w):
    doc = build(MARKETS).document
    with pytest.raises(ValueError, match="shock_widening"):
        leaves_from_inputs(_flag(doc, BTC, w))
    with pytest.raises(ValueError, match="shock_widening"):
        build_document(block=BlockRef(1, "0x" + "00" * 32, NOW), mc_seed=1,
                       underlyings=[{"asset": ETH, "spot_wad": 1, "surface": None,
                                     "fallback": {"reason": "x", "since_block": 1, "source_block": 0,
                                                  "shock_widening": w}}],
                       series=[], vols=[], marks=[], collateral_assets=[], accounts=[], quote_decimals=6, risk=RISK)


def test_portfolio_writes_the_flag_and_leaves_out_holders_of_a_rejected_asset():
    fb = {"reason": "too_few_sources", "since_block": 70, "source_block": 69, "shock_widening": 0.5}
    p = build([MARKETS[0], AssetMarket(BTC, 40000 * WAD, flat_surface("BTC", 0.6, 40000.0), None, fb)])
    assert [u.get("fallback") for u in p.document["underlyings"]] == [fb, None]  # BTC, ETH by address
    r = build_rejected()
    assert r.excluded.get("market_data_rejected") == ["0x" + "01" * 20]  # holds BTC collateral and a BTC call
    assert "0x" + "03" * 20 in [a.account for a in r.accounts]


def build_rejected():
    from test_portfolio_inputs import Acct, Series  # noqa: F401  (same book as build())
    import test_portfolio_inputs as t

    d30 = NOW + 30 * 86400
    series = [t.Series(1, ETH, 1800 * WAD, d30, False), t.Series(2, BTC, 45000 * WAD, d30, True)]
    accounts = [t.Acct("0x" + "01" * 20, 4, 3_000_000_000, {BTC: 5 * 10**7}, {1: -2 * WAD, 2: WAD}),
                t.Acct("0x" + "03" * 20, 2, 7_000_000, {}, {1: WAD})]
    collateral = {USD: {"decimals": 6, "haircut": 0}, BTC: {"decimals": 8, "haircut": WAD // 10}}
    return build_portfolio_inputs(block=BlockRef(77, "0x" + "5a" * 32, NOW), markets=[MARKETS[0]], series=series,
                                  accounts=accounts, collateral=collateral, quote_asset=USD, quote_decimals=6,
                                  risk=RISK, rejected={BTC: "too_few_sources"})

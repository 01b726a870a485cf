"""The previous block's surface as a prior (``fit_surface(chain, prior=...)``, ``keeper.quant.surface.prior_gate``).

Every attack is real (the cold fit, without a prior, is moved beyond the issue's limit by the same quote in the same
test) and is caught with the prior; a real crash (every vol doubles) still gets through: in one fit when the prior is
a minute old, within the per-block bound and in a few blocks when it is one block old.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from keeper.data.deribit import load_deribit_csv
from keeper.quant import surface_eval as ev
from keeper.quant.surface import SurfaceConfig, fit_surface

BTC_0514 = "deribit_BTC_20200514T0541Z.csv"


@pytest.fixture(scope="module")
def btc(shared_data):
    chain = load_deribit_csv(shared_data / "option_chains" / BTC_0514).chain
    cold = fit_surface(chain)
    prior = ev.scaled_surface(cold, 1.0, chain.asof - 12.0)  # the previous block, 12 s earlier, same market

    def with_prior(ch):
        return fit_surface(ch, prior=prior)

    return chain, cold, prior, ev.baseline(chain, fit_surface), ev.baseline(chain, with_prior), with_prior


def test_steady_market_prior_changes_nothing(btc):
    chain, cold, prior, _, _, with_prior = btc
    again = with_prior(chain)
    assert again.hash() == cold.hash()  # every slice inside its envelope: the free fit is kept bit for bit
    assert not any(s["prior"]["gated"] for s in again.fit_report["slices"])


@pytest.mark.parametrize("target,factor", [("liquid", 0.8), ("liquid", 1.33), ("wing", 1.12), ("wing", 3.0)])
def test_near_fair_fake_in_the_one_day_expiry_moves_nothing_with_the_prior(btc, target, factor):
    """The case the cold fit cannot tell from a real quote (a tight quote a few vol points from fair in the 1-day
    expiry, whose real quotes are 5-20 vol points wide) moves the cold fit's other quotes beyond the limit; with the
    previous block's surface no other quote (10-90 delta) moves beyond min(1 vol pt, half its IV width) and no
    other series' mark beyond 1 vol pt x vega (and the worst move is less than half the cold fit's)."""
    chain, _, _, base_cold, base_prior, with_prior = btc
    rows = ev.attack_targets(chain, base_cold)["thin"][target]
    assert chain.expiry_years[rows[0]] * 24 * 365 == pytest.approx(26.3, abs=0.1)  # the 15MAY20 expiry
    cold = ev.attack_effect(base_cold, rows, factor, ev.SPREADS["tight"], 100.0, fit_surface)
    after = ev.attack_effect(base_prior, rows, factor, ev.SPREADS["tight"], 100.0, with_prior)
    assert cold.worst_iv_move_pts > 0.3 and after.n_quotes == cold.n_quotes > 50
    assert after.worst_iv_ratio <= 1.0 and after.worst_mark_ratio <= 1.0, after
    assert after.worst_iv_move_pts < 0.5 * cold.worst_iv_move_pts or after.worst_iv_move_pts < 0.01


def test_the_cold_fit_fails_the_limit_on_a_near_fair_one_day_fake(btc):
    """The same attack without the prior: at least one near-fair factor breaks the limit (so the test above tests
    something the prior does)."""
    chain, _, _, base_cold, _, _ = btc
    rows = ev.attack_targets(chain, base_cold)["thin"]["liquid"]
    worst = max(ev.attack_effect(base_cold, rows, f, ev.SPREADS["tight"], 100.0, fit_surface).worst_iv_ratio
                for f in (0.8, 0.9, 1.12, 1.33))
    assert worst > 1.0


def test_two_colluding_quotes_with_the_prior(btc):
    """Two tight fakes in the 1-day put wing (2 of its 5 quotes) at 0.5x fair moved the cold fit's other quotes by
    several vol points; with the prior they move no other quote beyond its limit (three quotes of a neighbourhood
    must agree)."""
    chain, _, _, base_cold, base_prior, with_prior = btc
    rows = ev.attack_targets(chain, base_cold)["thin"]["collusion"]
    cold = ev.attack_effect(base_cold, rows, 0.5, ev.SPREADS["tight"], 100.0, fit_surface)
    after = ev.attack_effect(base_prior, rows, 0.5, ev.SPREADS["tight"], 100.0, with_prior)
    assert cold.worst_iv_move_pts > 2.0
    assert after.worst_iv_ratio <= 1.0 and after.worst_mark_ratio <= 1.0, after
    assert after.worst_iv_move_pts < 0.1 * cold.worst_iv_move_pts


def test_a_crash_gets_through_in_one_fit_when_the_prior_is_a_minute_old(btc):
    """The previous surface had every vol at half today's (vol doubled) and is 60 s old: the per-block bound allows
    a doubling, every quote demands the move, so the fit is the cold fit."""
    chain, cold, _, _, _, _ = btc
    half = ev.scaled_surface(cold, 0.5, chain.asof - 60.0)
    fit = fit_surface(chain, prior=half)
    assert fit.hash() == cold.hash()


def test_a_crash_one_block_later_moves_by_the_per_block_bound_and_arrives_within_seconds(btc):
    """Vol doubled since a prior one block (12 s) old: the fit moves up by the bound 2 ** (12 / 60) and no more;
    block after block (each fit the next one's prior) it reaches the cold fit within 6 blocks (72 s): every quote's
    fitted vol within 0.1 vol pt of the cold fit's, as many quotes inside their bid-ask band."""
    chain, cold, _, _, _, _ = btc
    cfg = SurfaceConfig()
    step = 2.0 ** (12.0 / cfg.prior_doubling_s)
    assert math.log(2.0) / math.log(step) == pytest.approx(5.0)
    prior = ev.scaled_surface(cold, 0.5, chain.asof - 12.0)
    k = np.linspace(-0.3, 0.3, 13)
    two = ev.two_sided(chain)
    cold_iv = cold.implied_vol(chain.strike, chain.quote_expiry_years, chain.forward)[two]
    for block in range(1, 7):
        fit = fit_surface(chain, prior=prior)
        arb = fit.fit_report["arbitrage"]
        assert arb["butterfly_ok"] and arb["calendar_ok"]
        ratio = np.array([np.sqrt(fit.slices[i].params.total_variance(k) / prior.slices[i].params.total_variance(k))
                          for i in range(len(fit.slices))])
        assert np.all(ratio <= step * (1 + 2e-3)), (block, float(ratio.max()))  # the per-block bound (refit tol.)
        assert np.all(ratio >= 1.0 - 2e-3)  # and every vol goes up
        if block <= 4:  # a doubling needs 5 blocks
            assert np.all(ratio >= step * (1 - 2e-2)), (block, float(ratio.min()))  # ... and it moves at the bound
        prior = ev.scaled_surface(fit, 1.0, chain.asof - 12.0)
    iv = fit.implied_vol(chain.strike, chain.quote_expiry_years, chain.forward)[two]
    assert np.max(np.abs(iv - cold_iv)) < 1e-3
    inside = ev.inside_band(chain, ev.model_price_at_quote(chain, fit))[two].sum()
    assert inside == ev.inside_band(chain, ev.model_price_at_quote(chain, cold))[two].sum()

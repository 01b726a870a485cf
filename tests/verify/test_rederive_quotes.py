"""Re-derivation of an inputs document from its archived raw quotes (keeper.verify.quotes, issue 15 item 7), pure:
the document is the keepers' own (``build_portfolio_inputs`` on a fitted chain), each lie is written into it the way a
keeper would have to sign it, and the re-derivation must name the number that differs. Second computations: the
surface refitted independently here, py_vollib's Black-76 for the re-derived mark."""
from __future__ import annotations

import copy
import dataclasses
import json
from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import pytest
from py_vollib.black import black as vollib_black

from keeper.attest.leaves import canonical_inputs, leaves_from_inputs
from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
from keeper.data.feed import BlockRef
from keeper.data.sources import draw_chain
from keeper.quant.risk.engine import from_canonical
from keeper.quant.surface import CANONICAL_VERSION, VolSurface, fit_surface
from keeper.units import SECONDS_PER_YEAR, WAD
from keeper.verify.quotes import leaf_differences, rederive, rederived_leaves

NOW = 1_800_000_000
ETH, USD = "0x" + "e" * 40, "0x" + "a" * 40
Series = namedtuple("Series", "series_id underlying strike expiry is_call")
Acct = namedtuple("Acct", "account state_nonce cash collateral positions")
RISK = {"var_confidence": 0.99, "es_confidence": 0.975, "im_multiplier": 1.5, "horizon_days": 1.0, "mc_paths": 400,
        "mc_diffusion_vol": 0.7, "grid_spot_range": 0.15, "grid_vol_range": 0.25}
MARKET = SimpleNamespace(seed=5, expiries_days=[7, 30, 90], spread_pct=0.04, depth_mean=20.0,
                         strikes_pct=[0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.4])
BLOCK = BlockRef(77, "0x" + "5a" * 32, NOW)
SERIES = [Series(1, ETH, 2000 * WAD, NOW + 30 * 86400, True), Series(2, ETH, 1700 * WAD, NOW + 20 * 86400, False),
          Series(3, ETH, 2400 * WAD, NOW + 60 * 86400, True)]
ACCOUNTS = [Acct("0x" + "01" * 20, 3, 2_000_000_000, {}, {1: -10 * WAD, 2: 4 * WAD}),
            Acct("0x" + "02" * 20, 1, 500_000_000, {}, {3: -2 * WAD})]


@pytest.fixture(scope="module")
def keepers():
    chain = draw_chain(MARKET, BLOCK, 2000.0, lambda k, t: np.maximum(0.6 - 0.1 * k + 0.3 * k * k, 0.05))
    prior = fit_surface(draw_chain(MARKET, BlockRef(76, "0x" + "59" * 32, NOW - 12), 2000.0,
                                   lambda k, t: np.maximum(0.45 - 0.1 * k + 0.3 * k * k, 0.05)))
    surface = fit_surface(chain, prior=prior)
    return SimpleNamespace(chain=chain, prior=prior, surface=surface)


def _doc(market: AssetMarket) -> dict:
    pi = build_portfolio_inputs(block=BLOCK, markets=[market], series=SERIES, accounts=ACCOUNTS,
                                collateral={USD: {"decimals": 6, "haircut": 0}}, quote_asset=USD, quote_decimals=6,
                                risk=RISK)
    return from_canonical(json.loads(canonical_inputs(pi.document)))  # what an archive reader gets


def honest(k) -> dict:
    return _doc(AssetMarket(ETH, 2000 * WAD, k.surface, k.chain, prior=k.prior))


def test_an_honest_document_re_derives_bit_for_bit(keepers):
    doc = honest(keepers)
    r = rederive(doc)
    assert r.differences == [] and [c["ok"] for c in r.checks] == [True, True]
    assert "3 series" in r.checks[0]["detail"] and "with the archived prior" in r.checks[0]["detail"]
    assert r.document["marks"] == doc["marks"] and r.document["vols"] == doc["vols"]
    # second computation on an independent refit: each re-derived mark is py_vollib's Black-76 at the refitted
    # vol (the chain's forward is its spot; the listed 2,000 call's mid lies outside what the hybrid rule accepts
    # next to the prior-held model, so it is model-marked too)
    refit = fit_surface(keepers.chain, prior=keepers.prior)
    for j, (strike, days, flag) in enumerate([(2000.0, 30, "c"), (1700.0, 20, "p"), (2400.0, 60, "c")]):
        t = days * 86400 / SECONDS_PER_YEAR
        vol = float(refit.implied_vol(strike, t, 2000.0))
        assert r.document["vols"][j] == pytest.approx(vol, abs=1e-12)
        assert r.document["marks"][j] == pytest.approx(vollib_black(flag, 2000.0, strike, t, 0.0, vol), rel=1e-9)


def test_a_mark_not_given_by_the_quotes_is_named(keepers):
    doc = honest(keepers)
    doc["marks"][2] *= 1.25  # series 3 over-marked before signing
    r = rederive(doc)
    assert [(d.where, d.field) for d in r.differences] == [("series 3", "mark")]
    d = r.differences[0]
    assert d.archived == pytest.approx(d.recomputed * 1.25, rel=1e-12)
    assert not r.checks[0]["ok"] and "series 3 mark: archived" in r.checks[0]["detail"]
    # the margins recomputed from the re-derived marks are the honest leaves (a second run on the honest document)
    again = rederived_leaves(r.document)
    truth = {x.account.lower(): x for x in leaves_from_inputs(honest(keepers))[0]}
    lied = {x.account.lower(): x for x in leaves_from_inputs(doc)[0]}
    short3 = ACCOUNTS[1].account
    assert again[short3] == truth[short3] != lied[short3]
    # the mark enters equity only (model value and margins are priced on the vols)
    assert [x.field for x in leaf_differences(lied[short3], again[short3])] == ["equity"]


def test_a_surface_the_quotes_do_not_give_is_named_even_with_consistent_marks(keepers):
    """Keepers who sign another surface (vols 10 % up) and the marks it gives: the refit from the quotes differs."""
    k = keepers
    bent = VolSurface(k.surface.underlying, k.surface.asof, tuple(
        dataclasses.replace(s, params=dataclasses.replace(s.params, a=s.params.a * 1.21, b=s.params.b * 1.21))
        for s in k.surface.slices))
    doc = _doc(AssetMarket(ETH, 2000 * WAD, bent, k.chain, prior=k.prior))
    r = rederive(doc)
    fields = {(d.where.split(" at ")[0], d.field.split(" (")[0]) for d in r.differences}
    assert ("underlying " + ETH + " surface", "vol") in fields
    assert {("series 1", "vol"), ("series 1", "mark"), ("series 3", "vol")} <= fields


def test_a_prior_other_than_the_one_used_is_found(keepers):
    """The archive says cold start for a surface fitted with a prior: the refit is another surface."""
    doc = honest(keepers)
    doc["underlyings"][0]["fit"]["prior"] = None
    r = rederive(doc)
    assert not r.checks[0]["ok"] and "(cold start)" in r.checks[0]["detail"]
    assert any(d.field.startswith("vol") for d in r.differences)


def test_a_changed_quote_moves_the_refit_and_is_named(keepers):
    """Every quote of the 30-day expiry 15 % richer than the keepers saw (quotes and surface must go together)."""
    doc = honest(keepers)
    q = doc["underlyings"][0]["quotes"]
    d30 = sorted(set(q["expiry_ts"]))[1]
    for i, e in enumerate(q["expiry_ts"]):
        if e == d30:
            q["bid"][i] *= 1.15
            q["ask"][i] *= 1.15
    r = rederive(doc)
    assert not r.checks[0]["ok"]
    assert ("series 1", "mark") in {(d.where, d.field) for d in r.differences}


def test_a_fitted_surface_without_its_quotes_cannot_be_re_derived(keepers):
    doc = honest(keepers)
    del doc["underlyings"][0]["quotes"]
    r = rederive(doc)
    assert not r.checks[0]["ok"] and "not the raw quotes" in r.checks[0]["detail"]


def test_a_fallback_document_is_re_marked_on_its_reused_surface(keepers):
    """Fallback (no quotes this block): the marks must be the reused surface's; a changed one is named."""
    fb = {"reason": "stale_chain", "since_block": 76, "source_block": 75, "shock_widening": 0.5}
    doc = _doc(AssetMarket(ETH, 2000 * WAD, keepers.prior, None, fb))
    r = rederive(copy.deepcopy(doc))
    assert r.differences == [] and r.checks[0]["ok"] and "fallback" in r.checks[0]["detail"]
    doc["vols"][1] += 0.01
    r = rederive(doc)
    assert [(d.where, d.field) for d in r.differences] == [("series 2", "vol")]


def test_a_document_without_a_surface_says_so(keepers):
    flat = VolSurface.from_canonical({"version": CANONICAL_VERSION, "underlying": "ETH", "asof": NOW, "slices": [
        {"expiry_ts": NOW + 0.5 * SECONDS_PER_YEAR, "t": 0.5, "forward": 2000.0, "a": 0.18, "b": 0.0, "rho": 0.0,
         "m": 0.0, "sigma": 0.1}]})
    doc = _doc(AssetMarket(ETH, 2000 * WAD, flat))
    doc["underlyings"][0]["surface"] = None  # vols given, as the scenario's smile documents are
    r = rederive(doc)
    assert r.checks[0]["ok"] and "nothing to re-derive" in r.checks[0]["detail"] and r.differences == []


def test_the_archived_prior_must_be_the_previous_roots_surface(keepers):
    """The keepers' rule: the prior is the surface the document of the last posted root gives for the asset (none
    when that entry was a fallback). A prior other than that one is named; a cold start is allowed and said."""
    from keeper.verify.quotes import prior_findings

    doc = honest(keepers)  # fitted with keepers.prior
    previous = _doc(AssetMarket(ETH, 2000 * WAD, keepers.prior))  # the previous block's document: that surface
    [c] = prior_findings(doc, previous, "0xprev")
    assert c["ok"] and c["check"] == f"prior ({ETH})" and "is the surface of" in c["detail"]
    other = _doc(AssetMarket(ETH, 2000 * WAD, keepers.surface))  # a previous document with another surface
    [c] = prior_findings(doc, other, "0xprev")
    assert not c["ok"] and "is not the surface of" in c["detail"]
    fb = {"reason": "stale_chain", "since_block": 76, "source_block": 75, "shock_widening": 0.5}
    [c] = prior_findings(doc, _doc(AssetMarket(ETH, 2000 * WAD, keepers.prior, None, fb)), "0xprev")
    assert not c["ok"] and "no prior allowed" in c["detail"]  # a fallback entry is never a prior
    [c] = prior_findings(doc, None, None)
    assert not c["ok"]  # no root before: a prior cannot come from anywhere
    cold = copy.deepcopy(doc)
    cold["underlyings"][0]["fit"]["prior"] = None
    [c] = prior_findings(cold, previous, "0xprev")
    assert c["ok"] and "cold start although" in c["detail"]

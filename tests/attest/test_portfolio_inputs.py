"""One document across underlyings (keeper.attest.portfolio, issue 16): each series priced on its own underlying,
every listed collateral priced or reported, unpriceable accounts left out with a reason. Second computations:
py_vollib Black-76 for model values, the haircut arithmetic by hand for equity."""
from __future__ import annotations

from collections import namedtuple

import numpy as np
from py_vollib.black import black as vollib_black

from keeper.attest.leaves import canonical_inputs, leaves_from_inputs
from keeper.attest.portfolio import UNPRICED_SERIES, AssetMarket, build_portfolio_inputs
from keeper.data.sources import BlockRef
from keeper.quant.surface import CANONICAL_VERSION, VolSurface
from keeper.units import SECONDS_PER_YEAR, WAD

NOW = 1_800_000_000
ETH, BTC, USD, UNL, XYZ = ("0x" + c * 40 for c in ("e", "b", "a", "c", "d"))
Series = namedtuple("Series", "series_id underlying strike expiry is_call")
Acct = namedtuple("Acct", "account state_nonce cash collateral positions")
RISK = {"var_confidence": 0.99, "es_confidence": 0.975, "im_multiplier": 1.5, "horizon_days": 1.0, "mc_paths": 400,
        "mc_diffusion_vol": 0.7, "grid_spot_range": 0.15, "grid_vol_range": 0.25}


def flat_surface(name: str, vol: float, forward: float) -> VolSurface:
    slices = [{"expiry_ts": NOW + t * SECONDS_PER_YEAR, "t": t, "forward": forward, "a": vol * vol * t, "b": 0.0,
               "rho": 0.0, "m": 0.0, "sigma": 0.1} for t in (0.02, 0.5)]
    return VolSurface.from_canonical({"version": CANONICAL_VERSION, "underlying": name, "asof": NOW, "slices": slices})


def build(markets):
    d30 = NOW + 30 * 86400
    series = [Series(1, ETH, 1800 * WAD, d30, False), Series(2, BTC, 45000 * WAD, d30, True),
              Series(3, XYZ, 10 * WAD, d30, True)]
    accounts = [Acct("0x" + "01" * 20, 4, 3_000_000_000, {BTC: 5 * 10**7}, {1: -2 * WAD, 2: WAD}),
                Acct("0x" + "02" * 20, 1, 10**9, {}, {3: -WAD}),
                Acct("0x" + "03" * 20, 2, 7_000_000, {UNL: 10**18}, {})]
    collateral = {USD: {"decimals": 6, "haircut": 0}, BTC: {"decimals": 8, "haircut": WAD // 10},
                  UNL: {"decimals": 18, "haircut": WAD // 5}}
    return build_portfolio_inputs(block=BlockRef(77, "0x" + "5a" * 32, NOW), markets=markets, series=series,
                                  accounts=accounts, collateral=collateral, quote_asset=USD, quote_decimals=6,
                                  risk=RISK)


MARKETS = [AssetMarket(ETH, 2000 * WAD, flat_surface("ETH", 0.8, 2000.0)),
           AssetMarket(BTC, 40000 * WAD, flat_surface("BTC", 0.6, 40000.0))]


def test_each_series_is_priced_on_its_own_underlying_and_collateral_at_its_spot():
    p = build(MARKETS)
    assert p.excluded == {UNPRICED_SERIES: ["0x" + "02" * 20]}
    assert p.unpriced_series == [3] and p.unpriced_collateral == [UNL]
    doc = p.document
    assert [u["asset"] for u in doc["underlyings"]] == [BTC, ETH]  # ordered by address: every keeper the same
    assert {s["id"]: s["underlying"] for s in doc["series"]} == {1: 1, 2: 0}
    leaves = {l.account: l for l in leaves_from_inputs(doc)[0]}
    t = 30 * 86400 / SECONDS_PER_YEAR
    put = vollib_black("p", 2000.0, 1800.0, t, 0.0, 0.8)
    call = vollib_black("c", 40000.0, 45000.0, t, 0.0, 0.6)
    a = leaves["0x" + "01" * 20]
    assert abs(a.model_value - (-2 * put + call) * 1e6) <= 1  # floored to quote units
    expected_equity = (-2 * put + call) + 0.5 * 40000.0 * 0.9 + 3000.0  # marks are model values here
    assert abs(a.equity - expected_equity * 1e6) <= 2
    c = leaves["0x" + "03" * 20]
    assert c.equity == 7_000_000 and c.maintenance == 0  # the unpriced collateral counts for nothing
    assert a.maintenance > 0


def test_the_document_does_not_depend_on_the_order_keepers_list_markets_in():
    assert canonical_inputs(build(MARKETS).document) == canonical_inputs(build(MARKETS[::-1]).document)


def test_a_series_on_an_underlying_without_surface_is_unpriced_even_with_a_spot():
    p = build(MARKETS + [AssetMarket(XYZ, 10 * WAD)])  # a spot but no surface: still unpriced
    assert p.unpriced_series == [3] and UNPRICED_SERIES in p.excluded
    # ... and XYZ is then an underlying of the document (a listed price), moving in the scenarios
    assert [u["asset"] for u in p.document["underlyings"]] == [BTC, XYZ, ETH]
    assert len(leaves_from_inputs(p.document)[0]) == 2


def test_the_forward_of_each_expiry_is_in_the_document():
    p = build(MARKETS)
    for s in p.document["series"]:
        u = p.document["underlyings"][s["underlying"]]
        assert int(s["forward_wad"]) == int(u["spot_wad"])  # no chain: priced at spot
    assert np.all(np.isfinite(p.marks.vols))


def _drawn_chain():
    """A chain of the simulated market (3 expiries x 9 strikes x call/put around ETH 2,000) with two quotes the
    venue left one-sided and without IVs (NaN), as the keeper's chain source gives it."""
    import dataclasses
    from types import SimpleNamespace

    from keeper.data.sources import draw_chain

    st = SimpleNamespace(seed=5, expiries_days=[7, 30, 90], strikes_pct=[0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.4],
                         spread_pct=0.04, depth_mean=20.0)
    c = draw_chain(st, BlockRef(77, "0x" + "5a" * 32, NOW), 2000.0,
                   lambda k, t: np.maximum(0.6 - 0.1 * k + 0.3 * k * k, 0.05))
    bid = np.array(c.bid)
    bid[[0, 17]] = np.nan
    return dataclasses.replace(c, bid=bid, instrument=tuple(f"ETH-{i}" for i in range(len(c))))


def test_the_raw_quotes_and_the_prior_the_surface_was_fitted_on_are_archived():
    """Issue 15 item 7: each fitted underlying carries its chain (every column, NaN as null) and how it was fitted;
    the chain rebuilt from the canonical archive is the keeper's bit for bit, and refitting it with the archived prior
    gives the archived surface (second computation: the fit run again from the archive alone)."""
    import json

    from keeper.attest.portfolio import QUOTE_COLUMNS, chain_from_quotes
    from keeper.codec.canonical import canonical_json
    from keeper.quant.risk.engine import from_canonical
    from keeper.quant.surface import fit_surface

    chain = _drawn_chain()
    prior = flat_surface("ETH", 0.55, 2000.0)
    surface = fit_surface(chain, prior=prior)
    p = build([AssetMarket(ETH, 2000 * WAD, surface, chain, prior=prior), MARKETS[1]])
    blob = canonical_inputs(p.document)
    assert blob == canonical_json(p.document)  # the fast writer and the reference agree with the quotes in
    doc = from_canonical(json.loads(blob))
    eth, btc = doc["underlyings"][1], doc["underlyings"][0]
    assert "quotes" not in btc and "fit" not in btc  # no chain given: nothing to archive
    q = eth["quotes"]
    assert q["bid"][0] is None and q["bid"][17] is None and q["instrument"][3] == "ETH-3"
    back = chain_from_quotes(q)
    for col in QUOTE_COLUMNS:
        np.testing.assert_array_equal(getattr(back, col), getattr(chain, col), err_msg=col)
    assert (back.asof, back.spot, back.underlying) == (chain.asof, chain.spot, chain.underlying)
    assert eth["fit"]["prior"] == json.loads(json.dumps(prior.to_canonical()))
    assert eth["fit"]["config"]["prior_support"] == surface.fit_report["config"]["prior_support"]
    refit = fit_surface(back, prior=VolSurface.from_canonical(eth["fit"]["prior"]))
    assert refit.hash() == surface.hash() == VolSurface.from_canonical(eth["surface"]).hash()
    cold = fit_surface(back)  # the prior mattered: without it the fit is another surface
    assert cold.hash() != surface.hash()

"""Issue 15, item 3: the keeper prices each series on its expiry's forward, not on spot.

On the real ETH chain of 2024-01-08 (spot 2,222, forwards up to 2,458) a model price at spot falls inside the
venue's bid-ask far less often than at the forward; the keeper's marks (keeper.attest.inputs.mark_series) must
show the forward's figure. Second computation: Black-76 on the venue's own forward of each row."""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

from keeper.attest.inputs import mark_series, series_forwards
from keeper.attest.leaves import leaves_from_inputs
from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
from keeper.data.deribit import load_deribit_csv
from keeper.data.sources import BlockRef
from keeper.quant.pricing import black76_price
from keeper.quant.surface import fit_surface
from keeper.units import SECONDS_PER_YEAR, WAD

Series = namedtuple("Series", "series_id strike expiry is_call underlying", defaults=("0x" + "ee" * 20,))


def _two_sided(chain):
    m = np.isfinite(chain.bid) & np.isfinite(chain.ask) & (chain.bid > 0) & (chain.ask > chain.bid)
    return chain.select(m & (chain.expiry_ts > chain.asof))


@pytest.fixture(scope="module")
def eth(shared_data):
    chain = load_deribit_csv(shared_data / "option_chains" / "deribit_ETH_20240108T1119Z.csv").chain
    return chain, fit_surface(chain)


def _inside(chain, vols, fwd):
    t = (chain.expiry_ts - chain.asof) / SECONDS_PER_YEAR
    model = black76_price(fwd, chain.strike, t, np.asarray(vols), chain.is_call)
    return int(np.sum((model >= chain.bid) & (model <= chain.ask)))


def test_marks_on_the_expiry_forward_sit_inside_the_venue_quotes(eth):
    chain, surface = eth
    quoted = _two_sided(chain)
    now = int(quoted.asof)
    series = [Series(i, int(round(k * WAD)), int(e), bool(c))
              for i, (k, e, c) in enumerate(zip(quoted.strike, quoted.expiry_ts, quoted.is_call))]
    at_fwd = mark_series(series, surface, quoted, quoted.spot, now)
    at_spot = mark_series(series, surface, None, quoted.spot, now)
    n = len(quoted)
    inside_fwd = _inside(quoted, at_fwd.vols, np.asarray(at_fwd.forwards))
    inside_spot = _inside(quoted, at_spot.vols, np.full(n, quoted.spot))
    # the keeper's forwards are the venue's per expiry (the median of its rows; interpolated only between expiries)
    exp, venue = quoted.forward_by_expiry()
    assert np.allclose(at_fwd.forwards, venue[np.searchsorted(exp, quoted.expiry_ts)], rtol=1e-12)
    assert max(at_fwd.forwards) > 1.05 * quoted.spot
    assert inside_fwd >= 0.9 * n
    assert inside_spot < 0.5 * n
    # Black-76 on each row's own venue forward, as a second computation of the same count
    assert inside_fwd == _inside(quoted, at_fwd.vols, quoted.forward)


def test_put_call_parity_gives_the_forward_where_the_venue_gives_none(eth):
    chain, _ = eth
    quoted = _two_sided(chain)
    exp, venue = quoted.carry_by_expiry()
    blank = type(quoted)(**{**{f: getattr(quoted, f) for f in quoted.__dataclass_fields__},
                            "forward": np.full(len(quoted), np.nan)})
    exp2, parity = blank.carry_by_expiry()
    assert np.array_equal(exp, exp2)
    # parity without discounting: within 0.2 % of the futures-implied forward up to 90 days, 2 % up to a year
    days = (exp - quoted.asof) / 86400
    err = np.abs(parity / venue - 1)
    assert np.all(err[days <= 90] < 0.002) and np.all(err < 0.02)
    assert np.any(parity != 1.0)


def test_the_inputs_document_carries_the_forward_and_the_risk_engine_prices_on_it(eth):
    chain, surface = eth
    quoted = _two_sided(chain)
    now = int(quoted.asof)
    far = int(quoted.expiries()[-1])
    k = float(np.median(quoted.strike[quoted.expiry_ts == far]))
    series = [Series(7, int(round(k * WAD)), far, True)]
    spot_wad = int(round(quoted.spot * 100)) * 10**16  # the attested spot, quantized to cents
    spot = spot_wad / WAD
    fwd = float(series_forwards(np.array([far]), spot, now, quoted)[0])
    acct = namedtuple("Acct", "account state_nonce cash collateral positions")("0x" + "0a" * 20, 1, 10**12, {},
                                                                              {7: -WAD})
    pi = build_portfolio_inputs(
        block=BlockRef(1, "0x" + "ab" * 32, now), markets=[AssetMarket("0x" + "ee" * 20, spot_wad, surface, quoted)],
        series=series, accounts=[acct], collateral={}, quote_asset="0x" + "0c" * 20, quote_decimals=6,
        risk={"var_confidence": 0.99, "es_confidence": 0.975, "im_multiplier": 1.5, "horizon_days": 1.0,
              "mc_paths": 200, "mc_diffusion_vol": 0.7, "grid_spot_range": 0.15, "grid_vol_range": 0.25})
    doc = pi.document
    assert int(doc["series"][0]["forward_wad"]) == pytest.approx(fwd * WAD, rel=1e-12)
    assert fwd > 1.05 * spot  # the far expiry's forward is well away from spot: pricing at spot would show
    at_fwd = mark_series(series, surface, quoted, spot, now)
    assert pi.marks.vols == at_fwd.vols and pi.marks.forwards == at_fwd.forwards
    leaves, _ = leaves_from_inputs(doc)
    t = (far - now) / SECONDS_PER_YEAR
    expected = -float(black76_price(fwd, k, t, at_fwd.vols[0], True))
    # the short call's model value is the Black-76 price on the forward (floored to quote units)
    assert leaves[0].model_value == int(np.floor(expected * 1e6))

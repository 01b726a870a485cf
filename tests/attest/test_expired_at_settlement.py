"""An expired series not yet settled is valued at intrinsic against its expiry's settlement price (issue 16 item 3),
recorded as its forward in the document, and carries no spot risk: its payoff was fixed when the averaging window
closed. Textbook intrinsic as the second computation; the engine's revaluation rows as the law."""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from keeper.attest.leaves import risk_run
from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
from keeper.data.feed import BlockRef
from keeper.quant.risk.engine import revalue
from keeper.quant.surface import CANONICAL_VERSION, VolSurface
from keeper.units import SECONDS_PER_YEAR, WAD

NOW = 1_800_000_000
ETH, USD = "0x" + "e" * 40, "0x" + "a" * 40
Series = namedtuple("Series", "series_id underlying strike expiry is_call")
Acct = namedtuple("Acct", "account state_nonce cash collateral positions")
RISK = {"var_confidence": 0.99, "es_confidence": 0.975, "im_multiplier": 1.5, "horizon_days": 1.0, "mc_paths": 300,
        "mc_diffusion_vol": 0.7, "grid_spot_range": 0.15, "grid_vol_range": 0.25}


def _surface():
    slices = [{"expiry_ts": NOW + t * SECONDS_PER_YEAR, "t": t, "forward": 2000.0, "a": 0.36 * t, "b": 0.0,
               "rho": 0.0, "m": 0.0, "sigma": 0.1} for t in (0.02, 0.5)]
    return VolSurface.from_canonical({"version": CANONICAL_VERSION, "underlying": "ETH", "asof": NOW,
                                      "slices": slices})


def _build(settlement):
    expired, live = NOW - 3600, NOW + 30 * 86400
    series = [Series(1, ETH, 2000 * WAD, expired, False), Series(2, ETH, 1800 * WAD, expired, True),
              Series(3, ETH, 2000 * WAD, live, False)]
    accounts = [Acct("0x" + "01" * 20, 1, 10**10, {}, {1: 3 * WAD, 2: -2 * WAD, 3: -WAD})]
    return build_portfolio_inputs(block=BlockRef(5, "0x" + "11" * 32, NOW),
                                  markets=[AssetMarket(ETH, 2050 * WAD, _surface(), settlement=settlement)],
                                  series=series, accounts=accounts, collateral={USD: {"decimals": 6, "haircut": 0}},
                                  quote_asset=USD, quote_decimals=6, risk=RISK)


def test_expired_series_are_intrinsic_at_the_settlement_price_and_carry_no_spot_risk():
    p = _build({NOW - 3600: 1900.0})
    doc = p.document
    marks = dict(zip([s["id"] for s in doc["series"]], doc["marks"]))
    assert marks[1] == max(2000.0 - 1900.0, 0.0) == 100.0  # put struck 2,000 settled at 1,900
    assert marks[2] == max(1900.0 - 1800.0, 0.0) == 100.0  # call struck 1,800
    fw = {s["id"]: int(s["forward_wad"]) for s in doc["series"]}
    assert fw[1] == fw[2] == 1900 * WAD and fw[3] != 1900 * WAD
    run = risk_run(doc)
    rows = revalue(run.inputs, run.tail)
    ids = [s["id"] for s in doc["series"]]
    assert np.all(rows[ids.index(1)] == 0.0) and np.all(rows[ids.index(2)] == 0.0)  # fixed payoffs
    assert np.any(rows[ids.index(3)] != 0.0)  # the live put still moves
    # no settlement price known: the old rule, intrinsic at spot (2,050)
    q = _build(None).document
    marks_q = dict(zip([s["id"] for s in q["series"]], q["marks"]))
    assert marks_q[1] == 0.0 and marks_q[2] == 250.0

"""keeper/verify/settlement: the settlement price an inputs document valued an expired series at, against the chain.

The expected numbers are computed here by hand (the step-function average written out), not with the module's
own helper."""
from __future__ import annotations

from keeper.attest.inputs import forward_wad
from keeper.units import WAD
from keeper.verify.settlement import (
    SettlementEvidence,
    posted_price_findings,
    settlement_findings,
)

WETH = "0x" + "ee" * 20
EXPIRY = 1_700_000_000
SPOT = 1_990 * WAD
# attested prices: 2,000 from 40 min before expiry, 1,700 from 10 min before: over the 30-minute window the price is
# 2,000 for 1,200 s and 1,700 for 600 s, so the average is (2,000 x 1,200 + 1,700 x 600) / 1,800 = 1,900
HISTORY = {WETH: [(EXPIRY - 2_400, 2_000 * WAD), (EXPIRY - 600, 1_700 * WAD), (EXPIRY + 60, 1_990 * WAD)]}
TWAP = (2_000 * 1_200 + 1_700 * 600) * WAD // 1_800


def _doc(forward: int, expiry: int = EXPIRY) -> dict:
    return {"block": {"number": 90, "hash": "0x" + "ab" * 32, "timestamp": EXPIRY + 120},
            "underlyings": [{"asset": WETH, "spot_wad": str(SPOT)}],
            "series": [{"id": 7, "underlying": 0, "strike": str(1_800 * WAD), "expiry": expiry, "is_call": False,
                        "forward_wad": str(forward)},
                       {"id": 8, "underlying": 0, "strike": str(1_800 * WAD), "expiry": EXPIRY + 86_400,
                        "is_call": False, "forward_wad": str(2_100 * WAD)}]}


def test_the_hand_average_is_what_the_keepers_would_record():
    assert TWAP == 1_900 * WAD
    found = settlement_findings(_doc(forward_wad(TWAP / WAD, SPOT)), SettlementEvidence({}, HISTORY))
    assert [f["ok"] for f in found] == [True]  # one check: the expired series only (series 8 is live)
    assert "series 7" in found[0]["check"] and "30-minute average" in found[0]["detail"]


def test_a_document_valuing_an_expired_series_at_the_spot_after_expiry_is_refused():
    """The attack the rule is for: valuing expired puts at the live spot (1,990) instead of the settlement price
    (1,900) makes every short put holder 90 richer per unit; the check names both numbers."""
    found = settlement_findings(_doc(forward_wad(1_990.0, SPOT)), SettlementEvidence({}, HISTORY))
    assert [f["ok"] for f in found] == [False]
    assert "1990.000000" in found[0]["detail"] and "1900.000000" in found[0]["detail"]


def test_a_posted_settlement_price_is_the_one_that_counts():
    posted = {(WETH, EXPIRY): 1_905 * WAD}  # what postSettlementPrices put on chain
    ev = SettlementEvidence(posted, HISTORY)
    assert [f["ok"] for f in settlement_findings(_doc(forward_wad(1_905.0, SPOT)), ev)] == [True]
    assert [f["ok"] for f in settlement_findings(_doc(forward_wad(TWAP / WAD, SPOT)), ev)] == [False]
    # ... and the posted price itself is checked against the average: 1,905 is not 1,900
    assert [f["ok"] for f in posted_price_findings(ev)] == [False]
    assert [f["ok"] for f in posted_price_findings(SettlementEvidence({(WETH, EXPIRY): TWAP}, HISTORY))] == [True]


def test_without_a_price_on_chain_or_enough_history_nothing_can_justify_the_value():
    thin = {WETH: [(EXPIRY - 300, 1_700 * WAD)]}  # 300 s of the 1,800 s window: under half covered
    found = settlement_findings(_doc(forward_wad(1_700.0, SPOT)), SettlementEvidence({}, thin))
    assert [f["ok"] for f in found] == [False] and "cover 300 s" in found[0]["detail"]
    # a posted price with no average to compare is reported (keepers then sign the fresh spot), not refused
    assert [f["ok"] for f in posted_price_findings(SettlementEvidence({(WETH, EXPIRY): 1_700 * WAD}, thin))] == [True]


def test_an_expired_series_with_no_recorded_price_is_named():
    doc = _doc(0)
    del doc["series"][0]["forward_wad"]
    found = settlement_findings(doc, SettlementEvidence({}, HISTORY))
    assert [f["ok"] for f in found] == [False] and "no recorded settlement price" in found[0]["detail"]

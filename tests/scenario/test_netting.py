"""The two-asset book's cross-asset netting through the crash (keeper/scenario/netting.py): totals are the sums of
the accounts, a book hedged across assets gets a netting credit but never below what either asset alone or the pair
moving apart costs (the grid's cap), and a diversified book gets no credit at correlation 1."""
from __future__ import annotations

import pytest

from keeper.data.paths import CrashConfig, crash_path
from keeper.scenario.netting import BOOKS, netting_through_path


@pytest.fixture(scope="module")
def result():
    p = crash_path(CrashConfig(n_steps=6, crash_step=2, jump=-0.30, vol_spike=2.0, step_seconds=3600.0))
    return p, netting_through_path(p.spot, p.atm_vol, 3600.0, n_accounts=8, mc_paths=400)


def test_totals_are_the_sums_of_the_accounts(result):
    _, r = result
    first = r["steps"][0]
    assert first["mm_combined"] == pytest.approx(sum(a["mm_combined"] for a in r["accounts_first"]), rel=1e-12)
    assert first["mm_separate"] == pytest.approx(sum(a["mm_separate"] for a in r["accounts_first"]), rel=1e-12)
    worst = r["steps"][r["worst_step"]]
    assert worst["mm_combined"] == max(s["mm_combined"] for s in r["steps"])
    assert worst["mm_combined"] > first["mm_combined"]            # the crash raises the margin


def test_hedged_books_get_credit_capped_by_the_grid_and_diversified_books_none(result):
    _, r = result
    for accounts in (r["accounts_first"], r["accounts_worst"]):
        for a in accounts:
            # the cap: the combined book's margin is never below its grid loss, which is at least each single-asset
            # book's own grid loss (the combined grid holds every single-asset block)
            assert a["mm_combined"] >= a["grid_combined"] * (1 - 1e-12)
            assert a["grid_combined"] >= max(a["grid_btc_book"], a["grid_eth_book"]) * (1 - 1e-9)
            if a["book"] == BOOKS[1][0]:                              # long BTC put vs short ETH put
                assert a["mm_combined"] < a["mm_separate"]
            if a["book"] == BOOKS[0][0]:                              # short puts on both: no diversification
                assert a["mm_combined"] >= 0.99 * a["mm_separate"]


def test_bad_path_is_refused():
    with pytest.raises(ValueError):
        netting_through_path([2000.0, -1.0], [0.6, 0.6], 3600.0)


# ---------------------------------------------------------------------------------------------- on the attested books
def _attested_two_asset_book():
    """The inline keepers' two-asset attestation (keeper/scenario/keepers.py ``portfolio_attestation``) of a small
    book: an ETH-only short, a hedged book (short ETH put, long BTC put), a short on both with WBTC collateral."""
    import numpy as np

    from keeper.attest.engine import BookState, smile_from
    from keeper.scenario.keepers import PortfolioSettings, portfolio_attestation

    weth, wbtc = "0x00000000000000000000000000000000000000e1", "0x00000000000000000000000000000000000000b1"
    now = 1_700_000_000
    series = {1: {"underlying": weth, "strike": 1800.0, "expiry": now + 30 * 86400, "is_call": False},
              2: {"underlying": wbtc, "strike": 36000.0, "expiry": now + 30 * 86400, "is_call": False},
              3: {"underlying": weth, "strike": 2200.0, "expiry": now + 14 * 86400, "is_call": True}}
    accounts = ["0x00000000000000000000000000000000000000a1", "0x00000000000000000000000000000000000000a2",
                "0x00000000000000000000000000000000000000a3"]
    positions = np.array([[-10.0, 0.0, -5.0], [-20.0, 0.5, 0.0], [-10.0, -0.5, 0.0]])
    collateral = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.3]])  # WETH, WBTC
    book = BookState(accounts, [1, 2, 3], positions, [weth, wbtc], collateral, [10_000 * 10**6] * 3, [1, 1, 1],
                     {weth: 18, wbtc: 8})
    att = portfolio_attestation(book, series, {weth: 2000.0, wbtc: 40_000.0},
                                {weth: smile_from(0.75), wbtc: smile_from(0.6)}, {weth: 0.15, wbtc: 0.10},
                                PortfolioSettings(mc_paths=400), sequence=10, timestamp=now, block_hash=b"\x07" * 32)
    return att, series, weth, wbtc


def test_inline_attestation_prices_each_series_on_its_own_underlying():
    """Each series names its own underlying in the document and is valued at that underlying's spot: the model
    values (py_vollib Black-76 at the series' own spot and smile vol) and the document's spots."""
    import json

    from py_vollib.black import black

    from keeper.quant.risk.engine import from_canonical

    att, series, weth, wbtc = _attested_two_asset_book()
    doc = from_canonical(json.loads(att.inputs_blob))
    unders = [u["asset"].lower() for u in doc["underlyings"]]
    assert unders == [weth, wbtc] and doc["risk"]["stress_correlation"] == 1.0
    spot = {weth: 2000.0, wbtc: 40_000.0}
    for s, vol in zip(doc["series"], doc["vols"]):
        u = unders[int(s["underlying"])]
        assert u == series[int(s["id"])]["underlying"]
        t = (int(s["expiry"]) - doc["block"]["timestamp"]) / (365 * 86400)
        k = int(s["strike"]) / 10**18
        assert att.model_prices[int(s["id"])] == pytest.approx(black("c" if s["is_call"] else "p", spot[u], k, t, 0.0,
                                                                     vol), rel=1e-9)


def test_netting_on_an_attested_document():
    """netting_of_document: a one-asset book gets no credit (its other part is empty), the hedged book gets some,
    the totals are the sums, and the combined MM equals the attested leaf's (rounded up to a base unit)."""
    import json

    from keeper.quant.risk.engine import from_canonical
    from keeper.scenario.netting import netting_of_document, split_document

    att, _series, weth, wbtc = _attested_two_asset_book()
    doc = from_canonical(json.loads(att.inputs_blob))
    r = netting_of_document(doc)
    rows = {a["account"].lower(): a for a in r["accounts"]}
    only_eth, hedged, both = (rows["0x00000000000000000000000000000000000000a" + c] for c in "123")
    assert only_eth["mm_parts"][1] == 0 and only_eth["netting_credit"] == pytest.approx(0, abs=1e-9)
    assert hedged["netting_credit"] > 0 and len(hedged["underlyings"]) == 2
    assert r["two_asset"]["accounts"] == 2
    assert r["all"]["mm_combined"] == pytest.approx(sum(a["mm_combined"] for a in r["accounts"]), rel=1e-12)
    for leaf in att.leaves:
        assert leaf.maintenance == pytest.approx(rows[leaf.account.lower()]["mm_combined"] * 1e6, abs=1)
    part = split_document(doc, 1)  # the BTC part: BTC series and WBTC collateral only
    u_of = {int(s["id"]): int(s["underlying"]) for s in doc["series"]}
    assert all(u_of[int(p[0])] == 1 for a in part["accounts"] for p in a["positions"])
    assert all(c[0].lower() == wbtc for a in part["accounts"] for c in a["collateral"])

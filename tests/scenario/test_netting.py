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

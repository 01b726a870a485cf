"""The liquidation auction's documented gas bound, as a test: every bid `liquidator run` sends on a book of
5 option positions + 2 collateral assets costs at most 120,000 gas (docs/auctions.md "Gas", docs/gas.md).

The transactions are those of the gas table itself: ``scripts/gas_auction.py``'s ``auction_rows()`` (what
``make gas`` prints) runs here on the test chain, on a deployment of its own. The bounded rows are the ones both
docs print in bold ("**bid, ...**"): a partial bid (a new liquidator's first, slot primed, and a warm one), the bid
that completes the sale, and an insolvent whole-book bid the fund pays. This file checks that

* the docs still bound those three kinds of bid, and every bold bid row of the docs is a row the script measures
  (same operation names in docs/auctions.md, docs/gas.md and the script);
* each measured transaction is the setup its name says: the book at the block before the bid holds 5 series,
  2 collateral assets and quote cash; a partial bid does not complete the sale, the completing one emits
  ``SaleCompleted``, the insolvent one is paid by the fund (``ShortfallPaid``, no ``BadDebtRecorded``);
* its receipt's ``gas_used`` (total transaction gas) is <= 120,000.

Gas is Anvil's (current hardfork schedule, EIP-2929); on another node the figures differ, so the bound is checked
on Anvil only.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from brownie import ClearinghouseAdmin, Contract, LiquidationAuction, web3

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # scripts.gas_auction imports tests.auction.conftest

BID_GAS_BOUND = 120_000
BOOK_SERIES, BOOK_ASSETS = 5, 2
DOCS = (ROOT / "docs" / "auctions.md", ROOT / "docs" / "gas.md")


def bold_bid_rows(doc: Path) -> dict[str, int]:
    """``{operation: documented gas}`` of the bold bid rows ("| **bid, ...** | 113,660 | ...") of a doc's tables."""
    rows = {}
    for line in doc.read_text().splitlines():
        m = re.match(r"\|\s*(\*\*bid[^|]*\*\*)\s*\|\s*([\d,]+)\s*\|", line)
        if m:
            rows[m.group(1)] = int(m.group(2).replace(",", ""))
    return rows


def kind(name: str) -> str:
    if "insolvent" in name:
        return "insolvent"
    if "completes the sale" in name:
        return "completing"
    if "partial" in name:
        return "partial"
    return "other"


@pytest.fixture(scope="module")
def measured():
    """``{operation: tx}`` of every row of the gas table, on a fresh deployment."""
    if not web3.client_version.lower().startswith("anvil"):
        pytest.skip("the documented gas figures are Anvil's")
    from scripts.gas_auction import auction_rows

    rows = auction_rows()
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names)), names
    return {name: tx for name, tx, _ in rows}


def test_docs_bound_the_three_kinds_of_bid():
    for doc in DOCS:
        rows = bold_bid_rows(doc)
        assert {kind(n) for n in rows} >= {"partial", "completing", "insolvent"}, (doc.name, rows)
        assert all(g <= BID_GAS_BOUND for g in rows.values()), (doc.name, rows)
    assert bold_bid_rows(DOCS[0]).keys() == bold_bid_rows(DOCS[1]).keys(), "docs/auctions.md and docs/gas.md differ"


def test_the_docs_bounded_rows_are_the_ones_measured(measured):
    documented = bold_bid_rows(DOCS[0])
    missing = [n for n in documented if n not in measured]
    assert not missing, f"documented but not measured by scripts/gas_auction.py: {missing}"
    bold_measured = {n for n in measured if n.startswith("**bid")}
    assert bold_measured == documented.keys(), (sorted(bold_measured), sorted(documented))


def _book_before(tx) -> tuple[str, int, int, int]:
    """(account, series held, collateral assets, quote cash) of the bid's account at the block before the bid."""
    auction = Contract.from_abi("LiquidationAuction", tx.receiver, LiquidationAuction.abi)
    chx = Contract.from_abi("ClearinghouseX", auction.clearinghouse(), ClearinghouseAdmin.abi)
    account = tx.events["Bid"]["account"]
    before = tx.block_number - 1
    return (account, len(chx.seriesOf(account, block_identifier=before)),
            len(chx.collateralAssetsOf(account, block_identifier=before)),
            int(chx.cashOf(account, block_identifier=before)))


def test_each_bounded_bid_is_the_documented_setup(measured):
    for name in bold_bid_rows(DOCS[0]):
        tx = measured[name]
        assert tx.status == 1 and "Bid" in tx.events, name
        account, n_series, n_assets, cash = _book_before(tx)
        assert (n_series, n_assets) == (BOOK_SERIES, BOOK_ASSETS), (name, account, n_series, n_assets)
        assert cash > 0, (name, account, cash)
        k = kind(name)
        if k == "partial":
            assert "SaleCompleted" not in tx.events, name
        elif k == "completing":
            assert "SaleCompleted" in tx.events and "ShortfallPaid" not in tx.events, name
        elif k == "insolvent":
            assert "ShortfallPaid" in tx.events and "BadDebtRecorded" not in tx.events, name
            assert "SaleCompleted" in tx.events, name  # the whole book: the sale is complete
        else:
            pytest.fail(f"unexpected bold bid row {name!r}")


def test_every_bounded_bid_is_at_most_120k_gas(measured):
    rows = {name: measured[name].gas_used for name in bold_bid_rows(DOCS[0])}
    print("\nbid gas (bound 120,000):")
    for name, gas in rows.items():
        print(f"  {gas:>8,}  headroom {BID_GAS_BOUND - gas:>6,}  {name}")
    over = {n: g for n, g in rows.items() if g > BID_GAS_BOUND}
    assert not over, f"bids above {BID_GAS_BOUND:,} gas: {over}"

"""The hybrid mark's state in the keepers' inputs documents (issue 15 item 5), pure: each block's document is
``build_portfolio_inputs`` on a chain that quotes the listed series (``draw_chain(listed=)``), continued from the
previous block's canonical document as a keeper reads it back from the archive. A listed series whose book turns
deep and tight switches to market after ``enter_blocks`` documents, its mark then the mid of its own archived quote;
a dip inside the leave band stays on market; a wide book returns it to the model, its mark then Black-76 at the
document's vol and forward (py_vollib, a second computation). A fresh process rebuilding a block from the previous
archived document writes the same bytes; a cold start at the same block decides otherwise."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from py_vollib.black import black as vollib_black

from keeper.attest.leaves import canonical_inputs, leaves_from_inputs
from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
from keeper.data.feed import BlockRef
from keeper.data.sources import draw_chain, listed_contracts
from keeper.quant.marks import MarkConfig
from keeper.quant.risk.engine import from_canonical
from keeper.quant.surface import fit_surface
from keeper.units import SECONDS_PER_YEAR, WAD

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000
ETH, USD = "0x" + "e" * 40, "0x" + "a" * 40
Series = namedtuple("Series", "series_id underlying strike expiry is_call")
Acct = namedtuple("Acct", "account state_nonce cash collateral positions")
RISK = {"var_confidence": 0.99, "es_confidence": 0.975, "im_multiplier": 1.5, "horizon_days": 1.0, "mc_paths": 200,
        "mc_diffusion_vol": 0.7, "grid_spot_range": 0.15, "grid_vol_range": 0.25}
SIM = SimpleNamespace(seed=5, expiries_days=[7, 30, 90], spread_pct=0.04, depth_mean=20.0,
                      strikes_pct=[0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.4])
EXPIRY = NOW + 30 * 86400 + 600
SERIES = [Series(1, ETH, 2000 * WAD, EXPIRY, False), Series(2, ETH, 1800 * WAD, EXPIRY, False),
          Series(3, ETH, 2200 * WAD, EXPIRY, True)]
ACCOUNTS = [Acct("0x" + "01" * 20, 3, 50_000 * 10**6, {}, {1: -WAD, 3: 2 * WAD})]
CONFIG = MarkConfig(enter_blocks=2)
#: per block: the book's relative spread and depth on both sides (market-file overrides)
BOOKS = [(0.30, 1.0), (0.01, 100.0), (0.01, 100.0), (0.07, 100.0), (0.30, 100.0), (0.01, 100.0)]


def smile(k, t):
    return np.maximum(0.6 - 0.15 * k + 0.4 * k * k, 0.05)


def block_doc(n: int, previous: dict | None, spread: float, depth: float) -> dict:
    """Block ``NOW + 12 n``'s document from the previous one (decoded canonical, as a keeper reads it back)."""
    block = BlockRef(100 + n, "0x%064x" % (0xABC + n), NOW + 12 * n)
    chain = draw_chain(SIM, block, 2000.0, smile, listed=listed_contracts(SERIES, ETH, block.timestamp),
                       spread_pct=spread, depth=depth)
    surface = fit_surface(chain)
    pi = build_portfolio_inputs(block=block, markets=[AssetMarket(ETH, 2000 * WAD, surface, chain)], series=SERIES,
                                accounts=ACCOUNTS, collateral={USD: {"decimals": 6, "haircut": 0}}, quote_asset=USD,
                                quote_decimals=6, risk=RISK, previous=previous, mark_config=CONFIG)
    return pi.document


def archived(doc: dict) -> tuple[bytes, dict]:
    blob = canonical_inputs(doc)
    return blob, from_canonical(json.loads(blob))


@pytest.fixture(scope="module")
def docs():
    out, prev = [], None
    for n, (spread, depth) in enumerate(BOOKS):
        blob, doc = archived(block_doc(n, prev, spread, depth))
        out.append((blob, doc))
        prev = doc
    return out


def quote_mid(doc: dict, s: Series) -> float:
    q = doc["underlyings"][0]["quotes"]
    rows = [j for j in range(len(q["strike"])) if q["strike"][j] == s.strike / WAD and q["expiry_ts"][j] == s.expiry
            and q["is_call"][j] == s.is_call]
    assert len(rows) == 1, "the chain quotes each listed contract once"
    return 0.5 * (q["bid"][rows[0]] + q["ask"][rows[0]])


def state(doc: dict, sid: int) -> tuple:
    h = next(s for s in doc["series"] if s["id"] == sid)["hybrid"]
    return h["branch"], h["reason"], h["passes"]


def test_a_listed_series_switches_to_market_and_back_across_documents(docs):
    for sid in (1, 2, 3):
        assert [state(d, sid)[:2] for _, d in docs] == [
            ("model", "MODEL_THIN_DEPTH"),  # thin and wide: the model
            ("model", "MODEL_PENDING"),  # deep and tight once: not yet
            ("market", "MARKET_DEEP_TIGHT"),  # twice: the mid
            ("market", "MARKET_DEEP_TIGHT"),  # 7 % wide: a dip inside the leave band
            ("model", "MODEL_WIDE_SPREAD"),  # 30 % wide: the model at once
            ("model", "MODEL_PENDING"),  # tight again: two documents again
        ], f"series {sid}"
    for (_, d), (_, before) in zip(docs[1:], docs):
        for s in d["series"]:
            prev = next(p for p in before["series"] if p["id"] == s["id"])["hybrid"]
            assert s["hybrid"]["prev"] == {"branch": prev["branch"], "passes": prev["passes"]}
        assert d["underlyings"][0]["hybrid"] == {"config": CONFIG.to_document(),
                                                 "previous_block": before["block"]["number"]}
    assert docs[0][1]["underlyings"][0]["hybrid"]["previous_block"] is None


def test_the_mark_is_the_archived_mid_on_market_and_black76_on_the_model(docs):
    for k, (_, d) in enumerate(docs):
        t = (EXPIRY - d["block"]["timestamp"]) / SECONDS_PER_YEAR
        for j, s in enumerate(SERIES):
            assert d["series"][j]["id"] == s.series_id
            if state(d, s.series_id)[0] == "market":
                assert d["marks"][j] == quote_mid(d, s)
            else:
                fwd = int(d["series"][j]["forward_wad"]) / WAD
                want = vollib_black("c" if s.is_call else "p", fwd, s.strike / WAD, t, 0.0, d["vols"][j])
                assert d["marks"][j] == pytest.approx(want, rel=1e-9)
                assert abs(d["marks"][j] - quote_mid(d, s)) > 0  # not the mid by accident
    # the mark moves the leaf: the account's equity differs between the market block and a model re-mark of it
    _, on = docs[2]
    remarked = json.loads(json.dumps(on))
    for j, s in enumerate(SERIES):
        fwd = int(on["series"][j]["forward_wad"]) / WAD
        t = (EXPIRY - on["block"]["timestamp"]) / SECONDS_PER_YEAR
        remarked["marks"][j] = vollib_black("c" if s.is_call else "p", fwd, s.strike / WAD, t, 0.0, on["vols"][j])
    a = leaves_from_inputs(on)[0][0]
    b = leaves_from_inputs(remarked)[0][0]
    expected = sum(int(size) / WAD * (on["marks"][sid - 1] - remarked["marks"][sid - 1])
                   for sid, size in [(1, -WAD), (3, 2 * WAD)])
    assert a.equity - b.equity == pytest.approx(expected * 10**6, abs=2)


def test_a_cold_start_decides_otherwise_and_a_fresh_process_from_the_archive_the_same(docs, tmp_path):
    # block 3 (7 % wide) from block 2's document stays on market; from no document the enter thresholds apply
    spread, depth = BOOKS[3]
    assert state(archived(block_doc(3, None, spread, depth))[1], 1)[:2] == ("model", "MODEL_WIDE_SPREAD")
    prev_file = tmp_path / "prev.json"
    prev_file.write_bytes(docs[2][0])
    code = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_hybrid_documents import BOOKS, block_doc
from keeper.attest.leaves import canonical_inputs
from keeper.quant.risk.engine import from_canonical
prev = from_canonical(json.loads(open({str(prev_file)!r}, 'rb').read()))
sys.stdout.buffer.write(canonical_inputs(block_doc(3, prev, *BOOKS[3])))
"""
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=300,
                         cwd=ROOT, env={"PYTHONHASHSEED": "123", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}).stdout
    assert got == docs[3][0]


def test_the_scenarios_market_source_runs_the_market_branch(tmp_path):
    """The scenario's keepers: the market-file source (the scenario's ``market.json``, no book overrides) with the
    ``simulated`` section's defaults (4 % spread, exponential depth of mean 10) and the default deployment's 20
    series (14 and 45 days, 0.8-1.2 x spot, calls and puts), each block continued from the previous document. Every
    listed series is quoted and matched; the market branch runs (series enter and leave it as their random depth
    crosses the thresholds), and every market mark is the series' own mid."""
    from keeper.chain.deploy import DeployConfig
    from keeper.data.sources import MarketFileChainSource
    from keeper.ops.config import SimulatedMarketSettings

    market = tmp_path / "market.json"
    market.write_text(json.dumps({"spot": 2000.0, "atm_vol": 0.6, "skew": -0.15, "curvature": 0.4}))
    source = MarketFileChainSource(market, SimulatedMarketSettings(seed=7, spot0=2000.0))
    dep = DeployConfig()
    series = [Series(i + 1, ETH, int(round(dep.spot0 * p.strike_pct * 100)) * 10**16,
                     NOW + int(p.expiry_days * 86400), p.is_call) for i, p in enumerate(dep.series)]
    prev, rows, blocks = None, [], 12
    for n in range(blocks):
        block = BlockRef(200 + n, "0x%064x" % (0xDEF + n), NOW + 12 * n)
        chain = source.chain(block, 2000.0, listed=listed_contracts(series, ETH, block.timestamp))
        pi = build_portfolio_inputs(block=block, markets=[AssetMarket(ETH, 2000 * WAD, fit_surface(chain), chain)],
                                    series=series, accounts=ACCOUNTS, collateral={USD: {"decimals": 6, "haircut": 0}},
                                    quote_asset=USD, quote_decimals=6, risk=RISK, previous=prev,
                                    mark_config=CONFIG)
        _, doc = archived(pi.document)
        for j, s in enumerate(series):
            h = doc["series"][j]["hybrid"]
            assert h["reason"] != "MODEL_UNMATCHED"  # every listed series is quoted
            if h["branch"] == "market":
                assert doc["marks"][j] == quote_mid(doc, s)
        rows.append([doc["series"][j]["hybrid"]["branch"] == "market" for j in range(len(series))])
        prev = doc
    on = np.array(rows)
    entered = int(np.sum(on[1:] & ~on[:-1]))
    left = int(np.sum(~on[1:] & on[:-1]))
    print(f"\n{len(series)} series x {blocks} blocks: {on.mean():.0%} of the marks on the market, "
          f"{entered} switches to market and {left} back")
    assert on.any(axis=0).sum() >= len(series) // 4 and entered > 0 and left > 0


def test_branch_counts_are_the_series_marked_at_their_own_mid(docs):
    """What ``keeper status`` and the ``backstop_keeper_marks`` gauge report per asset: recounted here from the
    marks themselves (a series counts as on the market exactly when its mark is the mid of its own archived quote)."""
    from keeper.quant.marks import branch_counts

    seen = []
    for _, d in docs:
        at_mid = sum(d["marks"][j] == quote_mid(d, s) for j, s in enumerate(SERIES))
        assert branch_counts(d) == {ETH: {"market": at_mid, "model": len(SERIES) - at_mid}}
        seen.append(at_mid)
    assert seen == [0, 0, 3, 3, 0, 0]  # both branches occur in the fixture's six blocks
    assert branch_counts(None) == {} and branch_counts({"underlyings": [{"asset": ETH}], "series": []}) == {
        ETH: {"market": 0, "model": 0}}

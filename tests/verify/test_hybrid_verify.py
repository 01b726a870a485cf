"""``backstop verify`` re-derives each series' hybrid-mark choice (issue 15 item 5) from the archived quotes and the
state the series records for the previous attested document, and checks that state against the previous document.
Pure: the documents are the keepers' own (``build_portfolio_inputs`` continued block by block, as in
tests/attest/test_hybrid_documents.py); each lie is written into one the way colluding keepers would have to sign
it, and the check must fail naming the series and the rule."""
from __future__ import annotations

import copy

import pytest
from py_vollib.black import black as vollib_black

from keeper.verify.quotes import hybrid_findings, rederive
from tests.attest.test_hybrid_documents import BOOKS, EXPIRY, archived, block_doc
from keeper.units import SECONDS_PER_YEAR, WAD

ATM = 1  # the 2,000 put


@pytest.fixture(scope="module")
def docs():
    out, prev = [], None
    for n, (spread, depth) in enumerate(BOOKS[:5]):
        _, doc = archived(block_doc(n, prev, spread, depth))
        out.append(doc)
        prev = doc
    return out


def _row(doc, sid=ATM):
    return next(j for j, s in enumerate(doc["series"]) if s["id"] == sid)


def _rule(r, asset):
    return next(c for c in r.checks if c["check"] == f"hybrid mark rule ({asset})")


def test_every_honest_document_re_derives_its_choices(docs):
    for before, doc in zip([None] + docs, docs):
        r = rederive(copy.deepcopy(doc))
        assert r.differences == [] and all(c["ok"] for c in r.checks), r.checks
        asset = doc["underlyings"][0]["asset"]
        n_market = sum(s["hybrid"]["branch"] == "market" for s in doc["series"])
        assert f"({n_market} of 3 on the market)" in _rule(r, asset)["detail"]
        assert all(c["ok"] for c in hybrid_findings(doc, before, "0xprev"))
    assert [d["series"][_row(d)]["hybrid"]["branch"] for d in docs] == ["model", "model", "market", "market", "model"]


def test_a_branch_switched_to_market_is_named_with_its_rule(docs):
    """Block 1: the book passed once (pending). Keepers sign it as on the market at its mid."""
    doc = copy.deepcopy(docs[1])
    j = _row(doc)
    q = doc["underlyings"][0]["quotes"]
    k = next(i for i in range(len(q["strike"])) if q["strike"][i] == 2000.0 and q["expiry_ts"][i] == EXPIRY
             and not q["is_call"][i])
    doc["series"][j]["hybrid"].update(branch="market", reason="MARKET_DEEP_TIGHT", passes=2)
    doc["marks"][j] = 0.5 * (q["bid"][k] + q["ask"][k])
    r = rederive(doc)
    c = _rule(r, doc["underlyings"][0]["asset"])
    assert not c["ok"]
    assert f"series {ATM} hybrid mark: archived market (MARKET_DEEP_TIGHT, passes 2), recomputed model " \
           f"(MODEL_PENDING, passes 1; rule: passed the enter tests in fewer than enter_blocks" in c["detail"]
    assert ("series 1", "mark") in {(d.where, d.field) for d in r.differences}  # the mid is not what the rule gives
    # the re-derived document carries the model price (Black-76 at the archived vol and forward)
    t = (EXPIRY - doc["block"]["timestamp"]) / SECONDS_PER_YEAR
    want = vollib_black("p", int(doc["series"][j]["forward_wad"]) / WAD, 2000.0, t, 0.0, doc["vols"][j])
    assert r.document["marks"][j] == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("reason", ["MODEL_THIN_DEPTH", "MODEL_STALE", "MODEL_MID_OUTSIDE_MODEL_BAND"])
def test_a_changed_reason_alone_is_named(docs, reason):
    doc = copy.deepcopy(docs[4])  # on the model because the book is 30 % wide
    j = _row(doc)
    assert doc["series"][j]["hybrid"]["reason"] == "MODEL_WIDE_SPREAD"
    doc["series"][j]["hybrid"]["reason"] = reason
    r = rederive(doc)
    c = _rule(r, doc["underlyings"][0]["asset"])
    assert not c["ok"] and f"archived model ({reason}, passes 0), recomputed model (MODEL_WIDE_SPREAD" in c["detail"]
    assert "(ask - bid) / mid above the spread threshold" in c["detail"]
    assert [d.field for d in r.differences] == ["hybrid mark"]  # the mark itself is right


def test_a_market_series_signed_at_the_model_is_named(docs):
    """Block 3: the 7 % book stays on the market (leave band). Keepers sign the model price instead."""
    doc = copy.deepcopy(docs[3])
    j = _row(doc)
    assert doc["series"][j]["hybrid"]["branch"] == "market"
    t = (EXPIRY - doc["block"]["timestamp"]) / SECONDS_PER_YEAR
    doc["marks"][j] = vollib_black("p", int(doc["series"][j]["forward_wad"]) / WAD, 2000.0, t, 0.0, doc["vols"][j])
    doc["series"][j]["hybrid"].update(branch="model", reason="MODEL_WIDE_SPREAD", passes=0)
    r = rederive(doc)
    c = _rule(r, doc["underlyings"][0]["asset"])
    assert not c["ok"] and "recomputed market (MARKET_DEEP_TIGHT, passes 2; rule: every test passed" in c["detail"]
    assert "from the recorded previous state {'branch': 'market', 'passes': 2}" in c["detail"]
    mark = next(d for d in r.differences if d.where == f"series {ATM}" and d.field == "mark")
    assert mark.recomputed == docs[3]["marks"][j]  # the mid the keepers should have signed


def test_a_forged_previous_state_is_found_against_the_previous_document(docs):
    """Block 1 signed as if block 0 had already passed once: consistent in itself (the re-derivation agrees), so
    only the previous document shows the lie."""
    doc = copy.deepcopy(docs[1])
    j = _row(doc)
    q = doc["underlyings"][0]["quotes"]
    k = next(i for i in range(len(q["strike"])) if q["strike"][i] == 2000.0 and q["expiry_ts"][i] == EXPIRY
             and not q["is_call"][i])
    doc["series"][j]["hybrid"] = {"branch": "market", "reason": "MARKET_DEEP_TIGHT", "passes": 2,
                                  "prev": {"branch": "model", "passes": 1}}
    doc["marks"][j] = 0.5 * (q["bid"][k] + q["ask"][k])
    r = rederive(doc)
    assert all(c["ok"] for c in r.checks)  # the quotes and the recorded state give this choice
    found = hybrid_findings(doc, docs[0], "0xprev")
    assert [c["ok"] for c in found] == [False]
    assert found[0]["check"] == f"hybrid state ({doc['underlyings'][0]['asset']})"
    assert f"series {ATM}: recorded {{'branch': 'model', 'passes': 1}}, previous document " \
           f"{{'branch': 'model', 'passes': 0}}" in found[0]["detail"]
    # continuing from another document than the previous root's is a broken rule too; a declared cold start is
    # allowed (the stricter side) and said
    assert not hybrid_findings(docs[2], docs[0], "0xprev")[0]["ok"]
    cold = copy.deepcopy(docs[2])
    cold["underlyings"][0]["hybrid"]["previous_block"] = None
    assert not hybrid_findings(cold, docs[1], "0xprev")[0]["ok"]  # ... but then no previous states may be recorded
    for s in cold["series"]:
        s["hybrid"]["prev"] = None
    got = hybrid_findings(cold, docs[1], "0xprev")[0]
    assert got["ok"] and "cold start" in got["detail"]
    assert not all(c["ok"] for c in rederive(cold).checks)  # and from a cold start the quotes give the model


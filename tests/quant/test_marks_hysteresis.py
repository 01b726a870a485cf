"""The hybrid mark's state machine across attested documents (issue 15 item 5), pure: enter after ``enter_blocks``
passing documents, a dip inside the leave band stays on the market, a real failure goes to the model, and the
vectorised rule equals a plain per-series reference written here from docs/surface.md (a second computation, on
random walks of books). Also the matching rule (:func:`keeper.quant.marks.match_quotes`) and the drawing sources'
quotes of the listed series."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from keeper.data.feed import BlockRef
from keeper.data.sources import LISTED_EXPIRY_WINDOW_S, chain_grid, draw_chain, listed_contracts
from keeper.quant.marks import MarkConfig, MarkReason, hybrid_marks, match_quotes, state_from_document
from keeper.units import SECONDS_PER_YEAR, WAD

CFG = MarkConfig(enter_blocks=2)
MODEL = 100.0


def step(spread, depth, prev_market, prev_passes, config=CFG, model=MODEL, mid=None):
    """One series, one document: the book ``mid`` (default the model) +- half the relative spread."""
    mid = model if mid is None else mid
    r = hybrid_marks(np.array([mid * (1 - spread / 2)]), np.array([mid * (1 + spread / 2)]), np.array([depth]),
                     np.array([depth]), np.array([model]), np.array([prev_market]), config=config,
                     prev_passes=np.array([prev_passes]))
    return bool(r.market[0]), int(r.passes[0]), MarkReason(int(r.reason[0])), float(r.mark[0])


def walk(books, config=CFG):
    market, passes, out = False, 0, []
    for spread, depth in books:
        market, passes, reason, mark = step(spread, depth, market, passes, config)
        out.append((market, passes, reason))
    return out


def test_a_passing_book_switches_to_market_only_after_enter_blocks_documents():
    got = walk([(0.20, 50.0), (0.02, 50.0), (0.02, 50.0), (0.02, 50.0)])
    assert got == [(False, 0, MarkReason.MODEL_WIDE_SPREAD), (False, 1, MarkReason.MODEL_PENDING),
                   (True, 2, MarkReason.MARKET_DEEP_TIGHT), (True, 2, MarkReason.MARKET_DEEP_TIGHT)]
    # a pass interrupted by a failure starts again
    got = walk([(0.02, 50.0), (0.20, 50.0), (0.02, 50.0), (0.02, 50.0)])
    assert [m for m, _, _ in got] == [False, False, False, True]
    # with enter_blocks = 1 the first passing document is on the market (the previous, stateless behaviour)
    assert walk([(0.02, 50.0)], MarkConfig(enter_blocks=1)) == [(True, 1, MarkReason.MARKET_DEEP_TIGHT)]


def test_a_one_block_dip_inside_the_leave_band_stays_on_market():
    on = walk([(0.02, 50.0)] * 2)[-1]
    assert on[0]
    # 7 % spread (enter 5 %, leave 10 %) and depth 3 (enter 5, leave 2): worse than entering allows, still market
    for dip in [(0.07, 50.0), (0.02, 3.0), (0.07, 3.0)]:
        market, passes, reason, mark = step(*dip, True, on[1])
        assert (market, reason) == (True, MarkReason.MARKET_DEEP_TIGHT) and mark == pytest.approx(MODEL)
        # the same book from the model does not enter
        assert step(*dip, False, 1)[:3] == (False, 0, MarkReason.MODEL_WIDE_SPREAD if dip[1] == 50.0
                                            else MarkReason.MODEL_THIN_DEPTH)
    # the mid 7 % off the model: inside the leave band (10 %), outside the enter band (5 %)
    assert step(0.02, 50.0, True, 2, mid=107.0)[:3] == (True, 2, MarkReason.MARKET_DEEP_TIGHT)
    assert step(0.02, 50.0, False, 1, mid=107.0)[2] == MarkReason.MODEL_MID_OUTSIDE_MODEL_BAND


def test_a_real_failure_goes_to_the_model_at_once():
    for bad, why in [((0.15, 50.0), MarkReason.MODEL_WIDE_SPREAD), ((0.02, 1.0), MarkReason.MODEL_THIN_DEPTH)]:
        market, passes, reason, mark = step(*bad, True, 2)
        assert (market, passes, reason, mark) == (False, 0, why, MODEL)
    market, passes, reason, mark = step(0.02, 50.0, True, 2, mid=115.0)
    assert (market, reason, mark) == (False, MarkReason.MODEL_MID_OUTSIDE_MODEL_BAND, MODEL)
    # no quote of the contract at all
    r = hybrid_marks([99.0], [101.0], [50.0], [50.0], [MODEL], [True], prev_passes=[2], config=CFG, matched=[False])
    assert (bool(r.market[0]), MarkReason(int(r.reason[0])), float(r.mark[0])) == (
        False, MarkReason.MODEL_UNMATCHED, MODEL)


def reference(spread, depth, mid, model, prev_market, prev_passes, c: MarkConfig):
    """The rule as docs/surface.md states it, one series at a time (no numpy)."""
    if prev_market:
        max_s, min_d, rel, ok_state = c.leave_max_rel_spread, c.leave_min_depth, c.leave_band_rel, True
    else:
        max_s, min_d, rel, ok_state = c.enter_max_rel_spread, c.enter_min_depth, c.enter_band_rel, False
    bid, ask = mid * (1 - spread / 2), mid * (1 + spread / 2)
    if not min(depth, depth) >= min_d:
        return False, 0, MarkReason.MODEL_THIN_DEPTH
    if not (ask - bid) / ((ask + bid) / 2) <= max_s:
        return False, 0, MarkReason.MODEL_WIDE_SPREAD
    if not abs((ask + bid) / 2 - model) <= max(rel * model, c.band_abs):
        return False, 0, MarkReason.MODEL_MID_OUTSIDE_MODEL_BAND
    if ok_state:
        return True, c.enter_blocks, MarkReason.MARKET_DEEP_TIGHT
    n = min(prev_passes + 1, c.enter_blocks)
    return (n >= c.enter_blocks), n, (MarkReason.MARKET_DEEP_TIGHT if n >= c.enter_blocks else
                                      MarkReason.MODEL_PENDING)


@pytest.mark.parametrize("enter_blocks", [1, 2, 3])
def test_the_vectorised_rule_equals_a_per_series_reference_on_random_walks(enter_blocks):
    cfg = MarkConfig(enter_blocks=enter_blocks)
    rng = np.random.default_rng(enter_blocks)
    n, steps = 64, 60
    market, passes = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    ref = [(False, 0)] * n
    entered = left = 0
    for _ in range(steps):
        spread = rng.choice([0.02, 0.045, 0.07, 0.12], n)
        depth = rng.choice([1.0, 3.0, 6.0, 50.0], n)
        mid = MODEL * rng.choice([1.0, 1.03, 1.07, 1.2], n)
        r = hybrid_marks(mid * (1 - spread / 2), mid * (1 + spread / 2), depth, depth, np.full(n, MODEL), market,
                         prev_passes=passes, config=cfg)
        want = [reference(spread[i], depth[i], mid[i], MODEL, *ref[i], cfg) for i in range(n)]
        assert [(bool(m), int(p), MarkReason(int(x))) for m, p, x in zip(r.market, r.passes, r.reason)] == want
        np.testing.assert_array_equal(r.mark, np.where(r.market, mid, MODEL))
        entered += int(np.sum(r.market & ~market))
        left += int(np.sum(~r.market & market))
        market, passes = r.market, r.passes
        ref = [(m, p) for m, p, _ in want]
    assert entered >= 5 and left >= 5  # the walks switch both ways: the comparison is not all on one branch


def test_the_state_read_back_from_a_document_decides_the_same():
    """A fresh process has only the previous document: the state it reads from it gives the same decisions as
    the state carried in memory."""
    rng = np.random.default_rng(5)
    n = 40
    books = [(rng.choice([0.02, 0.07, 0.12], n), rng.choice([1.0, 3.0, 50.0], n)) for _ in range(8)]
    ids = list(range(1, n + 1))
    mem_m, mem_p, doc = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64), None
    for spread, depth in books:
        was_m, was_p, prev = state_from_document(doc, ids)
        args = (MODEL * (1 - spread / 2), MODEL * (1 + spread / 2), depth, depth, np.full(n, MODEL))
        from_mem = hybrid_marks(*args, mem_m, prev_passes=mem_p, config=CFG)
        from_doc = hybrid_marks(*args, was_m, prev_passes=was_p, config=CFG)
        for f in ("market", "passes", "reason", "mark"):
            np.testing.assert_array_equal(getattr(from_mem, f), getattr(from_doc, f))
        mem_m, mem_p = from_mem.market, from_mem.passes
        doc = {"series": [{"id": i, "hybrid": {"branch": "market" if m else "model", "reason": "x", "passes": int(p)}}
                          for i, m, p in zip(ids, from_doc.market, from_doc.passes)]}
    # a series the previous document does not have starts on the model; no document: every series does
    m, p, prev = state_from_document(doc, [1, 999])
    assert prev[1] is None and not m[1] and p[1] == 0
    m, p, prev = state_from_document(None, ids)
    assert not m.any() and not p.any() and prev == [None] * n


# ---------------------------------------------------------------------------------------------------- matching
NOW = 1_800_000_000
SIM = SimpleNamespace(seed=3, expiries_days=[7, 30, 90], spread_pct=0.04, depth_mean=10.0,
                      strikes_pct=[0.8, 0.9, 1.0, 1.1, 1.2])


def smile(k, t):
    return np.maximum(0.6 - 0.15 * k + 0.4 * k * k, 0.05)


def test_matching_is_by_exact_contract():
    L = [(2000.0, NOW + 30 * 86400 + 77, False), (1800.0, NOW + 30 * 86400 + 77, False),
         (2150.5, NOW + 45 * 86400, True)]
    chain = draw_chain(SIM, BlockRef(9, "0x" + "11" * 32, NOW), 2013.37, smile, listed=L)
    rows = match_quotes(chain, [k for k, _, _ in L], [e for _, e, _ in L], [c for _, _, c in L])
    assert (rows >= 0).all()
    for (k, e, c), j in zip(L, rows):
        assert (chain.strike[j], chain.expiry_ts[j], bool(chain.is_call[j])) == (k, e, c)
    # one second or one cent off: no match; the other kind is another contract (the call, also quoted)
    for k, e, c in [(2000.0, L[0][1] + 1, False), (2000.01, L[0][1], False), (1999.99, L[0][1], False)]:
        assert match_quotes(chain, [k], [e], [c])[0] == -1
    call = match_quotes(chain, [2000.0], [L[0][1]], [True])[0]
    assert call not in (-1, rows[0]) and chain.is_call[call] and chain.strike[call] == 2000.0
    # within the rounding of 1e-6 quote units: a match; a contract quoted twice: its first row
    assert match_quotes(chain, [2000.0 + 1e-9], [L[0][1]], [False])[0] == rows[0]
    order = np.r_[np.arange(len(chain)), rows[0]]  # the contract again at the end
    twice = dataclasses.replace(chain, **{f.name: getattr(chain, f.name)[order] for f in dataclasses.fields(chain)
                                          if isinstance(getattr(chain, f.name), np.ndarray)})
    assert len(twice) == len(chain) + 1
    assert match_quotes(twice, [2000.0], [L[0][1]], [False])[0] == rows[0]
    assert (match_quotes(None, [2000.0], [L[0][1]], [False]) == -1).all()


def test_the_drawing_source_quotes_the_listed_series_and_keeps_its_grid_without_them():
    spot = 2013.37
    years, expiry, strike, is_call = chain_grid(SIM, float(NOW), spot)
    assert sorted(set(expiry)) == [NOW + d / 365.0 * SECONDS_PER_YEAR for d in SIM.expiries_days]
    assert sorted(set(strike)) == pytest.approx(sorted(p * spot for p in SIM.strikes_pct), rel=1e-15)
    Series = SimpleNamespace
    eth = "0x" + "e" * 40
    series = [Series(underlying=eth, strike=2000 * WAD, expiry=NOW + 30 * 86400 + 77, is_call=False),
              Series(underlying=eth, strike=2000 * WAD, expiry=NOW - 1, is_call=False),  # expired: not quoted
              Series(underlying="0x" + "b" * 40, strike=40000 * WAD, expiry=NOW + 86400, is_call=True)]
    listed = listed_contracts(series, eth.upper().replace("0X", "0x"), NOW)
    assert listed == ((2000.0, NOW + 30 * 86400 + 77, False),)
    years, expiry, strike, is_call = chain_grid(SIM, float(NOW), spot, listed)
    exps = sorted(set(expiry))
    # the 30-day grid expiry lies within the window of the listed one and is replaced by it
    assert exps == [NOW + 7 / 365.0 * SECONDS_PER_YEAR, NOW + 30 * 86400 + 77, NOW + 90 / 365.0 * SECONDS_PER_YEAR]
    assert abs(NOW + 30 / 365.0 * SECONDS_PER_YEAR - (NOW + 30 * 86400 + 77)) < LISTED_EXPIRY_WINDOW_S
    at = expiry == NOW + 30 * 86400 + 77
    assert sorted(set(strike[at])) == sorted({2000.0} | {p * spot for p in SIM.strikes_pct})
    assert is_call[at].sum() == (~is_call[at]).sum()  # both kinds at every strike (the fit's OTM side)
    chain = draw_chain(SIM, BlockRef(9, "0x" + "11" * 32, NOW), spot, smile, listed=listed, spread_pct=0.01,
                       depth=70.0)
    j = match_quotes(chain, [2000.0], [NOW + 30 * 86400 + 77], [False])[0]
    assert j >= 0 and chain.bid_size[j] == chain.ask_size[j] == 70.0
    assert (chain.ask[j] - chain.bid[j]) / chain.mark[j] == pytest.approx(0.01, rel=1e-12)

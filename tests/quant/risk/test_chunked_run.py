"""The risk run split into blocks of accounts (keeper.quant.risk.engine.AccountMap, issue 16 Speed) and the fast
integer conversion of the leaves: second computations are a dense numpy product with a full sort per account
(tail statistics, grid charge, shortfall), ``keeper.units.to_base_units`` value by value (Fraction arithmetic) and
the serial run bit for bit."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import scipy.sparse as sp

from keeper.quant.risk.engine import (
    account_blocks,
    shortfall_by_scenario,
    tail_stats,
    to_quote_units,
    weighted_worst_loss,
)
from keeper.units import to_base_units


class SerialBlocks:
    """An AccountMap that runs its blocks here, in reverse order, and puts them back in order (so a pass that
    depended on block order, or a block's result landing in the wrong rows, would show)."""

    def __init__(self, workers):
        self.workers = workers
        self.calls = []

    def map(self, fn, items):
        self.calls.append(list(items))
        return [fn(x) for x in items[::-1]][::-1]


def _book(n_acc=777, n_cols=30, n_scen=400, seed=5):
    rng = np.random.default_rng(seed)
    exposure = sp.random(n_acc, n_cols, density=0.15, random_state=seed, format="csr",
                         data_rvs=lambda k: rng.integers(-10, 11, k).astype(float))
    exposure.sort_indices()
    dv = rng.normal(0.0, 50.0, (n_cols, n_scen))
    return exposure, dv


@pytest.mark.parametrize("n, parts, chunk", [(0, 2, 256), (1, 2, 256), (255, 2, 256), (257, 2, 256),
                                             (777, 3, 256), (777, 2, 1), (10_000, 2, 256), (5, 9, 2)])
def test_blocks_are_contiguous_whole_chunks_covering_every_account(n, parts, chunk):
    blocks = account_blocks(n, parts, chunk)
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a == b0 for (_, a), (b0, _) in zip(blocks, blocks[1:]))  # contiguous, in order
    assert all(a % chunk == 0 for a, _ in blocks)                       # every cut on a chunk boundary
    assert len(blocks) == max(1, min(parts, math.ceil(n / chunk)))
    sizes = [math.ceil((b - a) / chunk) for a, b in blocks if b > a]
    assert not sizes or max(sizes) - min(sizes) <= 1                    # balanced in chunks


@pytest.mark.parametrize("workers, chunk", [(2, 256), (3, 64), (4, 1)])
def test_block_split_passes_equal_the_serial_bits_and_a_dense_computation(workers, chunk):
    exposure, dv = _book()
    m = SerialBlocks(workers)
    one = tail_stats(exposure, dv, 0.99, 0.975, chunk)
    split = tail_stats(exposure, dv, 0.99, 0.975, chunk, m)
    for k in ("var", "var_at_es_level", "es", "worst_loss"):
        assert getattr(split, k).tobytes() == getattr(one, k).tobytes()
    weight = np.linspace(0.3, 1.0, dv.shape[1])
    assert (weighted_worst_loss(exposure, dv, weight, chunk, m).tobytes()
            == weighted_worst_loss(exposure, dv, weight, chunk).tobytes())
    equity = np.random.default_rng(2).normal(500.0, 400.0, exposure.shape[0])
    shortfall = shortfall_by_scenario(exposure, dv, equity, chunk)
    assert shortfall_by_scenario(exposure, dv, equity, chunk, m).tobytes() == shortfall.tobytes()
    assert len(m.calls) == 3
    for mapper in (None, m):  # the same sum riding on the tail pass
        fused = tail_stats(exposure, dv, 0.99, 0.975, chunk, mapper, shortfall_equity=equity)
        assert fused.shortfall.tobytes() == shortfall.tobytes() and fused.es.tobytes() == one.es.tobytes()
    m.calls = m.calls[:3] and all(len(c) == min(workers, math.ceil(777 / chunk)) for c in m.calls)
    # a second computation: the dense P&L, fully sorted per account
    pnl = exposure.toarray() @ dv
    losses = np.sort(-pnl, axis=1)[:, ::-1]                 # largest loss first
    n = dv.shape[1]
    np.testing.assert_allclose(one.var, losses[:, n - math.ceil(0.99 * n)], rtol=1e-12, atol=1e-9)
    m_es = n - math.floor(0.975 * n)
    np.testing.assert_allclose(one.es, losses[:, :m_es].mean(axis=1), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(one.worst_loss, losses[:, 0], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(weighted_worst_loss(exposure, dv, weight, chunk), np.max(-pnl * weight, axis=1),
                               rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(shortfall_by_scenario(exposure, dv, equity, chunk),
                               np.maximum(-(pnl + equity[:, None]), 0.0).sum(axis=0), rtol=1e-12, atol=1e-6)


def _floats(rng, n):
    """Finite floats of every kind: wide magnitudes, exact decimals, ties near a base unit, signed zeros,
    subnormals, and random bit patterns."""
    base = [0.0, -0.0, 0.1, -0.1, 0.5e-6, 1.5e-6, -2.5e-6, 1e-300, 5e-324, -5e-324, 1e15 + 0.3, 2.0**60, -2.0**70,
            123456.789012, 0.000001, 0.0000015, 1.7976931348623157e308 / 1e290]
    wide = (rng.normal(0, 1, n) * 10.0 ** rng.integers(-12, 16, n)).tolist()
    near = (np.round(rng.normal(0, 1e5, n), 6) + rng.integers(-3, 4, n) * 1e-12).tolist()
    bits = []
    while len(bits) < n:
        x = struct.unpack("<d", rng.bytes(8))[0]
        if math.isfinite(x) and abs(x) < 1e200:
            bits.append(x)
    return base + wide + near + bits


@pytest.mark.parametrize("decimals", [0, 2, 6, 8, 18])
@pytest.mark.parametrize("rounding", ["floor", "ceil"])
def test_quote_units_equal_the_fraction_rounding_value_by_value(decimals, rounding):
    xs = _floats(np.random.default_rng(decimals + (rounding == "ceil")), 3000)
    assert to_quote_units(np.array(xs), decimals, rounding) == [to_base_units(x, decimals, rounding) for x in xs]


def test_quote_units_still_refuse_what_to_base_units_refuses():
    with pytest.raises(ValueError, match="non-finite"):
        to_quote_units(np.array([1.0, np.nan]), 6, "floor")
    with pytest.raises(ValueError, match="rounding"):
        to_quote_units(np.array([1.0]), 6, "nearest")
    assert to_quote_units(np.array([0.1]), 6, "floor") == [100000]
    assert to_quote_units(np.array([0.1]), 6, "ceil") == [100001]  # the float 0.1 is above 0.1

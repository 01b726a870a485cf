"""The backtest market on the real crash paths: credible vol levels with an inverted term structure in the crash,
quotes around fair value, and exactly one manipulated print (outside the book) per path."""
from __future__ import annotations

import numpy as np
import pytest

from keeper.errors import BadInput
from keeper.backtest.io import crash_path_names, load_path
from keeper.backtest.market import build_market, list_series


def test_every_crash_path_gives_a_credible_market(shared_data):
    names = crash_path_names(shared_data)
    assert len(names) == 10
    for name in names:
        p = load_path(name, shared_data)
        m = build_market(p, list_series(p.close[0], p.times[0]))
        assert 0.3 < m.fair_vol.min() and m.fair_vol.max() < 2.0, name  # issue 14: the replay's 560 % is not credible
        i = p.crash_index
        assert m.ref.short[i] > m.ref.long[i] >= 0.75 * m.ref.base, name  # inverted term structure at the low
        assert m.ref.short[i] > 1.2 * m.ref.short[0], name  # the crash lifts vol
        quoted = np.isfinite(m.bid) & np.isfinite(m.ask)
        # standing books lag spot between requotes: most, not all, quotes bracket the fair value of the bar
        inside = (m.bid <= m.fair) & (m.fair <= m.ask)
        assert inside[quoted].mean() > 0.6, name
        px = np.where(m.traded, m.last_trade, np.nan)
        outside = (px > m.ask + 0.01 * p.close[:, None]) | (px < np.nan_to_num(m.bid) - 0.01 * p.close[:, None])
        outside[0] = False  # opening marks
        hits = np.argwhere(outside)
        assert hits.tolist() == [[m.fat_finger["bar"], m.fat_finger["series"]]], name


def test_unknown_and_daily_names(shared_data):
    with pytest.raises(BadInput, match="unknown price path"):
        load_path("XRPUSD_2020", shared_data)
    assert load_path("ETHUSD_2022-06-13", shared_data).bar_seconds == 900.0

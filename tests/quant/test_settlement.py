"""Settlement price as a time-weighted average of attested prices (keeper.quant.settlement), against the average
written out by hand, and the attack it exists for: one manipulated print just before expiry."""
from __future__ import annotations

import pytest

from keeper.errors import SettlementUnavailable
from keeper.quant.settlement import settlement_price

WAD = 10**18
EXP = 1_800_000_000


def test_twap_of_a_step_function_matches_the_hand_average():
    pts = [(EXP - 3600, 2000 * WAD), (EXP - 1200, 2100 * WAD), (EXP - 300, 1900 * WAD)]
    # window [EXP-1800, EXP]: 2000 for 600 s, 2100 for 900 s, 1900 for 300 s
    want = (2000 * 600 + 2100 * 900 + 1900 * 300) * WAD // 1800
    assert settlement_price(pts, EXP) == want
    # a later attestation after expiry does not count
    assert settlement_price(pts + [(EXP + 60, 10 * WAD)], EXP) == want


def test_one_manipulated_print_before_expiry_moves_the_settlement_by_its_time_share_only():
    fair = [(EXP - 1800 + 12 * i, 2000 * WAD) for i in range(150)]
    spiked = fair + [(EXP - 12, 4000 * WAD)]  # a doubled print for the last 12 s (one block)
    assert settlement_price(fair, EXP) == 2000 * WAD
    moved = settlement_price(spiked, EXP) / WAD - 2000
    assert moved == pytest.approx(2000 * 12 / 1800)  # 13.3: the spot-at-expiry rule would have moved 2,000


def test_too_few_prices_in_the_window_give_no_settlement():
    with pytest.raises(SettlementUnavailable, match="cover 600 s"):
        settlement_price([(EXP - 600, 2000 * WAD)], EXP)
    with pytest.raises(SettlementUnavailable, match="no attested price"):
        settlement_price([], EXP)
    with pytest.raises(SettlementUnavailable, match="positive"):
        settlement_price([(EXP - 1800, 0)], EXP)

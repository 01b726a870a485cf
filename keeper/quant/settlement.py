"""The settlement price of an expiry (issue 16, item 3): a time-weighted average of the keeper-attested prices
over a window ending at expiry, so that no single print at expiry (a manipulated last trade, one stale source)
decides every option's payoff.

Attested prices form a step function: each attestation's price holds from its timestamp until the next one. The
settlement price is that function's average over ``[expiry - window, expiry]``; the price in force at the window's
start is the last attestation at or before it. Deribit settles on a 30-minute average of its index in the same way.
Integers in, integer out (WAD), rounded half down; pure.
"""
from __future__ import annotations

from typing import Sequence

from keeper.errors import SettlementUnavailable

#: default averaging window (Deribit: the last 30 minutes before expiry)
SETTLEMENT_WINDOW = 30 * 60
#: the least share of the window the attestations must cover (else no settlement price yet)
MIN_COVERAGE = 0.5


def settlement_price(attested: Sequence[tuple[int, int]], expiry: int, window: int = SETTLEMENT_WINDOW,
                     min_coverage: float = MIN_COVERAGE) -> int:
    """Time-weighted average (WAD) of ``attested`` ``(timestamp, price_wad)`` pairs over ``[expiry - window,
    expiry]``. Raises :class:`SettlementUnavailable` when the attestations cover less than ``min_coverage`` of the
    window (e.g. the keepers were down), when a price is not positive, or when the window is empty."""
    if window <= 0:
        raise SettlementUnavailable("settlement window must be positive")
    start = expiry - window
    points = sorted((int(t), int(p)) for t, p in attested if int(t) <= expiry)
    if any(p <= 0 for _, p in points):
        raise SettlementUnavailable("attested prices must be positive")
    before = [pt for pt in points if pt[0] <= start]
    inside = [pt for pt in points if pt[0] > start]
    steps = ([(start, before[-1][1])] if before else []) + inside
    if not steps:
        raise SettlementUnavailable(f"no attested price in the {window} s before expiry {expiry}")
    covered = expiry - steps[0][0]
    if covered < min_coverage * window:
        raise SettlementUnavailable(f"attested prices cover {covered} s of the {window} s window")
    total = 0
    for (t0, p), (t1, _) in zip(steps, steps[1:] + [(expiry, 0)]):
        total += p * (t1 - t0)
    return total // covered if total % covered * 2 <= covered else total // covered + 1

"""Units and bounds shared by every room: fixed-point scales, the year, the ABI bounds of what the contracts store,
and the exact float <-> WAD conversions (docs/ARCHITECTURE.md, "Units").

Values in the quote asset are integers in its base units; prices, strikes and sizes are WAD (1e18) integers on
chain; the quant rooms work in floats (whole units) and round once at the edge.
"""
from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

#: 1e18 fixed point (prices, strikes, sizes, haircuts on chain)
WAD = 10**18
#: 1e27 fixed point (auction curve ratios, as MakerDAO's abaci)
RAY = 10**27
#: seconds in the year used for every time to expiry (ACT/365)
SECONDS_PER_YEAR = 365.0 * 24 * 3600

#: ABI bounds of the stored margin record (AccountState / BreachRecord) and the attested messages
INT96_MIN, INT96_MAX = -(2**95), 2**95 - 1
UINT96_MAX = 2**96 - 1
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
UINT40_MAX = 2**40 - 1


def to_wad(x: float) -> int:
    """Float to WAD, rounded to the nearest unit (float inputs carry ~16 significant digits)."""
    return int((Decimal(repr(float(x))) * WAD).to_integral_value())


def to_base_units(value: float, decimals: int, rounding: str, *, snap_ulps: int = 0) -> int:
    """A float amount of whole units (e.g. of the quote asset) in integer base units (``10**decimals`` per unit),
    rounded once and exactly through the float's exact rational value: ``"floor"`` (equity, collateral value: never
    in the account's favour) or ``"ceil"`` (margins, debts). So 0.1 with 6 decimals gives 100000 (floor) and 100001
    (ceil): the float 0.1 is above 0.1. ``snap_ulps`` > 0: a value within that many float ulps (2^-52 relative each)
    of a base unit is that unit (an amount that came from whole base units, e.g. read from chain and divided for a
    float engine, signed exactly). Raises ValueError on a non-finite value or another rounding."""
    if rounding not in ("floor", "ceil"):
        raise ValueError(f"rounding must be 'floor' or 'ceil', got {rounding!r}")
    if not math.isfinite(value):
        raise ValueError(f"cannot convert non-finite value {value!r} to base units")
    q = Fraction(value) * 10 ** int(decimals)
    if snap_ulps:
        nearest = round(q)
        if abs(q - nearest) <= abs(q) * Fraction(int(snap_ulps), 2**52):
            return int(nearest)
    return math.floor(q) if rounding == "floor" else math.ceil(q)


def quantize_price(price: float, decimals: int) -> float:
    """Round ``price`` half-to-even to ``decimals`` decimal places (decimal arithmetic on the float's repr)."""
    if not math.isfinite(price):
        raise ValueError(f"cannot quantize non-finite price {price!r}")
    q = Decimal(repr(price)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)
    return float(q)


def price_to_wad(price: float, decimals: int) -> int:
    """The quantized price as a WAD integer, exact: ``round(price, decimals) * 1e18``."""
    q = Decimal(repr(price)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)
    return int(q.scaleb(18))

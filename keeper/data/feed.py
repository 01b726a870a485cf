"""The values every market-data source exchanges with the cycle: the block asked about, a spot quote, a skip."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockRef:
    """The block a cycle works on: number, hash (0x hex) and timestamp (unix seconds)."""

    number: int
    hash: str
    timestamp: int


@dataclass(frozen=True)
class SpotQuote:
    """One source's spot price (quote asset per unit of underlying) with its traded volume and time."""

    source: str
    price: float
    volume: float
    timestamp: float


@dataclass(frozen=True)
class Skip:
    """Why an input was not used: ``reason`` is a short metric label, ``detail`` a human line."""

    source: str
    reason: str
    detail: str

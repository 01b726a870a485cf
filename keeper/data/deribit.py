"""Loading a Deribit-format option-chain CSV (the format of ``shared/data/option_chains``)."""
from __future__ import annotations

import csv
from pathlib import Path

from keeper.quant.chains import LoadedChain, chain_from_rows


def load_deribit_csv(path: str | Path, *, asof: float | None = None) -> LoadedChain:
    """Load a Deribit-like option-chain CSV (the format of ``shared/data/option_chains``).

    See :func:`chain_from_rows` for what is kept, what becomes NaN and what is counted as rejected."""
    with open(path, newline="") as fh:
        return chain_from_rows(csv.DictReader(fh), asof=asof)

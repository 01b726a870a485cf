"""File input of the backtest (the I/O layer): price paths by name or CSV, strictly validated.

Bad input raises :class:`BadInput` with one readable line; the CLI turns it into exit status 2 before anything is
written."""
from __future__ import annotations

import csv
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from keeper.backtest.market import PricePath, validate_bars
from keeper.data.paths import CrashConfig, crash_path, crash_path_names, shared_dir_default  # noqa: F401 (re-exported)
from keeper.errors import BadInput

SYNTHETIC = "synthetic"


def resolve(name: str, shared: Path) -> Path:
    p = Path(name)
    if p.suffix.lower() == ".csv" or "/" in name:
        if not p.is_file():
            raise BadInput(f"price path file not found: {name}")
        return p
    folder = Path(shared) / "price_paths"
    exact = folder / f"{name}.csv"
    if exact.is_file():
        return exact
    matches = sorted(folder.glob(f"{name}*.csv")) if folder.is_dir() else []
    matches = [m for m in matches if not m.stem.endswith("_daily")] or matches
    if len(matches) == 1:
        return matches[0]
    raise BadInput(f"unknown price path {name!r} (give a CSV file or one of: "
                   f"{', '.join(crash_path_names(shared)) or 'none found in ' + str(folder)})")


def read_csv_strict(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(unix times, closes) of a ``timestamp_utc,...,close`` CSV; every row must parse."""
    try:
        with Path(path).open(newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "timestamp_utc" not in reader.fieldnames or "close" not in reader.fieldnames:
                raise BadInput(f"{Path(path).name}: not a price path CSV (needs columns timestamp_utc and close)")
            t, c = [], []
            for n, row in enumerate(reader, start=2):
                try:
                    ts = datetime.strptime(row["timestamp_utc"] or "", "%Y-%m-%dT%H:%M:%SZ")
                    v = float(row["close"])
                except (TypeError, ValueError):
                    raise BadInput(f"{Path(path).name}: malformed row {n}: {dict(row)!r}"[:200]) from None
                if not math.isfinite(v) or v <= 0:
                    raise BadInput(f"{Path(path).name}: non-positive or non-finite close {row['close']!r} at row {n}")
                t.append(ts.replace(tzinfo=timezone.utc).timestamp())
                c.append(v)
    except UnicodeDecodeError:
        raise BadInput(f"{Path(path).name}: not a text CSV") from None
    if not c:
        raise BadInput(f"{Path(path).name}: empty (no data rows)")
    return np.array(t), np.array(c)


def load_path(name: str, shared: Path) -> PricePath:
    """A crash path by name (or ``synthetic``: the scenario's default crash) or CSV file, validated."""
    if name == SYNTHETIC:
        return synthetic_path()
    p = resolve(name, shared)
    t, c = read_csv_strict(p)
    try:
        return validate_bars(p.stem, t, c)
    except ValueError as e:
        raise BadInput(str(e)) from None


def synthetic_path() -> PricePath:
    """The default synthetic crash of ``backstop scenario`` (keeper.data.paths.CrashConfig defaults of the
    scenario: 16 steps of 900 s, -30 % jump at step 5 ... here at 5-minute resolution over 48 hours: GBM at 60 %,
    one -30 % jump at hour 12)."""

    cfg = CrashConfig(spot0=2000.0, n_steps=576, step_seconds=300.0, base_vol=0.60, crash_step=144, jump=-0.30,
                      vol_spike=2.0, vol_half_life_steps=96, seed=7)
    mp = crash_path(cfg)
    return validate_bars("synthetic", 1.7e9 + mp.times, mp.spot, underlying="ETH")


def read_daily(path: Path) -> np.ndarray:
    _, c = read_csv_strict(path)
    return c

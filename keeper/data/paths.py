"""Market paths for the end-to-end scenario: a synthetic crash (jump plus vol spike) or a replayed real path.

Pure functions over numpy: no chain I/O, no module-level mutable state. A path is a sequence of steps, each with
a spot price and an ATM volatility level; the scenario turns each step into one market update (one block of
keeper work). Real paths are read in place from ``../shared/data/price_paths`` (never copied), resampled to the
requested number of steps and rescaled to the scenario's starting spot; their vol level is the EWMA realised vol
of the bar returns, floored at the base vol, so a real crash also shows a vol spike.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from keeper.quant.risk.scenarios import ewma_variance
from keeper.units import SECONDS_PER_YEAR


@dataclass(frozen=True)
class CrashConfig:
    """Synthetic crash path: GBM diffusion, one jump at ``crash_step``, vol spike decaying with a half-life."""

    spot0: float = 2000.0
    n_steps: int = 40
    step_seconds: float = 3600.0
    base_vol: float = 0.60
    drift: float = 0.0
    crash_step: int = 12
    jump: float = -0.30
    vol_spike: float = 2.0
    vol_half_life_steps: float = 8.0
    seed: int = 7

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if not (self.spot0 > 0 and math.isfinite(self.spot0)):
            raise ValueError(f"spot0 must be positive, got {self.spot0}")
        if self.n_steps < 2:
            raise ValueError(f"n_steps must be >= 2, got {self.n_steps}")
        if not 0 <= self.crash_step < self.n_steps:
            raise ValueError(f"crash_step must be in [0, {self.n_steps}), got {self.crash_step}")
        if not -1.0 < self.jump < 10.0:
            raise ValueError(f"jump must be in (-1, 10), got {self.jump}")
        if self.base_vol <= 0 or self.vol_spike < 1.0:
            raise ValueError(f"base_vol must be > 0 and vol_spike >= 1, got {self.base_vol}, {self.vol_spike}")
        if self.step_seconds <= 0 or self.vol_half_life_steps <= 0:
            raise ValueError("step_seconds and vol_half_life_steps must be > 0")


@dataclass(frozen=True)
class MarketPath:
    """Spot and ATM vol per step; ``source`` says where it came from (``synthetic`` or the replayed file)."""

    times: np.ndarray  # seconds since the path start
    spot: np.ndarray
    atm_vol: np.ndarray
    source: str = "synthetic"
    crash_step: int = -1
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.spot.shape[0])

    @property
    def worst_return(self) -> float:
        """Largest one-step fall (log return turned simple), e.g. -0.30 for the default synthetic jump."""
        r = np.diff(np.log(self.spot))
        return float(np.expm1(r.min())) if r.size else 0.0

    def to_json(self) -> dict:
        """JSON-ready dict (floats), the form the scenario archives and the keepers' market replay reads."""
        return {
            "source": self.source,
            "crash_step": self.crash_step,
            "times": [float(x) for x in self.times],
            "spot": [float(x) for x in self.spot],
            "atm_vol": [float(x) for x in self.atm_vol],
            "meta": dict(self.meta),
        }

    @staticmethod
    def from_json(d: dict) -> "MarketPath":
        """Inverse of :meth:`to_json`; raises ``ValueError`` on inconsistent lengths or non-positive values."""
        times = np.asarray(d["times"], float)
        spot = np.asarray(d["spot"], float)
        vol = np.asarray(d["atm_vol"], float)
        if not (times.shape == spot.shape == vol.shape) or spot.size < 2:
            raise ValueError("market path: times, spot and atm_vol must have the same length >= 2")
        if not (np.all(np.isfinite(spot)) and np.all(spot > 0) and np.all(vol > 0)):
            raise ValueError("market path: spot and atm_vol must be finite and positive")
        return MarketPath(times, spot, vol, d.get("source", "file"), int(d.get("crash_step", -1)), d.get("meta", {}))


def crash_path(cfg: CrashConfig) -> MarketPath:
    """Synthetic path: log-normal diffusion at the current vol, a jump of ``cfg.jump`` at ``cfg.crash_step``.

    The vol level is ``base_vol`` before the crash, ``base_vol * vol_spike`` at the crash step, decaying back
    towards ``base_vol`` with half-life ``vol_half_life_steps``. The jump is applied exactly (the step's
    diffusion is switched off) so that the crash step's return is ``cfg.jump`` to machine precision.
    """
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_steps
    k = np.arange(n)
    after = np.clip(k - cfg.crash_step, 0, None)
    decay = np.power(0.5, after / cfg.vol_half_life_steps)
    vol = np.where(k >= cfg.crash_step, cfg.base_vol * (1.0 + (cfg.vol_spike - 1.0) * decay), cfg.base_vol)
    dt = cfg.step_seconds / SECONDS_PER_YEAR
    z = rng.standard_normal(n)
    # step k moves spot from k-1 to k using the vol in force at k-1
    prev_vol = np.concatenate([[vol[0]], vol[:-1]])
    logret = (cfg.drift - 0.5 * prev_vol**2) * dt + prev_vol * math.sqrt(dt) * z
    logret[0] = 0.0
    if cfg.crash_step > 0:
        logret[cfg.crash_step] = math.log1p(cfg.jump)
    spot = cfg.spot0 * np.exp(np.cumsum(logret))
    times = k * cfg.step_seconds
    meta = {"jump": cfg.jump, "vol_spike": cfg.vol_spike, "base_vol": cfg.base_vol, "seed": cfg.seed}
    return MarketPath(times.astype(float), spot, vol, "synthetic", cfg.crash_step, meta)


@dataclass(frozen=True)
class Bars:
    """Close prices of a real bar file, with bar open times in unix seconds."""

    times: np.ndarray
    close: np.ndarray
    path: str


def read_price_bars(path: Path | str) -> Bars:
    """Read a ``timestamp_utc,...,close,...`` CSV (the shared price_paths format). Rows with a bad timestamp or a
    non-positive/non-finite close are skipped; raises ``ValueError`` if fewer than two good rows remain."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"price path file not found: {p}")
    times: list[float] = []
    close: list[float] = []
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "timestamp_utc" not in reader.fieldnames or "close" not in reader.fieldnames:
            raise ValueError(f"{p.name}: expected columns timestamp_utc and close")
        for row in reader:
            try:
                ts = datetime.strptime(row["timestamp_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
                c = float(row["close"])
            except (TypeError, ValueError):
                continue
            if not (math.isfinite(c) and c > 0):
                continue
            times.append(ts.timestamp())
            close.append(c)
    if len(close) < 2:
        raise ValueError(f"{p.name}: fewer than two usable rows")
    t = np.asarray(times)
    order = np.argsort(t, kind="stable")
    return Bars(t[order], np.asarray(close)[order], str(p))


def shared_dir_default() -> Path:
    """The shared market-data folder: ``$BACKSTOP_SHARED_DATA``, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("BACKSTOP_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def crash_path_names(shared: Path) -> list[str]:
    """The crash paths in ``shared/price_paths`` (every CSV but the daily closes), sorted; [] without the folder."""
    folder = Path(shared) / "price_paths"
    return sorted(p.stem for p in folder.glob("*.csv") if not p.stem.endswith("_daily")) if folder.is_dir() else []


def resolve_price_path(name: str, shared_dir: Path | None) -> Path:
    """A file path as given, or a name such as ``ETHUSD_2022-06-13`` looked up in ``shared_dir/price_paths``."""
    p = Path(name)
    if p.is_file():
        return p
    if shared_dir is not None:
        folder = Path(shared_dir) / "price_paths"
        matches = sorted(folder.glob(f"{name}*.csv")) if folder.is_dir() else []
        if matches:
            return matches[0]
    raise ValueError(f"price path {name!r} not found (give a CSV file or a name in <shared>/price_paths)")


def ewma_vol(close: np.ndarray, bar_seconds: float, lam: float = 0.94) -> np.ndarray:
    """Annualised EWMA (RiskMetrics) volatility of log returns, one value per bar: the risk engine's
    :func:`~keeper.quant.risk.scenarios.ewma_variance` seeded with the sample variance of the whole series."""
    r = np.diff(np.log(close))
    if r.size < 1:
        return np.zeros(close.shape[0])
    seed = float(np.var(r)) if r.size > 1 else 0.0
    return np.sqrt(ewma_variance(r, lam, seed_variance=seed) * SECONDS_PER_YEAR / bar_seconds)


def replay_path(
    bars: Bars,
    n_steps: int,
    spot0: float | None = None,
    base_vol: float = 0.60,
    window_bars: int | None = None,
    step_seconds: float = 3600.0,
) -> MarketPath:
    """Turn a real bar file into a scenario path of ``n_steps`` steps centred on the crash low.

    The window (``window_bars`` bars, default the whole file) is centred on the lowest close and sampled at
    ``n_steps`` evenly spaced bars (the lowest bar is always one of them); prices are rescaled so the path starts
    at ``spot0`` (returns are unchanged). The vol level is the EWMA realised vol of the full-resolution bars,
    scaled so that its pre-crash median equals ``base_vol`` and floored at ``base_vol``.
    """
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2, got {n_steps}")
    close = bars.close
    n = close.shape[0]
    lo = int(np.argmin(close))
    w = n if window_bars is None else max(2, min(int(window_bars), n))
    start = int(np.clip(lo - w // 2, 0, n - w))
    idx = np.unique(np.round(np.linspace(start, start + w - 1, n_steps)).astype(int))
    if lo not in idx:
        idx[int(np.argmin(np.abs(idx - lo)))] = lo
        idx = np.unique(idx)
    bar_seconds = float(np.median(np.diff(bars.times))) if n > 1 else 60.0
    rv = ewma_vol(close, bar_seconds)
    pre = rv[start : max(start + 1, lo)]
    scale = base_vol / float(np.median(pre)) if pre.size and np.median(pre) > 0 else 1.0
    vol = np.maximum(rv[idx] * scale, base_vol)
    spot = close[idx]
    if spot0 is not None:
        spot = spot * (spot0 / spot[0])
    crash = int(np.argmax(idx == lo))
    times = np.arange(idx.size, dtype=float) * step_seconds
    meta = {
        "file": Path(bars.path).name,
        "first_bar_utc": datetime.fromtimestamp(bars.times[idx[0]], timezone.utc).isoformat(),
        "last_bar_utc": datetime.fromtimestamp(bars.times[idx[-1]], timezone.utc).isoformat(),
        "bar_seconds": bar_seconds,
        "rescaled_to": spot0,
    }
    return MarketPath(times, spot, vol, f"replay:{Path(bars.path).name}", crash, meta)


def jump_returns(path: MarketPath) -> Sequence[float]:
    """Simple one-step returns of ``path`` (len - 1 values)."""
    return list(np.expm1(np.diff(np.log(path.spot))))

"""Market-data adapters behind one interface, and the spot aggregation the keeper attests.

Sources (each a :class:`SpotSource`, asked for one block at a time):

* :class:`SimulatedMarket` - a seeded jump-diffusion spot path with an option chain drawn around a smile
  (bid/ask and depth); the same seed gives every keeper the same market at the same block.
* :class:`ReplaySpotSource` - replays an OHLCV CSV (``shared/data/price_paths``) or a JSON list of
  ``{"timestamp", "price"|"close", "volume"}`` rows, ``rows_per_block`` rows per block from ``start_block``.
* :class:`FileSpotSource` - a JSON file ``{"price": p, "volume": v}`` read afresh each cycle (operators and
  tests push a price by rewriting it).
* :class:`OnChainSpotSource` - the latest price attested to the core contracts, through a reader callable
  that :mod:`keeper.chain.deployment` provides.
* :class:`keeper.data.deribit_api.DeribitApiSource` - Deribit's public API (index price and option book
  summary), live or from a folder of saved answers (docs/market-data.md); also an option-chain source.

Option chains come from :class:`SimulatedMarket`, :class:`ReplayChainSource` (the Deribit-like CSV or JSON
rows, loaded with :func:`keeper.quant.chains.chain_from_rows`) or :class:`MarketFileChainSource` (a JSON file
``{"atm_vol", "skew", "curvature"[, "spot", "spread_pct", "depth"]}`` re-read every cycle, the chain drawn around it
as the simulated market draws its own). The two drawing sources quote the listed on-chain series (``listed``: each
live series' strike, expiry and call/put, :func:`listed_contracts`) so that the keepers' hybrid mark finds a quote
of the same contract (:func:`keeper.quant.marks.match_quotes`); file and API sources quote what the venue lists.

:func:`aggregate_spot` combines several spot quotes by median or volume-weighted price after rejecting
outliers by the median absolute deviation (MAD), and :func:`quantize_price` rounds the result to the documented
precision (``market.spot_decimals``) so that tiny feed differences between keepers do not split roots.
A source that has no usable price returns ``None`` with a :class:`Skip` reason instead of raising.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
from scipy.stats import norm

from keeper.data.deribit import load_deribit_csv
from keeper.data.deribit_api import DeribitApiSource
from keeper.data.feed import BlockRef, Skip, SpotQuote
from keeper.quant.chains import OptionChain, chain_from_rows, parse_timestamp
from keeper.units import SECONDS_PER_YEAR, WAD, quantize_price

#: Scale factor between the MAD and a normal standard deviation (1 / Phi^-1(3/4)).
MAD_TO_SIGMA = 1.4826


class SpotSource(Protocol):
    """Anything that can give a spot quote for a block (or a :class:`Skip`)."""

    name: str

    def spot(self, block: BlockRef) -> SpotQuote | Skip: ...


class ChainSource(Protocol):
    """Anything that can give an option chain for a block (or a :class:`Skip`). A source that draws its quotes
    (``quotes_listed = True``) also takes ``listed=`` (the contracts listed on chain) and quotes them."""

    name: str

    def chain(self, block: BlockRef, spot: float) -> OptionChain | Skip: ...


#: a listed option contract as the drawing sources quote it: (strike [quote units], expiry [unix s], is_call)
Contract = tuple[float, int, bool]


def listed_contracts(series, asset: str, now: int) -> tuple[Contract, ...]:
    """The live on-chain series of ``asset`` as contracts to quote (``series``: objects with ``underlying``,
    ``strike`` [WAD], ``expiry``, ``is_call``), sorted, expired ones left out: every keeper at the same head gets the
    same tuple."""
    return tuple(sorted({(int(s.strike) / WAD, int(s.expiry), bool(s.is_call)) for s in series
                         if str(s.underlying).lower() == asset.lower() and int(s.expiry) > int(now)}))


def _check_quote(q: SpotQuote) -> SpotQuote | Skip:
    if not (isinstance(q.price, (int, float)) and math.isfinite(q.price) and q.price > 0):
        return Skip(q.source, "bad_price", f"price {q.price!r} is not a positive finite number")
    if not (math.isfinite(q.volume) and q.volume >= 0):
        return Skip(q.source, "bad_volume", f"volume {q.volume!r} is not a non-negative finite number")
    return q


# ----------------------------------------------------------------------------------------------------------
# Simulated market
# ----------------------------------------------------------------------------------------------------------
class SimulatedMarket:
    """A seeded jump-diffusion spot path and an option chain drawn around a smile.

    Step ``n`` of the path is the block number; the path is generated sequentially from ``seed`` so every keeper
    with the same settings sees the same spot at the same block. The chain at a block has the configured expiries
    (days from the block time) and strikes (fractions of spot); its mid is the Black-76 price at the smile vol
    ``atm_vol + skew * k + smile * k^2`` (k = ln(K/F)), the bid/ask is ``spread_pct`` wide around it and depth is
    exponential with mean ``depth_mean``; all noise is drawn from ``(seed, block)``.
    """

    quotes_listed = True

    def __init__(self, settings, name: str = "sim") -> None:
        self.s = settings
        self.name = name
        self._path = np.array([settings.spot0], dtype=np.float64)
        self._volume = np.array([0.0])

    _CHUNK = 4096

    def _extend_chunk(self) -> None:
        """Append one chunk of ``_CHUNK`` steps; chunk ``c`` draws from ``rng(seed, c)`` so the path does not
        depend on how it was accessed."""
        s = self.s
        c = (self._path.shape[0] - 1) // self._CHUNK
        rng = np.random.default_rng([s.seed, c])
        m = self._CHUNK
        dt = s.seconds_per_step / SECONDS_PER_YEAR
        z = rng.standard_normal(m)
        jumps = rng.poisson(s.jump_intensity * dt, m)
        sizes = rng.normal(s.jump_mean, s.jump_std, m) * jumps  # a step's jumps are rare; n jumps scale one draw
        log_ret = (s.drift - 0.5 * s.vol**2) * dt + s.vol * math.sqrt(dt) * z + sizes
        vol = rng.exponential(100.0, m)
        self._path = np.concatenate([self._path, self._path[-1] * np.exp(np.cumsum(log_ret))])
        self._volume = np.concatenate([self._volume, vol])

    def spot_at(self, step: int) -> float:
        """Spot at path step ``step`` (>= 0); step 0 is ``spot0``."""
        if step < 0:
            raise ValueError("step must be >= 0")
        while self._path.shape[0] <= step:
            self._extend_chunk()
        return float(self._path[step])

    def spot(self, block: BlockRef) -> SpotQuote | Skip:
        price = self.spot_at(block.number)
        return SpotQuote(self.name, price, float(self._volume[block.number]), float(block.timestamp))

    def smile_vol(self, log_moneyness: np.ndarray, years: np.ndarray) -> np.ndarray:
        """The generating smile (total-variance flat in time for simplicity)."""
        s = self.s
        k = np.asarray(log_moneyness, dtype=np.float64)
        return np.maximum(s.atm_vol + s.skew * k + s.smile * k * k, 0.05)

    def chain(self, block: BlockRef, spot: float, listed: Sequence[Contract] = ()) -> OptionChain | Skip:
        if not (math.isfinite(spot) and spot > 0):
            return Skip(self.name, "bad_price", f"no usable spot {spot!r} to draw a chain around")
        return draw_chain(self.s, block, spot, self.smile_vol, listed=listed)


#: a grid expiry closer than this to a listed expiry (or than 10 % of the listed expiry's time to run, when more) is
#: replaced by the listed one: two slices seconds or hours apart would make the calendar check fight the noise
LISTED_EXPIRY_WINDOW_S = 86_400.0


def chain_grid(settings, now: float, spot: float, listed: Sequence[Contract] = ()) -> tuple[np.ndarray, ...]:
    """``(years, expiry_ts, strike, is_call)`` of the rows :func:`draw_chain` quotes: per expiry every strike, call
    then put. Without ``listed`` the configured expiries (days from ``now``) and strikes (fractions of ``spot``);
    with ``listed`` also every listed expiry still to come, with the configured strikes and the listed strikes of
    that expiry (the exact on-chain values), and without the configured expiries too close to a listed one
    (:data:`LISTED_EXPIRY_WINDOW_S`)."""
    s = settings
    grid_k = np.asarray(s.strikes_pct) * spot
    days = np.asarray(s.expiries_days, dtype=np.float64)
    live = sorted({float(e) for _, e, _ in listed if float(e) > now})
    if not live:
        exp_years = np.repeat(days / 365.0, 2 * len(s.strikes_pct))
        return (exp_years, now + exp_years * SECONDS_PER_YEAR,
                np.tile(np.repeat(grid_k, 2), len(s.expiries_days)),
                np.tile(np.array([True, False]), len(s.expiries_days) * len(s.strikes_pct)))
    rows = []  # (years, expiry_ts, strikes)
    for d in days:
        years = d / 365.0
        e = now + years * SECONDS_PER_YEAR
        if all(abs(e - x) >= max(LISTED_EXPIRY_WINDOW_S, 0.1 * (x - now)) for x in live):
            rows.append((years, e, grid_k))
    for x in live:
        ks = np.unique(np.concatenate([grid_k, [k for k, e, _ in listed if float(e) == x]]))
        rows.append(((x - now) / SECONDS_PER_YEAR, x, ks))
    rows.sort(key=lambda r: r[1])
    years = np.concatenate([np.full(2 * len(k), y) for y, _, k in rows])
    expiry = np.concatenate([np.full(2 * len(k), e) for _, e, k in rows])
    strike = np.concatenate([np.repeat(k, 2) for _, _, k in rows])
    is_call = np.tile(np.array([True, False]), len(strike) // 2)
    return years, expiry, strike, is_call


def draw_chain(settings, block: BlockRef, spot: float,
               smile: Callable[[np.ndarray, np.ndarray], np.ndarray], *, listed: Sequence[Contract] = (),
               spread_pct: Optional[float] = None, depth: Optional[float] = None) -> OptionChain:
    """The simulated market's option chain at ``block`` around ``spot``: the rows of :func:`chain_grid` (the
    configured expiries and strikes, and the ``listed`` contracts), mid = Black-76 price at ``smile(k, years)``
    (k = ln(K/F)) times a 0.2 % noise, a ``spread_pct`` wide bid/ask (``spread_pct``: instead of the settings')
    and exponential depth (``depth``: this depth on both sides of every row instead); all noise is drawn from
    ``(seed, block)``, so the same settings, smile, spot, listed contracts and block give the same chain in every
    keeper."""
    s = settings
    rng = np.random.default_rng([s.seed, block.number, 1])
    now = float(block.timestamp)
    exp_years, expiry_ts, strikes, is_call = chain_grid(s, now, spot, listed)
    fwd = np.full_like(strikes, spot)
    k = np.log(strikes / fwd)
    vol = smile(k, exp_years)
    sd = vol * np.sqrt(exp_years)
    d1 = (-k + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    call = fwd * norm.cdf(d1) - strikes * norm.cdf(d2)
    put = strikes * norm.cdf(-d2) - fwd * norm.cdf(-d1)
    mid = np.where(is_call, call, put)
    noise = 1.0 + 0.002 * rng.standard_normal(mid.shape[0])
    mid = mid * noise
    half = 0.5 * (s.spread_pct if spread_pct is None else float(spread_pct)) * mid
    bid = np.maximum(mid - half, 0.0)
    ask = mid + half
    n = mid.shape[0]
    bid_size, ask_size = rng.exponential(s.depth_mean, n), rng.exponential(s.depth_mean, n)
    if depth is not None:
        bid_size, ask_size = np.full(n, float(depth)), np.full(n, float(depth))
    return OptionChain(
        underlying="SIM", asof=now, spot=float(spot),
        quote_ts=np.full(n, now), expiry_ts=expiry_ts, strike=strikes,
        is_call=is_call, bid=bid, ask=ask,
        bid_size=bid_size, ask_size=ask_size,
        mark=mid, forward=fwd, index_price=np.full(n, float(spot)), open_interest=np.zeros(n),
        bid_iv=np.full(n, np.nan), ask_iv=np.full(n, np.nan), mark_iv=vol,
    )


@dataclass(frozen=True)
class MarketSurface:
    """A smile read from a market-data file: ATM vol, skew and curvature of
    ``vol(k) = max(atm_vol * (1 + skew * k + curvature * k^2), 0.05)`` in log-moneyness ``k`` (the convention of
    the scenario's ``market.json`` and of the liquidators that read it), the file's spot when it has one, and
    optionally the book's relative spread (``spread_pct``) and depth on each side (``depth``, contracts) instead of
    the ``simulated`` settings' spread and random depth."""

    atm_vol: float
    skew: float
    curvature: float
    spot: Optional[float] = None
    spread_pct: Optional[float] = None
    depth: Optional[float] = None

    def vol(self, log_moneyness: np.ndarray, years: np.ndarray) -> np.ndarray:
        """The smile vol at ``log_moneyness`` (flat in maturity)."""
        k = np.asarray(log_moneyness, dtype=np.float64)
        return np.maximum(self.atm_vol * (1.0 + self.skew * k + self.curvature * k * k), 0.05) \
            + 0.0 * np.asarray(years, dtype=np.float64)


def read_market_surface(path: Path, source: str = "market_file") -> MarketSurface | Skip:
    """Parse ``{"atm_vol", "skew", "curvature"[, "spot", "spread_pct", "depth"]}`` from ``path``; a missing/unreadable
    file or a missing, non-numeric, non-finite or out-of-range value is a :class:`Skip` (``source_unavailable`` or
    ``bad_market_file``), never an exception."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        return Skip(source, "source_unavailable", f"{path}: {exc}")
    if not isinstance(data, dict):
        return Skip(source, "bad_market_file", f"{path}: top level must be an object")
    vals: dict[str, float] = {}
    for key in ("atm_vol", "skew", "curvature", "spot", "spread_pct", "depth"):
        raw = data.get(key)
        if raw is None and key in ("spot", "spread_pct", "depth"):
            continue
        if raw is None:
            return Skip(source, "bad_market_file", f"{path}: no {key!r}")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(float(raw)):
            return Skip(source, "bad_market_file", f"{path}: {key}={raw!r} is not a finite number")
        vals[key] = float(raw)
    if not 0.0 < vals["atm_vol"] <= 5.0:
        return Skip(source, "bad_market_file", f"{path}: atm_vol={vals['atm_vol']!r} outside (0, 5]")
    if "spot" in vals and vals["spot"] <= 0:
        return Skip(source, "bad_market_file", f"{path}: spot={vals['spot']!r} is not positive")
    if "spread_pct" in vals and not 0.0 <= vals["spread_pct"] < 1.0:
        return Skip(source, "bad_market_file", f"{path}: spread_pct={vals['spread_pct']!r} outside [0, 1)")
    if "depth" in vals and vals["depth"] < 0:
        return Skip(source, "bad_market_file", f"{path}: depth={vals['depth']!r} is negative")
    return MarketSurface(vals["atm_vol"], vals["skew"], vals["curvature"], vals.get("spot"), vals.get("spread_pct"),
                         vals.get("depth"))


class MarketFileChainSource:
    """An option chain drawn each cycle around the smile in a JSON market-data file (re-read every time it is
    asked), with the simulated market's grid, noise, spread and depth (:func:`draw_chain`): the same file content
    and block give every keeper the same chain. A missing or malformed file is a :class:`Skip`, so nothing built
    on it is signed."""

    quotes_listed = True

    def __init__(self, path: str | Path, settings, name: str = "market_file") -> None:
        self.path = Path(path)
        self.s = settings
        self.name = name

    def chain(self, block: BlockRef, spot: float, listed: Sequence[Contract] = ()) -> OptionChain | Skip:
        if not (math.isfinite(spot) and spot > 0):
            return Skip(self.name, "bad_price", f"no usable spot {spot!r} to draw a chain around")
        surface = read_market_surface(self.path, self.name)
        if isinstance(surface, Skip):
            return surface
        return draw_chain(self.s, block, spot, surface.vol, listed=listed, spread_pct=surface.spread_pct,
                          depth=surface.depth)


# ----------------------------------------------------------------------------------------------------------
# Replay from files
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PriceRows:
    """A loaded price path: timestamps (unix s), prices and volumes (NaN where a cell was missing)."""

    timestamp: np.ndarray
    price: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.price.shape[0])


def _num(text) -> float:
    if text is None:
        return math.nan
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    t = str(text).strip()
    if not t:
        return math.nan
    try:
        return float(t)
    except ValueError:
        return math.nan


def _ts(text) -> float:

    return parse_timestamp(text)


def load_price_rows(path: str | Path, price_column: str = "close") -> PriceRows:
    """Load an OHLCV CSV (``timestamp_utc,open,high,low,close,volume``; daily files have only ``close``) or a JSON
    list of objects with ``timestamp`` and ``price`` (or ``price_column``) and optional ``volume``."""
    p = Path(path)
    ts, px, vol = [], [], []
    if p.suffix.lower() == ".json":
        rows = json.loads(p.read_text())
        if not isinstance(rows, list):
            raise ValueError(f"{p}: a JSON price path must be a list of rows")
        for r in rows:
            r = r if isinstance(r, dict) else {}
            ts.append(_ts(r.get("timestamp", r.get("timestamp_utc"))))
            px.append(_num(r.get("price", r.get(price_column))))
            vol.append(_num(r.get("volume")))
    else:
        with open(p, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or price_column not in reader.fieldnames:
                raise ValueError(f"{p}: no {price_column!r} column (columns: {reader.fieldnames})")
            for r in reader:
                ts.append(_ts(r.get("timestamp_utc", r.get("timestamp"))))
                px.append(_num(r.get(price_column)))
                vol.append(_num(r.get("volume")))
    return PriceRows(np.asarray(ts, dtype=np.float64), np.asarray(px, dtype=np.float64),
                     np.asarray(vol, dtype=np.float64))


class ReplaySpotSource:
    """Replays a price path: block ``b`` uses row ``start_row + (b - start_block) // rows_per_block`` (one row per
    ``rows_per_block`` blocks; blocks before ``start_block`` use ``start_row``), times ``scale``. Past the end, and
    on a row whose price is missing, it reports a :class:`Skip`."""

    def __init__(self, name: str, rows: PriceRows, *, start_block: int = 0, rows_per_block: int = 1,
                 start_row: int = 0, scale: float = 1.0) -> None:
        self.name = name
        self.rows = rows
        self.start_block = start_block
        self.rows_per_block = rows_per_block
        self.start_row = start_row
        self.scale = scale

    def row_for(self, block_number: int) -> int:
        """Row index replayed at ``block_number``."""
        return self.start_row + max(block_number - self.start_block, 0) // self.rows_per_block

    def spot(self, block: BlockRef) -> SpotQuote | Skip:
        i = self.row_for(block.number)
        if i >= len(self.rows):
            return Skip(self.name, "replay_exhausted", f"row {i} past the end ({len(self.rows)} rows)")
        vol = float(self.rows.volume[i])
        q = SpotQuote(self.name, float(self.rows.price[i]) * self.scale, vol if math.isfinite(vol) else 0.0,
                      float(self.rows.timestamp[i]))
        return _check_quote(q)


class FileSpotSource:
    """Reads ``{"price": p, "volume": v}`` from a JSON file each time it is asked."""

    def __init__(self, name: str, path: str | Path) -> None:
        self.name = name
        self.path = Path(path)

    def spot(self, block: BlockRef) -> SpotQuote | Skip:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            return Skip(self.name, "source_unavailable", f"{self.path}: {exc}")
        if not isinstance(data, dict) or "price" not in data:
            return Skip(self.name, "missing_price", f"{self.path} has no 'price'")
        price = _num(data.get("price"))
        vol = _num(data.get("volume", 0.0))
        return _check_quote(SpotQuote(self.name, price, vol if math.isfinite(vol) else 0.0, float(block.timestamp)))


class OnChainSpotSource:
    """The latest price attested on chain. ``reader()`` returns ``(price_wad, timestamp)`` or ``None``."""

    def __init__(self, name: str, reader: Callable[[], Optional[tuple[int, int]]],
                 max_age_s: float = math.inf) -> None:
        self.name = name
        self.reader = reader
        self.max_age_s = max_age_s

    def spot(self, block: BlockRef) -> SpotQuote | Skip:
        try:
            got = self.reader()
        except Exception as exc:  # RPC failures are reported as a skipped input, never raised into the cycle
            return Skip(self.name, "source_unavailable", f"on-chain price read failed: {exc}")
        if got is None or int(got[0]) <= 0:
            return Skip(self.name, "missing_price", "no price attested on chain yet")
        price_wad, ts = int(got[0]), int(got[1])
        if block.timestamp - ts > self.max_age_s:
            return Skip(self.name, "stale_price", f"on-chain price is {block.timestamp - ts}s old")
        return SpotQuote(self.name, price_wad / WAD, 0.0, float(ts))


class ReplayChainSource:
    """An option chain loaded once from a file (Deribit-like CSV, or JSON rows of the same fields) and served
    unchanged; its prices are rescaled to the block's spot when ``rescale`` is set (so a replayed crash path can
    move the chain with it: strikes, forwards and prices scale with spot/index)."""

    def __init__(self, name: str, chain: OptionChain, *, rescale: bool = False) -> None:
        self.name = name
        self.base = chain
        self.rescale = rescale

    @classmethod
    def from_file(cls, path: str | Path, *, rescale: bool = False) -> "ReplayChainSource":
        p = Path(path)
        if p.suffix.lower() == ".json":
            rows = json.loads(p.read_text())
            loaded = chain_from_rows(rows if isinstance(rows, list) else [])
        else:
            loaded = load_deribit_csv(p)
        return cls(p.name, loaded.chain, rescale=rescale)

    def chain(self, block: BlockRef, spot: float) -> OptionChain | Skip:
        c = self.base
        if len(c) == 0:
            return Skip(self.name, "empty_chain", "option chain has no rows")
        if not self.rescale:
            return c
        if not (math.isfinite(spot) and spot > 0 and c.spot > 0):
            return Skip(self.name, "bad_price", "cannot rescale chain without a spot")
        f = spot / c.spot
        shift = float(block.timestamp) - c.asof
        return OptionChain(
            underlying=c.underlying, asof=c.asof + shift, spot=c.spot * f, quote_ts=c.quote_ts + shift,
            expiry_ts=c.expiry_ts + shift, strike=c.strike * f, is_call=c.is_call, bid=c.bid * f, ask=c.ask * f,
            bid_size=c.bid_size, ask_size=c.ask_size, mark=c.mark * f, forward=c.forward * f,
            index_price=c.index_price * f, open_interest=c.open_interest, bid_iv=c.bid_iv, ask_iv=c.ask_iv,
            mark_iv=c.mark_iv, instrument=c.instrument)


# ----------------------------------------------------------------------------------------------------------
# Validation of an option chain
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChainCheck:
    """The usable rows of a chain and how many rows were dropped for each reason."""

    chain: OptionChain
    dropped: dict[str, int]


def clean_chain(chain: OptionChain) -> ChainCheck | Skip:
    """Drop rows with crossed quotes (bid > ask), NaN or non-positive strikes/forwards; keep one-sided rows
    (NaN side) for the surface filters downstream. An empty result is a :class:`Skip`."""
    if len(chain) == 0:
        return Skip("chain", "empty_chain", "option chain has no rows")
    dropped: dict[str, int] = {}
    crossed = np.isfinite(chain.bid) & np.isfinite(chain.ask) & (chain.bid > chain.ask)
    bad_static = ~(np.isfinite(chain.strike) & (chain.strike > 0) & np.isfinite(chain.forward) & (chain.forward > 0))
    negative = (np.isfinite(chain.bid) & (chain.bid < 0)) | (np.isfinite(chain.ask) & (chain.ask < 0))
    for reason, mask in (("crossed_quote", crossed), ("bad_row", bad_static), ("negative_quote", negative)):
        if mask.any():
            dropped[reason] = int(mask.sum())
    keep = ~(crossed | bad_static | negative)
    if not keep.any():
        return Skip("chain", "empty_chain", f"no usable option quotes after dropping {dropped}")
    return ChainCheck(chain.select(keep) if not keep.all() else chain, dropped)


# ----------------------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AggregatedSpot:
    """The combined spot, the sources used and those rejected as outliers."""

    price: float
    used: tuple[str, ...]
    rejected: tuple[str, ...]
    method: str


def mad_inliers(prices: np.ndarray, threshold: float, rel_floor: float = 1e-4) -> np.ndarray:
    """Boolean mask of prices within ``threshold`` scaled MADs of the median.

    The scale is ``max(1.4826 * MAD, rel_floor * median)``: with a zero MAD (most sources agree exactly) only a
    source further than ``threshold * rel_floor`` relative from the median is an outlier.
    """
    x = np.asarray(prices, dtype=np.float64)
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)))
    scale = max(MAD_TO_SIGMA * mad, rel_floor * abs(med))
    return np.abs(x - med) <= threshold * scale


def aggregate_spot(quotes: Sequence[SpotQuote], *, method: str = "median", mad_threshold: float = 3.5,
                   min_sources: int = 1) -> AggregatedSpot | Skip:
    """Combine spot quotes: drop invalid ones, reject MAD outliers (with >= 3 quotes), then take the median or the
    volume-weighted mean of the rest (``vwap`` falls back to the median when the volumes sum to zero)."""
    good = [q for q in quotes if isinstance(_check_quote(q), SpotQuote)]
    if len(good) < min_sources:
        return Skip("spot", "too_few_sources", f"{len(good)} usable spot sources, need {min_sources}")
    prices = np.array([q.price for q in good])
    keep = mad_inliers(prices, mad_threshold) if len(good) >= 3 else np.ones(len(good), dtype=bool)
    used = [q for q, k in zip(good, keep) if k]
    rejected = tuple(q.source for q, k in zip(good, keep) if not k)
    if len(used) < min_sources:
        return Skip("spot", "too_few_sources", f"{len(used)} spot sources left after outlier rejection")
    p = np.array([q.price for q in used])
    if method == "vwap":
        w = np.array([q.volume for q in used])
        price = float(np.sum(p * w) / np.sum(w)) if w.sum() > 0 else float(np.median(p))
    elif method == "median":
        price = float(np.median(p))
    else:
        raise ValueError(f"unknown aggregation method {method!r}")
    return AggregatedSpot(price, tuple(q.source for q in used), rejected, method)


# ----------------------------------------------------------------------------------------------------------
# Construction from config
# ----------------------------------------------------------------------------------------------------------
@dataclass
class MarketData:
    """The configured sources of one keeper."""

    spot_sources: list
    chain_source: Optional[object]
    method: str
    mad_threshold: float
    min_sources: int
    spot_decimals: int
    simulated: Optional[SimulatedMarket] = None
    skips: list[Skip] = field(default_factory=list)

    def spot(self, block: BlockRef) -> tuple[AggregatedSpot | Skip, list[Skip]]:
        """Ask every source, aggregate; returns the aggregate (or a Skip) and each source's skip."""
        quotes, skips = [], []
        for src in self.spot_sources:
            try:
                got = src.spot(block)
            except Exception as exc:  # an adapter bug must not take the cycle down
                got = Skip(getattr(src, "name", "?"), "source_error", repr(exc))
            (quotes if isinstance(got, SpotQuote) else skips).append(got)
        agg = aggregate_spot(quotes, method=self.method, mad_threshold=self.mad_threshold,
                             min_sources=self.min_sources)
        if isinstance(agg, AggregatedSpot):
            agg = AggregatedSpot(quantize_price(agg.price, self.spot_decimals), agg.used, agg.rejected, agg.method)
        return agg, skips

    def chain(self, block: BlockRef, spot: float, listed: Sequence[Contract] = ()) -> OptionChain | Skip | None:
        """The option chain for ``block`` after :func:`clean_chain`, or ``None`` when no chain is configured.
        ``listed``: the contracts listed on chain (:func:`listed_contracts`), which a drawing source quotes too."""
        if self.chain_source is None:
            return None
        try:
            if getattr(self.chain_source, "quotes_listed", False):
                got = self.chain_source.chain(block, spot, listed=tuple(listed))
            else:
                got = self.chain_source.chain(block, spot)
        except Exception as exc:
            return Skip("chain", "source_error", repr(exc))
        if isinstance(got, Skip):
            return got
        checked = clean_chain(got)
        if isinstance(checked, Skip):
            return checked
        return checked.chain


def build_market_data(market_settings, onchain_reader: Optional[Callable[[], Optional[tuple[int, int]]]] = None,
                      max_age_s: float = math.inf) -> MarketData:
    """Instantiate the sources of one asset: an :class:`keeper.ops.config.AssetMarketSettings` from
    ``MarketSettings.asset_settings()`` (or a one-asset ``MarketSettings``)."""
    ms = market_settings
    sim: Optional[SimulatedMarket] = None
    spots = []
    for s in ms.spot_sources:
        if s.kind == "simulated":
            sim = sim or SimulatedMarket(ms.simulated, name=s.name)
            spots.append(sim)
        elif s.kind == "replay":
            spots.append(ReplaySpotSource(s.name, load_price_rows(s.path, s.price_column), start_block=s.start_block,
                                          rows_per_block=s.rows_per_block, start_row=s.start_row, scale=s.scale))
        elif s.kind == "file":
            spots.append(FileSpotSource(s.name, s.path))
        elif s.kind == "deribit_api":
            spots.append(DeribitApiSource(s.name, currency=s.currency, url=s.url, folder=s.path,
                                          settlement=s.settlement, index_name=s.index_name, timeout_s=s.timeout_s,
                                          retries=s.retries, backoff_s=s.backoff_s))
        elif s.kind == "onchain":
            if onchain_reader is None:
                raise ValueError(f"spot source {s.name!r} is on-chain but no chain reader is available")
            spots.append(OnChainSpotSource(s.name, onchain_reader, max_age_s))
    cs = ms.chain
    chain_source = None
    if cs.kind == "simulated":
        chain_source = sim or SimulatedMarket(ms.simulated)
    elif cs.kind in ("deribit_csv", "json"):
        chain_source = ReplayChainSource.from_file(cs.path, rescale=True)
    elif cs.kind == "deribit_api":
        chain_source = DeribitApiSource("deribit_api", currency=cs.currency, url=cs.url, folder=cs.path,
                                        settlement=cs.settlement, index_name=cs.index_name, timeout_s=cs.timeout_s,
                                        retries=cs.retries, backoff_s=cs.backoff_s, max_age_s=cs.max_age_s)
    elif cs.kind == "market_file":
        chain_source = MarketFileChainSource(cs.path, ms.simulated)
    return MarketData(spots, chain_source, ms.aggregation, ms.mad_threshold, ms.min_sources, ms.spot_decimals, sim)

"""Option-chain data model and loader for Deribit-style snapshots.

An :class:`OptionChain` is a frozen dataclass of per-row numpy arrays (one row per listed option) plus the
chain-level underlying name, valuation time and spot index. Prices are converted to the **quote asset** (USD):
Deribit quotes inverse options in coin, so ``usd = coin_price * underlying_price`` of that row, where
``underlying_price`` is Deribit's forward for the row's expiry (a future or a synthetic forward). Implied vols
(Deribit's, in percent in the file) are stored as fractions.

The loader accepts the CSV of ``shared/data/option_chains`` and also plain mappings of the same fields (the
keeper's replay adapter feeds JSON rows through :func:`chain_from_rows`). Missing cells become NaN; a row that
cannot be used at all (no strike, no expiry, no kind, no forward) is counted in the :class:`LoadReport` and skipped,
never raised.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import numpy as np

from keeper.units import SECONDS_PER_YEAR

log = logging.getLogger(__name__)

#: Strikes nearest the money whose put-call parity bounds check the venue forward (:meth:`OptionChain.parity_checked_forward`).
PARITY_STRIKES = 5

#: Column names of the Deribit-like CSV (the loader also reads mappings keyed by these names).
DERIBIT_COLUMNS = (
    "snapshot_utc", "underlying", "index_price", "expiry_utc", "strike", "kind", "bid", "ask", "bid_iv", "ask_iv",
    "mark_price", "mark_iv", "open_interest", "instrument_name", "underlying_index", "underlying_price",
    "bid_amount", "ask_amount",
)


@dataclass(frozen=True)
class OptionChain:
    """One option-chain snapshot; every array has one entry per row (option series).

    Prices (``bid``, ``ask``, ``mark``) are in the quote asset (USD) per option on one unit of the underlying;
    ``bid_size``/``ask_size`` are top-of-book depth in contracts; vols are fractions (0.8 = 80 %). NaN means the
    value was not available. ``expiry_years`` is ACT/365 time from ``asof`` (the latest quote time) to expiry and
    ``quote_expiry_years`` the same measured from the row's own quote time (what the quote was priced at).
    """

    underlying: str
    asof: float  # unix seconds: valuation time = latest quote timestamp in the snapshot
    spot: float  # index price on the latest row
    quote_ts: np.ndarray  # unix seconds of each row's quote
    expiry_ts: np.ndarray  # unix seconds of expiry
    strike: np.ndarray
    is_call: np.ndarray  # bool
    bid: np.ndarray
    ask: np.ndarray
    bid_size: np.ndarray
    ask_size: np.ndarray
    mark: np.ndarray  # venue mark price (USD)
    forward: np.ndarray  # venue forward of the row's expiry (Deribit ``underlying_price``)
    index_price: np.ndarray
    open_interest: np.ndarray
    bid_iv: np.ndarray  # venue IVs as fractions; NaN where absent
    ask_iv: np.ndarray
    mark_iv: np.ndarray
    instrument: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = np.shape(self.strike)[0]
        for name in ("strike", "quote_ts", "expiry_ts", "is_call", "bid", "ask", "bid_size", "ask_size", "mark",
                     "forward", "index_price", "open_interest", "bid_iv", "ask_iv", "mark_iv"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.shape != (n,):
                raise ValueError(f"OptionChain.{name} must be a 1-D array of length {n}")
            view = arr.view()  # read-only view: the caller's array keeps its own flags
            view.setflags(write=False)
            object.__setattr__(self, name, view)
        if self.instrument and len(self.instrument) != n:
            raise ValueError(f"OptionChain.instrument must have {n} names")

    def __len__(self) -> int:
        return int(self.strike.shape[0])

    @property
    def expiry_years(self) -> np.ndarray:
        """ACT/365 years from the chain's valuation time ``asof`` to each row's expiry."""
        return (self.expiry_ts - self.asof) / SECONDS_PER_YEAR

    @property
    def quote_expiry_years(self) -> np.ndarray:
        """ACT/365 years from each row's own quote time to its expiry (the maturity the quote was priced at)."""
        return (self.expiry_ts - self.quote_ts) / SECONDS_PER_YEAR

    @property
    def quote_age(self) -> np.ndarray:
        """Seconds between each row's quote and the chain's valuation time (0 for the latest row)."""
        return self.asof - self.quote_ts

    @property
    def mid(self) -> np.ndarray:
        """(bid + ask) / 2; NaN where either side is missing."""
        return 0.5 * (self.bid + self.ask)

    def expiries(self) -> np.ndarray:
        """Sorted distinct expiry timestamps."""
        return np.unique(self.expiry_ts)

    def forward_by_expiry(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct expiry timestamps, forward of each): the median of the rows' venue forwards per expiry."""
        expiries = self.expiries()
        fwd = np.array([float(np.nanmedian(self.forward[self.expiry_ts == e])) for e in expiries])
        return expiries, fwd

    def parity_checked_forward(self, n_near: int = PARITY_STRIKES) -> np.ndarray:
        """Each row's forward, checked against put-call parity on its expiry's quotes (zero rates:
        ``C - P = F - K``). At each of the ``n_near`` strikes nearest the venue forward ``F_v`` with a two-sided call
        and put, the quotes bound the forward to ``[K + C_bid - P_ask, K + C_ask - P_bid]`` (outside it one could
        buy the call, sell the put and sell the future, or the reverse, at a profit); the strike asks for the least
        correction that puts ``F_v`` inside its bounds (zero when they hold it). The expiry's forward is ``F_v`` plus
        the median of these corrections (scaled per row, so rows quoted at different moments keep their relative
        forwards): the venue forward (on weekly expiries an interpolation between listed futures) stands unless
        most strikes near the money exclude it, and then moves only as far as the median strike needs. With fewer
        than 3 such strikes the venue forward stands; on a parity-consistent chain this is the identity.

        Not used by default (``SurfaceConfig.parity_forward``): a fake quote at the money changes its strike's
        correction, and a forward move shifts every in-the-money mark by about that amount, which is not bounded by
        vega (docs/surface.md)."""
        fwd = np.array(self.forward, dtype=np.float64)
        bid, ask = self.bid, self.ask
        two = np.isfinite(bid) & np.isfinite(ask) & (bid > 0.0) & (ask > 0.0) & (bid <= ask)
        for e in self.expiries():
            rows = self.expiry_ts == e
            if not np.any(np.isfinite(self.forward[rows])):
                continue
            f_venue = float(np.nanmedian(self.forward[rows]))
            if not (math.isfinite(f_venue) and f_venue > 0.0):
                continue
            calls = {float(self.strike[i]): i for i in np.flatnonzero(rows & two & self.is_call)}
            puts = {float(self.strike[i]): i for i in np.flatnonzero(rows & two & ~self.is_call)}
            both = sorted((k for k in calls if k in puts and k > 0.0), key=lambda k: (abs(math.log(k / f_venue)), k))
            near = both[:n_near]
            if len(near) < 3:
                continue
            lo = np.array([k + bid[calls[k]] - ask[puts[k]] for k in near])
            hi = np.array([k + ask[calls[k]] - bid[puts[k]] for k in near])
            est = np.array([k + 0.5 * (bid[calls[k]] + ask[calls[k]] - bid[puts[k]] - ask[puts[k]]) for k in near])
            delta = np.clip(f_venue, lo, hi) - f_venue  # the least correction that makes the strike consistent
            shift = float(np.median(delta))
            if shift != 0.0 and f_venue + shift > 0.0:
                fwd[rows] = self.forward[rows] * ((f_venue + shift) / f_venue)
        return fwd

    def with_parity_checked_forward(self) -> "OptionChain":
        """The same chain with :meth:`parity_checked_forward` as its rows' forwards (itself when nothing changes)."""
        fwd = self.parity_checked_forward()
        if np.array_equal(fwd, self.forward, equal_nan=True):
            return self
        kwargs = {name: getattr(self, name) for name in self.__dataclass_fields__}
        kwargs["forward"] = fwd
        return OptionChain(**kwargs)

    def carry_by_expiry(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct expiry timestamps, forward / spot of each). The forward is the venue's (futures-implied,
        :meth:`forward_by_expiry`); where the venue gives none, put-call parity on the strike with the tightest
        two-sided call and put (``F = K + (C - P)``, zero rates); where neither exists, the carry is 1."""
        expiries, fwd = self.forward_by_expiry()
        if not (math.isfinite(self.spot) and self.spot > 0):
            return expiries, np.ones(expiries.shape[0])
        mid = self.mid
        for i, e in enumerate(expiries):
            if math.isfinite(fwd[i]) and fwd[i] > 0:
                continue
            rows = self.expiry_ts == e
            best = (math.inf, math.nan)
            for k in np.unique(self.strike[rows]):
                c = rows & (self.strike == k) & self.is_call & np.isfinite(mid)
                q = rows & (self.strike == k) & ~self.is_call & np.isfinite(mid)
                if c.any() and q.any():
                    cm, pm = float(mid[c][0]), float(mid[q][0])
                    width = float((self.ask - self.bid)[c][0] + (self.ask - self.bid)[q][0])
                    if width < best[0] and k + cm - pm > 0:
                        best = (width, float(k + cm - pm))
            fwd[i] = best[1]
        carry = fwd / self.spot
        return expiries, np.where(np.isfinite(carry) & (carry > 0), carry, 1.0)

    def select(self, mask: np.ndarray) -> "OptionChain":
        """A new chain with the rows where ``mask`` is true (same ``asof`` and ``spot``)."""
        mask = np.asarray(mask, dtype=bool)
        kwargs: dict[str, Any] = {}
        for name in ("quote_ts", "expiry_ts", "strike", "is_call", "bid", "ask", "bid_size", "ask_size", "mark",
                     "forward", "index_price", "open_interest", "bid_iv", "ask_iv", "mark_iv"):
            kwargs[name] = np.array(getattr(self, name)[mask])
        names = tuple(n for n, keep in zip(self.instrument, mask) if keep) if self.instrument else ()
        return OptionChain(underlying=self.underlying, asof=self.asof, spot=self.spot, instrument=names, **kwargs)


@dataclass(frozen=True)
class LoadReport:
    """What the loader kept and what it skipped: ``rejected`` maps a reason to a row count."""

    rows_read: int
    rows_kept: int
    rejected: dict[str, int]


@dataclass(frozen=True)
class LoadedChain:
    """A loaded chain with its :class:`LoadReport`."""

    chain: OptionChain
    report: LoadReport


def _float(value: Any) -> float:
    """A cell as float; NaN for empty, missing or unparseable cells."""
    if value is None:
        return math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if not text or text.lower() in ("nan", "none", "null"):
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def parse_timestamp(value: Any) -> float:
    """ISO-8601 UTC text (or unix seconds / milliseconds as a number) to unix seconds; NaN when unparseable."""
    if value is None:
        return math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        return v / 1000.0 if v > 1e11 else v  # Deribit's API gives milliseconds
    text = str(value).strip()
    if not text:
        return math.nan
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        number = _float(text)
        return parse_timestamp(number) if math.isfinite(number) else math.nan
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def chain_from_rows(rows: Iterable[Mapping[str, Any]], *, asof: float | None = None,
                    underlying: str | None = None) -> LoadedChain:
    """Build an :class:`OptionChain` from Deribit-style rows (CSV dicts or JSON objects with the same fields).

    ``asof`` defaults to the latest row timestamp. Rows are kept when they have a strike, an expiry, a kind
    (``C``/``P``, ``call``/``put``), a positive forward and a quote timestamp; every other cell may be missing
    (NaN). Rows with a different underlying than the first kept row, and expired rows, are rejected too.
    """
    cols: dict[str, list[float]] = {k: [] for k in (
        "quote_ts", "expiry_ts", "strike", "is_call", "bid", "ask", "bid_size", "ask_size", "mark_coin", "forward",
        "index_price", "open_interest", "bid_iv", "ask_iv", "mark_iv")}
    names: list[str] = []
    rejected: dict[str, int] = {}
    read = 0

    def reject(reason: str) -> None:
        rejected[reason] = rejected.get(reason, 0) + 1

    for row in rows:
        read += 1
        if not isinstance(row, Mapping):
            reject("not_a_row")
            continue
        strike = _float(row.get("strike"))
        expiry = parse_timestamp(row.get("expiry_utc"))
        quote_ts = parse_timestamp(row.get("snapshot_utc"))
        fwd = _float(row.get("underlying_price"))
        kind = str(row.get("kind") or "").strip().upper()
        is_call = {"C": 1.0, "CALL": 1.0, "P": 0.0, "PUT": 0.0}.get(kind)
        row_underlying = str(row.get("underlying") or "").strip().upper()
        if not (strike > 0.0):
            reject("bad_strike")
            continue
        if not math.isfinite(expiry):
            reject("bad_expiry")
            continue
        if is_call is None:
            reject("bad_kind")
            continue
        if not (fwd > 0.0):
            reject("bad_forward")
            continue
        if not math.isfinite(quote_ts):
            reject("bad_timestamp")
            continue
        if expiry <= quote_ts:
            reject("expired")
            continue
        if underlying is None and row_underlying:
            underlying = row_underlying
        if row_underlying and underlying and row_underlying != underlying:
            reject("other_underlying")
            continue
        cols["quote_ts"].append(quote_ts)
        cols["expiry_ts"].append(expiry)
        cols["strike"].append(strike)
        cols["is_call"].append(is_call)
        cols["forward"].append(fwd)
        for src, dst in (("bid", "bid"), ("ask", "ask"), ("bid_amount", "bid_size"), ("ask_amount", "ask_size"),
                         ("mark_price", "mark_coin"), ("index_price", "index_price"),
                         ("open_interest", "open_interest")):
            cols[dst].append(_float(row.get(src)))
        for src in ("bid_iv", "ask_iv", "mark_iv"):
            cols[src].append(_float(row.get(src)) / 100.0)  # percent -> fraction
        names.append(str(row.get("instrument_name") or ""))

    arr = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    n = arr["strike"].shape[0]
    if n and asof is None:
        asof = float(np.max(arr["quote_ts"]))
    if asof is None:
        asof = math.nan
    fwd = arr["forward"]
    spot = math.nan
    if n:
        latest = int(np.argmax(arr["quote_ts"]))
        spot = float(arr["index_price"][latest])
    chain = OptionChain(
        underlying=underlying or "",
        asof=float(asof),
        spot=spot,
        quote_ts=arr["quote_ts"],
        expiry_ts=arr["expiry_ts"],
        strike=arr["strike"],
        is_call=arr["is_call"].astype(bool),
        bid=arr["bid"] * fwd,
        ask=arr["ask"] * fwd,
        bid_size=arr["bid_size"],
        ask_size=arr["ask_size"],
        mark=arr["mark_coin"] * fwd,
        forward=fwd,
        index_price=arr["index_price"],
        open_interest=arr["open_interest"],
        bid_iv=arr["bid_iv"],
        ask_iv=arr["ask_iv"],
        mark_iv=arr["mark_iv"],
        instrument=tuple(names),
    )
    if rejected:
        log.warning("option chain: skipped %d of %d rows: %s", sum(rejected.values()), read, rejected)
    report = LoadReport(rows_read=read, rows_kept=n, rejected=dict(sorted(rejected.items())))
    return LoadedChain(chain=chain, report=report)



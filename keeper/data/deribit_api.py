"""Deribit's public JSON-RPC API as a market-data source: ``public/get_book_summary_by_currency`` (``kind=option``)
for the option chain and ``public/get_index_price`` for spot, read from a live URL or from a folder of saved
responses (docs/market-data.md).

**Response format** (Deribit API v2, as documented). Every answer is a JSON-RPC 2.0 envelope
``{"jsonrpc": "2.0", "id": ..., "result": ..., "usIn", "usOut", "usDiff", "testnet"}``, or, on failure,
``{"jsonrpc": "2.0", "error": {"code": int, "message": str[, "data": ...]}}`` (HTTP 400 over REST).

* ``public/get_index_price?index_name=eth_usd`` -> ``result = {"index_price": 2222.19,
  "estimated_delivery_price": 2222.19}`` (USD per coin).
* ``public/get_book_summary_by_currency?currency=ETH&kind=option`` -> ``result`` is a list with one object per
  instrument. The fields read here: ``instrument_name`` (``ETH-9JAN24-1900-C``: strike, expiry date and call/put
  come only from the name; the expiry is 08:00 UTC of that date, Deribit's fixed expiry time), ``bid_price`` /
  ``ask_price`` (``null`` when that side of the book is empty), ``mark_price``, ``mid_price`` (checked, not stored:
  the chain's mid is ``(bid + ask) / 2``), ``underlying_price`` (the forward of the row's expiry, a future or a
  synthetic ``SYN.`` forward: what Deribit's IVs are quoted against), ``underlying_index``,
  ``estimated_delivery_price`` (for options, the current index), ``open_interest`` (in coins for options),
  ``creation_timestamp`` (milliseconds since the epoch: the time of this summary row) and, when present,
  ``mark_iv`` (percent). ``volume``, ``volume_usd``, ``last``, ``high``, ``low``, ``price_change``,
  ``interest_rate``, ``base_currency``, ``quote_currency`` are accepted and not used. A book summary carries no
  top-of-book sizes and no bid/ask IVs: ``bid_size``/``ask_size``/``bid_iv``/``ask_iv`` are NaN (``bid_iv`` /
  ``ask_iv`` are read when a response has them).

**Units.** Inverse options (``BTC-...``, ``ETH-...``; settled in the coin) are quoted **in the coin** per option on
one coin. They are converted to USD with the row's own ``underlying_price`` (the forward of its expiry), not with
the index: Deribit's mark is Black-76 on ``underlying_price`` divided by ``underlying_price``, so
``usd = coin_price * underlying_price`` gives back the USD price its vols refer to (the index would be off by the
basis, up to ~10 % on a long ETH expiry). This is the convention of :func:`keeper.quant.chains.chain_from_rows`, so a
chain parsed here agrees with the CSV loader's row by row. Linear options (``BTC_USDC-...``: settled in the quote
currency) are already quoted in USD(C) and are not converted. Strikes and forwards are USD; vols are stored as
fractions.

**Bad input.** A row that cannot be used is skipped and counted by reason in the :class:`LoadReport`
(``not_a_row``, ``bad_instrument_name``, ``not_an_option``, ``other_underlying``, ``bad_forward``,
``bad_timestamp``, ``expired``, ``bad_price``, ``bad_value``, ``duplicate_instrument``); a response that is not a
JSON-RPC answer of the expected shape, or a JSON-RPC error, raises :class:`DeribitResponseError` (one line). Prices
must be JSON numbers (``null`` = absent): a string, a boolean, NaN, an infinity or a negative price is
``bad_price``, never silently NaN. Rows are sorted by (expiry, strike, call before put, name), so two keepers that
receive the same rows in another order build the same chain.

:class:`DeribitApiSource` follows the protocols of :mod:`keeper.data.sources` (``spot(block)``,
``chain(block, spot)``) and never raises: a network failure, a venue error or a malformed answer is a
:class:`~keeper.data.sources.Skip`.
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import requests

from keeper.data.feed import BlockRef, Skip, SpotQuote
from keeper.errors import BadInput
from keeper.quant.chains import LoadedChain, LoadReport, OptionChain

log = logging.getLogger(__name__)

#: Deribit's production REST endpoint (JSON-RPC over HTTP GET).
DERIBIT_URL = "https://www.deribit.com/api/v2"
BOOK_SUMMARY = "public/get_book_summary_by_currency"
INDEX_PRICE = "public/get_index_price"
#: Every Deribit option expires at 08:00 UTC of the date in its name.
EXPIRY_HOUR_UTC = 8

_MONTHS = {m: i + 1 for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))}
# BTC-14MAY20-7875-C, ETH-9JAN24-1900-P, BTC_USDC-27DEC24-100000-C, XRP_USDC-28MAR25-0d625-P
_OPTION_NAME = re.compile(r"^([A-Z0-9]+)(?:_([A-Z0-9]+))?-(\d{1,2})([A-Z]{3})(\d{2})-(\d+(?:d\d+)?)-([CP])$")
# futures, perpetuals and combos of the same currency: well formed, just not options
_OTHER_KIND = re.compile(r"^[A-Z0-9]+(?:_[A-Z0-9]+)?-(?:PERPETUAL|\d{1,2}[A-Z]{3}\d{2}|[A-Z]{2,5}-.*)$")

#: Row-level reasons a book-summary row is skipped (the keys of ``LoadReport.rejected``).
ROW_REASONS = ("not_a_row", "bad_instrument_name", "not_an_option", "other_underlying", "bad_forward",
               "bad_timestamp", "expired", "bad_price", "bad_value", "duplicate_instrument")
_ANY = object()  # no settlement constraint (yet)
_PRICE_FIELDS = ("bid_price", "ask_price", "mark_price", "mid_price")
_VALUE_FIELDS = ("open_interest", "estimated_delivery_price", "mark_iv", "bid_iv", "ask_iv")


class DeribitResponseError(BadInput):
    """A Deribit API answer that cannot be used: a JSON-RPC error (``reason = "venue_error"``, ``code`` set) or a
    malformed answer (``reason = "bad_response"``). The message is one readable line."""

    def __init__(self, reason: str, detail: str, code: Optional[int] = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Instrument:
    """What a Deribit option name says: base coin, settlement (``None`` = the coin itself, inverse), expiry
    (unix seconds, 08:00 UTC), strike (USD) and call/put."""

    name: str
    currency: str
    settlement: Optional[str]
    expiry_ts: float
    strike: float
    is_call: bool

    @property
    def inverse(self) -> bool:
        """Quoted and settled in the coin (prices are converted with ``underlying_price``)."""
        return self.settlement is None


@dataclass(frozen=True)
class IndexPrice:
    """``public/get_index_price``'s result; ``timestamp`` is the envelope's ``usOut`` in seconds (NaN if absent)."""

    index_price: float
    estimated_delivery_price: float
    timestamp: float


def parse_instrument_name(name: Any) -> Instrument | str:
    """The option a Deribit instrument name describes, or the reason it does not describe one
    (``bad_instrument_name`` or ``not_an_option`` for futures, perpetuals and combos)."""
    if not isinstance(name, str):
        return "bad_instrument_name"
    m = _OPTION_NAME.match(name)
    if m is None:
        return "not_an_option" if _OTHER_KIND.match(name) else "bad_instrument_name"
    currency, settlement, day, month, year, strike_text, kind = m.groups()
    if month not in _MONTHS:
        return "bad_instrument_name"
    try:
        expiry = datetime(2000 + int(year), _MONTHS[month], int(day), EXPIRY_HOUR_UTC, tzinfo=timezone.utc)
    except ValueError:  # 31FEB24
        return "bad_instrument_name"
    strike = float(strike_text.replace("d", "."))
    if not (strike > 0 and math.isfinite(strike)):
        return "bad_instrument_name"
    return Instrument(name=name, currency=currency, settlement=settlement, expiry_ts=expiry.timestamp(),
                      strike=strike, is_call=kind == "C")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def unwrap(response: Any, method: str) -> Any:
    """The ``result`` of a JSON-RPC answer (text, bytes or already-decoded JSON); raises
    :class:`DeribitResponseError` for an ``error`` object or anything that is not such an answer."""
    if isinstance(response, (bytes, bytearray)):
        response = response.decode("utf-8", errors="replace")
    if isinstance(response, str):
        try:
            response = json.loads(response)
        except ValueError as exc:
            raise DeribitResponseError("bad_response", f"{method}: answer is not JSON ({exc})") from None
    if not isinstance(response, Mapping):
        raise DeribitResponseError("bad_response", f"{method}: answer is a JSON {type(response).__name__}, "
                                                   "not a JSON-RPC object")
    if "jsonrpc" in response and response["jsonrpc"] != "2.0":
        raise DeribitResponseError("bad_response", f"{method}: jsonrpc is {response['jsonrpc']!r}, not '2.0'")
    if "error" in response and response["error"] is not None:
        err = response["error"]
        if isinstance(err, Mapping):
            code = err.get("code")
            message = str(err.get("message", "")).strip() or "no message"
            data = err.get("data")
            extra = f" ({json.dumps(data, sort_keys=True)[:200]})" if data is not None else ""
            code_i = code if isinstance(code, int) and not isinstance(code, bool) else None
            raise DeribitResponseError("venue_error", f"{method}: Deribit error {code}: {message}{extra}", code_i)
        raise DeribitResponseError("venue_error", f"{method}: Deribit error {str(err)[:200]}")
    if "result" not in response:
        raise DeribitResponseError("bad_response", f"{method}: answer has neither 'result' nor 'error' "
                                                   f"(keys: {sorted(map(str, response))[:8]})")
    return response["result"]


def parse_index_price(response: Any) -> IndexPrice:
    """``public/get_index_price``'s answer; raises :class:`DeribitResponseError` unless ``index_price`` is a
    positive finite number (``estimated_delivery_price`` may be absent: NaN)."""
    result = unwrap(response, INDEX_PRICE)
    if not isinstance(result, Mapping):
        raise DeribitResponseError("bad_response", f"{INDEX_PRICE}: result is a JSON {type(result).__name__}, "
                                                   "not an object")
    price = result.get("index_price")
    if not (_is_number(price) and float(price) > 0):
        raise DeribitResponseError("bad_response", f"{INDEX_PRICE}: index_price {price!r} is not a positive number")
    edp = result.get("estimated_delivery_price")
    if edp is not None and not _is_number(edp):
        raise DeribitResponseError("bad_response",
                                   f"{INDEX_PRICE}: estimated_delivery_price {edp!r} is not a number")
    us_out = response.get("usOut") if isinstance(response, Mapping) else None
    ts = float(us_out) / 1e6 if _is_number(us_out) else math.nan
    return IndexPrice(float(price), float(edp) if edp is not None else math.nan, ts)


@dataclass
class _Row:
    inst: Instrument
    quote_ts: float
    forward: float
    bid: float
    ask: float
    mark: float
    index: float
    oi: float
    bid_iv: float
    ask_iv: float
    mark_iv: float


def _row(entry: Any, currency: Optional[str], settlement: Any) -> _Row | tuple[str, str]:
    """One book-summary entry as a row, or (reason, detail). ``currency``/``settlement``: what the row must have
    (``None`` currency: any; ``settlement`` ``None`` = inverse, :data:`_ANY` = any)."""
    if not isinstance(entry, Mapping):
        return "not_a_row", f"{type(entry).__name__} entry"
    name = entry.get("instrument_name")
    inst = parse_instrument_name(name)
    if isinstance(inst, str):
        return inst, f"instrument_name {name!r}"
    if currency is not None and inst.currency != currency:
        return "other_underlying", f"{name}: {inst.currency} in a {currency} chain"
    if settlement is not _ANY and inst.settlement != settlement:
        return "other_underlying", f"{name}: settled in {inst.settlement or inst.currency}, not " \
                                   f"{settlement or currency}"
    fwd = entry.get("underlying_price")
    if not (_is_number(fwd) and float(fwd) > 0):
        return "bad_forward", f"{name}: underlying_price {fwd!r}"
    ts = entry.get("creation_timestamp")
    if not (_is_number(ts) and float(ts) > 0):
        return "bad_timestamp", f"{name}: creation_timestamp {ts!r}"
    quote_ts = float(ts) / 1000.0  # milliseconds
    if inst.expiry_ts <= quote_ts:
        return "expired", f"{name}: expired before its summary time"
    values: dict[str, float] = {}
    for field_name in _PRICE_FIELDS + _VALUE_FIELDS:
        raw = entry.get(field_name)
        if raw is None:
            values[field_name] = math.nan
        elif _is_number(raw) and (field_name not in _PRICE_FIELDS or float(raw) >= 0):
            values[field_name] = float(raw)
        else:
            reason = "bad_price" if field_name in _PRICE_FIELDS else "bad_value"
            return reason, f"{name}: {field_name} {raw!r}"
    usd = float(fwd) if inst.inverse else 1.0
    return _Row(inst=inst, quote_ts=quote_ts, forward=float(fwd), bid=values["bid_price"] * usd,
                ask=values["ask_price"] * usd, mark=values["mark_price"] * usd,
                index=values["estimated_delivery_price"], oi=values["open_interest"],
                bid_iv=values["bid_iv"] / 100.0, ask_iv=values["ask_iv"] / 100.0, mark_iv=values["mark_iv"] / 100.0)


def parse_book_summary(response: Any, *, currency: Optional[str] = None, settlement: Optional[str] = None,
                       index: IndexPrice | float | None = None, asof: Optional[float] = None) -> LoadedChain:
    """An :class:`OptionChain` (USD prices, see the module docstring) from a ``get_book_summary_by_currency``
    answer.

    ``currency`` is the base coin to keep (``"ETH"``), ``settlement`` the settlement currency of linear options
    (``"USDC"``: only ``ETH_USDC-...`` rows; ``None``: only inverse ``ETH-...`` rows); both default to the first
    usable row's, and rows of another coin or settlement are ``other_underlying``. ``asof`` defaults to the
    latest ``creation_timestamp``. ``spot`` is ``index`` (a :class:`IndexPrice` or a price) when given, else the
    ``estimated_delivery_price`` of the latest row (as the CSV loader takes the latest row's index). Rows that
    cannot be used are counted in ``report.rejected`` by reason; an answer of the wrong shape raises
    :class:`DeribitResponseError`.
    """
    result = unwrap(response, BOOK_SUMMARY)
    if not isinstance(result, list):
        raise DeribitResponseError("bad_response", f"{BOOK_SUMMARY}: result is a JSON {type(result).__name__}, "
                                                   "not a list of instruments")
    want = currency.strip().upper() if currency else None
    want_settlement: Any = settlement.strip().upper() if settlement else (None if want else _ANY)
    rows: list[_Row] = []
    seen: set[str] = set()
    rejected: dict[str, int] = {}
    examples: dict[str, str] = {}
    for entry in result:
        got = _row(entry, want, want_settlement)
        if isinstance(got, _Row) and got.inst.name in seen:
            got = ("duplicate_instrument", f"{got.inst.name} listed twice")
        if isinstance(got, tuple):
            reason, detail = got
            rejected[reason] = rejected.get(reason, 0) + 1
            examples.setdefault(reason, detail)
            continue
        want = want or got.inst.currency
        want_settlement = got.inst.settlement if want_settlement is _ANY else want_settlement
        seen.add(got.inst.name)
        rows.append(got)
    rows.sort(key=lambda r: (r.inst.expiry_ts, r.inst.strike, not r.inst.is_call, r.inst.name))

    def col(get) -> np.ndarray:
        return np.asarray([get(r) for r in rows], dtype=np.float64)

    quote_ts = col(lambda r: r.quote_ts)
    index_px = col(lambda r: r.index)
    if asof is None:
        asof = float(np.max(quote_ts)) if rows else math.nan
    if isinstance(index, IndexPrice):
        spot = index.index_price
    elif index is not None:
        spot = float(index)
    else:
        spot = float(index_px[int(np.argmax(quote_ts))]) if rows else math.nan
    chain = OptionChain(
        underlying=want or "", asof=float(asof), spot=spot, quote_ts=quote_ts,
        expiry_ts=col(lambda r: r.inst.expiry_ts), strike=col(lambda r: r.inst.strike),
        is_call=np.asarray([r.inst.is_call for r in rows], dtype=bool),
        bid=col(lambda r: r.bid), ask=col(lambda r: r.ask),
        bid_size=np.full(len(rows), math.nan), ask_size=np.full(len(rows), math.nan),
        mark=col(lambda r: r.mark), forward=col(lambda r: r.forward), index_price=index_px,
        open_interest=col(lambda r: r.oi), bid_iv=col(lambda r: r.bid_iv), ask_iv=col(lambda r: r.ask_iv),
        mark_iv=col(lambda r: r.mark_iv), instrument=tuple(r.inst.name for r in rows))
    if rejected:
        log.warning("deribit book summary: skipped %d of %d rows: %s (first of each: %s)", sum(rejected.values()),
                    len(result), dict(sorted(rejected.items())), examples)
    report = LoadReport(rows_read=len(result), rows_kept=len(rows), rejected=dict(sorted(rejected.items())))
    return LoadedChain(chain=chain, report=report)


class DeribitUnavailable(BadInput):
    """The venue (or the saved folder) could not be read after every retry; one line."""


class DeribitApiSource:
    """Spot (``public/get_index_price``) and option chain (``public/get_book_summary_by_currency``,
    ``kind=option``) from Deribit's API at ``url`` (e.g. :data:`DERIBIT_URL`), or from a ``folder`` of saved
    answers named after the method (``get_index_price.json``, ``get_book_summary_by_currency.json``).

    ``currency`` is the base coin (``"ETH"``). Inverse options (the default) are requested with
    ``currency=ETH``; for linear options set ``settlement="USDC"``: the request is ``currency=USDC`` and only the
    ``ETH_USDC-...`` rows are kept. ``index_name`` defaults to ``eth_usd`` (``eth_usdc`` for linear).

    Live reads use ``timeout_s`` per request and up to ``retries`` further attempts on a connection error, a
    timeout, HTTP 429 or 5xx (waiting ``backoff_s * 2**i``); a JSON-RPC error is not retried. Neither method raises:
    failures are :class:`Skip` with reason ``source_unavailable`` (network, HTTP, missing file), ``venue_error``
    (a JSON-RPC error), ``bad_response`` (not an answer of the documented shape, or a non-positive index),
    ``empty_chain`` (no usable option row), ``stale_chain`` (the newest summary row is older than ``max_age_s`` at
    the block's timestamp; off by default) or ``source_error`` (anything unforeseen). ``last_report`` holds the
    :class:`LoadReport` of the last parsed chain (rows skipped by reason).
    """

    def __init__(self, name: str = "deribit", *, currency: str, url: Optional[str] = None,
                 folder: str | Path | None = None, settlement: Optional[str] = None,
                 index_name: Optional[str] = None, timeout_s: float = 5.0,
                 retries: int = 2, backoff_s: float = 0.25, max_age_s: Optional[float] = None,
                 session: Optional[requests.Session] = None) -> None:
        if (url is None) == (folder is None):
            raise ValueError("DeribitApiSource needs exactly one of url and folder")
        if not currency or not currency.strip():
            raise ValueError("DeribitApiSource needs a currency (e.g. 'ETH')")
        self.name = name
        self.currency = currency.strip().upper()
        self.settlement = settlement.strip().upper() if settlement else None
        self.index_name = index_name or f"{self.currency}_{self.settlement or 'USD'}".lower()
        self.url = url.rstrip("/") if url is not None else None
        self.folder = Path(folder) if folder is not None else None
        self.timeout_s = float(timeout_s)
        self.retries = max(int(retries), 0)
        self.backoff_s = float(backoff_s)
        self.max_age_s = max_age_s
        self.session = session or requests.Session()
        self.last_report: Optional[LoadReport] = None

    # -- transport -------------------------------------------------------------------------------------------
    def fetch(self, method: str, params: Mapping[str, str]) -> Any:
        """The decoded JSON answer of ``method`` (live or saved); raises :class:`DeribitUnavailable` when it cannot
        be read and :class:`DeribitResponseError` when it is not JSON."""
        if self.folder is not None:
            path = self.folder / (method.rsplit("/", 1)[-1] + ".json")
            try:
                text = path.read_text()
            except OSError as exc:
                raise DeribitUnavailable(f"{method}: cannot read {path}: {exc.strerror or exc}") from None
            try:
                return json.loads(text)
            except ValueError as exc:
                raise DeribitResponseError("bad_response", f"{method}: {path} is not JSON ({exc})") from None
        url = f"{self.url}/{method}"
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self.session.get(url, params=dict(params), timeout=self.timeout_s)
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = f"HTTP {resp.status_code}"
                continue
            try:
                body = resp.json()
            except ValueError:
                if resp.status_code != 200:
                    raise DeribitUnavailable(f"{method}: HTTP {resp.status_code} from {url}") from None
                raise DeribitResponseError("bad_response", f"{method}: answer is not JSON "
                                                           f"({resp.text[:80]!r})") from None
            return body  # a 4xx JSON-RPC error body is decoded by unwrap() into a venue_error
        raise DeribitUnavailable(f"{method}: {url} unavailable after {self.retries + 1} attempts ({last})")

    def _skip(self, exc: Exception) -> Skip:
        if isinstance(exc, DeribitResponseError):
            return Skip(self.name, exc.reason, str(exc))
        if isinstance(exc, DeribitUnavailable):
            return Skip(self.name, "source_unavailable", str(exc))
        return Skip(self.name, "source_error", f"{type(exc).__name__}: {exc}")

    # -- the protocols of keeper.data.sources ----------------------------------------------------------------
    def index(self) -> IndexPrice:
        """The current index (raises; :meth:`spot` is the non-raising form)."""
        return parse_index_price(self.fetch(INDEX_PRICE, {"index_name": self.index_name}))

    def load_chain(self) -> LoadedChain:
        """The current option chain with its report (raises; :meth:`chain` is the non-raising form)."""
        answer = self.fetch(BOOK_SUMMARY, {"currency": self.settlement or self.currency, "kind": "option"})
        return parse_book_summary(answer, currency=self.currency, settlement=self.settlement)

    def spot(self, block: BlockRef) -> SpotQuote | Skip:
        try:
            ix = self.index()
        except Exception as exc:  # never raise into the cycle
            return self._skip(exc)
        ts = ix.timestamp if math.isfinite(ix.timestamp) else float(block.timestamp)
        return SpotQuote(self.name, ix.index_price, 0.0, ts)

    def chain(self, block: BlockRef, spot: float) -> OptionChain | Skip:
        try:
            loaded = self.load_chain()
        except Exception as exc:  # never raise into the cycle
            return self._skip(exc)
        self.last_report = loaded.report
        c = loaded.chain
        if len(c) == 0:
            return Skip(self.name, "empty_chain", f"{BOOK_SUMMARY}: no usable {self.currency} option "
                                                  f"(read {loaded.report.rows_read}, skipped {loaded.report.rejected})")
        if self.max_age_s is not None and float(block.timestamp) - c.asof > self.max_age_s:
            return Skip(self.name, "stale_chain", f"newest summary row is {float(block.timestamp) - c.asof:.0f}s "
                                                  f"old at block {block.number} (max {self.max_age_s:g}s)")
        return c

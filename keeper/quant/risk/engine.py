"""Portfolio risk engine: equity, VaR/ES, worst-scenario loss, Greeks and margins for every account.

Layout of the computation (see docs/risk.md for the figures):

1. Every *series* (option or forward) and every *collateral asset* is revalued once per scenario: a dense
   (n_columns x n_scenarios) matrix of value changes per unit held, columns = series then collateral assets.
2. Accounts are aggregated by a sparse product: (accounts x columns, CSR) @ (columns x scenarios), one chunk of
   accounts at a time into a reused buffer. scipy's CSR kernel is single-threaded and sums each row's entries in
   the CSR order (sorted column indices), so the result is bit-identical across runs, processes and BLAS thread
   settings; no BLAS call is on the path.
3. VaR/ES come from an in-place ``ndarray.partition`` of each chunk for the few order statistics needed, then a
   sort of only that tail.

Conventions (units as in docs/ARCHITECTURE.md; floats in quote units here, integers only when attesting through
:func:`to_quote_units`):

* equity = sum over collateral of amount x price x (1 - haircut) + sum over series of size x mark.
* scenario P&L = sum over series of size x (model value after the move and ``horizon`` of time decay - model value
  now) + sum over collateral of amount x (1 - haircut) x price x (exp(move of its underlying) - 1); collateral whose
  underlying index is -1 (the quote stablecoin) does not move. Model values (Black-76 on the given vols) are the
  base of the P&L so that scenario losses measure moves, not mark-vs-model gaps.
* loss = -P&L. VaR_a = the ceil(a N)-th smallest loss; ES_b = mean of the N - floor(b N) largest losses.
* maintenance margin (MM), all terms >= 0:
  ``(max(ES_b, grid worst weighted loss, stress ES_b, 0) + short premium charge + gamma add-on + vega add-on)
  x (1 + t g / (g + G))`` where stress ES_b is the ES over the correlation stress set when one is given
  (``keeper.quant.risk.scenarios.correlation_stress_scenarios``: cross-asset correlation 1), else 0
  where g is the account's gross cash gamma, so the requirement tightens as |gamma| grows; IM = k x MM.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np
import scipy.sparse as sp
import structlog
from eth_utils import keccak

from keeper.codec.canonical import inputs_hash
from keeper.codec.fast_json import fast_canonical_json
from keeper.quant.pricing import black76_greeks, black76_price
from keeper.quant.risk.scenarios import (
    DAYS_PER_YEAR,
    MertonParams,
    ScenarioSet,
    correlation_stress_scenarios,
    grid_scenarios,
    monte_carlo_scenarios,
    seed_from_block_hash,
)
from keeper.units import to_base_units

try:  # scipy's CSR x dense kernel, accumulating into a caller-owned buffer (no allocation per chunk)
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # pragma: no cover - fall back to the public product (same kernel, allocates)
    _csr_matvecs = None

#: Series kinds.
PUT, CALL, FORWARD = 0, 1, 2
#: Collateral underlying index meaning "does not move" (the quote asset).
NO_UNDERLYING = -1

VolFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``vol_fn(strike, expiry_after, forward_after, base_vol, vol_shock) -> vol_after``: every argument broadcast to
(n_series, n_scenarios) except strike/base_vol (n_series, 1); lets a surface (e.g. keeper.quant.surface.VolSurface)
supply smile-aware vols after a move. The default is sticky strike: ``base_vol * exp(vol_shock)``."""


def _f64(a: object, name: str, ndim: int) -> np.ndarray:
    arr = np.array(a, dtype=np.float64, order="C")    # own copy: it is frozen below
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim}-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: non-finite values")
    arr.setflags(write=False)
    return arr


def _i64(a: object, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(a))
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected a 1-d integer array, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class SeriesTable:
    """Option/forward series (one row each): underlying index, strike, expiry (years), kind, discount factor, and
    carry: the series' forward over its underlying's spot (``F_T / S``; 1 = priced at spot). Every series is priced
    on ``forward[underlying] * carry`` and moves with its underlying."""

    underlying: np.ndarray
    strike: np.ndarray  # [quote units per whole underlying unit]
    expiry: np.ndarray  # [years, ACT/365]
    kind: np.ndarray  # PUT, CALL or FORWARD
    discount: np.ndarray  # [fraction, (0, 1]]
    carry: np.ndarray | None = None  # [ratio, > 0] forward of the series' expiry / spot; None: all 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "underlying", _i64(self.underlying, "series.underlying"))
        object.__setattr__(self, "kind", _i64(self.kind, "series.kind"))
        if self.carry is None:
            object.__setattr__(self, "carry", np.ones(np.shape(self.strike)[0] if np.ndim(self.strike) else 0))
        for name in ("strike", "expiry", "discount", "carry"):
            object.__setattr__(self, name, _f64(getattr(self, name), f"series.{name}", 1))
        n = self.underlying.size
        for name in ("strike", "expiry", "kind", "discount", "carry"):
            if getattr(self, name).size != n:
                raise ValueError(f"series.{name}: length {getattr(self, name).size} != {n}")
        if np.any(self.strike <= 0) or np.any(self.expiry < 0):
            raise ValueError("series: strikes must be > 0 and expiries >= 0")
        if np.any(self.carry <= 0):
            raise ValueError("series: carry (forward / spot) must be > 0")
        if np.any((self.discount <= 0) | (self.discount > 1)):
            raise ValueError("series: discount factors must lie in (0, 1]")
        if not np.all(np.isin(self.kind, (PUT, CALL, FORWARD))):
            raise ValueError("series: kind must be 0 (put), 1 (call) or 2 (forward)")
        if np.any(self.underlying < 0):
            raise ValueError("series: underlying index must be >= 0")

    @property
    def n(self) -> int:
        """Number of series."""
        return int(self.underlying.size)


@dataclass(frozen=True)
class CollateralTable:
    """Collateral assets (one row each): price in quote units, haircut in [0, 1), underlying index or -1."""

    price: np.ndarray
    haircut: np.ndarray
    underlying: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "price", _f64(self.price, "collateral.price", 1))
        object.__setattr__(self, "haircut", _f64(self.haircut, "collateral.haircut", 1))
        object.__setattr__(self, "underlying", _i64(self.underlying, "collateral.underlying"))
        if not (self.price.size == self.haircut.size == self.underlying.size):
            raise ValueError("collateral: price, haircut and underlying must have equal lengths")
        if np.any(self.price < 0) or np.any((self.haircut < 0) | (self.haircut >= 1)):
            raise ValueError("collateral: prices must be >= 0 and haircuts in [0, 1)")
        if np.any(self.underlying < NO_UNDERLYING):
            raise ValueError("collateral: underlying index must be >= -1")

    @property
    def n(self) -> int:
        """Number of collateral assets."""
        return int(self.price.size)


@dataclass(frozen=True)
class RiskParams:
    """Margin configuration (see module docstring and docs/risk.md).

    Attributes:
        var_level: VaR confidence (0.99).
        es_level: ES confidence (0.975).
        short_premium_charge: fraction of the model value of net short options added to MM (1.0, as Deribit's
            standard margin adds the mark of short options); >= 1 makes adding a short option never lower MM.
        gamma_move: spot move (fraction) at which cash gamma is measured: 0.5 x gamma x (F x move)^2.
        gamma_addon: multiple of the account's net short cash gamma per underlying added to MM.
        vega_shift: absolute vol move (0.05 = 5 vol points) charged on net short vega per underlying.
        gamma_tightening: t, the most MM can be scaled up by gross cash gamma (0.5 -> up to x1.5).
        gamma_scale: G, gross cash gamma (quote units) at which half of the tightening applies.
        im_multiplier: k in IM = k x MM (>= 1).
    """

    var_level: float = 0.99
    es_level: float = 0.975
    short_premium_charge: float = 1.0
    gamma_move: float = 0.10
    gamma_addon: float = 0.5
    vega_shift: float = 0.05
    gamma_tightening: float = 0.5
    gamma_scale: float = 1.0e6
    im_multiplier: float = 1.5

    def __post_init__(self) -> None:
        if not (0.5 <= self.var_level < 1 and 0.5 <= self.es_level < 1):
            raise ValueError("params: var_level and es_level must lie in [0.5, 1)")
        if min(self.short_premium_charge, self.gamma_move, self.gamma_addon, self.vega_shift,
               self.gamma_tightening) < 0 or self.gamma_scale <= 0 or self.im_multiplier < 1:
            raise ValueError("params: charges must be >= 0, gamma_scale > 0 and im_multiplier >= 1")


def _canonical_csr(m: object, shape: tuple[int, int] | None) -> sp.csr_matrix:
    csr = sp.csr_matrix(m, dtype=np.float64, copy=True)
    if shape is not None and csr.shape != shape:
        raise ValueError(f"positions: shape {csr.shape} != {shape}")
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.sort_indices()
    csr.indptr = csr.indptr.astype(np.int64)
    csr.indices = csr.indices.astype(np.int64)
    if not np.all(np.isfinite(csr.data)):
        raise ValueError("positions: non-finite sizes")
    return csr


@dataclass(frozen=True)
class RiskInputs:
    """Everything one risk run depends on (besides the scenario sets and an optional vol function).

    Attributes:
        series: the series table (n_series rows).
        positions: (n_accounts x n_series) signed sizes in contracts, CSR (canonicalised: summed duplicates, no
            explicit zeros, sorted indices).
        collateral: (n_accounts x n_assets) amounts held, in whole units of each asset.
        collateral_assets: price/haircut/underlying per asset.
        forward: forward (= spot, zero carry) per underlying, quote units.
        vols: Black-76 implied vol per series (forwards ignore theirs; must still be > 0).
        marks: mark price per series, quote units per contract.
        params: margin configuration.
    """

    series: SeriesTable
    positions: sp.csr_matrix
    collateral: np.ndarray
    collateral_assets: CollateralTable
    forward: np.ndarray
    vols: np.ndarray
    marks: np.ndarray
    params: RiskParams = field(default_factory=RiskParams)

    def __post_init__(self) -> None:
        n_series = self.series.n
        collateral = _f64(self.collateral, "collateral", 2)
        if collateral.shape[1] != self.collateral_assets.n:
            raise ValueError(f"collateral: {collateral.shape[1]} columns != {self.collateral_assets.n} assets")
        if np.any(collateral < 0):
            raise ValueError("collateral: amounts must be >= 0")
        positions = _canonical_csr(self.positions, (collateral.shape[0], n_series))
        for arr in (positions.data, positions.indices, positions.indptr):
            arr.setflags(write=False)                 # the dataclass is frozen; so are its arrays
        object.__setattr__(self, "collateral", collateral)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "forward", _f64(self.forward, "forward", 1))
        object.__setattr__(self, "vols", _f64(self.vols, "vols", 1))
        object.__setattr__(self, "marks", _f64(self.marks, "marks", 1))
        if np.any(self.forward <= 0):
            raise ValueError("forward: must be > 0")
        if self.vols.size != n_series or self.marks.size != n_series:
            raise ValueError("vols and marks need one value per series")
        if np.any(self.vols <= 0):
            raise ValueError("vols: must be > 0")
        n_und = self.forward.size
        if n_series and self.series.underlying.max() >= n_und:
            raise ValueError("series: underlying index out of range of forward")
        if self.collateral_assets.n and self.collateral_assets.underlying.max() >= n_und:
            raise ValueError("collateral: underlying index out of range of forward")

    @property
    def n_accounts(self) -> int:
        """Number of accounts."""
        return int(self.collateral.shape[0])

    @property
    def n_underlyings(self) -> int:
        """Number of underlyings."""
        return int(self.forward.size)


@dataclass(frozen=True)
class ScreenedMarketData:
    """Per-series market data after screening (see :func:`screen_market_data`).

    ``vols``/``marks``/``positions`` are safe to build :class:`RiskInputs` from; ``bad_series`` lists the series
    whose vol or mark was unusable (their positions are removed and must not be valued), ``unattestable_accounts``
    the accounts that held any of them: their results are incomplete and must not be signed.
    """

    vols: np.ndarray
    marks: np.ndarray
    positions: sp.csr_matrix
    bad_series: np.ndarray
    unattestable_accounts: np.ndarray


def screen_market_data(vols: np.ndarray, marks: np.ndarray, positions: sp.spmatrix) -> ScreenedMarketData:
    """Skip series with a non-finite or non-positive vol or a non-finite mark, and log each one.

    The bad series get a placeholder vol of 1.0 and mark 0.0 and their column in the positions is emptied, so one
    failed surface slice does not stop the risk run for every other account; the accounts that held them are
    returned as unattestable (the keeper must not sign their numbers).
    """

    vols = np.asarray(vols, dtype=np.float64).copy()
    marks = np.asarray(marks, dtype=np.float64).copy()
    bad = ~np.isfinite(vols) | ~(vols > 0) | ~np.isfinite(marks)
    bad_idx = np.flatnonzero(bad)
    csc = sp.csc_matrix(positions, dtype=np.float64, copy=True)
    affected = np.unique(np.concatenate([csc.indices[csc.indptr[j]:csc.indptr[j + 1]] for j in bad_idx]
                                        or [np.zeros(0, dtype=np.int64)])).astype(np.int64)
    if bad_idx.size:
        log = structlog.get_logger("keeper.quant.risk.engine")
        for j in bad_idx.tolist():
            log.warning("risk_series_skipped", series=j, vol=float(vols[j]), mark=float(marks[j]),
                        reason="non-finite or non-positive vol, or non-finite mark")
        log.warning("risk_accounts_unattestable", count=int(affected.size), series=bad_idx.tolist())
        keep = np.ones(vols.size)
        keep[bad_idx] = 0.0
        csc = csc @ sp.diags(keep)
        vols[bad_idx], marks[bad_idx] = 1.0, 0.0
    return ScreenedMarketData(vols, marks, _canonical_csr(csc, None), bad_idx, affected)


def _to_plain(inputs: RiskInputs) -> dict:
    p = inputs.positions
    return {
        # carry is written only when some series is not priced at spot, so books priced at spot hash as before
        "series": {f.name: getattr(inputs.series, f.name) for f in fields(SeriesTable)
                   if f.name != "carry" or np.any(inputs.series.carry != 1.0)},
        "positions": {"shape": list(p.shape), "indptr": p.indptr, "indices": p.indices, "data": p.data},
        "collateral": inputs.collateral,
        "collateral_assets": {f.name: getattr(inputs.collateral_assets, f.name) for f in fields(CollateralTable)},
        "forward": inputs.forward,
        "vols": inputs.vols,
        "marks": inputs.marks,
        "params": {f.name: float(getattr(inputs.params, f.name)) for f in fields(RiskParams)},
    }


def serialize_risk_inputs(inputs: RiskInputs) -> bytes:
    """Canonical JSON of the inputs (keeper.codec.canonical's format: sorted keys, floats as exact IEEE-754 hex), the
    bytes every keeper hashes."""
    return fast_canonical_json(_to_plain(inputs))


def risk_inputs_hash(inputs: RiskInputs) -> bytes:
    """keccak-256 of :func:`serialize_risk_inputs` (32 bytes), equal to ``keeper.codec.canonical.inputs_hash`` of the
    same plain structure."""
    return keccak(serialize_risk_inputs(inputs))


def from_canonical(v: object) -> object:
    if isinstance(v, dict) and set(v) == {"f"}:
        return float.fromhex(v["f"])
    if isinstance(v, dict):
        return {k: from_canonical(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_canonical(x) for x in v]
    return v


def deserialize_risk_inputs(blob: bytes) -> RiskInputs:
    """Inverse of :func:`serialize_risk_inputs` (exact: floats round-trip through their hex form)."""
    d = from_canonical(json.loads(blob))
    s, c, p = d["series"], d["collateral_assets"], d["positions"]
    n_assets = len(c["price"])
    collateral = np.asarray(d["collateral"], dtype=np.float64).reshape(-1, n_assets)
    positions = sp.csr_matrix((np.asarray(p["data"], dtype=np.float64), np.asarray(p["indices"], dtype=np.int64),
                               np.asarray(p["indptr"], dtype=np.int64)), shape=tuple(p["shape"]))
    return RiskInputs(
        series=SeriesTable(np.asarray(s["underlying"], dtype=np.int64), s["strike"], s["expiry"],
                           np.asarray(s["kind"], dtype=np.int64), s["discount"], s.get("carry")),
        positions=positions, collateral=collateral,
        collateral_assets=CollateralTable(c["price"], c["haircut"], np.asarray(c["underlying"], dtype=np.int64)),
        forward=d["forward"], vols=d["vols"], marks=d["marks"], params=RiskParams(**d["params"]))


# ---------------------------------------------------------------------------------------------------------------
# Revaluation (one pass over series x scenarios)
# ---------------------------------------------------------------------------------------------------------------

def _series_values(forward: np.ndarray, strike: np.ndarray, expiry: np.ndarray, vol: np.ndarray,
                   kind: np.ndarray, discount: np.ndarray) -> np.ndarray:
    """Value per contract (rows = series, broadcasting): Black-76 (keeper.quant.pricing) for options, D (F - K) for
    forwards; expiry <= 0 gives the discounted intrinsic value."""
    out = np.asarray(black76_price(forward, strike, np.maximum(expiry, 0.0), vol, kind == CALL, discount),
                     dtype=np.float64)
    lin = np.flatnonzero(np.asarray(kind).reshape(-1) == FORWARD)    # kind is one per row (series)
    if lin.size:
        f = np.broadcast_to(forward, out.shape)[lin]
        k = np.broadcast_to(strike, out.shape)[lin]
        d = np.broadcast_to(discount, out.shape)[lin]
        out[lin] = d * (f - k)
    return out


def model_values(inputs: RiskInputs) -> np.ndarray:
    """Model value now of each series (per contract, quote units): Black-76 on the inputs' vols."""
    s = inputs.series
    return _series_values(series_forwards(inputs), s.strike, s.expiry, inputs.vols, s.kind, s.discount)


def series_forwards(inputs: RiskInputs) -> np.ndarray:
    """The forward each series is priced on: its underlying's forward times the series' carry."""
    return inputs.forward[inputs.series.underlying] * inputs.series.carry


@dataclass(frozen=True)
class SeriesGreeks:
    """Greeks per series (per contract) from keeper.quant.pricing.black76_greeks: delta and gamma on the forward,
    vega per 1.00 vol, theta = -dV/dT per year. Forwards: delta = D, others 0."""

    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray


def series_greeks(inputs: RiskInputs) -> SeriesGreeks:
    """Black-76 Greeks of every series at the current forward and vol."""
    s = inputs.series
    g = black76_greeks(series_forwards(inputs), s.strike, s.expiry, inputs.vols, s.kind == CALL, s.discount)
    lin = s.kind == FORWARD
    zero = np.zeros(s.n)
    return SeriesGreeks(np.where(lin, s.discount, g.delta), np.where(lin, zero, g.gamma),
                        np.where(lin, zero, g.vega), np.where(lin, zero, g.theta))


def revalue(inputs: RiskInputs, scenarios: ScenarioSet, vol_fn: VolFunction | None = None,
            base: np.ndarray | None = None) -> np.ndarray:
    """Value change per unit held of every series then every collateral asset, in every scenario.

    Returns a C-contiguous (n_series + n_assets, n_scenarios) float64 matrix: rows for series hold
    ``model value after the move and horizon decay - model value now``; rows for collateral hold
    ``price x (exp(move of its underlying) - 1)`` (zero for the quote asset). Each series is priced once per
    scenario, whatever the number of accounts.
    """
    if scenarios.n_underlyings != inputs.n_underlyings:
        raise ValueError(f"scenario set moves {scenarios.n_underlyings} underlyings, inputs have "
                         f"{inputs.n_underlyings}")
    s, ca = inputs.series, inputs.collateral_assets
    n_scen = scenarios.n_scenarios
    growth = np.exp(scenarios.log_spot.T)                       # (n_und, n_scen)
    out = np.empty((s.n + ca.n, n_scen))
    if s.n:
        v0 = model_values(inputs) if base is None else base
        # an expired series' payoff is fixed by its settlement price (the average of attested prices over the window
        # before expiry, already past): it does not move with its underlying (docs/risk.md)
        f_after = series_forwards(inputs)[:, None] * np.where((s.expiry > 0)[:, None], growth[s.underlying], 1.0)
        t_after = np.maximum(s.expiry - scenarios.horizon, 0.0)[:, None]
        if vol_fn is None:
            vol_after = inputs.vols[:, None] * np.exp(scenarios.vol_shock.T)[s.underlying]
        else:
            vol_after = np.asarray(vol_fn(s.strike[:, None], np.broadcast_to(t_after, f_after.shape), f_after,
                                          inputs.vols[:, None], scenarios.vol_shock.T[s.underlying]),
                                   dtype=np.float64)
            if vol_after.shape != f_after.shape or not np.all(np.isfinite(vol_after)) or np.any(vol_after <= 0):
                raise ValueError("vol_fn must return finite positive vols of shape (n_series, n_scenarios)")
        # discount to the payment date after the horizon at the same continuously compounded rate: D^(T_h / T)
        d_after = np.where(s.expiry > 0, s.discount ** (t_after[:, 0] / np.where(s.expiry > 0, s.expiry, 1.0)),
                           s.discount)
        out[:s.n] = _series_values(f_after, s.strike[:, None], t_after, vol_after, s.kind[:, None], d_after[:, None])
        out[:s.n] -= v0[:, None]
    if ca.n:
        moving = ca.underlying >= 0
        out[s.n:] = 0.0
        out[s.n:][moving] = ca.price[moving, None] * np.expm1(scenarios.log_spot.T[ca.underlying[moving]])
    return out


def sticky_moneyness_vol_fn(implied_vol_by_underlying: Sequence[Callable[[np.ndarray, np.ndarray, np.ndarray],
                                                                          np.ndarray]],
                            series_underlying: np.ndarray) -> VolFunction:
    """A :data:`VolFunction` reading each underlying's smile after the move (sticky moneyness), times the scenario's
    vol shock: ``vol_after = implied_vol_u(K, T_after, F_after) * exp(vol_shock)``.

    ``implied_vol_by_underlying[u]`` is any vectorized ``(strike, expiry, forward) -> vol`` callable, e.g. the bound
    method ``VolSurface.implied_vol`` of keeper.quant.surface (the engine does not import the surface). Where the callable
    gives no finite positive vol (expired after the horizon, outside the surface) the series' base vol is used.
    """
    series_underlying = np.asarray(series_underlying)

    def vol_fn(strike, expiry_after, forward_after, base_vol, vol_shock):
        out = np.broadcast_to(base_vol, forward_after.shape).copy()
        strike_full = np.broadcast_to(strike, forward_after.shape)
        for u, implied_vol in enumerate(implied_vol_by_underlying):
            rows = np.flatnonzero(series_underlying == u)
            if rows.size:
                with np.errstate(invalid="ignore", divide="ignore"):
                    v = np.asarray(implied_vol(strike_full[rows], expiry_after[rows], forward_after[rows]),
                                   dtype=np.float64)
                ok = np.isfinite(v) & (v > 0) & (expiry_after[rows] > 0)
                out[rows] = np.where(ok, v, out[rows])
        return out * np.exp(vol_shock)

    return vol_fn


def exposure_matrix(inputs: RiskInputs) -> sp.csr_matrix:
    """(n_accounts x (n_series + n_assets)) CSR: position sizes, then collateral amounts x (1 - haircut)."""
    coll = sp.csr_matrix(inputs.collateral * (1.0 - inputs.collateral_assets.haircut)[None, :])
    return _canonical_csr(sp.hstack([inputs.positions, coll], format="csr"), None)


# ---------------------------------------------------------------------------------------------------------------
# Aggregation and tail statistics
# ---------------------------------------------------------------------------------------------------------------

def _order_stat_indices(n: int, var_level: float, es_level: float) -> tuple[int, int, int]:
    """(0-based index in ascending P&L of VaR_var, of VaR_es, count of ES tail) for n scenarios."""
    eps = 1e-9
    j_var = min(n, max(1, math.ceil(var_level * n - eps)))     # VaR = j-th smallest loss
    j_es = min(n, max(1, math.ceil(es_level * n - eps)))
    m_es = max(1, n - math.floor(es_level * n + eps))          # ES = mean of the m largest losses
    return n - j_var, n - j_es, m_es


@dataclass(frozen=True)
class TailStats:
    """Per-account tail statistics of a sample scenario set (losses positive)."""

    var: np.ndarray
    var_at_es_level: np.ndarray
    es: np.ndarray
    worst_loss: np.ndarray
    #: with ``shortfall_equity``: :func:`shortfall_by_scenario` of the same P&L, bit for bit (else None)
    shortfall: np.ndarray | None = None


def _row_sum(m: np.ndarray) -> np.ndarray:
    """Sum of each row, adding columns strictly left to right (no pairwise/SIMD reassociation, whatever the
    memory alignment), so every keeper gets the same bits."""
    cols = np.ascontiguousarray(np.asarray(m, dtype=np.float64).T)
    acc = np.zeros(cols.shape[1])
    for j in range(cols.shape[0]):
        acc += cols[j]
    return acc


def _matmul_into(a: sp.csr_matrix, x: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """buf[:a.shape[0]] = a @ x with scipy's CSR kernel (fixed summation order), reusing ``buf``."""
    rows = a.shape[0]
    y = buf[:rows]
    if _csr_matvecs is None:
        y[...] = a @ x
        return y
    y.fill(0.0)
    _csr_matvecs(rows, a.shape[1], x.shape[1], a.indptr, a.indices, a.data, x.ravel(), y.ravel())
    return y


def _rows_matmul_into(m: sp.csr_matrix, a: int, b: int, x: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """buf[:b - a] = m[a:b] @ x: the same kernel on rows ``a..b`` taken as views of ``m``'s arrays (scipy's row
    slicing costs ~1 ms of Python per chunk; the entries and their order are the same, so are the bits)."""
    rows = b - a
    y = buf[:rows]
    if _csr_matvecs is None:
        y[...] = m[a:b] @ x
        return y
    lo, hi = int(m.indptr[a]), int(m.indptr[b])
    y.fill(0.0)
    _csr_matvecs(rows, m.shape[1], x.shape[1], m.indptr[a:b + 1] - m.indptr.dtype.type(lo), m.indices[lo:hi],
                 m.data[lo:hi], x.ravel(), y.ravel())
    return y


class AccountMap(Protocol):
    """What runs a risk run's blocks of accounts side by side (``keeper.ops.pool.RiskPool``: threads; quant owns
    no threads or processes): ``workers`` blocks, ``map(fn, items)`` gives ``fn(item)`` for each item, in order,
    as the builtin ``map``. Every account's numbers depend on its own row alone, and the one sum across accounts
    (:func:`shortfall_by_scenario`) adds its chunks in order, so results are bit-identical whatever the workers."""

    workers: int

    def map(self, fn: Callable, items: Sequence) -> Iterable: ...


def account_blocks(n_accounts: int, parts: int, chunk: int) -> list[tuple[int, int]]:
    """At most ``parts`` contiguous ``[a, b)`` blocks of whole ``chunk``-row chunks covering ``n_accounts`` rows
    (a block boundary is a chunk boundary, so each block runs the same chunks the one-block run does)."""
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    n_chunks = -(-n_accounts // chunk)
    parts = max(1, min(int(parts), n_chunks))
    cuts = [min(n_accounts, (k * n_chunks // parts) * chunk) for k in range(parts + 1)]
    return [(cuts[k], cuts[k + 1]) for k in range(parts) if cuts[k + 1] > cuts[k]] or [(0, n_accounts)]


def _over_blocks(fn: Callable, n_accounts: int, chunk: int, mapper: AccountMap | None) -> list:
    """``fn(a, b)`` over the account blocks, in block order, on ``mapper``'s workers (None: here, one block)."""
    if mapper is None or int(getattr(mapper, "workers", 1)) <= 1:
        return [fn((0, n_accounts))]
    return list(mapper.map(fn, account_blocks(n_accounts, mapper.workers, chunk)))


def _csr(exposure: sp.spmatrix) -> sp.csr_matrix:
    m = exposure if sp.isspmatrix_csr(exposure) else sp.csr_matrix(exposure)
    if m.indptr.dtype != m.indices.dtype:
        m = sp.csr_matrix((m.data, m.indices.astype(np.int64), m.indptr.astype(np.int64)), shape=m.shape)
    return m


def _tail_rows(exposure: sp.csr_matrix, dv: np.ndarray, var_level: float, es_level: float, chunk: int,
               equity: np.ndarray | None, bounds: tuple[int, int]) -> tuple:
    a0, b0 = bounds
    n_scen = dv.shape[1]
    i_var, i_var_es, m_es = _order_stat_indices(n_scen, var_level, es_level)
    kth = max(i_var, i_var_es, m_es - 1)
    n = b0 - a0
    var, var_es, es, worst = (np.empty(n) for _ in range(4))
    sums = []
    buf = np.empty((min(chunk, n), n_scen))
    for a in range(a0, b0, chunk):
        b = min(a + chunk, b0)
        pnl = _rows_matmul_into(exposure, a, b, dv, buf)
        if equity is not None:  # the shortfall of this chunk, as _shortfall_rows computes it, before the partition
            sums.append(_row_sum(np.maximum(-(pnl + equity[a:b, None]), 0.0).T))
        if kth < n_scen - 1:
            pnl.partition(kth, axis=1)
        tail = np.sort(pnl[:, :kth + 1], axis=1)                 # ascending P&L: worst first
        var[a - a0:b - a0] = -tail[:, i_var]
        var_es[a - a0:b - a0] = -tail[:, i_var_es]
        es[a - a0:b - a0] = -_row_sum(tail[:, :m_es]) / m_es
        worst[a - a0:b - a0] = -tail[:, 0]
    return var, var_es, es, worst, sums


def tail_stats(exposure: sp.csr_matrix, dv: np.ndarray, var_level: float, es_level: float,
               chunk: int = 256, mapper: AccountMap | None = None,
               shortfall_equity: np.ndarray | None = None) -> TailStats:
    """VaR, VaR at the ES level, ES and worst loss of every account over equally weighted scenarios.

    Accounts are processed ``chunk`` rows at a time: P&L = exposure[chunk] @ dv into one reused buffer, then an
    in-place partition for the ``m`` most negative P&Ls and a sort of that tail only. ``mapper``: blocks of
    accounts on its workers (:class:`AccountMap`), the same bits. ``shortfall_equity`` (each account's equity):
    also :func:`shortfall_by_scenario` of the same P&L in the same pass (``TailStats.shortfall``, the same bits).
    """
    exposure = _csr(exposure)
    dv = np.ascontiguousarray(dv, dtype=np.float64)
    eq = None if shortfall_equity is None else np.asarray(shortfall_equity, dtype=np.float64)
    parts = _over_blocks(partial(_tail_rows, exposure, dv, var_level, es_level, chunk, eq), exposure.shape[0],
                         chunk, mapper)
    shortfall = None
    if eq is not None:
        shortfall = np.zeros(dv.shape[1])
        for p in parts:
            for chunk_sum in p[4]:
                shortfall += chunk_sum
    return TailStats(*(np.concatenate([p[k] for p in parts]) for k in range(4)), shortfall=shortfall)


def _worst_rows(exposure: sp.csr_matrix, dvw: np.ndarray, chunk: int, bounds: tuple[int, int]) -> np.ndarray:
    a0, b0 = bounds
    out = np.empty(b0 - a0)
    buf = np.empty((min(chunk, b0 - a0), dvw.shape[1]))
    for a in range(a0, b0, chunk):
        b = min(a + chunk, b0)
        out[a - a0:b - a0] = -np.min(_rows_matmul_into(exposure, a, b, dvw, buf), axis=1)
    return out


def weighted_worst_loss(exposure: sp.csr_matrix, dv: np.ndarray, weight: np.ndarray, chunk: int = 256,
                        mapper: AccountMap | None = None) -> np.ndarray:
    """Largest weighted loss max_s(-weight_s x P&L_s) of each account (the grid charge)."""
    exposure = _csr(exposure)
    dvw = np.ascontiguousarray(dv * weight[None, :])
    return np.concatenate(_over_blocks(partial(_worst_rows, exposure, dvw, chunk), exposure.shape[0], chunk, mapper))


def _shortfall_rows(exposure: sp.csr_matrix, dv: np.ndarray, equity: np.ndarray, chunk: int,
                    bounds: tuple[int, int]) -> list[np.ndarray]:
    a0, b0 = bounds
    out = []
    buf = np.empty((min(chunk, b0 - a0), dv.shape[1]))
    for a in range(a0, b0, chunk):
        b = min(a + chunk, b0)
        after = _rows_matmul_into(exposure, a, b, dv, buf) + equity[a:b, None]
        out.append(_row_sum(np.maximum(-after, 0.0).T))
    return out


def shortfall_by_scenario(exposure: sp.csr_matrix, dv: np.ndarray, equity: np.ndarray,
                          chunk: int = 256, mapper: AccountMap | None = None) -> np.ndarray:
    """The protocol's shortfall in each scenario: ``sum over accounts of max(-(equity + P&L), 0)``, i.e. what the
    accounts that would end below zero would owe. Accounts in chunks, each chunk's sum added in chunk order (fixed
    summation order: every keeper gets the same bits, whatever ``mapper``'s workers computed the chunks)."""
    exposure = _csr(exposure)
    total = np.zeros(dv.shape[1])
    if not exposure.shape[0]:
        return total
    dv = np.ascontiguousarray(dv, dtype=np.float64)
    eq = np.asarray(equity, dtype=np.float64)
    for part in _over_blocks(partial(_shortfall_rows, exposure, dv, eq, chunk), exposure.shape[0], chunk, mapper):
        for chunk_sum in part:
            total += chunk_sum
    return total


# ---------------------------------------------------------------------------------------------------------------
# Account risk
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AccountRisk:
    """Per-account results (arrays of length n_accounts; Greeks (n_accounts, n_underlyings)), quote units.

    ``var``/``es``/``tail_worst_loss`` come from the tail scenario set (Monte Carlo or (F)HS), ``grid_worst_loss``
    from the grid (extreme moves at their coverage), ``stress_es`` from the correlation stress set (0 without one). Greeks include volatile collateral at its haircut value
    (delta only). ``inputs_hash`` binds the results to :func:`risk_inputs_hash` of the inputs and
    ``scenarios_hash`` to the scenario sets (tail and grid, and the stress set when one was given).
    """

    equity: np.ndarray
    collateral_value: np.ndarray
    position_value: np.ndarray
    var: np.ndarray
    var_at_es_level: np.ndarray
    es: np.ndarray
    tail_worst_loss: np.ndarray
    grid_worst_loss: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray
    short_premium_charge: np.ndarray
    gamma_addon: np.ndarray
    vega_addon: np.ndarray
    gamma_multiplier: np.ndarray
    maintenance_margin: np.ndarray
    initial_margin: np.ndarray
    inputs_hash: bytes
    scenarios_hash: bytes
    stress_es: np.ndarray | None = None
    #: with ``shortfall_cash``: the protocol shortfall per tail scenario (:func:`shortfall_by_scenario` at equity +
    #: that cash, in the run's chunks), summed in the tail pass; None otherwise
    tail_shortfall: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.stress_es is None:
            object.__setattr__(self, "stress_es", np.zeros_like(self.es))

    def attested_units(self, decimals: int) -> dict[str, list[int]]:
        """Integer quote base units for attestation: equity and collateral value floored, margins ceiled."""
        return {"equity": to_quote_units(self.equity, decimals, "floor"),
                "collateral_value": to_quote_units(self.collateral_value, decimals, "floor"),
                "maintenance_margin": to_quote_units(self.maintenance_margin, decimals, "ceil"),
                "initial_margin": to_quote_units(self.initial_margin, decimals, "ceil")}

    def to_bytes(self) -> bytes:
        """Every field's raw bytes in field order (for bit-for-bit comparisons across keepers)."""
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            parts.append(v if isinstance(v, bytes) else np.ascontiguousarray(v, dtype=np.float64).tobytes())
        return b"".join(parts)


def _per_underlying(positions: sp.csr_matrix, underlying: np.ndarray, values: np.ndarray, n_und: int) -> np.ndarray:
    mat = np.zeros((underlying.size, n_und))
    mat[np.arange(underlying.size), underlying] = values
    return np.asarray(positions @ mat).reshape(positions.shape[0], n_und)


def compute_account_risk(inputs: RiskInputs, tail_set: ScenarioSet, grid_set: ScenarioSet,
                         vol_fn: VolFunction | None = None, chunk: int = 256, hashes: bool = True,
                         stress_set: ScenarioSet | None = None, mapper: AccountMap | None = None,
                         shortfall_cash: np.ndarray | None = None) -> AccountRisk:
    """Full risk run: equity, VaR/ES (tail set), grid worst loss, Greeks and margins for every account.

    ``stress_set`` (e.g. :func:`~keeper.quant.risk.scenarios.correlation_stress_scenarios`, equally weighted): its
    ES at ``es_level`` joins the base of the margin, ``max(ES, grid, stress ES, 0)``; None: no stress (0).

    ``hashes=False`` (offline replays such as ``backstop backtest``, which sign nothing) skips the inputs and
    scenario hashes (``b""``); every number is the same.

    No Python loop runs over accounts: series and collateral are revalued once per scenario and accounts are
    aggregated by sparse products in chunks of ``chunk`` accounts (memory ~ chunk x n_scenarios x 8 bytes).
    ``mapper`` (:class:`AccountMap`): the scenario passes run on blocks of accounts side by side; every number is
    the same bits as without it. ``shortfall_cash`` (each account's quote cash): the tail pass also sums the
    protocol shortfall at equity + cash (``tail_shortfall``, what the solvency index reads instead of a second
    pass; keeper.quant.risk.solvency).
    """
    if np.any(tail_set.weight != 1.0):
        raise ValueError("tail scenario set must be equally weighted (use the grid for coverage weights)")
    prm, s, ca = inputs.params, inputs.series, inputs.collateral_assets
    n_und = inputs.n_underlyings
    pos = inputs.positions
    v0 = model_values(inputs)
    exposure = exposure_matrix(inputs)

    collateral_value = np.asarray(sp.csr_matrix(inputs.collateral) @ (ca.price * (1.0 - ca.haircut))).ravel() \
        if ca.n else np.zeros(inputs.n_accounts)
    position_value = np.asarray(pos @ inputs.marks).ravel()
    equity = collateral_value + position_value

    sf_equity = None if shortfall_cash is None else equity + np.asarray(shortfall_cash, dtype=np.float64)
    tail = tail_stats(exposure, revalue(inputs, tail_set, vol_fn, v0), prm.var_level, prm.es_level, chunk, mapper,
                      sf_equity)
    grid_dv = revalue(inputs, grid_set, vol_fn, v0)
    grid_worst = weighted_worst_loss(exposure, grid_dv, grid_set.weight, chunk, mapper)

    g = series_greeks(inputs)
    delta = _per_underlying(pos, s.underlying, g.delta, n_und)
    if ca.n and np.any(ca.underlying >= 0):
        moving = np.flatnonzero(ca.underlying >= 0)
        cmat = np.zeros((ca.n, n_und))
        cmat[moving, ca.underlying[moving]] = 1.0 - ca.haircut[moving]
        delta = delta + np.asarray(sp.csr_matrix(inputs.collateral) @ cmat)
    gamma = _per_underlying(pos, s.underlying, g.gamma, n_und)
    vega = _per_underlying(pos, s.underlying, g.vega, n_und)
    theta = _per_underlying(pos, s.underlying, g.theta, n_und)

    short = pos.copy()
    short.data = np.maximum(-short.data, 0.0)
    option_value = np.where(s.kind == FORWARD, 0.0, v0)        # forwards are linear: no premium to charge
    premium = prm.short_premium_charge * np.asarray(short @ option_value).ravel()
    cash_gamma_unit = 0.5 * (inputs.forward * prm.gamma_move) ** 2                # per unit of gamma, per underlying
    gamma_addon = prm.gamma_addon * _row_sum(np.maximum(-gamma, 0.0) * cash_gamma_unit[None, :])
    vega_addon = prm.vega_shift * _row_sum(np.maximum(-vega, 0.0))
    gross = abs(pos)
    gross_cash_gamma = np.asarray(gross @ (g.gamma * cash_gamma_unit[s.underlying])).ravel()
    multiplier = 1.0 + prm.gamma_tightening * gross_cash_gamma / (gross_cash_gamma + prm.gamma_scale)
    stress_es = np.zeros(inputs.n_accounts)
    if stress_set is not None:
        if np.any(stress_set.weight != 1.0):
            raise ValueError("stress scenario set must be equally weighted")
        stress_es = tail_stats(exposure, revalue(inputs, stress_set, vol_fn, v0), prm.var_level, prm.es_level,
                               chunk, mapper).es
    base = np.maximum(np.maximum(np.maximum(tail.es, grid_worst), stress_es), 0.0)
    mm = (base + premium + gamma_addon + vega_addon) * multiplier
    im = prm.im_multiplier * mm
    return AccountRisk(equity=equity, collateral_value=collateral_value, position_value=position_value,
                       var=tail.var, var_at_es_level=tail.var_at_es_level, es=tail.es,
                       tail_worst_loss=tail.worst_loss, grid_worst_loss=grid_worst, delta=delta, gamma=gamma,
                       vega=vega, theta=theta, short_premium_charge=premium, gamma_addon=gamma_addon,
                       vega_addon=vega_addon, gamma_multiplier=multiplier, maintenance_margin=mm,
                       initial_margin=im, inputs_hash=risk_inputs_hash(inputs) if hashes else b"",
                       scenarios_hash=(inputs_hash([tail_set.hash(), grid_set.hash()] + (
                           [stress_set.hash()] if stress_set is not None else [])) if hashes else b""),
                       stress_es=stress_es, tail_shortfall=tail.shortfall)


def block_risk(inputs: RiskInputs, block_hash: bytes | str | int, n_scenarios: int = 10_000,
               merton: MertonParams = MertonParams(), grid_range: float | Sequence[float] = 0.15,
               vol_range: float = 0.25, horizon: float = 1.0 / DAYS_PER_YEAR, vol_fn: VolFunction | None = None,
               chunk: int = 256, stress_rho: float | None = None) -> AccountRisk:
    """The keeper's per-block run: Monte Carlo scenarios seeded from the block hash (so every honest keeper draws
    the same ones) for VaR/ES, the SPAN-like grid, and (several underlyings, ``stress_rho`` not None, e.g.
    ``STRESS_CORRELATION``) the correlation stress drawn from the same seed, all over ``horizon``."""
    seed = seed_from_block_hash(block_hash)
    mc = monte_carlo_scenarios(seed, n_scenarios, inputs.n_underlyings, merton, horizon)
    grid = grid_scenarios(grid_range, vol_range=vol_range, n_underlyings=inputs.n_underlyings, horizon=horizon)
    stress = (correlation_stress_scenarios(seed, n_scenarios, inputs.n_underlyings, merton, horizon, stress_rho)
              if stress_rho is not None and inputs.n_underlyings > 1 else None)
    return compute_account_risk(inputs, mc, grid, vol_fn, chunk, stress_set=stress)


# ---------------------------------------------------------------------------------------------------------------
# Attestation units
# ---------------------------------------------------------------------------------------------------------------

def to_quote_units(values: Sequence[float] | np.ndarray, decimals: int, rounding: str) -> list[int]:
    """Convert float quote amounts to integer quote base units (10**decimals per unit), rounding exactly
    (:func:`keeper.units.to_base_units`).

    ``rounding="floor"`` for equity and collateral value (never in the account's favour), ``"ceil"`` for margins
    and debts. Each float is converted through its exact rational value, so 0.1 with 6 decimals gives 100000 (floor)
    and 100001 (ceil) only if the float is above 0.1. Raises ValueError on non-finite values.

    The same integers as ``to_base_units`` value by value, computed from each float's exact ratio
    (``float.as_integer_ratio``: an integer over a power of two) with integer floor division, without building a
    ``Fraction`` per value (40,000 values a block for 10,000 accounts; tests/quant/risk/test_chunked_run.py).
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    d = int(decimals)
    if rounding not in ("floor", "ceil") or d < 0 or not np.all(np.isfinite(arr)):
        return [to_base_units(v, decimals, rounding) for v in arr.tolist()]  # raises, or the rare negative scale
    scale = 10**d
    ratios = map(float.as_integer_ratio, arr.tolist())
    if rounding == "floor":
        return [(n * scale) // q for n, q in ratios]
    return [-((-n * scale) // q) for n, q in ratios]

"""Scenario sets for the portfolio risk engine (``keeper.quant.risk.engine``).

A scenario moves every underlying ``u`` by a log return ``log_spot[s, u]`` (forward after the move is
``F_u * exp(log_spot[s, u])``) and shocks each series' implied vol by a log factor ``vol_shock[s, u]``
(vol after the move is ``vol * exp(vol_shock[s, u])`` unless the caller supplies its own vol function).
``weight[s]`` is the fraction of the scenario's loss that counts (1 for ordinary scenarios, the coverage fraction
for the grid's extreme moves).

Three families, all pure functions of their arguments:

* :func:`grid_scenarios` - SPAN-like grid: spot moves in equal steps up to +-range, each with vol up and down,
  plus two extreme moves counted at a coverage fraction. With several underlyings the grid is applied three ways:
  all underlyings together (comonotone, the common factor) and each underlying alone (the others still).
* :func:`monte_carlo_scenarios` - Merton jump diffusion with vol shocks correlated with spot, one common factor
  across underlyings, drawn from ``np.random.Generator(PCG64(seed))`` with a seed every keeper shares (the block
  hash), so honest keepers draw bit-identical scenarios (given the pinned numpy version).
* :func:`historical_scenarios` - historical simulation of log returns, or filtered historical simulation (FHS):
  each historical return is divided by the EWMA vol of its day and multiplied by today's EWMA vol.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from eth_utils import keccak

from keeper.codec.fast_json import fast_canonical_json

#: RiskMetrics decay for daily EWMA volatility.
EWMA_LAMBDA = 0.94
#: Days per year used to annualise daily crypto vol (crypto trades every day; ACT/365 as in ARCHITECTURE.md).
DAYS_PER_YEAR = 365.0


@dataclass(frozen=True)
class ScenarioSet:
    """A set of joint moves of all underlyings.

    Attributes:
        name: ``"grid"``, ``"monte_carlo"``, ``"historical"`` or ``"fhs"`` (documentation only).
        log_spot: (n_scenarios, n_underlyings) log return of each underlying's forward/spot.
        vol_shock: (n_scenarios, n_underlyings) log shock of implied vol (vol * exp(shock)).
        weight: (n_scenarios,) fraction of each scenario's loss that counts (grid extreme moves < 1).
        horizon: years of time decay applied to every option in every scenario (margin period of risk).
    """

    name: str
    log_spot: np.ndarray
    vol_shock: np.ndarray
    weight: np.ndarray
    horizon: float

    def __post_init__(self) -> None:
        log_spot = np.array(self.log_spot, dtype=np.float64, order="C")     # own copies: frozen below
        vol_shock = np.array(self.vol_shock, dtype=np.float64, order="C")
        weight = np.array(self.weight, dtype=np.float64, order="C")
        if log_spot.ndim != 2 or log_spot.shape != vol_shock.shape:
            raise ValueError(f"scenario set {self.name}: log_spot {log_spot.shape} and vol_shock "
                             f"{vol_shock.shape} must be equal 2-d shapes (n_scenarios, n_underlyings)")
        if weight.shape != (log_spot.shape[0],):
            raise ValueError(f"scenario set {self.name}: weight shape {weight.shape} != ({log_spot.shape[0]},)")
        if log_spot.shape[0] == 0:
            raise ValueError(f"scenario set {self.name}: no scenarios")
        for label, arr in (("log_spot", log_spot), ("vol_shock", vol_shock), ("weight", weight)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"scenario set {self.name}: non-finite values in {label}")
        if np.any(weight < 0) or np.any(weight > 1):
            raise ValueError(f"scenario set {self.name}: weights must lie in [0, 1]")
        if not (np.isfinite(self.horizon) and self.horizon >= 0):
            raise ValueError(f"scenario set {self.name}: horizon must be finite and >= 0, got {self.horizon}")
        for arr in (log_spot, vol_shock, weight):
            arr.setflags(write=False)                 # frozen dataclass, frozen arrays (they are hashed)
        object.__setattr__(self, "log_spot", log_spot)
        object.__setattr__(self, "vol_shock", vol_shock)
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "horizon", float(self.horizon))

    @property
    def n_scenarios(self) -> int:
        """Number of scenarios."""
        return int(self.log_spot.shape[0])

    @property
    def n_underlyings(self) -> int:
        """Number of underlyings moved by each scenario."""
        return int(self.log_spot.shape[1])

    def hash(self) -> bytes:
        """keccak-256 of the canonical serialization of the scenario set."""
        return keccak(fast_canonical_json({"name": self.name, "log_spot": self.log_spot, "vol_shock": self.vol_shock,
                            "weight": self.weight, "horizon": self.horizon}))


def grid_scenarios(spot_range: np.ndarray | float, vol_range: float = 0.25, n_up: int = 3,
                   extreme_multiple: float = 2.0, extreme_coverage: float = 0.35,
                   n_underlyings: int | None = None, horizon: float = 1.0 / DAYS_PER_YEAR) -> ScenarioSet:
    """SPAN-like scenario grid.

    Spot moves ``k / n_up * spot_range`` for ``k = -n_up..n_up`` (as simple returns, converted to log returns),
    each with vol multiplied by ``1 + vol_range`` and ``1 - vol_range``; plus the extreme moves
    ``+-extreme_multiple * spot_range`` with unchanged vol, whose loss counts at ``extreme_coverage``.
    With ``n > 1`` underlyings the block is repeated ``1 + n + n(n-1)/2`` times: all underlyings moving together
    by their own ranges (correlation 1), each underlying alone, and each pair moving in opposite directions
    (correlation -1: ``u`` up while ``v`` falls, and the reverse). So the credit a portfolio gets for netting
    across underlyings is capped: its grid loss, hence its maintenance margin, is never below its loss when any one
    underlying moves alone or when any two move against each other. ``spot_range`` is a fraction (0.15 = 15%),
    scalar or one per underlying; extreme down moves are floored at -99%.
    """
    ranges = np.atleast_1d(np.asarray(spot_range, dtype=np.float64))
    if n_underlyings is not None and ranges.size == 1:
        ranges = np.full(n_underlyings, ranges[0])
    n_und = ranges.size
    if np.any(ranges <= 0) or np.any(ranges >= 1) or not (0 <= vol_range < 1) or n_up < 1:
        raise ValueError("grid: spot_range must lie in (0, 1), vol_range in [0, 1), n_up >= 1")
    if not (0 <= extreme_coverage <= 1) or extreme_multiple <= 0:
        raise ValueError("grid: extreme_coverage must lie in [0, 1] and extreme_multiple be > 0")
    steps = np.arange(-n_up, n_up + 1, dtype=np.float64) / n_up           # (2 n_up + 1,)
    frac = np.concatenate([np.repeat(steps, 2), [-extreme_multiple, extreme_multiple]])
    vol_up, vol_dn = np.log1p(vol_range), np.log1p(-vol_range)
    vol_block = np.concatenate([np.tile([vol_up, vol_dn], steps.size), [0.0, 0.0]])
    weight_block = np.concatenate([np.ones(2 * steps.size), [extreme_coverage, extreme_coverage]])
    signs = [np.ones(n_und)]
    if n_und > 1:
        signs += [(np.arange(n_und) == u).astype(np.float64) for u in range(n_und)]
        signs += [(np.arange(n_und) == u) - (np.arange(n_und) == v).astype(np.float64)
                  for u in range(n_und) for v in range(u + 1, n_und)]
    log_spot, vol_shock, weight = [], [], []
    for sign in signs:
        moves = np.maximum(frac[:, None] * sign[None, :] * ranges[None, :], -0.99)
        log_spot.append(np.log1p(moves))
        vol_shock.append(vol_block[:, None] * np.abs(sign)[None, :])
        weight.append(weight_block)
    return ScenarioSet("grid", np.vstack(log_spot), np.vstack(vol_shock), np.concatenate(weight), horizon)


def seed_from_block_hash(block_hash: bytes | str | int) -> int:
    """Integer seed shared by all keepers: the block hash (bytes, 0x-hex or int) read as a big-endian integer."""
    if isinstance(block_hash, int):
        if block_hash < 0:
            raise ValueError("seed must be non-negative")
        return block_hash
    if isinstance(block_hash, str):
        text = block_hash[2:] if block_hash.startswith("0x") else block_hash
        return int(text, 16)
    return int.from_bytes(bytes(block_hash), "big")


@dataclass(frozen=True)
class MertonParams:
    """Merton jump diffusion with correlated vol shocks (annualised where it says so).

    Attributes:
        diffusion_vol: per-underlying annual diffusion vol (scalar or array).
        jump_intensity: expected jumps per year (common to all underlyings: crypto crashes together).
        jump_mean: mean log jump size (negative: crashes); scaled per underlying by ``jump_beta``.
        jump_std: std of log jump size.
        jump_beta: per-underlying loading on the common jump (scalar or array).
        common_factor_rho: correlation of each underlying's diffusive shock with the common factor;
            two underlyings correlate at ``rho`` (one-factor model: z_u = sqrt(rho) Z + sqrt(1 - rho) e_u).
        vol_of_vol: annual vol of the log implied-vol shock.
        spot_vol_corr: correlation of the vol shock with the underlying's diffusive spot shock (negative: vol
            rises when spot falls).
        jump_vol_beta: log vol shock per unit of negative log jump (vol spikes in crashes).
    """

    diffusion_vol: np.ndarray | float = 0.7
    jump_intensity: float = 12.0
    jump_mean: float = -0.04
    jump_std: float = 0.06
    jump_beta: np.ndarray | float = 1.0
    common_factor_rho: float = 0.7
    vol_of_vol: float = 1.5
    spot_vol_corr: float = -0.5
    jump_vol_beta: float = 2.0


def monte_carlo_scenarios(seed: int, n_scenarios: int, n_underlyings: int, params: MertonParams = MertonParams(),
                          horizon: float = 1.0 / DAYS_PER_YEAR) -> ScenarioSet:
    """Merton jump-diffusion scenarios over ``horizon`` years, drawn with ``Generator(PCG64(seed))``.

    Log return of underlying ``u``: ``-0.5 s_u^2 h - lam h k_u + s_u sqrt(h) z_u + beta_u * J`` where ``z_u`` is
    one-factor correlated normal, ``J`` the sum of ``N ~ Poisson(lam h)`` normal jumps common to all underlyings,
    ``k_u = E[exp(beta_u J_1)] - 1`` (martingale drift). Vol shock: ``vov sqrt(h) (c z_u + sqrt(1 - c^2) w_u) +
    jump_vol_beta * max(-beta_u J, 0)``. The draw order is fixed (documented in docs/risk.md) so that every keeper
    gets the same bits from the same seed.
    """
    return _merton(seed, n_scenarios, n_underlyings, params, horizon, None)


def _merton(seed: int, n_scenarios: int, n_underlyings: int, params: MertonParams, horizon: float,
            stress_rho: float | None) -> ScenarioSet:
    """The Merton draw of :func:`monte_carlo_scenarios`; ``stress_rho`` (not None): the correlation stress."""
    if n_scenarios < 1 or n_underlyings < 1:
        raise ValueError("monte carlo: n_scenarios and n_underlyings must be >= 1")
    p = params
    if not (0 <= p.common_factor_rho <= 1 and -1 <= p.spot_vol_corr <= 1 and p.jump_intensity >= 0
            and p.jump_std >= 0 and p.vol_of_vol >= 0):
        raise ValueError("monte carlo: parameters out of range")
    sig = np.broadcast_to(np.asarray(p.diffusion_vol, dtype=np.float64), (n_underlyings,))
    beta = np.broadcast_to(np.asarray(p.jump_beta, dtype=np.float64), (n_underlyings,))
    rng = np.random.Generator(np.random.PCG64(seed))
    # Fixed draw order: common factor, idiosyncratic spot, vol noise, jump counts, jump sizes.
    common = rng.standard_normal(n_scenarios)
    idio = rng.standard_normal((n_scenarios, n_underlyings))
    vol_noise = rng.standard_normal((n_scenarios, n_underlyings))
    n_jumps = rng.poisson(p.jump_intensity * horizon, n_scenarios).astype(np.float64)
    jump_z = rng.standard_normal(n_scenarios)
    rho = p.common_factor_rho if stress_rho is None else stress_rho
    z = np.sqrt(rho) * common[:, None] + np.sqrt(1.0 - rho) * idio
    if stress_rho is not None:
        # the stress also correlates the vol noise at rho: one more draw, after all of the base set's draws, so the
        # base set's bits are untouched
        common_vol = rng.standard_normal(n_scenarios)
        vol_noise = np.sqrt(rho) * common_vol[:, None] + np.sqrt(1.0 - rho) * vol_noise
    jump = n_jumps * p.jump_mean + np.sqrt(n_jumps) * p.jump_std * jump_z            # (n_scenarios,)
    k = np.exp(beta * p.jump_mean + 0.5 * (beta * p.jump_std) ** 2) - 1.0
    drift = -0.5 * sig ** 2 * horizon - p.jump_intensity * horizon * k
    log_spot = drift[None, :] + sig[None, :] * np.sqrt(horizon) * z + beta[None, :] * jump[:, None]
    c = p.spot_vol_corr
    vol_shock = (p.vol_of_vol * np.sqrt(horizon) * (c * z + np.sqrt(1.0 - c * c) * vol_noise)
                 + p.jump_vol_beta * np.maximum(-beta[None, :] * jump[:, None], 0.0))
    return ScenarioSet("monte_carlo" if stress_rho is None else "correlation_stress", log_spot, vol_shock,
                       np.ones(n_scenarios), horizon)


#: Cross-asset correlation of the correlation stress (:func:`correlation_stress_scenarios`): every underlying moves
#: on the one common factor (and its vol with the one common vol noise).
STRESS_CORRELATION = 1.0


def correlation_stress_scenarios(seed: int, n_scenarios: int, n_underlyings: int,
                                 params: MertonParams = MertonParams(), horizon: float = 1.0 / DAYS_PER_YEAR,
                                 rho: float = STRESS_CORRELATION) -> ScenarioSet:
    """The Monte Carlo tail set with the cross-asset correlation raised to ``rho`` (default 1): crypto assets crash
    together, and a book that counted on them moving apart (a diversified book: shorts on several underlyings) must
    carry the loss of them all moving at once over the whole distribution, jumps and vol spikes included - beyond
    the grid's joint block, which moves every underlying by a fixed range only.

    The draws are those of :func:`monte_carlo_scenarios` with the same seed (same order, so the stress shares the
    base set's common factor, idiosyncratic noise, jumps), mixed at ``rho`` instead of ``common_factor_rho``; the vol
    noise, idiosyncratic per underlying in the base set, is mixed with one extra common draw (taken after all the
    base set's draws) at ``rho`` too. With ``rho = 1`` two underlyings of equal diffusion vol and jump loading move
    by exactly the same log return in every scenario (tested). ``rho`` must lie in [common_factor_rho, 1]: a stress
    never lowers the correlation (the grid's opposite-direction block is the stress the other way).
    """
    if not (params.common_factor_rho <= rho <= 1.0):
        raise ValueError(f"correlation stress: rho {rho} must lie in [common_factor_rho "
                         f"{params.common_factor_rho}, 1]")
    return _merton(seed, n_scenarios, n_underlyings, params, horizon, rho)


def log_returns_from_closes(closes: np.ndarray) -> np.ndarray:
    """Daily log returns from a close series (1-d, or 2-d with one column per underlying on aligned dates).

    Raises ValueError on non-positive or non-finite closes (bad data must never reach a signed number).
    """
    closes = np.asarray(closes, dtype=np.float64)
    if closes.shape[0] < 2 or not np.all(np.isfinite(closes)) or np.any(closes <= 0):
        raise ValueError("closes must be at least two finite positive prices")
    return np.diff(np.log(closes), axis=0)


def ewma_variance(log_returns: np.ndarray, lam: float = EWMA_LAMBDA, seed_window: int = 30,
                  seed_variance: float | np.ndarray | None = None) -> np.ndarray:
    """EWMA (RiskMetrics) variance of each return's period, known *before* that return.

    ``var[t] = lam * var[t-1] + (1 - lam) * r[t-1]^2`` for ``t >= 1``; ``var[0]`` is ``seed_variance`` when given,
    else the mean square of the first ``seed_window`` returns. Returns an array one longer than ``log_returns``
    along axis 0: element ``t`` is the forecast for return ``t``, the last element is the forecast after the last
    return. Per period of the returns (daily for daily returns); sequential loop: fixed summation order.
    """
    r = np.asarray(log_returns, dtype=np.float64)
    if not (0 < lam < 1) or r.shape[0] < 1 or not np.all(np.isfinite(r)):
        raise ValueError("ewma: need 0 < lam < 1 and at least one finite return")
    var = np.empty((r.shape[0] + 1,) + r.shape[1:])
    var[0] = np.mean(r[:seed_window] ** 2, axis=0) if seed_variance is None else seed_variance
    for t in range(1, r.shape[0] + 1):
        var[t] = lam * var[t - 1] + (1.0 - lam) * r[t - 1] ** 2
    return var


def ewma_volatility(log_returns: np.ndarray, lam: float = EWMA_LAMBDA, seed_window: int = 30) -> np.ndarray:
    """``sqrt`` of :func:`ewma_variance` (daily volatility for daily returns)."""
    return np.sqrt(ewma_variance(log_returns, lam, seed_window))


def historical_scenarios(log_returns: np.ndarray, filtered: bool = False, lam: float = EWMA_LAMBDA,
                         burn_in: int = 30, horizon_days: float = 1.0) -> ScenarioSet:
    """Historical (or filtered historical) simulation from daily log returns (n_obs, n_underlyings) or (n_obs,).

    Plain HS uses each day's returns as a scenario. FHS rescales each day's return by ``sigma_today /
    sigma_that_day`` (EWMA, RiskMetrics ``lam``), dropping the first ``burn_in`` days while the EWMA settles.
    Returns are scaled by ``sqrt(horizon_days)``; implied vols are left unchanged (vol_shock = 0).
    """
    r = np.asarray(log_returns, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    if not np.all(np.isfinite(r)):
        raise ValueError("historical: non-finite returns")
    if filtered:
        sig = ewma_volatility(r, lam)
        if np.any(sig[:-1] <= 0):
            raise ValueError("historical: zero EWMA vol, cannot filter")
        moves = r[burn_in:] / sig[burn_in:-1] * sig[-1]
    else:
        moves = r
    moves = moves * np.sqrt(horizon_days)
    return ScenarioSet("fhs" if filtered else "historical", moves, np.zeros_like(moves), np.ones(moves.shape[0]),
                       horizon_days / DAYS_PER_YEAR)


def aligned_log_returns(dates: list[np.ndarray], closes: list[np.ndarray]) -> np.ndarray:
    """Daily log returns of several underlyings on their common dates: (n_common - 1, n_underlyings).

    ``dates[u]`` and ``closes[u]`` are one underlying's strictly increasing dates (any comparable type, e.g. ISO
    strings) and closes. A date missing from one series is dropped from all, so a return may span a gap.
    """
    if len(dates) != len(closes) or not dates:
        raise ValueError("aligned returns: need one dates array per closes array")
    common = dates[0]
    for d in dates[1:]:
        common = np.intersect1d(common, d)
    columns = []
    for d, c in zip(dates, closes):
        d, c = np.asarray(d), np.asarray(c, dtype=np.float64)
        if d.shape != c.shape or np.any(d[1:] <= d[:-1]):
            raise ValueError("aligned returns: dates must be strictly increasing and match closes")
        columns.append(c[np.searchsorted(d, common)])
    return log_returns_from_closes(np.column_stack(columns))

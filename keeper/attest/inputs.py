"""The inputs document of one block (block, spot, surface, marks, risk parameters, book) and the
:class:`Attestation` built from it: everything a leaf depends on, collected so that anyone can recompute it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import scipy.sparse as sp

from keeper.attest.leaves import SCHEMA
from keeper.codec import eip712
from keeper.codec.merkle import MarginLeaf, MerkleTree
from keeper.data.feed import BlockRef
from keeper.quant.chains import OptionChain
from keeper.quant.marks import MarkConfig, MarkReason, hybrid_marks, match_quotes
from keeper.quant.pricing import black76_greeks
from keeper.quant.risk.engine import screen_market_data
from keeper.units import SECONDS_PER_YEAR, WAD, to_wad


# ------------------------------------------------------------------------------------------------------------
# Inputs from chain state and market data
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesMarks:
    """Per on-chain series: the vol used (from the surface), the mark (hybrid where a matching quote exists) and
    the forward it was priced on (its expiry's forward; ``None``: spot)."""

    vols: list[float]
    marks: list[float]
    market: list[bool]
    forwards: list[float] | None = None
    #: the hybrid mark's reason (:class:`keeper.quant.marks.MarkReason`) and state (``passes``) per series
    reasons: list[int] | None = None
    passes: list[int] | None = None


def series_forwards(expiry_ts: np.ndarray, spot: float, now: int, chain: Optional[OptionChain],
                    carry: Optional[tuple[np.ndarray, np.ndarray]] = None) -> np.ndarray:
    """Each expiry's forward: ``spot`` times the chain's carry (forward / spot, :meth:`OptionChain.carry_by_expiry`)
    interpolated linearly in expiry time from 1 at ``now``, flat beyond the last listed expiry. Without a chain,
    ``carry`` (expiry timestamps, forward / spot) when given (an asset on fallback reuses its last attested
    document's), else ``spot``."""
    expiry_ts = np.asarray(expiry_ts, dtype=np.float64)
    if chain is not None and len(chain) > 0:
        exp, carry = chain.carry_by_expiry()
    elif carry is not None and len(carry[0]) > 0:
        exp, carry = np.asarray(carry[0], dtype=np.float64), np.asarray(carry[1], dtype=np.float64)
    else:
        return np.full(expiry_ts.shape, float(spot))
    ahead = exp > now
    xs = np.concatenate(([float(now)], exp[ahead]))
    ys = np.concatenate(([1.0], carry[ahead]))
    return float(spot) * np.interp(expiry_ts, xs, ys)


def mark_series(series: Sequence[Any], surface, chain: Optional[OptionChain], spot: float, now: int,
                carry: Optional[tuple[np.ndarray, np.ndarray]] = None,
                settlement: Optional[Mapping[int, float]] = None, *, prev_market=None, prev_passes=None,
                config: MarkConfig = MarkConfig()) -> SeriesMarks:
    """Vol from the fitted surface and hybrid mark (market mid when the chain's quote of the same contract,
    :func:`keeper.quant.marks.match_quotes`, passes the mark filters, else the model price) for each on-chain series,
    priced with Black-76 on its expiry's forward (:func:`series_forwards`; ``carry`` for an asset without a chain).
    The hysteresis state (``prev_market``, ``prev_passes``) comes from the previous attested document
    (:func:`keeper.quant.marks.state_from_document`), never from process memory, so that a restarted keeper marks
    exactly as the others do; ``None``: a cold start. Expired series get the intrinsic value against their expiry's
    settlement price (``settlement``: expiry -> price, the one on chain or the attested-price average the keepers
    would sign; recorded as the series' ``forward_wad``), against spot where none is known. A live series for which
    the surface gives no finite positive vol gets NaN vol and mark (the keeper's cycle screens it out with
    :func:`screen_series`). ``reasons`` / ``passes``: the hybrid mark's reason and new state per series."""

    n = len(series)
    if n == 0:
        return SeriesMarks([], [], [], [])
    strike = np.array([s.strike / WAD for s in series])
    t = np.array([max(s.expiry - now, 0) / SECONDS_PER_YEAR for s in series])
    is_call = np.array([bool(s.is_call) for s in series])
    live = t > 0
    settled = np.array([float((settlement or {}).get(int(s.expiry), np.nan)) for s in series])
    fwd = np.where(live, series_forwards(np.array([s.expiry for s in series]), spot, now, chain, carry),
                   np.where(np.isfinite(settled) & (settled > 0), settled, spot))
    vol = np.where(live, surface.implied_vol(strike, np.where(live, t, 1.0), fwd), np.nan)
    no_vol = live & ~(np.isfinite(vol) & (vol > 0))  # the surface gives no usable vol: vol and mark NaN
    vol = np.where(live & ~no_vol, vol, 1.0)  # expired: any positive vol, the value is intrinsic
    g = black76_greeks(fwd, strike, np.where(live, t, 0.0), vol, is_call)
    model = np.where(live, np.asarray(g.price, dtype=np.float64),
                     np.where(is_call, np.maximum(fwd - strike, 0.0), np.maximum(strike - fwd, 0.0)))
    vega = np.asarray(g.vega, dtype=np.float64)
    bid = np.full(n, np.nan)
    ask = np.full(n, np.nan)
    bsz = np.full(n, np.nan)
    asz = np.full(n, np.nan)
    age = np.zeros(n)
    row = match_quotes(chain, strike, [int(s.expiry) for s in series], is_call)
    matched = (row >= 0) & live
    for i in np.flatnonzero(matched):
        j = int(row[i])
        bid[i], ask[i] = chain.bid[j], chain.ask[j]
        bsz[i], asz[i] = chain.bid_size[j], chain.ask_size[j]
        age[i] = chain.asof - chain.quote_ts[j]
    res = hybrid_marks(bid, ask, bsz, asz, model, prev_market, model_vega=vega, quote_age=age, config=config,
                       prev_passes=prev_passes, matched=matched)
    mark = np.where(np.isfinite(res.mark), res.mark, model)
    vol = np.where(no_vol, np.nan, vol)
    mark = np.where(no_vol, np.nan, mark)
    market = res.market & ~no_vol
    reason = np.where(no_vol, int(MarkReason.NO_MARK),
                      np.where(live, res.reason, int(MarkReason.EXPIRED_INTRINSIC)))
    passes = np.where(live & ~no_vol, res.passes, 0)
    return SeriesMarks([float(v) for v in vol], [float(m) for m in mark], [bool(x) for x in market],
                       [float(f) for f in fwd], [int(r) for r in reason], [int(p) for p in passes])


@dataclass(frozen=True)
class Screened:
    """Result of :func:`screen_series`: marks safe to archive and price, the accounts that may be attested, and
    what was left out (series ids with a bad vol or mark, accounts that held them)."""

    marks: SeriesMarks
    accounts: list
    bad_series: list[int]
    unattestable: list


def screen_series(series: Sequence[Any], marks: SeriesMarks, accounts: Sequence[Any]) -> Screened:
    """Screen the per-series vols and marks with :func:`keeper.quant.risk.engine.screen_market_data`: a series with a
    non-finite or non-positive vol or a non-finite mark gets a placeholder (vol 1, mark 0, not a market mark), and
    every account holding it is left out of the batch (its numbers would be built on bad data). Pure."""

    col = {s.series_id: j for j, s in enumerate(series)}
    rows, cols = [], []
    for i, a in enumerate(accounts):
        for sid, size in a.positions.items():
            if int(size) and int(sid) in col:
                rows.append(i)
                cols.append(col[int(sid)])
    pos = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(accounts), len(series)))
    scr = screen_market_data(np.asarray(marks.vols, dtype=np.float64), np.asarray(marks.marks, dtype=np.float64),
                             pos)
    bad = set(scr.bad_series.tolist())
    if not bad:
        return Screened(marks, list(accounts), [], [])
    drop = set(scr.unattestable_accounts.tolist())
    clean = SeriesMarks([float(v) for v in scr.vols], [float(m) for m in scr.marks],
                        [bool(m) and j not in bad for j, m in enumerate(marks.market)], marks.forwards,
                        None if marks.reasons is None else
                        [int(MarkReason.NO_MARK) if j in bad else r for j, r in enumerate(marks.reasons)],
                        None if marks.passes is None else [0 if j in bad else p for j, p in enumerate(marks.passes)])
    return Screened(clean, [a for i, a in enumerate(accounts) if i not in drop],
                    [series[j].series_id for j in sorted(bad)], [a for i, a in enumerate(accounts) if i in drop])


def risk_document(settings) -> dict:
    """The risk parameters as they enter the inputs document, from any settings with these attributes (the keeper's
    ``RiskSettings``, the scenario's :class:`keeper.attest.engine.EngineSettings`): ``var_confidence``,
    ``es_confidence``, ``im_multiplier``, ``horizon_days``, ``mc_paths``, ``mc_diffusion_vol``, ``grid_spot_range``,
    ``grid_vol_range``, and optionally ``stress_correlation`` (the correlation stress, docs/risk.md)."""
    doc = {"var_confidence": float(settings.var_confidence), "es_confidence": float(settings.es_confidence),
           "im_multiplier": float(settings.im_multiplier), "horizon_days": float(settings.horizon_days),
           "mc_paths": int(settings.mc_paths), "mc_diffusion_vol": float(settings.mc_diffusion_vol),
           "grid_spot_range": float(settings.grid_spot_range), "grid_vol_range": float(settings.grid_vol_range)}
    rho = getattr(settings, "stress_correlation", None)
    if rho is not None:  # written only when set, so documents without the stress hash as before
        doc["stress_correlation"] = float(rho)
    return doc


def accounts_document(accounts: Sequence[Any]) -> list[dict]:
    """The book part of an inputs document: per account (sorted by address) its state nonce, quote cash, collateral
    and positions as decimal strings of their on-chain integers (zero entries left out)."""
    return [{"account": a.account, "state_nonce": int(a.state_nonce), "cash": str(a.cash),
             "collateral": [[k, str(v)] for k, v in sorted(a.collateral.items()) if v],
             "positions": [[int(k), str(v)] for k, v in sorted(a.positions.items()) if v]}
            for a in sorted(accounts, key=lambda x: x.account.lower())]


def build_document(*, block: BlockRef, mc_seed: int, underlyings: Sequence[dict], series: Sequence[dict],
                   vols: Sequence[float], marks: Sequence[float], collateral_assets: Sequence[dict],
                   accounts: Sequence[dict], quote_decimals: int, risk: dict) -> dict:
    """The canonical inputs document of one block (``schema`` :data:`~keeper.attest.leaves.SCHEMA`; what is
    archived and hashed, and all :func:`~keeper.attest.leaves.leaves_from_inputs` reads):

    * ``underlyings``: ``{"asset", "spot_wad", "surface"}`` per underlying (surface: the canonical fitted surface,
      or ``None`` where the vols come from elsewhere); a series or collateral asset names its underlying by index.
      An underlying priced on its last attested market data (the keeper's fallback rule, docs/keeper.md) also has
      ``"fallback": {"reason", "since_block", "source_block", "shock_widening"}``: ``source_block`` is the block
      whose attested data is reused, and :func:`~keeper.attest.leaves.leaves_from_inputs` scales this underlying's
      log spot moves and log vol shocks by ``1 + shock_widening`` in every scenario;
    * ``series``: ``{"id", "underlying", "strike" (WAD string), "expiry", "is_call"}`` and optionally
      ``"forward_wad"`` (the forward of its expiry the series is priced on; absent: the underlying's spot), with
      ``vols`` and ``marks`` (floats, whole quote units) in the same order;
    * ``collateral_assets``: ``{"asset", "decimals", "haircut" (WAD string), "underlying" (index or None),
      "price"}`` (``price``: whole quote units per whole unit, for assets that do not move with an underlying);
    * ``accounts`` (:func:`accounts_document`), ``risk`` (:func:`risk_document`), ``mc_seed``, ``quote_decimals``.
    """
    return {
        "schema": SCHEMA,
        "block": {"number": block.number, "hash": block.hash, "timestamp": block.timestamp},
        "mc_seed": str(int(mc_seed)),
        "quote_decimals": int(quote_decimals),
        "risk": risk,
        "underlyings": [{"asset": u["asset"], "spot_wad": str(int(u["spot_wad"])), "surface": u.get("surface"),
                         **({"fallback": _fallback_doc(u["fallback"])} if u.get("fallback") else {})}
                        for u in underlyings],
        "series": list(series),
        "vols": [float(v) for v in vols],
        "marks": [float(m) for m in marks],
        "collateral_assets": list(collateral_assets),
        "accounts": list(accounts),
    }


def _fallback_doc(f: dict) -> dict:
    """The fallback flag as it enters the document (checked: a widening that is not a finite number >= 0 cannot be
    signed)."""
    w = float(f["shock_widening"])
    if not (w >= 0.0 and w < float("inf")):
        raise ValueError(f"fallback shock_widening {w!r} is not a finite number >= 0")
    return {"reason": str(f["reason"]), "since_block": int(f["since_block"]), "source_block": int(f["source_block"]),
            "shock_widening": w}


def forward_wad(forward: float, spot_wad: int) -> int:
    """The series' forward as the document writes it: the spot's exact WAD when the series is priced at spot (so
    its carry is exactly 1 and the risk inputs hash as a spot-priced book), else the forward in WAD."""
    return spot_wad if forward == spot_wad / WAD else to_wad(forward)


@dataclass
class Attestation:
    """A block's attestation as this keeper computed it."""

    sequence: int
    timestamp: int
    inputs_hash: str
    leaves: list[MarginLeaf]
    tree: MerkleTree
    spot_wad: int
    details: dict = field(default_factory=dict)
    #: the block's solvency index over the attested accounts (keeper.quant.risk.solvency.SolvencyIndex, floats in
    #: whole quote units, or the on-chain struct tuple already rounded), set by the keeper. Signed with the root: the
    #: message carries its struct hash (``solvencyHash``); ``None`` signs the "no figures" index
    #: (:func:`keeper.codec.eip712.unavailable_solvency`: 0 accounts covered, every attested account left out)
    solvency: Any = None
    #: decimals of the quote asset: needed to round a float ``solvency`` to base units
    quote_decimals: Optional[int] = None

    @property
    def root(self) -> str:
        return "0x" + self.tree.root.hex()

    def solvency_struct(self) -> tuple:
        """The on-chain ``SolvencyIndex`` struct posted with this root (:func:`keeper.codec.eip712.solvency_index_tuple`,
        rounded once against the protocol), or the "no figures" index when none was computed."""
        s = self.solvency
        if s is None:
            return eip712.unavailable_solvency(len(self.leaves))
        if isinstance(s, (tuple, list, dict)):
            return eip712.solvency_index_from(s)
        if self.quote_decimals is None:
            raise ValueError("attestation: a float solvency index needs quote_decimals to be rounded")
        return eip712.solvency_index_tuple(s, self.quote_decimals)

    def solvency_hash(self) -> str:
        """``solvencyHash`` of the signed ``MarginRoot`` (0x hex): the struct hash of :meth:`solvency_struct`."""
        return "0x" + eip712.solvency_struct_hash(self.solvency_struct()).hex()

    def message(self) -> dict:
        return {"root": self.root, "inputsHash": self.inputs_hash, "sequence": self.sequence,
                "timestamp": self.timestamp, "leafCount": len(self.leaves), "solvencyHash": self.solvency_hash()}

    def header(self) -> dict:
        return {"inputsHash": self.inputs_hash, "sequence": self.sequence, "timestamp": self.timestamp,
                "leafCount": len(self.leaves), "solvencyHash": self.solvency_hash()}

    def breached(self) -> list[MarginLeaf]:
        return [l for l in self.leaves if l.breached]

    def proof_for(self, account: str) -> Optional[tuple[dict, list[str], dict]]:
        """(leaf, Merkle branch, float values) of ``account`` in this attestation, or ``None``."""
        for i, l in enumerate(self.leaves):
            if l.account.lower() == account.lower():
                values = {k: float(v[i]) for k, v in self.details.items() if hasattr(v, "__len__") and len(v) > i}
                return l.to_json(), ["0x" + p.hex() for p in self.tree.proof(l.hash())], values
        return None

    def published(self) -> dict:
        return {"header": self.header(), "root": self.root, "leaves": [l.to_json() for l in self.leaves],
                "proof": self.proof_for, "solvency": eip712.solvency_index_dict(self.solvency_struct())}



"""The keeper: one cycle per block (sync chain state, read market data, fit the surface, mark every series, price
every account, build and sign the attestation), the signature exchange with its peers, and submission.

Determinism: everything a leaf depends on is collected into one plain ``inputs`` document (block, quantized spot,
surface parameters, marks and vols per series, risk parameters, Monte Carlo seed = block hash, positions snapshot)
which is archived under its keccak hash (the ``inputsHash`` of the header). :func:`leaves_from_inputs` computes the
leaves from that document alone, so any keeper or account owner can recompute an attested number from the archive,
and two honest keepers with the same inputs produce the same root.

Attestation messages use ``sequence = block number`` and ``timestamp = block timestamp``, so every keeper signs the
same ``MarginRoot``/``Prices`` message for a block.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import scipy.sparse as sp

from keeper import eip712
from keeper.canonical import canonical_json
from keeper.chains import SECONDS_PER_YEAR, OptionChain
from keeper.market_data import AggregatedSpot, BlockRef, MarketData, Skip, price_to_wad

WAD = 10**18
SCHEMA = "backstop-inputs/1"


# ------------------------------------------------------------------------------------------------------------
# Margin leaves and the OZ StandardMerkleTree: hashing, tree layout, proofs and bounds come from keeper/eip712.py
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Leaf:
    """One account's attested margin numbers (quote base units). Unlike :class:`keeper.eip712.MarginLeaf` it is
    not range-checked at construction (the risk engine's output is checked with :meth:`storage_violation` and an
    out-of-range account is left out of the batch, not allowed to stop it)."""

    account: str
    state_nonce: int
    equity: int
    maintenance: int
    initial: int
    model_value: int

    def as_tuple(self) -> tuple:
        """The Solidity ``MarginLeaf`` struct as a tuple (for contract calls and :func:`keeper.eip712.leaf_hash`)."""
        return (self.account, self.state_nonce, self.equity, self.maintenance, self.initial, self.model_value)

    def to_json(self) -> dict:
        """The leaf as published by the status API (camelCase keys)."""
        return {"account": self.account, "stateNonce": self.state_nonce, "equity": self.equity,
                "maintenance": self.maintenance, "initial": self.initial, "modelValue": self.model_value}

    @property
    def breached(self) -> bool:
        return self.equity < self.maintenance

    def hash(self) -> bytes:
        """The OZ StandardMerkleTree leaf hash, :func:`keeper.eip712.leaf_hash` (ABI encoding out of range for the
        leaf's types raises ``ValueError``)."""
        from eth_abi.exceptions import EncodingError

        try:
            return eip712.leaf_hash(self)
        except EncodingError as exc:
            raise ValueError(f"leaf of {self.account}: value out of range for its ABI type ({exc})") from exc

    def storage_violation(self) -> Optional[str]:
        """``None`` when the contract can store this leaf (``AccountState``/``BreachRecord``: int96 equity and
        model value, uint96 maintenance and initial, uint32 stateNonce), else why not. The bounds are
        :class:`keeper.eip712.MarginLeaf`'s; a cheap comparison first, the dataclass for the message."""
        if (0 <= self.state_nonce <= eip712.UINT32_MAX and eip712.INT96_MIN <= self.equity <= eip712.INT96_MAX
                and 0 <= self.maintenance <= eip712.UINT96_MAX and 0 <= self.initial <= eip712.UINT96_MAX
                and eip712.INT96_MIN <= self.model_value <= eip712.INT96_MAX):
            return None
        try:
            eip712.MarginLeaf(*self.as_tuple())
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None


@dataclass(frozen=True)
class _HashIndexedTree(eip712.MarginTree):
    """:class:`keeper.eip712.MarginTree` whose ``leaves`` are the sorted leaf hashes and whose lookups go by hash,
    so that its ``proof``/``multiproof`` serve a tree built from hashes (see :class:`MerkleTree`)."""

    index: dict = field(default_factory=dict, repr=False, compare=False)

    def _tree_index(self, leaf_hash: bytes) -> int:  # type: ignore[override]
        return self.index[bytes(leaf_hash)]


class MerkleTree:
    """Thin adapter over :class:`keeper.eip712.MarginTree` (OZ StandardMerkleTree: leaves sorted by hash,
    ``tree[len-1-i] = leaf i``, nodes :func:`keeper.eip712.hash_pair`) built from leaf hashes computed once:
    ``MarginTree.build`` re-validates every leaf and ABI-encodes each twice (about 1.5 s for 10,000 leaves, over
    the 2 s cycle budget). ``proof`` and ``multiproof`` are eip712's, keyed by leaf hash; ``multiproof`` returns
    ``(leaves in processing order, proof, flags)`` as OZ ``getMultiProof``."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        if not leaf_hashes:
            raise ValueError("a Merkle tree needs at least one leaf")
        ordered = sorted(bytes(h) for h in leaf_hashes)
        n = len(ordered)
        tree: list[bytes] = [b""] * (n - 1) + ordered[::-1]
        for i in range(n - 2, -1, -1):
            tree[i] = eip712.hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        self._tree = _HashIndexedTree(tuple(ordered), tuple(tree), {h: 2 * n - 2 - i for i, h in enumerate(ordered)})

    @property
    def root(self) -> bytes:
        return self._tree.root

    def proof(self, leaf_hash: bytes) -> list[bytes]:
        """The branch of one leaf (``MerkleProof.processProof``); ``KeyError`` when the hash is not a leaf."""
        return self._tree.proof(leaf_hash)

    def multiproof(self, leaf_hashes: Sequence[bytes]) -> tuple[list[bytes], list[bytes], list[bool]]:
        """(leaves in processing order, proof, flags) of a subset, for ``processMultiProof``."""
        mp = self._tree.multiproof(list(dict.fromkeys(bytes(h) for h in leaf_hashes)))
        return list(mp.leaves), list(mp.proof), list(mp.flags)


# ------------------------------------------------------------------------------------------------------------
# Computation from the inputs document
# ------------------------------------------------------------------------------------------------------------
def _risk_params(r: dict):
    from keeper.risk import RiskParams

    return RiskParams(var_level=r["var_confidence"], es_level=r["es_confidence"], im_multiplier=r["im_multiplier"])


def leaves_from_inputs(inputs: dict, chunk: int = 256) -> tuple[list[Leaf], dict]:
    """Every account's :class:`Leaf` from an inputs document (see :func:`build_inputs`), and per-account details
    (floats) for the status API. Pure: the same document gives the same leaves bit for bit."""
    from keeper.risk import (CALL, NO_UNDERLYING, PUT, CollateralTable, RiskInputs, SeriesTable,
                             compute_account_risk, model_values, to_quote_units)
    from keeper.risk_scenarios import MertonParams, grid_scenarios, monte_carlo_scenarios

    r = inputs["risk"]
    ts = int(inputs["block"]["timestamp"])
    spot = int(inputs["spot_wad"]) / WAD
    dec = int(inputs["quote_decimals"])
    series = inputs["series"]
    sid_index = {int(s["id"]): i for i, s in enumerate(series)}
    assets = inputs["collateral_assets"]
    asset_index = {a["asset"]: i for i, a in enumerate(assets)}
    accounts = inputs["accounts"]
    n_acc, n_ser, n_as = len(accounts), len(series), len(assets)

    rows, cols, vals = [], [], []
    coll = np.zeros((n_acc, n_as))
    cash = np.zeros(n_acc)
    for i, a in enumerate(accounts):
        for sid, size in a["positions"]:
            rows.append(i)
            cols.append(sid_index[int(sid)])
            vals.append(int(size) / WAD)
        for asset, amount in a["collateral"]:
            j = asset_index[asset]
            coll[i, j] = int(amount) / 10 ** int(assets[j]["decimals"])
        cash[i] = int(a["cash"]) / 10**dec
    positions = sp.csr_matrix((vals, (rows, cols)), shape=(n_acc, n_ser))
    st = SeriesTable(
        underlying=np.zeros(n_ser, dtype=np.int64),
        strike=np.array([int(s["strike"]) / WAD for s in series]) if n_ser else np.zeros(0),
        expiry=np.array([max(int(s["expiry"]) - ts, 0) / SECONDS_PER_YEAR for s in series]) if n_ser else np.zeros(0),
        kind=np.array([CALL if s["is_call"] else PUT for s in series], dtype=np.int64),
        discount=np.ones(n_ser))
    ct = CollateralTable(price=np.array([spot if a["moves"] else float(a["price"]) for a in assets]),
                         haircut=np.array([int(a["haircut"]) / WAD for a in assets]),
                         underlying=np.array([0 if a["moves"] else NO_UNDERLYING for a in assets], dtype=np.int64))
    ri = RiskInputs(series=st, positions=positions, collateral=coll, collateral_assets=ct,
                    forward=np.array([spot]), vols=np.array([float(v) for v in inputs["vols"]]),
                    marks=np.array([float(m) for m in inputs["marks"]]), params=_risk_params(r))
    horizon = float(r["horizon_days"]) / 365.0
    tail = monte_carlo_scenarios(int(inputs["mc_seed"]), int(r["mc_paths"]), 1,
                                 MertonParams(diffusion_vol=float(r["mc_diffusion_vol"])), horizon=horizon)
    grid = grid_scenarios(float(r["grid_spot_range"]), float(r["grid_vol_range"]), n_underlyings=1, horizon=horizon)
    risk = compute_account_risk(ri, tail, grid, chunk=chunk)
    total_equity = risk.equity + cash
    model_val = np.asarray(positions @ model_values(ri)).ravel() if n_ser else np.zeros(n_acc)
    eq = to_quote_units(total_equity, dec, "floor")
    mm = to_quote_units(risk.maintenance_margin, dec, "ceil")
    im = to_quote_units(risk.initial_margin, dec, "ceil")
    mv = to_quote_units(model_val, dec, "floor")
    leaves = [Leaf(a["account"], int(a["state_nonce"]), eq[i], mm[i], im[i], mv[i]) for i, a in enumerate(accounts)]
    details = {"equity": total_equity, "maintenance": risk.maintenance_margin, "initial": risk.initial_margin,
               "es": risk.es, "var": risk.var}
    return leaves, details


def canonical_inputs(doc: dict) -> bytes:
    """``canonical_json(doc)`` computed faster for an inputs document: only the parts that hold floats (surface,
    risk, vols, marks) go through :func:`keeper.canonical._normalise`; the large account and series lists hold only
    str/int/bool and are serialized as they are. Byte-identical to ``canonical_json(doc)`` (tested)."""
    import json

    from keeper.canonical import _normalise

    fast = dict(doc)
    for k in ("surface", "risk", "vols", "marks", "block", "collateral_assets"):
        if k in fast:
            fast[k] = _normalise(fast[k])
    return json.dumps(fast, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def recompute_from_archive(blob: bytes) -> tuple[bytes, list[Leaf]]:
    """Root and leaves recomputed from an archived inputs file (what anyone can do with ``GET /archive/<h>``)."""
    import json

    from keeper.risk import _from_canonical

    inputs = _from_canonical(json.loads(blob))
    leaves, details = leaves_from_inputs(inputs)
    leaves, _, _ = storable_leaves(leaves, details)
    return MerkleTree([l.hash() for l in leaves]).root, leaves


def storable_leaves(leaves: Sequence[Leaf], details: dict) -> tuple[list[Leaf], dict, list[tuple[Leaf, str]]]:
    """Split computed leaves into those the contract can store (:meth:`Leaf.storage_violation` is ``None``) and
    the rest: ``(kept leaves, details restricted to them, [(left-out leaf, reason)])``. Pure; the keeper signs
    only the kept leaves and :func:`recompute_from_archive` applies the same rule, so the roots agree."""
    bad = [(i, l, r) for i, l in enumerate(leaves) if (r := l.storage_violation()) is not None]
    if not bad:
        return list(leaves), details, []
    drop = {i for i, _, _ in bad}
    keep = np.array([i for i in range(len(leaves)) if i not in drop], dtype=np.int64)
    kept_details = {k: (np.asarray(v)[keep] if hasattr(v, "__len__") and len(v) == len(leaves) else v)
                    for k, v in details.items()}
    return [leaves[i] for i in keep.tolist()], kept_details, [(l, r) for _, l, r in bad]


# ------------------------------------------------------------------------------------------------------------
# Inputs from chain state and market data
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesMarks:
    """Per on-chain series: the vol used (from the surface) and the mark (hybrid where a matching quote exists)."""

    vols: list[float]
    marks: list[float]
    market: list[bool]


def mark_series(series: Sequence[Any], surface, chain: Optional[OptionChain], spot: float, now: int) -> SeriesMarks:
    """Vol from the fitted surface and hybrid mark (market mid when a listed quote with the same strike, expiry and
    kind passes the mark filters, else the model price) for each on-chain series. Stateless (no hysteresis across
    blocks), so that a restarted keeper marks exactly as the others do. Expired series get the intrinsic value.
    A live series for which the surface gives no finite positive vol gets NaN vol and mark (the keeper's cycle
    screens it out with :func:`screen_series`)."""
    from keeper.marks import hybrid_marks
    from keeper.pricing import black76_greeks

    n = len(series)
    if n == 0:
        return SeriesMarks([], [], [])
    strike = np.array([s.strike / WAD for s in series])
    t = np.array([max(s.expiry - now, 0) / SECONDS_PER_YEAR for s in series])
    is_call = np.array([bool(s.is_call) for s in series])
    live = t > 0
    vol = np.where(live, surface.implied_vol(strike, np.where(live, t, 1.0), spot), np.nan)
    no_vol = live & ~(np.isfinite(vol) & (vol > 0))  # the surface gives no usable vol: vol and mark NaN
    vol = np.where(live & ~no_vol, vol, 1.0)  # expired: any positive vol, the value is intrinsic
    g = black76_greeks(np.full(n, spot), strike, np.where(live, t, 0.0), vol, is_call)
    model = np.where(live, np.asarray(g.price, dtype=np.float64),
                     np.where(is_call, np.maximum(spot - strike, 0.0), np.maximum(strike - spot, 0.0)))
    vega = np.asarray(g.vega, dtype=np.float64)
    bid = np.full(n, np.nan)
    ask = np.full(n, np.nan)
    bsz = np.full(n, np.nan)
    asz = np.full(n, np.nan)
    age = np.zeros(n)
    if chain is not None and len(chain):
        key = {(round(float(k), 6), int(round(float(e))), bool(c)): j
               for j, (k, e, c) in enumerate(zip(chain.strike, chain.expiry_ts, chain.is_call))}
        for i, s in enumerate(series):
            j = key.get((round(s.strike / WAD, 6), int(s.expiry), bool(s.is_call)))
            if j is not None and live[i]:
                bid[i], ask[i] = chain.bid[j], chain.ask[j]
                bsz[i], asz[i] = chain.bid_size[j], chain.ask_size[j]
                age[i] = chain.asof - chain.quote_ts[j]
    res = hybrid_marks(bid, ask, bsz, asz, model, None, model_vega=vega, quote_age=age)
    mark = np.where(np.isfinite(res.mark), res.mark, model)
    vol = np.where(no_vol, np.nan, vol)
    mark = np.where(no_vol, np.nan, mark)
    market = res.market & ~no_vol
    return SeriesMarks([float(v) for v in vol], [float(m) for m in mark], [bool(x) for x in market])


@dataclass(frozen=True)
class Screened:
    """Result of :func:`screen_series`: marks safe to archive and price, the accounts that may be attested, and
    what was left out (series ids with a bad vol or mark, accounts that held them)."""

    marks: SeriesMarks
    accounts: list
    bad_series: list[int]
    unattestable: list


def screen_series(series: Sequence[Any], marks: SeriesMarks, accounts: Sequence[Any]) -> Screened:
    """Screen the per-series vols and marks with :func:`keeper.risk.screen_market_data`: a series with a
    non-finite or non-positive vol or a non-finite mark gets a placeholder (vol 1, mark 0, not a market mark), and
    every account holding it is left out of the batch (its numbers would be built on bad data). Pure."""
    from keeper.risk import screen_market_data

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
                        [bool(m) and j not in bad for j, m in enumerate(marks.market)])
    return Screened(clean, [a for i, a in enumerate(accounts) if i not in drop],
                    [series[j].series_id for j in sorted(bad)], [a for i, a in enumerate(accounts) if i in drop])


def risk_document(settings, mc_diffusion_vol: float) -> dict:
    """The risk parameters as they enter the inputs document."""
    return {"var_confidence": float(settings.var_confidence), "es_confidence": float(settings.es_confidence),
            "im_multiplier": float(settings.im_multiplier), "horizon_days": float(settings.horizon_days),
            "mc_paths": int(settings.mc_paths), "mc_diffusion_vol": float(mc_diffusion_vol),
            "grid_spot_range": float(settings.grid_spot_range), "grid_vol_range": float(settings.grid_vol_range)}


def build_inputs(*, block: BlockRef, spot_wad: int, surface_doc: dict, series: Sequence[Any], marks: SeriesMarks,
                 accounts: Sequence[Any], collateral_assets: Sequence[dict], quote_decimals: int, risk: dict,
                 underlying_asset: str) -> dict:
    """The canonical inputs document of one block (what is archived and hashed)."""
    return {
        "schema": SCHEMA,
        "block": {"number": block.number, "hash": block.hash, "timestamp": block.timestamp},
        "underlying_asset": underlying_asset,
        "spot_wad": str(spot_wad),
        "surface": surface_doc,
        "mc_seed": str(int(block.hash, 16)),
        "quote_decimals": int(quote_decimals),
        "risk": risk,
        "series": [{"id": s.series_id, "strike": str(s.strike), "expiry": s.expiry, "is_call": bool(s.is_call)}
                   for s in series],
        "vols": marks.vols,
        "marks": marks.marks,
        "collateral_assets": list(collateral_assets),
        "accounts": [{"account": a.account, "state_nonce": a.state_nonce, "cash": str(a.cash),
                      "collateral": [[k, str(v)] for k, v in sorted(a.collateral.items()) if v],
                      "positions": [[int(k), str(v)] for k, v in sorted(a.positions.items()) if v]}
                     for a in sorted(accounts, key=lambda x: x.account.lower())],
    }


@dataclass
class Attestation:
    """A block's attestation as this keeper computed it."""

    sequence: int
    timestamp: int
    inputs_hash: str
    leaves: list[Leaf]
    tree: MerkleTree
    spot_wad: int
    details: dict = field(default_factory=dict)

    @property
    def root(self) -> str:
        return "0x" + self.tree.root.hex()

    def message(self) -> dict:
        return {"root": self.root, "inputsHash": self.inputs_hash, "sequence": self.sequence,
                "timestamp": self.timestamp, "leafCount": len(self.leaves)}

    def header(self) -> dict:
        return {"inputsHash": self.inputs_hash, "sequence": self.sequence, "timestamp": self.timestamp,
                "leafCount": len(self.leaves)}

    def breached(self) -> list[Leaf]:
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
                "proof": self.proof_for}


# ------------------------------------------------------------------------------------------------------------
# The bot
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Pending:
    """A message this keeper signed and may have to submit."""

    kind: str
    sequence: int  # block number the message was built at
    message: dict
    digest: bytes
    signature: bytes
    payload: dict = field(default_factory=dict)
    posted_to: set = field(default_factory=set)
    done: bool = False


class KeeperBot:
    """One keeper. ``tick()`` is the scheduler job: on a new block it runs the cycle; every tick it exchanges
    signatures with the peers and submits what is due. Nothing raises out of ``tick()``."""

    def __init__(self, cfg, key, chain, market: MarketData, sender, codec, book, view, archive, peers,
                 metrics, log, fit_surface: Optional[Callable[[OptionChain], Any]] = None) -> None:
        self.cfg = cfg
        self.key = key
        self.me = key.address
        self.chain = chain
        self.market = market
        self.sender = sender
        self.codec = codec
        self.book = book
        self.view = view
        self.archive = archive
        self.peers = peers
        self.metrics = metrics
        self.log = log
        self._fit = fit_surface
        self.last_block: Optional[int] = None
        self.pending: dict[tuple[str, int], Pending] = {}
        self.attestations: dict[int, Attestation] = {}
        self.up: set[str] = set()
        self._lock = threading.Lock()
        self._quote_decimals: Optional[int] = None
        self._reported_disagreement: set[tuple[str, int]] = set()
        self._unpriced_logged: set[str] = set()
        dep = chain.deployment
        sym = cfg.market.underlying
        if sym not in dep.underlyings:
            raise ValueError(f"underlying {sym!r} is not in the deployment file's underlyings {sorted(dep.underlyings)}")
        self.underlying_asset = dep.underlyings[sym]

    # -- helpers ----------------------------------------------------------------------------------------------
    def _skip(self, reason: str, **fields: Any) -> None:
        self.metrics.skipped_inputs.labels(reason=reason).inc()
        self.log.warning("input_skipped", reason=reason, **fields)

    def quote_decimals(self) -> int:
        if self._quote_decimals is None:
            erc20 = [{"name": "decimals", "type": "function", "stateMutability": "view", "inputs": [],
                      "outputs": [{"name": "", "type": "uint8"}]}]
            c = self.chain.w3.eth.contract(address=self.chain.deployment.quote_asset, abi=erc20)
            self._quote_decimals = int(self.chain.rpc(lambda: c.functions.decimals().call()))
        return self._quote_decimals

    def quorum_size(self) -> int:
        return max(int(self.cfg.thresholds.quorum), int(self.chain.state.threshold or 0))

    def keepers(self) -> list[str]:
        ks = set(self.chain.state.keepers)
        return sorted(ks) if ks else sorted({self.me} | {p.address for p in self.peers if p.address})

    # -- the scheduler job ------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Poll for a new block; run the cycle on the latest one; exchange and submit. Never raises."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            try:
                head = self.chain.head()
            except Exception as exc:
                self.log.warning("rpc_unavailable", error=str(exc)[:200])
                self.view.update_status(rpc="down")
                return
            self.view.update_status(rpc="up")
            if head.number != self.last_block:
                t0 = time.perf_counter()
                try:
                    self.cycle(head)
                except Exception as exc:  # a bug or an RPC failure mid-cycle: log, retry on the next tick
                    self.log.error("cycle_failed", block=head.number, error=repr(exc)[:500])
                    self.metrics.cycle_seconds.labels(stage="failed").observe(time.perf_counter() - t0)
                    return
                self.metrics.cycle_seconds.labels(stage="total").observe(time.perf_counter() - t0)
            try:
                self.exchange_round(head.number)
                self.submit_due(head.number)
            except Exception as exc:
                self.log.error("exchange_failed", block=head.number, error=repr(exc)[:500])
        finally:
            self._lock.release()

    # -- the per-block cycle ----------------------------------------------------------------------------------
    def cycle(self, head) -> Optional[Attestation]:
        """Compute, archive and sign this block's attestation (and prices / settlement when due)."""
        m = self.metrics
        block = BlockRef(head.number, head.hash, head.timestamp)
        with m.stage("chain"):
            fork = self.chain.sync(head)
        if fork is not None:
            for k in [k for k in self.pending if k[1] >= fork]:
                del self.pending[k]
            for s in [s for s in self.attestations if s >= fork]:
                del self.attestations[s]
        self.last_block = head.number
        m.last_block.set(head.number)
        state = self.chain.state
        self.view.update_status(block=head.number, block_hash=head.hash,
                                last_margin_sequence=state.last_margin_sequence)
        with m.stage("market"):
            agg, skips = self.market.spot(block)
            for s in skips:
                self._skip(s.reason, source=s.source, detail=s.detail, block=head.number)
            if isinstance(agg, Skip):
                self._skip(agg.reason, source=agg.source, detail=agg.detail, block=head.number)
                self.view.update_status(spot=None, note="no usable spot: nothing signed")
                return None
            if agg.rejected:
                m.skipped_inputs.labels(reason="outlier").inc(len(agg.rejected))
                self.log.warning("spot_outliers", rejected=list(agg.rejected), block=head.number)
            spot = agg.price
            spot_wad = price_to_wad(spot, self.cfg.market.spot_decimals)
            chain_q = self.market.chain(block, spot)
            if isinstance(chain_q, Skip):
                self._skip(chain_q.reason, source=chain_q.source, detail=chain_q.detail, block=head.number)
                self.view.update_status(spot=spot, note="no usable option chain: nothing signed")
                return None
        with m.stage("surface"):
            try:
                surface = self._fit_surface(chain_q)
            except Exception as exc:
                self._skip("surface_fit_failed", detail=repr(exc)[:300], block=head.number)
                self.view.update_status(spot=spot, note="surface fit failed: nothing signed")
                return None
        series = sorted((s for s in state.series.values() if s.underlying == self.underlying_asset),
                        key=lambda s: s.series_id)
        priced_ids = {s.series_id for s in series}
        with m.stage("marks"):
            try:
                marks = mark_series(series, surface, chain_q, spot, head.timestamp)
            except ValueError as exc:
                self._skip("no_mark", detail=str(exc), block=head.number)
                return None
        accounts = []
        for a in state.accounts.values():
            if any(sid not in priced_ids for sid in a.positions):
                if a.account not in self._unpriced_logged:  # log once per account, count every block
                    self._unpriced_logged.add(a.account)
                    self.log.warning("input_skipped", reason="unpriced_series", account=a.account, block=head.number)
                self.metrics.skipped_inputs.labels(reason="unpriced_series").inc()
                continue
            accounts.append(a)
        screened = screen_series(series, marks, accounts)
        if screened.bad_series:
            marks, accounts = screened.marks, screened.accounts
            self._skip("bad_market_data", series=screened.bad_series, block=head.number,
                       unattestable=len(screened.unattestable),
                       accounts=[a.account for a in screened.unattestable[:50]])
            if screened.unattestable:
                m.skipped_inputs.labels(reason="unattestable_account").inc(len(screened.unattestable))
        coll_doc = self._collateral_doc(spot_wad)
        doc = build_inputs(block=block, spot_wad=spot_wad, surface_doc=surface.to_canonical(), series=series,
                           marks=marks, accounts=accounts, collateral_assets=coll_doc,
                           quote_decimals=self.quote_decimals(),
                           risk=risk_document(self.cfg.risk, self.cfg.risk.mc_diffusion_vol),
                           underlying_asset=self.underlying_asset)
        att = None
        if accounts:
            with m.stage("risk"):
                leaves, details = leaves_from_inputs(doc)
                leaves, details, out_of_range = storable_leaves(leaves, details)
            for l, why in out_of_range:
                self._skip("leaf_out_of_range", account=l.account, detail=why, block=head.number)
            leaves = self._fabricate(leaves)
        if accounts and leaves:
            with m.stage("sign"):
                inputs_hash = self.archive.put_bytes(canonical_inputs(doc))
                tree = MerkleTree([l.hash() for l in leaves])
                att = Attestation(head.number, head.timestamp, inputs_hash, leaves, tree, spot_wad, details)
                self.attestations[head.number] = att
                for s in [s for s in self.attestations if s < head.number - self.cfg.exchange.keep_blocks]:
                    del self.attestations[s]
                self._sign("margin", head.number, att.message(), {"attestation": head.number})
                self.view.publish(head.number, att.published())
            breached = att.breached()
            near = [l for l in leaves if not l.breached and l.maintenance > 0 and
                    l.equity < self.cfg.risk.near_margin_ratio * l.maintenance]
            m.accounts.set(len(leaves))
            m.breaches.set(len(breached))
            m.near_margin.set(len(near))
            self.view.update_status(
                accounts=len(leaves), breaches=[l.account for l in breached],
                near_margin=[l.to_json() for l in sorted(near, key=lambda l: l.equity - l.maintenance)[:20]],
                root=att.root, inputs_hash=inputs_hash)
        else:
            self.archive.put_bytes(canonical_inputs(doc))
        self._maybe_sign_prices(head, spot_wad)
        self._maybe_sign_settlements(head, spot_wad, series)
        self.view.update_status(spot=spot, spot_sources=list(agg.used), spot_rejected=list(agg.rejected),
                                surface={"slices": len(surface.slices),
                                         "hash": "0x" + surface.hash().hex(),
                                         "fit": _fit_summary(surface)},
                                note="ok")
        self.log.info("cycle", block=head.number, spot=spot, accounts=len(accounts),
                      breaches=len(att.breached()) if att else 0, root=att.root if att else None)
        return att

    def _fit_surface(self, chain_q: OptionChain):
        if self._fit is not None:
            return self._fit(chain_q)
        from keeper.surface import fit_surface

        surface = fit_surface(chain_q)
        if not surface.slices:
            raise ValueError("no expiry had enough clean quotes for a slice")
        return surface

    def _collateral_doc(self, spot_wad: int) -> list[dict]:
        dep = self.chain.deployment
        out = []
        for asset, info in sorted(self.chain.state.collateral_assets.items()):
            moves = asset == self.underlying_asset
            price = "1" if asset == dep.quote_asset else "0"  # other assets are not priced: valued at zero
            out.append({"asset": asset, "decimals": int(info.get("decimals", 18)),
                        "haircut": str(int(info.get("haircut", 0))), "moves": moves, "price": price})
        return out

    def _fabricate(self, leaves: list[Leaf]) -> list[Leaf]:
        bad = {a.lower() for a in self.cfg.testing.fabricate_breach}
        if not bad:
            return leaves
        out = []
        for l in leaves:
            if l.account.lower() in bad:
                self.log.warning("fabricating_breach", account=l.account)
                l = Leaf(l.account, l.state_nonce, -1, max(l.maintenance, 1), max(l.initial, 1), l.model_value)
            out.append(l)
        return out

    def _sign(self, kind: str, seq: int, message: dict, payload: dict) -> Pending:
        digest = self.codec.digest(kind, message)
        sig = self.codec.sign(kind, message, self.key.account)
        self.book.add(kind, message, sig)
        p = Pending(kind, seq, message, digest, sig, payload)
        self.pending[(kind, seq)] = p
        window = len(self.keepers()) * self.cfg.exchange.takeover_blocks + 3
        for k in [k for k in self.pending if k[0] == kind and k[1] < seq - window]:
            del self.pending[k]
        return p

    def _maybe_sign_prices(self, head, spot_wad: int) -> None:
        pub = self.cfg.publish
        state = self.chain.state
        due = head.number - state.last_price_sequence >= pub.prices_heartbeat_blocks
        if not due:
            onchain = self.chain.spot_price(self.underlying_asset)
            due = onchain is None or abs(spot_wad - onchain[0]) > pub.price_deviation * onchain[0]
        if due:
            msg = {"assets": [self.underlying_asset], "prices": [spot_wad], "sequence": head.number,
                   "timestamp": head.timestamp}
            self._sign("prices", head.number, msg, {})

    def _maybe_sign_settlements(self, head, spot_wad: int, series) -> None:
        if not self.cfg.publish.settlement:
            return
        expiries = sorted({s.expiry for s in series if s.expiry <= head.timestamp})
        if not expiries:
            return
        prices = self.chain.raw_batch_call([("settlementPrice", (self.underlying_asset, int(e))) for e in expiries])
        for e, p in zip(expiries, prices):
            if int(p) == 0:
                msg = {"underlyings": [self.underlying_asset], "prices": [spot_wad], "expiry": int(e),
                       "timestamp": head.timestamp}
                self._sign("settlement", head.number, msg, {"expiry": int(e)})

    # -- exchange ---------------------------------------------------------------------------------------------
    def exchange_round(self, head_number: int) -> None:
        """Push our signatures to every peer, pull theirs (verified before storing), note who is up, and log
        which leaves differ when a peer signed another root."""
        from keeper.exchange import SignatureRejected

        up = set()
        live = [p for p in self.pending.values() if not p.done]
        for peer in self.peers:
            ok = True
            for p in live:
                if peer.name not in p.posted_to:
                    st = peer.post_signature(p.kind, p.message, p.signature)
                    if st is None:
                        ok = False
                        break
                    if st in (200, 201):
                        p.posted_to.add(peer.name)
                book_seq = p.message.get("expiry", p.message.get("sequence"))
                got = peer.signatures(p.kind, int(book_seq))
                if got is None:
                    ok = False
                    break
                for msg, sig, _claimed in got:
                    try:
                        self.book.add(p.kind, msg, sig)
                    except SignatureRejected as exc:
                        self.metrics.skipped_inputs.labels(reason="bad_peer_signature").inc()
                        self.log.warning("peer_signature_rejected", peer=peer.name, reason=exc.reason)
            if ok and peer.health() is not None and peer.address:
                up.add(peer.address)
        self.up = up
        self.metrics.peers_up.set(len(up))
        self.view.update_status(peers={p.name: bool(p.address in up) for p in self.peers})
        latest = max((p for p in live if p.kind == "margin"), key=lambda p: p.sequence, default=None)
        if latest is not None:
            self.metrics.signatures_held.set(self.book.count("margin", latest.sequence, latest.digest))
            self._check_disagreement(latest)

    def _check_disagreement(self, p: Pending) -> None:
        from keeper.exchange import diff_leaves

        for digest, msg, sigs in self.book.entries("margin", p.sequence):
            if digest == p.digest:
                continue
            for signer in sigs:
                if (signer, p.sequence) in self._reported_disagreement:
                    continue
                self._reported_disagreement.add((signer, p.sequence))
                self.metrics.disagreements.inc()
                peer = next((x for x in self.peers if x.address == signer), None)
                theirs = peer.attestation(p.sequence) if peer is not None else None
                mine = self.attestations.get(p.sequence)
                diff = diff_leaves([l.to_json() for l in mine.leaves], theirs.get("leaves", [])) \
                    if (mine is not None and theirs) else None
                self.log.warning("keepers_disagree", block=p.sequence, peer=signer, my_root=p.message["root"],
                                 their_root=msg.get("root"), leaf_diff=diff)

    # -- submission -------------------------------------------------------------------------------------------
    def submit_due(self, head_number: int) -> None:
        """Submit the newest margin attestation (and prices / settlements) that has a quorum, when this keeper's
        turn in the rotation has come and the chain does not have it yet."""
        for kind in ("margin", "prices", "settlement"):
            cands = sorted((p for p in self.pending.values() if p.kind == kind and not p.done),
                           key=lambda p: p.sequence, reverse=True)
            for p in cands:
                if self._try_submit(p, head_number):
                    break

    def _try_submit(self, p: Pending, head_number: int) -> bool:
        from keeper.chain import TxFailed
        from keeper.exchange import should_submit

        f = self.chain.ch.functions
        if p.kind == "margin":
            att = self.attestations.get(p.sequence)
            if att is None:
                p.done = True
                return False
            on_chain = int(self.chain.rpc(lambda: f.lastMarginAttestation().call())[0])
            if on_chain >= p.sequence:  # already posted (by a peer, or before a restart)
                p.done = True
                return False
            breached = [l for l in att.breached() if not self._already_breached(l)]
            if not breached and p.sequence - on_chain < self.cfg.publish.root_every_blocks:
                return False  # nothing due: no new breach and the last root on chain is recent enough
        elif p.kind == "prices":
            on_chain = int(self.chain.rpc(lambda: f.lastPriceAttestation().call())[0])
            if on_chain >= p.sequence:
                p.done = True
                return False
        else:
            if int(self.chain.rpc(lambda: f.settlementPrice(self.underlying_asset, p.payload["expiry"]).call())):
                p.done = True
                return False
        sigs = self.book.quorum(p.kind, int(p.message.get("expiry", p.message.get("sequence"))), p.digest,
                                self.quorum_size())
        if sigs is None:
            return False
        # live for this message: peers that answered the last poll AND signed this very digest (a dead, stuck or
        # dissenting keeper is skipped in the rotation at once)
        signed = {signer for d, _m, sigs in self.book.entries(p.kind, int(p.message.get("expiry",
                                                                                        p.message.get("sequence"))))
                  if d == p.digest for signer in sigs}
        if not should_submit(self.me, p.sequence, head_number, self.keepers(), self.up & signed,
                             self.cfg.exchange.takeover_blocks):
            return True  # someone else's turn: do not fall back to older sequences either
        try:
            if p.kind == "margin":
                call, label = self._margin_call(att, breached, sigs)
            elif p.kind == "prices":
                msg = p.message
                call, label = f.postPrices(msg["assets"], msg["prices"], msg["sequence"], msg["timestamp"], sigs), \
                    "postPrices"
            else:
                msg = p.message
                call, label = f.postSettlementPrices(msg["underlyings"], msg["prices"], msg["expiry"],
                                                     msg["timestamp"], sigs), "postSettlementPrices"
            receipt = self.sender.send(call, label=label)
        except TxFailed as exc:
            p.done = True
            self.metrics.submissions.labels(outcome="failed").inc()
            self.log.warning("submission_failed", kind=p.kind, sequence=p.sequence, error=str(exc)[:300])
            return False
        p.done = True
        self.metrics.submissions.labels(outcome="ok").inc()
        self.log.info("submitted", kind=p.kind, sequence=p.sequence, tx="0x" + bytes(receipt["transactionHash"]).hex(),
                      block=int(receipt["blockNumber"]),
                      breached=[l.account for l in breached] if p.kind == "margin" else None)
        if p.kind == "margin" and breached:
            self._start_auctions(breached)
        return True

    def _start_auctions(self, breached: list[Leaf]) -> None:
        """Start the liquidation auction of each newly registered breach (the starter earns the reward); another
        starter may have been faster, which is logged, not an error."""
        from keeper.chain import TxFailed

        auction = self.chain.auction
        if auction is None or not self.cfg.publish.start_auctions:
            return
        for l in breached:
            if l.account in self.chain.state.open_auctions:
                continue
            try:
                r = self.sender.send(auction.functions.start(l.account), label="startAuction")
                self.metrics.submissions.labels(outcome="auction_started").inc()
                self.log.info("auction_started", account=l.account, block=int(r["blockNumber"]))
            except TxFailed as exc:
                self.log.warning("auction_start_failed", account=l.account, error=str(exc)[:300])

    def _already_breached(self, leaf: Leaf) -> bool:
        rec = self.chain.state.breached.get(leaf.account)
        return rec is not None and int(rec.get("stateNonce", -1)) == leaf.state_nonce

    def _margin_call(self, att: Attestation, breached: list[Leaf], sigs: bytes):
        f = self.chain.ch.functions
        h = att.header()
        header = (bytes.fromhex(h["inputsHash"][2:]), h["sequence"], h["timestamp"], h["leafCount"])
        if not breached:
            return f.postMarginRoot(att.tree.root, header, sigs), "postMarginRoot"
        by_hash = {l.hash(): l for l in breached}
        ordered, proof, flags = att.tree.multiproof(list(by_hash))
        leaves = [by_hash[h_].as_tuple() for h_ in ordered]
        return f.postMarginBatch(header, leaves, proof, flags, sigs), "postMarginBatch"


def _fit_summary(surface) -> dict:
    rep = getattr(surface, "fit_report", None) or {}
    out: dict[str, Any] = {}
    per = rep.get("slices") if isinstance(rep, dict) else None
    if isinstance(per, list):
        rmse = [s.get("rmse_vol_pts") for s in per if isinstance(s, dict) and s.get("rmse_vol_pts") is not None]
        if rmse:
            out["max_rmse_vol_pts"] = float(max(rmse))
    return out


# ------------------------------------------------------------------------------------------------------------
# Assembly and scheduling
# ------------------------------------------------------------------------------------------------------------
def build_keeper(cfg, key, *, w3=None, log=None, metrics=None, deployment=None):
    """Wire a :class:`KeeperBot` from a config and a key: chain client, tx sender, market data, codec, signature
    book, HTTP view and server (not started), peers, archive."""
    from keeper.archive import InputsArchive
    from keeper.chain import ChainClient, TxSender, load_deployment, make_web3
    from keeper.exchange import ExchangeServer, KeeperView, PeerClient, SignatureBook, TypedDataCodec
    from keeper.logging import get_logger
    from keeper.market_data import build_market_data
    from keeper.metrics import KeeperMetrics

    log = log or get_logger("keeper", address=key.address)
    metrics = metrics or KeeperMetrics()
    dep = deployment or load_deployment(cfg.chain.deployment_file)
    w3 = w3 or make_web3(cfg.chain.rpc_url, cfg.chain.request_timeout_s)
    chain = ChainClient(w3, dep, cfg.chain, metrics=metrics, log=log)
    sender = TxSender(w3, key.account, cfg.chain, dep.chain_id, metrics=metrics, log=log)
    underlying = dep.underlyings.get(cfg.market.underlying)
    market = build_market_data(cfg.market, onchain_reader=(lambda: chain.spot_price(underlying)) if underlying else None,
                               max_age_s=cfg.thresholds.max_staleness_s)
    codec = TypedDataCodec(dep.chain_id, dep.clearinghouse)
    keepers = {key.address} | {p.address for p in cfg.exchange.peers}
    book = SignatureBook(codec, keepers, keep=cfg.exchange.keep_blocks)
    view = KeeperView(key.address)
    archive = InputsArchive(cfg.archive_dir)
    peers = [PeerClient(p.name, p.url, p.address, cfg.exchange.request_timeout_s) for p in cfg.exchange.peers]
    bot = KeeperBot(cfg, key, chain, market, sender, codec, book, view, archive, peers, metrics, log)
    server = ExchangeServer(book, view, archive, cfg.exchange.host, cfg.exchange.port, log=log,
                            on_reject=lambda reason: metrics.skipped_inputs.labels(reason=f"post_{reason}").inc())
    return bot, server


def sync_keeper_set(bot: KeeperBot) -> None:
    """Register the on-chain keeper set with the signature book (after the first sync)."""
    if bot.chain.state.keepers:
        bot.book.set_keepers(bot.chain.state.keepers)


def run_scheduler(bot: KeeperBot, interval_s: float, stop: Optional[threading.Event] = None) -> None:
    """Run ``bot.tick`` every ``interval_s`` with apscheduler: one cycle at a time (``max_instances=1``), missed
    runs coalesced into one; returns when ``stop`` is set (or on KeyboardInterrupt)."""
    from apscheduler.schedulers.background import BackgroundScheduler

    def job() -> None:
        bot.tick()
        sync_keeper_set(bot)

    from datetime import datetime, timezone

    sched = BackgroundScheduler(job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
                                timezone=timezone.utc)
    sched.add_job(job, "interval", seconds=interval_s, id="keeper-tick", next_run_time=datetime.now(timezone.utc))
    sched.start()
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sched.shutdown(wait=True)

"""Re-derivation of an inputs document from its raw quotes: each underlying's surface refitted from the archived
option quotes (with the archived prior, :func:`keeper.quant.surface.fit_surface`), every series' vol, forward and
mark recomputed on it (:func:`keeper.attest.inputs.mark_series`, the keepers' own rule, including the hybrid mark's
choice of market or model from the archived quotes and the state the series records for the previous attested
document), and the margins recomputed from those re-derived marks (:func:`keeper.attest.leaves.leaves_from_inputs`).
Each number that differs is named: underlying or series, field, archived and recomputed value; a hybrid choice that
differs names the rule. :func:`hybrid_findings` checks the recorded previous states against the previous document.

The fit is deterministic, so an honest document re-derives bit for bit on the keepers' software; the tolerances
below only absorb floating-point differences between machines (docs/verify.md, "Tolerances").
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Any, Optional

import numpy as np

from keeper.attest.inputs import forward_wad, mark_series
from keeper.attest.portfolio import carry_from_document
from keeper.attest.leaves import leaves_from_inputs
from keeper.attest.portfolio import chain_from_quotes
from keeper.codec.merkle import MarginLeaf
from keeper.quant.marks import MARKET, RULES, MarkConfig, MarkReason, state_from_document
from keeper.quant.surface import SurfaceConfig, VolSurface, fit_surface
from keeper.units import SECONDS_PER_YEAR, WAD

#: a re-derived vol may differ from the archived one by this much (absolute, vol as a fraction: 1e-8 = 1e-6 vol
#: points)
VOL_TOLERANCE = 1e-8
#: a re-derived mark may differ from the archived one by this share of the mark (or of one quote unit, whichever is
#: larger)
MARK_TOLERANCE = 1e-8
#: a margin (equity, maintenance, initial, model value) recomputed from the re-derived marks may differ from the
#: attested leaf by this many quote base units (0 when the marks re-derived bit for bit)
LEAF_TOLERANCE_UNITS = 1
#: at most this many differing numbers are spelled out per check line (all are in the result's ``differences``)
MAX_LISTED = 5


@dataclass(frozen=True)
class Difference:
    """One number that did not re-derive: where (``"series 3"``, ``"underlying WETH"``, an account), which field,
    the archived and the recomputed value."""

    where: str
    field: str
    archived: Any
    recomputed: Any

    def __str__(self) -> str:
        return f"{self.where} {self.field}: archived {_fmt(self.archived)}, recomputed {_fmt(self.recomputed)}"


@dataclass
class Rederivation:
    """What :func:`rederive` found: one check per underlying (``{"check", "ok", "detail"}``, the form of
    ``backstop verify``'s checks), every difference, and the document with the re-derived vols and marks."""

    checks: list = field(default_factory=list)
    differences: list = field(default_factory=list)
    document: Optional[dict] = None


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.10g}"
    return str(x)


@dataclass(frozen=True)
class _Series:
    """A series of the document as :func:`mark_series` reads it, with its row in the document."""

    series_id: int
    strike: int  # [WAD]
    expiry: int  # [unix seconds]
    is_call: bool
    row: int


def _series_rows(doc: dict, u: int) -> list[_Series]:
    """The document's series on underlying ``u``, in document order."""
    return [_Series(int(s["id"]), int(s["strike"]), int(s["expiry"]), bool(s["is_call"]), j)
            for j, s in enumerate(doc["series"]) if int(s["underlying"]) == u]


def surface_config(cfg: Optional[dict]) -> SurfaceConfig:
    """The fit's configuration as archived (fields this software does not know are ignored; missing ones take
    their defaults); the default configuration when none was archived."""
    if not cfg:
        return SurfaceConfig()
    known = {f.name for f in fields(SurfaceConfig)}
    return SurfaceConfig(**{k: v for k, v in cfg.items() if k in known})


def _surface_differences(name: str, archived: VolSurface, refit: VolSurface, strikes: np.ndarray,
                         expiries: np.ndarray, forwards: np.ndarray) -> list[Difference]:
    """The refitted surface against the archived one: slice expiries and forwards, then the vol of both at every
    quoted strike and expiry (parameters themselves are ill-conditioned; the vols are what is priced)."""
    where = f"underlying {name} surface"
    ea = [s.expiry_ts for s in archived.slices]
    er = [s.expiry_ts for s in refit.slices]
    if ea != er:
        return [Difference(where, "slice expiries", ea, er)]
    out = []
    for a, r in zip(archived.slices, refit.slices):
        if abs(a.forward - r.forward) > MARK_TOLERANCE * max(abs(a.forward), 1.0):
            out.append(Difference(f"{where} slice {int(a.expiry_ts)}", "forward", a.forward, r.forward))
    t = np.maximum((expiries - archived.asof) / SECONDS_PER_YEAR, 1e-12)
    with np.errstate(all="ignore"):
        va = archived.implied_vol(strikes, t, forwards)
        vr = refit.implied_vol(strikes, t, forwards)
    both = np.isfinite(va) & np.isfinite(vr)
    d = np.where(both, np.abs(va - vr), np.where(np.isfinite(va) == np.isfinite(vr), 0.0, np.inf))
    if d.size and float(np.max(d)) > VOL_TOLERANCE:
        i = int(np.argmax(d))
        out.append(Difference(f"{where} at strike {strikes[i]:.6g} expiry {int(expiries[i])}",
                              f"vol (largest of {int(np.sum(d > VOL_TOLERANCE))} differing quoted points)",
                              float(va[i]), float(vr[i])))
    return out


def rederive(doc: dict) -> Rederivation:
    """Re-derive ``doc`` (floats decoded, :func:`keeper.quant.risk.engine.from_canonical`) from its raw quotes.

    Per underlying with a fitted surface:

    * with ``quotes``: the surface refitted from them (the archived ``fit.prior`` as prior, ``fit.config`` as
      configuration) must give the archived surface's vols at every quoted point; its series' vols, forwards and
      marks are then recomputed on the *refitted* surface and its chain;
    * flagged ``fallback`` (priced on the last attested data, docs/keeper.md): there are no quotes of this block;
      the series are re-marked on the archived (reused) surface;
    * a fitted surface without quotes cannot be re-derived: a failed check;
    * no surface (vols given by whoever attested, e.g. the scenario's smile): said so, nothing to re-derive.

    A series the recomputation gives no usable vol or mark must carry the placeholders (vol 1, mark 0) the
    keepers write for it. The document returned has the re-derived vols and marks in place of the archived ones."""
    out = Rederivation()
    new = copy.deepcopy(doc)
    now = int(doc["block"]["timestamp"])
    for u, entry in enumerate(doc["underlyings"]):
        name = str(entry.get("asset"))
        label = f"marks from raw quotes ({name})"
        diffs: list[Difference] = []
        if entry.get("surface") is None:
            out.checks.append({"check": label, "ok": True,
                               "detail": "no fitted surface in the document (its vols were given, not fitted): "
                                         "nothing to re-derive from quotes"})
            continue
        try:
            archived = VolSurface.from_canonical(entry["surface"])
        except (ValueError, KeyError, TypeError) as e:
            out.checks.append({"check": label, "ok": False, "detail": f"unreadable archived surface: {e}"})
            continue
        chain = carry = None
        spot = int(entry["spot_wad"]) / WAD
        rows = _series_rows(doc, u)
        if entry.get("quotes") is not None:
            try:
                chain = chain_from_quotes(entry["quotes"])
                fit = entry.get("fit") or {}
                prior = VolSurface.from_canonical(fit["prior"]) if fit.get("prior") else None
                surface = fit_surface(chain, surface_config(fit.get("config")), prior=prior)
            except Exception as e:  # noqa: BLE001 - any failure to refit is a finding, named
                out.checks.append({"check": label, "ok": False,
                                   "detail": f"the archived quotes do not refit: {type(e).__name__}: {e}"})
                continue
            fwd_q = np.asarray(chain.forward, dtype=np.float64)
            fwd_q = np.where(np.isfinite(fwd_q) & (fwd_q > 0), fwd_q, spot)
            diffs += _surface_differences(name, archived, surface, np.asarray(chain.strike, dtype=np.float64),
                                          np.asarray(chain.expiry_ts, dtype=np.float64), fwd_q)
            how = (f"surface refitted from {len(chain)} archived quotes"
                   f"{' with the archived prior' if prior is not None else ' (cold start)'}")
        elif entry.get("fallback"):
            surface = archived
            fb = entry["fallback"]
            # its forwards are the last attested document's carries (docs/keeper.md, "Fallback"); re-marked on them
            carry = carry_from_document(doc, name)
            how = (f"fallback: priced on the attested surface of block {fb.get('source_block')} (no quotes this "
                   f"block), series re-marked on it at their archived forwards")
        else:
            out.checks.append({"check": label, "ok": False,
                               "detail": "the archive carries a fitted surface but not the raw quotes it was fitted "
                                         "on: its vols and marks cannot be re-derived"})
            continue
        hybrid: list[Difference] = []
        if rows:
            # expired series: intrinsic against the settlement price the document records as their forward
            settled = {int(s.expiry): int(doc["series"][s.row]["forward_wad"]) / WAD for s in rows
                       if int(s.expiry) <= now and "forward_wad" in doc["series"][s.row]}
            # the hybrid state each series was decided from, as recorded (checked against the previous document by
            # hybrid_findings); a document without states (before they were recorded) was marked from a cold start
            recorded = [doc["series"][s.row].get("hybrid") for s in rows]
            was_market, was_passes, _ = state_from_document(
                {"series": [{"id": s.series_id, "hybrid": (h or {}).get("prev")} for s, h in zip(rows, recorded)]},
                [s.series_id for s in rows])
            config = MarkConfig.from_document((entry.get("hybrid") or {}).get("config"))
            sm = mark_series(rows, surface, chain, spot, now, carry, settled, prev_market=was_market,
                             prev_passes=was_passes, config=config)
            for s, h, x, r, n in zip(rows, recorded, sm.market, sm.reasons or [], sm.passes or []):
                if h is None:
                    continue
                got = (MARKET if x else "model", MarkReason(r).name, int(n))
                had = (h.get("branch"), h.get("reason"), h.get("passes"))
                if had != got:
                    hybrid.append(Difference(
                        f"series {s.series_id}", "hybrid mark", f"{had[0]} ({had[1]}, passes {had[2]})",
                        f"{got[0]} ({got[1]}, passes {got[2]}; rule: {RULES[MarkReason(r)]}; from the recorded "
                        f"previous state {h.get('prev')})"))
            for s, v, m, f in zip(rows, sm.vols, sm.marks, sm.forwards or [spot] * len(rows)):
                where = f"series {s.series_id}"
                av, am_ = float(doc["vols"][s.row]), float(doc["marks"][s.row])
                if not (math.isfinite(v) and v > 0 and math.isfinite(m)):
                    v, m = 1.0, 0.0  # the keepers' placeholders for a series with bad market data
                if abs(av - v) > VOL_TOLERANCE:
                    diffs.append(Difference(where, "vol", av, v))
                if abs(am_ - m) > MARK_TOLERANCE * max(abs(m), 1.0):
                    diffs.append(Difference(where, "mark", am_, m))
                fa = doc["series"][s.row].get("forward_wad")
                fr = forward_wad(f, int(entry["spot_wad"]))
                if fa is not None and abs(int(fa) - fr) > max(1, int(MARK_TOLERANCE * fr)):
                    diffs.append(Difference(where, "forward_wad", int(fa), fr))
                new["vols"][s.row], new["marks"][s.row] = float(v), float(m)
        out.differences += diffs + hybrid
        if diffs:
            listed = "; ".join(str(d) for d in diffs[:MAX_LISTED])
            more = f" (and {len(diffs) - MAX_LISTED} more)" if len(diffs) > MAX_LISTED else ""
            out.checks.append({"check": label, "ok": False, "detail": f"{how}: {listed}{more}"})
        else:
            out.checks.append({"check": label, "ok": True,
                               "detail": f"{how}: {len(rows)} series' vols, forwards and marks re-derived "
                                         f"(vol within {VOL_TOLERANCE:g}, mark within {MARK_TOLERANCE:g} relative)"})
        states = [doc["series"][s.row].get("hybrid") for s in rows]
        if any(h is not None for h in states):
            on_market = sum(1 for h in states if h and h.get("branch") == MARKET)
            more = f" (and {len(hybrid) - MAX_LISTED} more)" if len(hybrid) > MAX_LISTED else ""
            out.checks.append({"check": f"hybrid mark rule ({name})", "ok": not hybrid, "detail": (
                "; ".join(str(d) for d in hybrid[:MAX_LISTED]) + more if hybrid else
                f"each series' market/model choice, reason and state re-derived from the archived quotes and its "
                f"recorded previous state ({on_market} of {len(rows)} on the market)")})
    out.document = new
    return out


def leaf_differences(leaf: MarginLeaf, mine: Optional[MarginLeaf], tolerance: int = LEAF_TOLERANCE_UNITS
                     ) -> list[Difference]:
    """The attested leaf against one recomputed from re-derived marks (margins within ``tolerance`` base units)."""
    if mine is None:
        return [Difference(f"account {leaf.account}", "leaf", "attested", "absent from the re-derived document")]
    out = []
    for f in ("equity", "maintenance", "initial", "model_value"):
        a, r = int(getattr(leaf, f)), int(getattr(mine, f))
        if abs(a - r) > tolerance:
            out.append(Difference(f"account {leaf.account}", f, a, r))
    return out


def rederived_leaves(doc: dict) -> dict[str, MarginLeaf]:
    """Leaves of a (re-derived) document keyed by lower-case account."""
    leaves, _ = leaves_from_inputs(doc)
    return {x.account.lower(): x for x in leaves}


def prior_findings(doc: dict, previous: Optional[dict], previous_hash: Optional[str]) -> list[dict]:
    """Whether each underlying's archived prior (``fit.prior``) is the one the keepers' rule gives: the surface of the
    same asset in ``previous`` (the document the last margin root posted at or before ``doc``'s block names;
    ``None``: none was posted) unless that entry was itself a fallback (docs/keeper.md). A different prior is a
    broken rule (``prior (<asset>)``); a cold start although a previous surface existed is allowed (a keeper that
    could not fetch the previous document fits without prior) and said; ``previous_hash`` labels the lines."""
    out = []
    prev_u = {str(u["asset"]).lower(): u for u in (previous or {}).get("underlyings", [])}
    where = f"the document of the last root before this block ({previous_hash})" if previous_hash else \
        "no margin root was posted before this block"
    for entry in doc["underlyings"]:
        fit = entry.get("fit")
        if fit is None:
            continue
        name = str(entry.get("asset"))
        pe = prev_u.get(name.lower())
        expected = pe.get("surface") if pe and not pe.get("fallback") else None
        got = fit.get("prior")
        try:
            h_exp = VolSurface.from_canonical(expected).hash() if expected else None
            h_got = VolSurface.from_canonical(got).hash() if got else None
        except (ValueError, KeyError, TypeError) as e:
            out.append({"check": f"prior ({name})", "ok": False, "detail": f"unreadable prior surface: {e}"})
            continue
        if h_got is None:
            out.append({"check": f"prior ({name})", "ok": True, "detail": (
                f"cold start although {where} has a surface for it (allowed: a keeper without that document fits "
                f"without prior)" if h_exp else f"cold start: {where} has no usable surface for it")})
        elif h_got == h_exp:
            out.append({"check": f"prior ({name})", "ok": True,
                        "detail": f"the prior is the surface of {where} (0x{h_got.hex()[:16]}...)"})
        else:
            out.append({"check": f"prior ({name})", "ok": False, "detail": (
                f"the archived prior 0x{h_got.hex()[:16]}... is not the surface of {where} "
                + (f"(0x{h_exp.hex()[:16]}...)" if h_exp else "(none usable: no prior allowed)"))})
    return out


def hybrid_findings(doc: dict, previous: Optional[dict], previous_hash: Optional[str]) -> list[dict]:
    """Whether the previous hybrid states each series of ``doc`` records (``series[i].hybrid.prev``) are the keepers'
    rule: the states of the same series in ``previous`` (the document the last margin root posted at or before
    ``doc``'s block names; ``None``: none was posted), ``None`` for a series that document does not have. A document
    that records a cold start (``hybrid.previous_block`` null, no previous states) although a previous document
    exists is allowed and said (a keeper that could not fetch it marks from the model side, the stricter thresholds);
    any other difference breaks the rule (``hybrid state (<asset>)``), naming the series."""
    out = []
    where = f"the document of the last root before this block ({previous_hash})" if previous_hash else \
        "no margin root was posted before this block"
    for u, entry in enumerate(doc["underlyings"]):
        h = entry.get("hybrid")
        if h is None:
            continue
        name = str(entry.get("asset"))
        label = f"hybrid state ({name})"
        rows = [s for s in doc["series"] if int(s["underlying"]) == u and s.get("hybrid") is not None]
        claimed = h.get("previous_block")
        if claimed is None:
            stray = [int(s["id"]) for s in rows if s["hybrid"].get("prev") is not None]
            if stray:
                out.append({"check": label, "ok": False, "detail": (
                    f"the document records a cold start but previous states for series {stray[:MAX_LISTED]}")})
            else:
                out.append({"check": label, "ok": True, "detail": (
                    f"cold start (every series from the model) although {where} exists (allowed: a keeper without "
                    f"that document decides from the stricter side)" if previous is not None else
                    f"cold start: {where}")})
            continue
        if previous is None or int(previous["block"]["number"]) != int(claimed):
            got = None if previous is None else int(previous["block"]["number"])
            out.append({"check": label, "ok": False, "detail": (
                f"the states are said to continue from block {claimed}, but {where} is of block {got}")})
            continue
        _, _, expected = state_from_document(previous, [int(s["id"]) for s in rows])
        bad = [f"series {int(s['id'])}: recorded {s['hybrid'].get('prev')}, previous document {e}"
               for s, e in zip(rows, expected) if s["hybrid"].get("prev") != e]
        out.append({"check": label, "ok": not bad, "detail": (
            "; ".join(bad[:MAX_LISTED]) + (f" (and {len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else "")
            if bad else f"every series' previous state is its state in {where} (block {claimed})")})
    return out

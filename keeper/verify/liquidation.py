"""``backstop verify``: check one liquidation against the protocol's rules from public data only.

Given an account (its latest auction) or an auction id, it takes

* the on-chain record: ``AuctionStarted``, the ``AccountBreached`` it started from, the transaction that posted
  that attestation (header, leaves and signatures from its calldata), the ``Bid``/``AuctionReset`` events;
* the archived inputs named by the attestation's ``inputsHash`` (keepers write them to disk and serve them at
  ``/archive/<inputsHash>``; the file's keccak must equal the hash: rule ``archive hash``),

and checks, saying which number differs when one does (each check is a rule, named in the output; the evidence is
gathered by :func:`gather` and checked by :func:`check_liquidation`, so evidence built by hand is checked the same
way; docs/verify.md):

1. the attestation carries at least M signatures of registered keepers over the EIP-712 ``MarginRoot``;
2. the account's leaf has a Merkle branch to the signed root (the verifier's own tree code, :mod:`keeper.codec.merkle`);
3. equity, maintenance, initial margin and model value recomputed from the archived inputs with the quant engine
   equal the attested leaf; the surface refitted from the archived raw quotes (and the archived prior), every
   series' vol, forward and mark re-derived on it and the leaf recomputed from those (:mod:`keeper.verify.quotes`,
   naming each number that differs: series, field, archived and recomputed); and the account was below maintenance
   margin by the raw quotes' numbers; every expired series was valued at the chain's settlement price (the posted
   one, else the 30-minute average of the attested prices), and every posted settlement price is that average
   (rule ``settlement price``, :mod:`keeper.verify.settlement`);
4. the auction started at the attested equity (or, with a risk-sized span in its configuration, at the book's value
   ``V >= E``) with the span and target its rules give;
5. every bid paid the curve's price at its time (within one base unit: the contract rounds each step, the
   reference once), bought no more than the allowed fraction, and was charged the penalty ``ceil(amount * penalty)``;
6. every bid recorded the bidder's claim on the account's book in the same transaction (``ClaimRecorded``: the
   fraction of the original portfolio as a share of what was left, ``fraction / (1 - sold before)`` rounded up,
   exactly 1 for the rest; the payment equal to the bid amount when positive, between it and 0 when the bidder is
   paid), and the line says whether the claim
   was delivered since (``ClaimSettled``: anyone may settle it, at any time, so a pending claim is not a fault).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import requests
from eth_utils import is_address, keccak

from keeper.attest.leaves import SCHEMA, recompute_from_archive
from keeper.chain.deploy import clearinghouse_abi, load_artifacts, web3_for
from keeper.codec.merkle import MarginLeaf, process_multiproof
from keeper.errors import VerifyError
from keeper.quant import auction_math as am
from keeper.quant.risk.engine import from_canonical
from keeper.units import WAD
from keeper.verify.quotes import (
    LEAF_TOLERANCE_UNITS,
    MAX_LISTED,
    hybrid_findings,
    leaf_differences,
    prior_findings,
    rederive,
    rederived_leaves,
)
from keeper.verify.settlement import SettlementEvidence, posted_price_findings, settlement_findings
from keeper.verify.signatures import check_attestation, decode_batch


def connect(deployment_file: str | Path, rpc_url: str):
    """(web3, deployment dict, Clearinghouse contract, auction contract) of a deployment file on the node at
    ``rpc_url``; raises VerifyError when the file or the node does not fit."""

    p = Path(deployment_file)
    try:
        dep = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise VerifyError(f"cannot read deployment file {p}: {e}") from None
    for k in ("clearinghouse", "auction", "chain_id", "block"):
        if not dep.get(k):
            raise VerifyError(f"deployment file {p} has no {k!r}")
    abi = dep.get("abi") or {}
    if "clearinghouse" not in abi or "auction" not in abi:

        abi = {"clearinghouse": clearinghouse_abi(),
               "auction": load_artifacts(["LiquidationAuction"], compile_if_missing=False)["LiquidationAuction"].abi}
    w3 = web3_for(rpc_url)
    try:
        cid = int(w3.eth.chain_id)
    except Exception as e:  # noqa: BLE001
        raise VerifyError(f"no node answers at {rpc_url}: {type(e).__name__}") from None
    if cid != int(dep["chain_id"]):
        raise VerifyError(f"chain id {cid} at {rpc_url} differs from the deployment's {dep['chain_id']}")
    ch = w3.eth.contract(address=dep["clearinghouse"], abi=abi["clearinghouse"])
    auc = w3.eth.contract(address=dep["auction"], abi=abi["auction"])
    return w3, dep, ch, auc


def fetch_archive_checked(inputs_hash: str, dirs: Sequence[Path], urls: Sequence[str]
                          ) -> tuple[Optional[bytes], str]:
    """The archived inputs for ``inputs_hash`` from a folder (``<hash>.json``) or a keeper's ``/archive/<hash>``:
    ``(bytes, "")`` when one holds bytes whose keccak is the hash, else ``(None, why)``, naming a file or URL whose
    bytes hash to something else (an archive changed after signing)."""
    want = bytes.fromhex(inputs_hash.removeprefix("0x"))
    tried, wrong = [], []
    for d in dirs:
        f = Path(d) / f"{inputs_hash.lower()}.json"
        tried.append(str(f))
        if f.is_file():
            blob = f.read_bytes()
            if keccak(blob) == want:
                return blob, ""
            wrong.append(f"{f} hashes to 0x{keccak(blob).hex()}")
    for u in urls:
        url = f"{u.rstrip('/')}/archive/{inputs_hash.lower()}"
        tried.append(url)
        try:
            r = requests.get(url, timeout=5)
        except requests.RequestException:
            continue
        if r.status_code == 200:
            if keccak(r.content) == want:
                return r.content, ""
            wrong.append(f"{url} hashes to 0x{keccak(r.content).hex()}")
    if wrong:
        return None, (f"the archived inputs do not hash to the signed {inputs_hash} (changed after signing): "
                      + "; ".join(wrong))
    return None, f"archived inputs {inputs_hash} not found (tried {', '.join(tried) or 'no source: give --archive'})"


def fetch_archive(inputs_hash: str, dirs: Sequence[Path], urls: Sequence[str]) -> bytes:
    """:func:`fetch_archive_checked`, raising VerifyError when no source holds bytes whose keccak is the hash."""
    blob, problem = fetch_archive_checked(inputs_hash, dirs, urls)
    if blob is None:
        raise VerifyError(problem)
    return blob


def recompute(blob: bytes) -> dict[str, MarginLeaf]:
    """Leaves recomputed from an archived inputs document (:data:`keeper.attest.leaves.SCHEMA`, what every keeper
    and the scenario archive), keyed by lower-case account."""
    doc = json.loads(blob)
    if doc.get("schema") != SCHEMA:
        raise VerifyError(f"archived inputs of unknown schema {doc.get('schema')!r} (expected {SCHEMA!r})")
    _root, leaves = recompute_from_archive(blob)
    return {x.account.lower(): x for x in leaves}


def _find_auction(auc, from_block: int, account: str | None, auction_id: int | None):
    starts = auc.events.AuctionStarted().get_logs(from_block=from_block)
    if auction_id is not None:
        got = [e for e in starts if int(e["args"]["id"]) == auction_id]
        if not got:
            raise VerifyError(f"no auction with id {auction_id} (auctions so far: {len(starts)})")
        return got[-1]
    got = [e for e in starts if e["args"]["account"].lower() == account.lower()]
    if not got:
        raise VerifyError(f"no liquidation auction for account {account}")
    return got[-1]


@dataclass
class Evidence:
    """Everything ``backstop verify`` reads about one liquidation, gathered from the chain by :func:`gather` (or
    assembled by hand to show what verify says of evidence the contracts would refuse to produce). Events are
    ``{"args", "blockNumber", "logIndex", "transactionHash"}`` dicts; bids and resets also carry ``timestamp``."""

    account: str
    auction_id: int
    start: dict  # AuctionStarted, with the start block's "timestamp"
    breach: Optional[dict]  # the AccountBreached it started from (None: no record)
    calldata: Optional[bytes]  # input of the transaction that posted the breach's attestation
    keepers: set
    threshold: int
    config: tuple  # the auction's configuration in the start block
    bids: list = field(default_factory=list)
    resets: list = field(default_factory=list)
    claims: dict = field(default_factory=dict)  # bid transaction hash (bytes) -> ClaimRecorded
    settled: list = field(default_factory=list)  # ClaimSettled on this account's book
    #: MarginRootPosted up to the breach: ``(block, log index, sequence, inputsHash 0x hex)``; the last one at or
    #: before a document's block names the document whose surface is that document's prior
    roots: list = field(default_factory=list)
    #: what the chain says about settlement up to the breach (``SettlementPricePosted``, ``PricesPosted``), for
    #: the ``settlement price`` rule (:mod:`keeper.verify.settlement`); None: not gathered
    settlement: Optional[SettlementEvidence] = None


def settlement_evidence(ch, from_block: int, to_block: int) -> SettlementEvidence:
    """The settlement prices posted and the attested price history between two blocks (inclusive)."""
    posted = {(str(e["args"]["underlying"]).lower(), int(e["args"]["expiry"])): int(e["args"]["price"])
              for e in ch.events.SettlementPricePosted().get_logs(from_block=from_block, to_block=to_block)}
    history: dict[str, list[tuple[int, int]]] = {}
    for e in ch.events.PricesPosted().get_logs(from_block=from_block, to_block=to_block):
        for asset, price in zip(e["args"]["assets"], e["args"]["prices"]):
            history.setdefault(str(asset).lower(), []).append((int(e["args"]["timestamp"]), int(price)))
    return SettlementEvidence(posted, history)


def _ev(e, w3=None) -> dict:
    d = {"args": dict(e["args"]), "blockNumber": int(e["blockNumber"]), "logIndex": int(e["logIndex"]),
         "transactionHash": bytes(e["transactionHash"])}
    if w3 is not None:
        d["timestamp"] = int(w3.eth.get_block(e["blockNumber"])["timestamp"])
    return d


def gather(w3, dep: dict, ch, auc, account: str | None = None, auction_id: int | None = None) -> Evidence:
    """The on-chain record of the latest auction of ``account`` (or auction ``auction_id``)."""
    fb = int(dep["block"])
    start = _find_auction(auc, fb, account, auction_id)
    s = start["args"]
    acct, aid, nonce = s["account"], int(s["id"]), int(s["stateNonce"])
    breaches = [b for b in ch.events.AccountBreached().get_logs(from_block=fb, argument_filters={"account": acct})
                if int(b["args"]["stateNonce"]) == nonce
                and (b["blockNumber"], b["logIndex"]) < (start["blockNumber"], start["logIndex"])]
    breach = _ev(breaches[-1]) if breaches else None
    calldata = bytes(w3.eth.get_transaction(breach["transactionHash"])["input"]) if breach else None
    sb = start["blockNumber"]
    return Evidence(
        account=acct, auction_id=aid, start=_ev(start, w3), breach=breach, calldata=calldata,
        keepers=set(ch.functions.keepers().call()), threshold=int(ch.functions.threshold().call()),
        # the configuration the auction runs on: the one current in its start block (configurations are versioned
        # and immutable, so a later setConfig does not change it)
        config=tuple(auc.functions.config().call(block_identifier=sb)),
        bids=[_ev(x, w3) for x in auc.events.Bid().get_logs(from_block=sb) if int(x["args"]["id"]) == aid],
        resets=[_ev(r, w3) for r in auc.events.AuctionReset().get_logs(from_block=sb) if int(r["args"]["id"]) == aid],
        claims={bytes(c["transactionHash"]): _ev(c) for c in
                ch.events.ClaimRecorded().get_logs(from_block=sb, argument_filters={"source": acct})},
        settled=[_ev(x) for x in ch.events.ClaimSettled().get_logs(from_block=sb, argument_filters={"source": acct})],
        roots=[(int(r["blockNumber"]), int(r["logIndex"]), int(r["args"]["sequence"]),
                "0x" + bytes(r["args"]["inputsHash"]).hex())
               for r in ch.events.MarginRootPosted().get_logs(from_block=fb, to_block=breach["blockNumber"])]
        if breach else [],
        settlement=settlement_evidence(ch, fb, breach["blockNumber"]) if breach else None)


def verify_liquidation(*, rpc_url: str, deployment_file: str | Path, account: str | None = None,
                       auction_id: int | None = None, archive_dirs: Sequence[Path] = (),
                       keeper_urls: Sequence[str] = ()) -> dict[str, Any]:
    """Run every check; returns ``{"followed_rules": bool, "lines": [...], "checks": [...]}``."""
    if account is not None and not is_address(account):
        raise VerifyError(f"not an address: {account!r}")
    w3, dep, ch, auc = connect(deployment_file, rpc_url)
    ev = gather(w3, dep, ch, auc, account, auction_id)
    return check_liquidation(ev, ch, archive_dirs=archive_dirs, keeper_urls=keeper_urls)


def check_liquidation(ev: Evidence, ch, *, archive_dirs: Sequence[Path] = (), keeper_urls: Sequence[str] = (),
                      archive: Optional[bytes] = None) -> dict[str, Any]:
    """Every rule of the module docstring on ``ev``; ``ch`` (the Clearinghouse contract) decodes the posting call
    and computes the EIP-712 digest (``hashTypedData``). ``archive``: the inputs document's bytes, when already at
    hand (else fetched from ``archive_dirs``/``keeper_urls``); either way its keccak must be the attested hash."""
    s = ev.start["args"]
    acct, aid = ev.account, ev.auction_id
    checks: list[dict] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    if ev.breach is None:
        check("breach record", False, f"no AccountBreached for {acct} at state nonce {int(s['stateNonce'])} "
                                      f"before auction {aid}")
        return _result(acct, aid, checks)
    b = ev.breach
    info = check_attestation(ch, ev.calldata or b"", b["args"], ev.keepers, ev.threshold)
    n_sig = len(info.get("signers", []))
    check("M-of-N signatures", n_sig >= ev.threshold and info.get("root_matches_event", False),
          f"{n_sig} distinct registered keeper signature(s) over the MarginRoot (threshold {ev.threshold})"
          + ("" if info.get("root_matches_event", False) else "; the rebuilt root differs from the event's root")
          + (f"; {info['problem']}" if info.get("problem") else ""))
    leaf: MarginLeaf = info.get("leaf")
    if leaf is None:
        check("attestation transaction", False, info.get("problem", "cannot decode the posting transaction"))
        return _result(acct, aid, checks)
    dec = decode_batch(ch, ev.calldata or b"")
    if dec and dec["kind"] == "batch":
        ok = leaf in dec["leaves"] and process_multiproof([x.hash() for x in dec["leaves"]], dec["proof"],
                                                          dec["flags"]) == bytes(b["args"]["root"])
        check("Merkle proof", ok, "the account's leaf and the posted multiproof lead to the signed root" if ok else
              "the account's leaf does not lead to the signed root")
    inputs_hash = "0x" + bytes(b["args"]["inputsHash"]).hex()
    extra: dict[str, Any] = {"inputs_hash": inputs_hash, "signers": info.get("signers", []), "bids": len(ev.bids)}
    if archive is not None and keccak(archive) != bytes.fromhex(inputs_hash[2:]):
        check("archive hash", False, f"the archived inputs given hash to 0x{keccak(archive).hex()}, the attestation "
                                     f"signed {inputs_hash}: changed after signing")
        blob = None
    elif archive is not None:
        blob = archive
    else:
        blob, problem = fetch_archive_checked(inputs_hash, archive_dirs, keeper_urls)
        if blob is None and "changed after signing" not in problem:
            raise VerifyError(problem)  # nothing to check against: bad input (no --archive, wrong folder)
        if blob is None:
            check("archive hash", False, problem)
    if blob is not None:
        check("archive hash", True, f"the archived inputs hash to the signed {inputs_hash}")
        _check_recomputation(check, blob, leaf, acct, extra)
        _check_prior(check, blob, ev.roots, archive_dirs, keeper_urls)
        if ev.settlement is not None:
            for f in settlement_findings(json.loads(blob), ev.settlement) + posted_price_findings(ev.settlement):
                check(f["check"], f["ok"], f["detail"])
    _check_auction(check, ev, leaf)
    return _result(acct, aid, checks, **extra)


def _check_recomputation(check, blob: bytes, leaf: MarginLeaf, acct: str, extra: dict) -> None:
    """Leaf recomputed from the archived vols and marks (exact), the vols and marks re-derived from the archived
    raw quotes (:func:`keeper.verify.quotes.rederive`), the leaf recomputed from those, and the breach itself."""
    try:
        mine = recompute(blob).get(acct.lower())
        doc = from_canonical(json.loads(blob))
    except (VerifyError, ValueError, KeyError, TypeError) as e:
        check("recomputation", False, f"the archived inputs cannot be recomputed: {e}")
        return
    if mine is None:
        check("recomputation", False, f"the archived inputs hold no leaf for {acct}")
        return
    for field_name, label in (("state_nonce", "state nonce"), ("equity", "equity"),
                              ("maintenance", "maintenance margin"), ("initial", "initial margin"),
                              ("model_value", "model value")):
        a, r = getattr(leaf, field_name), getattr(mine, field_name)
        check(f"recomputed {label}", a == r, f"attested {a}, recomputed {r}")
    red = rederive(doc)
    for c in red.checks:
        check(c["check"], c["ok"], c["detail"])
    extra["differences"] = [vars(d) for d in red.differences]
    judged, basis = mine, "recomputed from the archived marks"
    if red.differences:
        try:
            again = rederived_leaves(red.document).get(acct.lower())
        except (ValueError, KeyError, TypeError) as e:
            check("margins from raw quotes", False, f"cannot recompute the leaf from the re-derived marks: {e}")
            again = None
        if again is not None:
            diffs = leaf_differences(leaf, again)
            check("margins from raw quotes", not diffs,
                  "; ".join(str(d) for d in diffs[:MAX_LISTED]) if diffs else
                  f"the leaf recomputed from the re-derived marks equals the attested one within "
                  f"{LEAF_TOLERANCE_UNITS} base unit")
            judged, basis = again, "recomputed from the raw quotes"
    else:
        check("margins from raw quotes", True, "the re-derived vols and marks are the archived ones, so the "
                                               "recomputed leaf above is the raw quotes' leaf")
    below = judged.equity < judged.maintenance
    check("below maintenance", below,
          f"{basis}: equity {judged.equity} {'<' if below else '>='} maintenance {judged.maintenance}")


def span_of(cfg: Sequence, top: int, equity: int, maintenance: int) -> int:
    """The span the auction's rule gives: with a ``spanWad`` in the configuration (its 12th field) the risk-sized
    span ``min(V, ceil(spanWad * MM))`` (:func:`keeper.quant.auction_math.span_for_risk`, ``V`` the start price),
    else ``E`` when solvent and ``MM`` when not (:func:`keeper.quant.auction_math.span_for`)."""
    if len(cfg) > 11:
        return am.span_for_risk(top, maintenance, int(cfg[11]))
    return am.span_for(equity, maintenance)


def _check_prior(check, blob: bytes, roots: Sequence, dirs: Sequence[Path], urls: Sequence[str]) -> None:
    """The archived priors and the hybrid marks' previous states against the keepers' rule
    (:func:`keeper.verify.quotes.prior_findings`, :func:`keeper.verify.quotes.hybrid_findings`): the previous
    document is the one the last ``MarginRootPosted`` at or before the document's block names (highest sequence,
    as the keepers' chain cache keeps it), fetched like the archive itself."""
    try:
        doc = from_canonical(json.loads(blob))
        n = int(doc["block"]["number"])
    except (ValueError, KeyError, TypeError):
        return  # already reported by the recomputation
    if not any(u.get("fit") or u.get("hybrid") for u in doc["underlyings"]):
        return
    before = [r for r in roots if r[0] <= n]
    prev_hash = max(before, key=lambda r: (r[2], r[0], r[1]))[3] if before else None
    previous = None
    if prev_hash is not None:
        got, _ = fetch_archive_checked(prev_hash, dirs, urls)
        if got is None:
            check("prior", True, f"the document of the last root before block {n} ({prev_hash}) is not available "
                                 f"here: the archived prior and hybrid states are used as given")
            return
        previous = from_canonical(json.loads(got))
    for c in prior_findings(doc, previous, prev_hash) + hybrid_findings(doc, previous, prev_hash):
        check(c["check"], c["ok"], c["detail"])


def _check_auction(check, ev: Evidence, leaf: MarginLeaf) -> None:
    """The auction's start against the attested leaf and every bid against the curve, the cap and the penalty."""
    s = ev.start["args"]
    cfg = ev.config
    curve = am.Curve(am.CurveKind(int(cfg[0])), int(cfg[1]), int(cfg[2]), int(cfg[3]))
    buffer_wad, penalty_wad = int(cfg[6]), int(cfg[7])
    e, mm = leaf.equity, leaf.maintenance
    top0 = int(s["startPrice"])
    span_rule = span_of(cfg, top0, e, mm)
    if len(cfg) > 11:  # risk-sized span: the price starts at the book's value V = E + the collateral haircuts
        check("start price", int(s["equity"]) == e and top0 >= e,
              f"started at {top0} (V >= E), attested equity {e}")
    else:
        check("start price", top0 == e and int(s["equity"]) == e, f"started at {top0}, attested equity {e}")
    check("span", int(s["span"]) == span_rule, f"span {int(s['span'])}, rule gives {span_rule}")
    target = am.target_margin(mm, buffer_wad)
    check("target", int(s["target"]) == target, f"target {int(s['target'])}, MM x (1 + buffer) = {target}")
    # bids (resets restart the price from a fresh record; bids after a reset are checked against it)
    t_start = int(ev.start["timestamp"])
    top, span, sold, escrow, eq_now, tgt_now = top0, span_rule, 0, 0, e, target
    for x in ev.bids:
        xa = x["args"]
        tag = "0x" + bytes(x["transactionHash"]).hex()[:8]
        for r in ev.resets:
            if (r["blockNumber"], r["logIndex"]) < (x["blockNumber"], x["logIndex"]) and r["timestamp"] >= t_start:
                t_start = int(r["timestamp"])
                top, span, sold = int(r["args"]["startPrice"]), int(r["args"]["span"]), 0
                eq_now, tgt_now, escrow = int(r["args"]["equity"]), int(r["args"]["target"]), int(r["args"]["escrow"])
        t_bid = int(x["timestamp"])
        expect = am.price(curve, top, span, t_bid - t_start)
        got = int(xa["price"])
        check(f"bid {tag} price on the curve", abs(got - expect) <= 1,
              f"paid {got} per portfolio at t+{t_bid - t_start}s, curve gives {expect}")
        frac = int(xa["fractionWad"])
        allowed = am.allowed_fraction(eq_now, tgt_now, sold, escrow, got, penalty_wad)
        check(f"bid {tag} fraction within the cap", frac <= allowed + 10**9 or eq_now < 0,
              f"bought {frac / WAD:.6f} of the portfolio, allowed {allowed / WAD:.6f}")
        amount = int(xa["amount"])
        check(f"bid {tag} amount", amount == am.bid_amount(frac, got),
              f"amount {amount}, floor(fraction x price) = {am.bid_amount(frac, got)}")
        if amount > 0:
            pen = -((-amount * penalty_wad) // WAD)
            check(f"bid {tag} penalty", int(xa["penalty"]) == pen,
                  f"penalty {int(xa['penalty'])}, ceil(amount x {penalty_wad / WAD:.2%}) = {pen}")
        _check_claim(check, x, ev.claims.get(bytes(x["transactionHash"])), ev.settled, tag)
        sold, escrow = int(xa["soldWad"]), int(xa["escrow"])


def _check_claim(check, bid, claim, settled: list, tag: str) -> None:
    """The claim a bid recorded: same transaction, source and bidder; share of what was left of the book
    ``fraction / (1 - sold before)`` rounded up (exactly 1 for the rest); payment = amount when positive. The detail
    says whether the claim was delivered since (the holder's first ``ClaimSettled`` on this source after the bid)."""
    xa = bid["args"]
    label = f"bid {tag} claim"
    if claim is None:
        check(label, False, "no ClaimRecorded in the bid's transaction: the bidder got no claim on the book")
        return
    ca = claim["args"]
    frac, sold_after = int(xa["fractionWad"]), int(xa["soldWad"])
    left = WAD - (sold_after - frac)
    share = WAD if frac == left else -((-frac * WAD) // left)
    amount, payment = int(xa["amount"]), int(ca["payment"])
    # paid by the bidder: the whole amount; paid to it (negative): from escrow and fund, never more than owed
    paid_ok = payment == amount if amount > 0 else amount <= payment <= 0
    ok = ca["holder"] == xa["bidder"] and int(ca["shareWad"]) == share and paid_ok
    later = [s for s in settled if s["args"]["holder"] == xa["bidder"]
             and (s["blockNumber"], s["logIndex"]) > (claim["blockNumber"], claim["logIndex"])]
    delivered = (f"delivered in block {later[0]['blockNumber']}" if later else "not delivered yet (pending)")
    check(label, ok, f"claim of {int(ca['shareWad']) / WAD:.6f} of what was left ({share / WAD:.6f} by the rule), "
                     f"{int(ca['claimWad']) / WAD:.6f} of the frozen book, payment {int(ca['payment'])} "
                     f"(amount {int(xa['amount'])}); {delivered}")


def _result(account: str, auction_id: int, checks: list[dict], **extra) -> dict:
    ok = all(c["ok"] for c in checks) and bool(checks)
    lines = [f"auction {auction_id} of {account}:"]
    for c in checks:
        lines.append(f"  [{'ok' if c['ok'] else 'DIFFERS'}] {c['check']}: {c['detail']}")
    bad = [c for c in checks if not c["ok"]]
    lines.append("verdict: the liquidation followed the protocol's rules" if ok else
                 f"verdict: NOT according to the rules: broken rule(s) {'; '.join(c['check'] for c in bad)} "
                 f"(first: {bad[0]['detail']})")
    return {"account": account, "auction": auction_id, "followed_rules": ok, "checks": checks, "lines": lines,
            "broken_rules": [c["check"] for c in bad], **extra}

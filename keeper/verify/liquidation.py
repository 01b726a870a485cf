"""``backstop verify``: check one liquidation against the protocol's rules from public data only.

Given an account (its latest auction) or an auction id, it takes

* the on-chain record: ``AuctionStarted``, the ``AccountBreached`` it started from, the transaction that posted
  that attestation (header, leaves and signatures from its calldata), the ``Bid``/``AuctionReset`` events;
* the archived inputs named by the attestation's ``inputsHash`` (keepers write them to disk and serve them at
  ``/archive/<inputsHash>``; the file's keccak must equal the hash),

and checks, saying which number differs when one does:

1. the attestation carries at least M signatures of registered keepers over the EIP-712 ``MarginRoot``;
2. the account's leaf has a Merkle branch to the signed root (the verifier's own tree code, :mod:`keeper.codec.merkle`);
3. equity, maintenance, initial margin and model value recomputed from the archived inputs with the quant engine
   equal the attested leaf, and the account was below maintenance margin;
4. the auction started at the attested equity with the right span and target;
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
from pathlib import Path
from typing import Any, Sequence

import requests
from eth_utils import is_address, keccak

from keeper.attest.leaves import SCHEMA, recompute_from_archive
from keeper.chain.deploy import clearinghouse_abi, load_artifacts, web3_for
from keeper.codec.merkle import MarginLeaf, process_multiproof
from keeper.errors import VerifyError
from keeper.quant import auction_math as am
from keeper.units import WAD
from keeper.verify.signatures import check_attestation_for_breach, decode_batch


def _load(deployment_file: str | Path, rpc_url: str):

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


def fetch_archive(inputs_hash: str, dirs: Sequence[Path], urls: Sequence[str]) -> bytes:
    """The archived inputs for ``inputs_hash`` from a folder (``<hash>.json``) or a keeper's ``/archive/<hash>``;
    raises VerifyError when none holds bytes whose keccak is the hash."""
    want = bytes.fromhex(inputs_hash.removeprefix("0x"))
    tried = []
    for d in dirs:
        f = Path(d) / f"{inputs_hash.lower()}.json"
        tried.append(str(f))
        if f.is_file():
            blob = f.read_bytes()
            if keccak(blob) == want:
                return blob

    for u in urls:
        url = f"{u.rstrip('/')}/archive/{inputs_hash.lower()}"
        tried.append(url)
        try:
            r = requests.get(url, timeout=5)
        except requests.RequestException:
            continue
        if r.status_code == 200 and keccak(r.content) == want:
            return r.content
    raise VerifyError(f"archived inputs {inputs_hash} not found (tried {', '.join(tried) or 'no source: give --archive'})")


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


def verify_liquidation(*, rpc_url: str, deployment_file: str | Path, account: str | None = None,
                       auction_id: int | None = None, archive_dirs: Sequence[Path] = (),
                       keeper_urls: Sequence[str] = ()) -> dict[str, Any]:
    """Run every check; returns ``{"followed_rules": bool, "lines": [...], "checks": [...]}``."""


    if account is not None and not is_address(account):
        raise VerifyError(f"not an address: {account!r}")
    w3, dep, ch, auc = _load(deployment_file, rpc_url)
    fb = int(dep["block"])
    start = _find_auction(auc, fb, account, auction_id)
    s = start["args"]
    acct, aid, nonce = s["account"], int(s["id"]), int(s["stateNonce"])
    checks: list[dict] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    breaches = [b for b in ch.events.AccountBreached().get_logs(from_block=fb, argument_filters={"account": acct})
                if int(b["args"]["stateNonce"]) == nonce
                and (b["blockNumber"], b["logIndex"]) < (start["blockNumber"], start["logIndex"])]
    if not breaches:
        check("breach record", False, f"no AccountBreached for {acct} at state nonce {nonce} before auction {aid}")
        return _result(acct, aid, checks)
    b = breaches[-1]
    keepers = set(ch.functions.keepers().call())
    threshold = int(ch.functions.threshold().call())
    info = check_attestation_for_breach(w3, ch, b, keepers, threshold)
    check("M-of-N signatures", len(info.get("signers", [])) >= threshold and info.get("root_matches_event", False),
          f"{len(info.get('signers', []))} registered keeper signature(s) over the MarginRoot (threshold {threshold})"
          + ("" if info.get("root_matches_event", False) else "; the rebuilt root differs from the event's root"))
    leaf: MarginLeaf = info.get("leaf")
    if leaf is None:
        check("attestation transaction", False, info.get("problem", "cannot decode the posting transaction"))
        return _result(acct, aid, checks)
    tx = w3.eth.get_transaction(b["transactionHash"])

    dec = decode_batch(ch, bytes(tx["input"]))
    if dec and dec["kind"] == "batch":

        ok = leaf in dec["leaves"] and process_multiproof([x.hash() for x in dec["leaves"]], dec["proof"],
                                                          dec["flags"]) == bytes(b["args"]["root"])
        check("Merkle proof", ok, "the account's leaf and the posted multiproof lead to the signed root" if ok else
              "the account's leaf does not lead to the signed root")
    inputs_hash = "0x" + bytes(b["args"]["inputsHash"]).hex()
    blob = fetch_archive(inputs_hash, archive_dirs, keeper_urls)
    mine = recompute(blob).get(acct.lower())
    if mine is None:
        check("recomputation", False, f"the archived inputs {inputs_hash} hold no leaf for {acct}")
        return _result(acct, aid, checks)
    for field_name, label in (("state_nonce", "state nonce"), ("equity", "equity"),
                              ("maintenance", "maintenance margin"), ("initial", "initial margin"),
                              ("model_value", "model value")):
        a, r = getattr(leaf, field_name), getattr(mine, field_name)
        check(f"recomputed {label}", a == r, f"attested {a}, recomputed {r}")
    check("below maintenance", mine.equity < mine.maintenance,
          f"recomputed equity {mine.equity} {'<' if mine.equity < mine.maintenance else '>='} "
          f"maintenance {mine.maintenance}")
    # the configuration the auction runs on: the one current in its start block (configurations are versioned and
    # immutable, so a later setConfig does not change it)
    cfg = auc.functions.config().call(block_identifier=start["blockNumber"])
    curve = am.Curve(am.CurveKind(int(cfg[0])), int(cfg[1]), int(cfg[2]), int(cfg[3]))
    buffer_wad, penalty_wad = int(cfg[6]), int(cfg[7])
    e, mm = leaf.equity, leaf.maintenance
    check("start price", int(s["startPrice"]) == e and int(s["equity"]) == e,
          f"started at {int(s['startPrice'])}, attested equity {e}")
    check("span", int(s["span"]) == am.span_for(e, mm), f"span {int(s['span'])}, rule gives {am.span_for(e, mm)}")
    target = am.target_margin(mm, buffer_wad)
    check("target", int(s["target"]) == target, f"target {int(s['target'])}, MM x (1 + buffer) = {target}")
    # bids (resets restart the price from a fresh record; bids after a reset are checked against it)
    resets = [r for r in auc.events.AuctionReset().get_logs(from_block=start["blockNumber"]) if int(r["args"]["id"]) == aid]
    bids = [x for x in auc.events.Bid().get_logs(from_block=start["blockNumber"]) if int(x["args"]["id"]) == aid]
    claims = {bytes(c["transactionHash"]): c for c in
              ch.events.ClaimRecorded().get_logs(from_block=start["blockNumber"], argument_filters={"source": acct})}
    settled = ch.events.ClaimSettled().get_logs(from_block=start["blockNumber"], argument_filters={"source": acct})
    t_start = int(w3.eth.get_block(start["blockNumber"])["timestamp"])
    top, span, sold, escrow, eq_now, tgt_now = e, am.span_for(e, mm), 0, 0, e, target
    for x in bids:
        xa = x["args"]
        for r in resets:
            if (r["blockNumber"], r["logIndex"]) < (x["blockNumber"], x["logIndex"]) and \
                    int(w3.eth.get_block(r["blockNumber"])["timestamp"]) >= t_start:
                t_start = int(w3.eth.get_block(r["blockNumber"])["timestamp"])
                top, span, sold = int(r["args"]["startPrice"]), int(r["args"]["span"]), 0
                eq_now, tgt_now, escrow = int(r["args"]["equity"]), int(r["args"]["target"]), int(r["args"]["escrow"])
        t_bid = int(w3.eth.get_block(x["blockNumber"])["timestamp"])
        expect = am.price(curve, top, span, t_bid - t_start)
        got = int(xa["price"])
        check(f"bid {x['transactionHash'].hex()[:10]} price", abs(got - expect) <= 1,
              f"paid {got} per portfolio at t+{t_bid - t_start}s, curve gives {expect}")
        frac = int(xa["fractionWad"])
        allowed = am.allowed_fraction(eq_now, tgt_now, sold, escrow, got, penalty_wad)
        check(f"bid {x['transactionHash'].hex()[:10]} fraction", frac <= allowed + 10**9 or eq_now < 0,
              f"bought {frac / WAD:.6f} of the portfolio, allowed {allowed / WAD:.6f}")
        amount = int(xa["amount"])
        check(f"bid {x['transactionHash'].hex()[:10]} amount", amount == am.bid_amount(frac, got),
              f"amount {amount}, floor(fraction x price) = {am.bid_amount(frac, got)}")
        if amount > 0:
            pen = -((-amount * penalty_wad) // WAD)
            check(f"bid {x['transactionHash'].hex()[:10]} penalty", int(xa["penalty"]) == pen,
                  f"penalty {int(xa['penalty'])}, ceil(amount x {penalty_wad / WAD:.2%}) = {pen}")
        _check_claim(check, x, claims.get(bytes(x["transactionHash"])), settled)
        sold, escrow = int(xa["soldWad"]), int(xa["escrow"])
    return _result(acct, aid, checks, inputs_hash=inputs_hash, signers=info.get("signers", []), bids=len(bids))


def _check_claim(check, bid, claim, settled: list) -> None:
    """The claim a bid recorded: same transaction, source and bidder; share of what was left of the book
    ``fraction / (1 - sold before)`` rounded up (exactly 1 for the rest); payment = amount when positive. The detail
    says whether the claim was delivered since (the holder's first ``ClaimSettled`` on this source after the bid)."""
    xa = bid["args"]
    label = f"bid {bid['transactionHash'].hex()[:10]} claim"
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
                 f"verdict: NOT according to the rules: {bad[0]['check']} ({bad[0]['detail']})")
    return {"account": account, "auction": auction_id, "followed_rules": ok, "checks": checks, "lines": lines,
            **extra}

"""Invariant checks of a scenario run, computed independently from chain state, events, transaction calldata and
the archived inputs (no number is taken from the scenario's own bookkeeping).

* ``m_of_n_before_liquidation``: every ``AuctionStarted`` is preceded by the ``AccountBreached`` record it used
  (same account and state nonce), posted in a transaction whose signatures over the EIP-712 ``MarginRoot`` recover
  to at least M distinct registered keepers; the breached leaf's Merkle branch leads to the posted root.
* ``no_healthy_account_sold``: for every auction, the leaf is recomputed from the archived inputs its
  ``inputsHash`` names (quant engine, same seeds) and must equal the attested leaf and be below maintenance. What
  was sold is read from the core's own ``ClaimRecorded`` events (a bid records a claim on the auctioned book; the
  share moves later, by ``settleClaim``): each must come with the auction's ``Bid`` (or the buyer of last resort's
  ``LastResortTaken``) of the same transaction, source and buyer, and no claim may be on an account of an auction
  started from a healthy leaf.
* ``token_conservation``: per token, the ERC20 balance held by the clearinghouse equals what it owes, from raw
  storage (``storedBalances``: the effective views add unsettled claims with their own rounding): the sum of
  collateral balances; for the quote asset the sum of cash, plus cash credited to frozen books (``lotOf``), plus
  the settlement reserve. The auction module's cash equals the fund's liabilities plus the escrow and penalties of
  running auctions; option positions net to zero per series in storage; and per holder the claim fractions
  recorded equal those settled plus the one still pending (``claimOf``).
* ``insurance_fund_arithmetic``: fund after = before + penalties to the fund (penalty - starter reward of every
  ended auction, less what repaid bad debt) - shortfalls paid - what the fund spent on last-resort takes
  (``FundSpent``), from the auction events.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eth_utils import keccak

from keeper.verify.liquidation import recompute
from keeper.verify.signatures import check_attestation_for_breach

if TYPE_CHECKING:
    from keeper.scenario.world import World


def run_checks(world: World, archive, fund_before: int) -> dict:
    """All invariants of a finished run on ``world`` (see module doc); ``archive`` holds the attested inputs by
    hash (``get``), ``fund_before`` is the insurance fund before the path."""
    w3, ch, auc, dep = world.w3, world.ch, world.auction, world.dep
    keepers = set(ch.functions.keepers().call())
    threshold = int(ch.functions.threshold().call())
    starts = world.logs(auc, "AuctionStarted")
    breaches = world.logs(ch, "AccountBreached")
    bids = world.logs(auc, "Bid")
    results: dict[str, Any] = {}

    # 1 + 2: attestation behind every auction, recomputed from the archive
    problems, healthy, recomputed = [], {}, 0
    for s in starts:
        acct, nonce, aid = s["args"]["account"], int(s["args"]["stateNonce"]), int(s["args"]["id"])
        prior = [b for b in breaches if b["args"]["account"] == acct and int(b["args"]["stateNonce"]) == nonce
                 and (b["blockNumber"], b["logIndex"]) < (s["blockNumber"], s["logIndex"])]
        if not prior:
            problems.append(f"auction {aid}: no AccountBreached for {acct[:10]} at nonce {nonce} before it")
            healthy[aid] = True
            continue
        b = prior[-1]
        info = check_attestation_for_breach(w3, ch, b, keepers, threshold)
        if not info["ok"]:
            problems.append(f"auction {aid}: attestation check failed ({info.get('problem') or info})")
        if int(b["args"]["equity"]) != int(s["args"]["equity"]) or \
                int(b["args"]["maintenance"]) != int(s["args"]["maintenance"]):
            problems.append(f"auction {aid}: start numbers differ from the breach record")
        blob = archive.get(info.get("inputs_hash", ""))
        if blob is None or keccak(blob) != bytes(b["args"]["inputsHash"]):
            problems.append(f"auction {aid}: archived inputs missing or not matching their hash")
            healthy[aid] = True
            continue

        mine = recompute(blob).get(acct.lower())
        recomputed += 1
        if mine is None or mine != info["leaf"]:
            problems.append(f"auction {aid}: recomputed leaf {mine} != attested {info['leaf']}")
        healthy[aid] = mine is None or mine.equity >= mine.maintenance
    # what was sold, from the core's side: every claim recorded must be one auction bid's (same transaction,
    # source and bidder); a claim outside any bid is a sale the auction's rules did not govern
    # (or the buyer of last resort's take, ``LastResortTaken``: the fund's account takes the book of an auction at
    # its floor after its resets, from the fresh breach record the auction restarted from)
    takes = world.logs(auc, "LastResortTaken") if _has_event(auc, "LastResortTaken") else []
    bid_of_tx = {bytes(b["transactionHash"]): (b, b["args"]["bidder"]) for b in bids}
    bid_of_tx.update({bytes(t["transactionHash"]): (t, t["args"]["fundAccount"]) for t in takes})
    claims = world.logs(ch, "ClaimRecorded")
    sold_ids = set()
    for c in claims:
        b, buyer = bid_of_tx.get(bytes(c["transactionHash"]), (None, None))
        if b is None or b["args"]["account"] != c["args"]["source"] or buyer != c["args"]["holder"]:
            problems.append(f"claim of {c['args']['holder'][:10]} on {c['args']['source'][:10]} recorded outside a "
                            f"matching auction bid (tx {bytes(c['transactionHash']).hex()[:10]}): no AccountBreached "
                            f"and attestation behind it")
            continue
        sold_ids.add(int(b["args"]["id"]))
    if len(claims) != len(bids) + len(takes):
        problems.append(f"{len(bids)} bid(s) and {len(takes)} last-resort take(s) but {len(claims)} claim(s) "
                        f"recorded (one claim per bid or take)")
    sold_from_healthy = sorted(aid for aid in sold_ids if healthy.get(aid))
    results["m_of_n_before_liquidation"] = {
        "ok": not [p for p in problems if "attestation" in p or "no AccountBreached" in p],
        "detail": f"{len(starts)} auction(s), each from a breach posted with >= {threshold} of {len(keepers)} keeper "
                  f"signatures" + (f"; problems: {problems}" if problems else "")}
    results["no_healthy_account_sold"] = {
        "ok": not sold_from_healthy and not [p for p in problems if "recomputed" in p or "archived" in p
                                             or "claim" in p],
        "detail": f"{recomputed} breach leaf(s) recomputed from archived inputs; {len(claims)} claim(s) recorded by "
                  f"bids or last-resort takes of {len(sold_ids)} auction(s) ({len(takes)} take(s)); auctions "
                  f"selling a healthy account: "
                  f"{sold_from_healthy or 'none'}"}

    # 3: token conservation from raw storage, over every address any balance-moving event names (starter rewards
    # go to whoever started an auction: liquidators or keepers; claims name their source and holder)
    accounts = set(world.accounts()) | {dep.auction, dep.owner} | set(keepers)
    for ev, keys in (("Deposited", ("account",)), ("CashTransferred", ("from", "to")),
                     ("PortfolioShareTransferred", ("from", "to")), ("ClaimRecorded", ("source", "holder")),
                     ("Traded", ("maker", "taker"))):
        for e in world.logs(ch, ev):
            accounts.update(e["args"][k] for k in keys)
    accounts.update(e["args"]["starter"] for e in starts)
    lines, ok = [], True
    reserve = int(ch.functions.settlementReserve().call()) if _has(ch, "settlementReserve") else 0
    stored = ch.functions.storedBalances
    for sym, tok in world.tokens.items():
        held = int(tok.functions.balanceOf(ch.address).call())
        if tok.address.lower() == dep.quote_asset.lower():
            credited = sum(int(ch.functions.lotOf(a).call()[2]) for a in accounts)
            owed = sum(int(stored(a, 0, tok.address).call()[2]) for a in accounts) + credited + reserve
        else:
            owed = sum(int(stored(a, 0, tok.address).call()[1]) for a in accounts)
        ok &= held == owed
        lines.append(f"{sym}: held {held} owed {owed}")
    net = {}
    for s in dep.series:
        sid = int(s["id"])
        net[sid] = sum(int(stored(a, sid, dep.quote_asset).call()[0]) for a in accounts)
    ok &= not any(net.values())
    lines.append("option positions net to zero in storage" if not any(net.values())
                 else f"option positions do not net to zero: {({k: v for k, v in net.items() if v})}")
    ledger: dict[str, int] = {}
    for c in claims:
        ledger[c["args"]["holder"]] = ledger.get(c["args"]["holder"], 0) + int(c["args"]["claimWad"])
    settled = world.logs(ch, "ClaimSettled")
    for c in settled:
        ledger[c["args"]["holder"]] = ledger.get(c["args"]["holder"], 0) - int(c["args"]["claimWad"])
    pending = {h: int(ch.functions.claimOf(h).call()[1]) for h in ledger}
    ok &= ledger == pending
    lines.append(f"claims: {len(claims)} recorded, {len(settled)} settled, "
                 f"{sum(1 for v in pending.values() if v)} pending"
                 + ("" if ledger == pending else f"; recorded - settled {ledger} != pending {pending}"))
    running = 0
    for s in starts:
        m = auc.functions.auctionOf(s["args"]["account"]).call()
        if int(m[1]) != 0 and int(m[8]) == int(s["args"]["id"]):
            running += int(m[9]) + int(m[10])
    module_cash = int(stored(dep.auction, 0, dep.quote_asset).call()[2])
    liabilities = int(auc.functions.fundLiabilities().call())
    ok &= module_cash == liabilities + running
    lines.append(f"module cash {module_cash} = fund liabilities {liabilities} + escrow/penalties {running}")
    results["token_conservation"] = {"ok": bool(ok), "detail": "; ".join(lines)}

    # 4: insurance fund arithmetic from events
    before = int(fund_before)
    ends = world.logs(auc, "AuctionEnded")
    to_fund = sum(int(e["args"]["penalty"]) - int(e["args"]["reward"]) for e in ends)
    repaid = sum(int(e["args"]["repaid"]) for e in world.logs(auc, "FundReceived")
                 if int(e["args"]["auctionId"]) != 0)
    paid = sum(int(e["args"]["paid"]) for e in world.logs(auc, "ShortfallPaid"))
    spent = sum(int(e["args"]["amount"]) for e in world.logs(auc, "FundSpent")) if _has_event(auc, "FundSpent") \
        else 0
    after = int(auc.functions.fundBalance().call())
    expected = before + to_fund - repaid - paid - spent
    results["insurance_fund_arithmetic"] = {
        "ok": expected == after,
        "detail": f"before {before} + penalties to fund {to_fund} - debt repaid {repaid} - shortfalls paid {paid} - "
                  f"spent on last-resort takes {spent} = {expected}; on chain {after}"}
    results["_healthy_at_start"] = healthy
    return results


def _has_event(contract, name: str) -> bool:
    return any(i.get("type") == "event" and i.get("name") == name for i in contract.abi)


def _has(contract, name: str) -> bool:
    return any(i.get("name") == name for i in contract.abi)

"""The crash scenario in a small configuration on Anvil (three keeper processes 2-of-3 pricing ETH and BTC series
and WETH/WBTC collateral in one root, two liquidator processes), with its invariants recomputed here from chain
state, events and transaction calldata (independently of the scenario's own checks), every liquidation run through
``backstop verify``, and the two-asset figures (WBTC collateral in a leaf, the cross-asset netting) recomputed from
the archived inputs."""
from __future__ import annotations

import json

import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from keeper.scenario.runner import Scenario, ScenarioConfig
from keeper.data.paths import CrashConfig
from keeper.verify.liquidation import verify_liquidation

MARGIN_ROOT = keccak(b"MarginRoot(bytes32 root,bytes32 inputsHash,uint64 sequence,uint64 timestamp,uint32 leafCount,"
                     b"bytes32 solvencyHash)")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenario")
    cfg = ScenarioConfig(out_dir=str(out), n_short_vol=6, n_long_vol=4, live=False, mc_paths=300, auction_ticks=10,
                         auction_tick_seconds=60, tick_wait_s=0.3, keep_chain=True, keepers="process",
                         crash=CrashConfig(n_steps=5, crash_step=2, jump=-0.30, vol_spike=2.0))
    scn = Scenario(cfg)
    try:
        summary = scn.run()
        yield scn, summary
    finally:
        if scn.chain is not None:
            scn.chain.stop()


def test_report_files_and_summary(run):
    scn, summary = run
    doc = json.loads((scn.out / "report.json").read_text())
    assert doc["summary"]["auctions"] == summary["auctions"]
    for png in ("spot", "surface", "margin_ratios", "auctions", "solvency"):
        assert (scn.out / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["auctions"] >= 1, "a -30 % crash must start at least one auction"
    assert summary["healthy_accounts_liquidated"] == []
    assert all(v["ok"] for v in summary["invariants"].values()), summary["invariants"]


def test_the_solvency_index_was_posted_with_the_roots_and_matches_the_fund(run):
    """Every margin root carried a solvency index (issue 16): as many SolvencyIndexPosted events as roots posted;
    the fund each one reports is the auction's fund balance a few blocks before it was posted (when the keepers
    computed it), read back from the chain's history."""
    scn, summary = run
    posted = scn.world.logs(scn.ch, "SolvencyIndexPosted")
    roots = scn.world.logs(scn.ch, "MarginRootPosted")
    assert len(posted) == len(roots) > 0
    assert summary["solvency"]["posted"] == len(posted)
    fund_at = scn.auction.functions.fundBalance().call
    with_figures = [e for e in posted if int(e["args"]["index"]["accounts"]) > 0]
    assert with_figures
    for e in with_figures:
        idx, b = e["args"]["index"], int(e["blockNumber"])
        assert int(idx["shortfallEs975"]) >= 0 and int(idx["shortfallVar99"]) >= 0
        seen = {int(fund_at(block_identifier=x)) for x in range(max(scn.dep.block, b - 30), b + 1)}
        assert int(idx["fund"]) in seen, (b, int(idx["fund"]), sorted(seen))


def test_the_report_shows_recommended_against_listed_haircuts(run):
    """Issue 16 item 4: for every listed collateral asset the report shows the haircut recommended from the keepers'
    attested prices over the run against the listed one. Recomputed here: the listed haircut and cap read from
    chain, the last attested price (PricesPosted) at or before each step's block found by a plain loop, EWMA by
    scipy's lfilter scaled from the path's step to a day, the closed form, rounded up to a basis point."""
    import math

    import numpy as np
    from scipy.signal import lfilter

    scn, summary = run
    rows = {r["asset"]: r for r in summary["haircuts"]}
    assert set(rows) == {"WETH", "WBTC"}
    step_days = float(np.median(np.diff(scn.path.times))) / 86_400
    events = scn.world.logs(scn.ch, "PricesPosted")
    for sym in ("WETH", "WBTC"):
        addr = scn.dep.tokens[sym]["address"]
        listed, decimals, haircut, cap = scn.ch.functions.assetConfig(addr).call()
        closes = []
        for b in scn.rec.blocks:
            last = None
            for e in events:
                if int(e["blockNumber"]) <= b:
                    for a, p in zip(e["args"]["assets"], e["args"]["prices"]):
                        if a.lower() == addr.lower():
                            last = int(p) / 10**18
            if last is not None:
                closes.append(last)
        assert len(closes) >= 3
        r = np.diff(np.log(closes))
        var, _ = lfilter([0.06], [1, -0.94], r ** 2, zi=[0.94 * np.mean(r[:30] ** 2)])
        vol = math.sqrt(var[-1] / step_days)
        size, depth = int(cap) / 10**int(decimals), scn.cfg.collateral_depth[sym]
        h = min(1 - math.exp(-2.33 * vol * math.sqrt(1 + size / depth)) + 0.1 * math.sqrt(size / depth), 0.9)
        row = rows[sym]
        assert row["listed_wad"] == int(haircut) and row["size"] == size and row["closes"] == len(closes)
        assert row["daily_vol"] == pytest.approx(vol, rel=1e-9)
        assert row["recommended_wad"] == math.ceil(h * 10_000 - 1e-6) * 10**14
        assert row["action"] == ("raise" if row["recommended_wad"] > int(haircut) else
                                 "lower" if row["recommended_wad"] < int(haircut) else "keep")
    doc = json.loads((scn.out / "report.json").read_text())
    assert doc["summary"]["haircuts"] == summary["haircuts"]


def test_the_keeper_processes_attested_the_run(run):
    """keepers="process" must mean the three keeper processes signed the roots: a scenario that quietly fell back to
    inline keepers (a keeper that cannot start or sign) would pass every other test here."""
    scn, summary = run
    notes = " ".join(str(n) for n in summary["notes"])
    assert "falling back to inline keepers" not in notes, notes
    assert not scn.inline


def test_token_conservation_from_chain(run):
    """From raw storage (``storedBalances``; the effective views round unsettled claims their own way): per token the
    clearinghouse holds exactly what it owes, option positions net to zero per series, and every claim a bid
    recorded was delivered by the end (recorded fractions = settled fractions per holder, none pending)."""
    scn, summary = run
    ev = scn.ch.events
    fb = scn.dep.block
    accounts = {e["args"]["account"] for e in ev.Deposited().get_logs(from_block=fb)}
    for name, keys in (("CashTransferred", ("from", "to")), ("ClaimRecorded", ("source", "holder")),
                       ("Traded", ("maker", "taker"))):
        for e in getattr(ev, name)().get_logs(from_block=fb):
            accounts.update(e["args"][k] for k in keys)
    accounts |= {e["args"]["starter"] for e in scn.auction.events.AuctionStarted().get_logs(from_block=fb)}
    stored = scn.ch.functions.storedBalances
    for sym, tok in scn.tokens.items():
        held = tok.functions.balanceOf(scn.ch.address).call()
        if tok.address == scn.dep.quote_asset:
            owed = sum(stored(a, 0, tok.address).call()[2] + scn.ch.functions.lotOf(a).call()[2] for a in accounts) \
                + scn.ch.functions.settlementReserve().call()
        else:
            owed = sum(stored(a, 0, tok.address).call()[1] for a in accounts)
        assert held == owed, sym
    for s in scn.dep.series:
        assert sum(stored(a, s["id"], scn.dep.quote_asset).call()[0] for a in accounts) == 0, s["id"]
    recorded, settled = ev.ClaimRecorded().get_logs(from_block=fb), ev.ClaimSettled().get_logs(from_block=fb)
    takes = scn.auction.events.LastResortTaken().get_logs(from_block=fb)
    assert len(recorded) == len(scn.auction.events.Bid().get_logs(from_block=fb)) + len(takes) >= 1
    per_holder: dict[str, int] = {}
    for e in recorded:
        per_holder[e["args"]["holder"]] = per_holder.get(e["args"]["holder"], 0) + e["args"]["claimWad"]
    for e in settled:
        per_holder[e["args"]["holder"]] -= e["args"]["claimWad"]
    assert set(per_holder.values()) == {0}
    assert all(scn.ch.functions.claimOf(h).call()[1] == 0 for h in per_holder)
    assert all(scn.ch.functions.lotOf(e["args"]["source"]).call()[0] == 0 for e in recorded)
    assert summary["claims_recorded"] == len(recorded) and summary["claims_pending"] == 0


def test_insurance_fund_arithmetic_from_events(run):
    scn, _ = run
    A = scn.auction.events
    ends = A.AuctionEnded().get_logs(from_block=scn.dep.block)
    penalties_to_fund = sum(e["args"]["penalty"] - e["args"]["reward"] for e in ends)
    repaid = sum(e["args"]["repaid"] for e in A.FundReceived().get_logs(from_block=scn.dep.block)
                 if e["args"]["auctionId"] != 0)
    paid = sum(e["args"]["paid"] for e in A.ShortfallPaid().get_logs(from_block=scn.dep.block))
    spent = sum(e["args"]["amount"] for e in A.FundSpent().get_logs(from_block=scn.dep.block))  # last-resort takes
    assert scn.auction.functions.fundBalance().call() == scn.fund_before + penalties_to_fund - repaid - paid - spent


def test_every_liquidation_preceded_by_m_of_n_attestation(run):
    scn, _ = run
    keepers = set(scn.ch.functions.keepers().call())
    m = scn.ch.functions.threshold().call()
    breaches = scn.ch.events.AccountBreached().get_logs(from_block=scn.dep.block)
    starts = scn.auction.events.AuctionStarted().get_logs(from_block=scn.dep.block)
    # every sale (a claim recorded on a book) is a bid in one of the auctions checked below
    bid_ids = {bytes(b["transactionHash"]): b["args"]["id"]
               for b in scn.auction.events.Bid().get_logs(from_block=scn.dep.block)
               + scn.auction.events.LastResortTaken().get_logs(from_block=scn.dep.block)}
    claims = scn.ch.events.ClaimRecorded().get_logs(from_block=scn.dep.block)
    assert claims and {bid_ids[bytes(c["transactionHash"])] for c in claims} <= {s["args"]["id"] for s in starts}
    for s in starts:
        acct, nonce = s["args"]["account"], s["args"]["stateNonce"]
        prior = [b for b in breaches if b["args"]["account"] == acct and b["args"]["stateNonce"] == nonce
                 and b["blockNumber"] <= s["blockNumber"]]
        assert prior, f"auction {s['args']['id']} without a breach record"
        b = prior[-1]
        fn, args = scn.ch.decode_function_input(scn.w3.eth.get_transaction(b["transactionHash"])["input"])
        assert fn.fn_name == "postMarginBatch"
        h = args["header"]
        struct = keccak(encode(["bytes32", "bytes32", "bytes32", "uint64", "uint64", "uint32", "bytes32"],
                               [MARGIN_ROOT, bytes(b["args"]["root"]), bytes(h["inputsHash"]), h["sequence"],
                                h["timestamp"], h["leafCount"], bytes(args["solvencyHash"])]))
        digest = bytes(scn.ch.functions.hashTypedData(struct).call())
        sigs = bytes(args["signatures"])
        signers = {Account._recover_hash(digest, signature=sigs[i:i + 65]) for i in range(0, len(sigs), 65)}
        assert len(signers & keepers) >= m


def test_no_healthy_account_sold_and_verify_agrees(run):
    """What was sold is read from the core: each ``ClaimRecorded`` is a bid's (same transaction, source, bidder) or
    the buyer of last resort's take (``LastResortTaken``, the fund's account), and every auction sold from passes
    ``backstop verify`` (recomputed leaf below maintenance)."""
    scn, _ = run
    A = scn.auction.events
    bids = {bytes(b["transactionHash"]): (b, b["args"]["bidder"]) for b in A.Bid().get_logs(from_block=scn.dep.block)}
    bids.update({bytes(t["transactionHash"]): (t, t["args"]["fundAccount"])
                 for t in A.LastResortTaken().get_logs(from_block=scn.dep.block)})
    sold = set()
    for c in scn.ch.events.ClaimRecorded().get_logs(from_block=scn.dep.block):
        b, buyer = bids[bytes(c["transactionHash"])]
        assert (b["args"]["account"], buyer) == (c["args"]["source"], c["args"]["holder"])
        sold.add(b["args"]["id"])
    sold = sorted(sold)
    assert sold, "no bid filled: the liquidators did not act"
    for aid in sold:
        r = verify_liquidation(rpc_url=scn.chain.url, deployment_file=scn.out / "deployment.json", auction_id=aid,
                               archive_dirs=[scn.archive_dir])
        assert r["followed_rules"], r["lines"]
        below = next(c for c in r["checks"] if c["check"] == "below maintenance")
        assert below["ok"]


def test_hybrid_mark_did_not_liquidate_after_fat_finger(run):
    scn, summary = run
    m = summary["manipulation"]
    assert m["hybrid_liquidated"] == []
    assert m["hybrid_reason"] != "MARKET_DEEP_TIGHT"
    # on chain: none of the accounts the naive mark would have liquidated was registered as breached by the
    # attestation right after the trade
    assert not set(m["naive_would_liquidate"]) & set(m["attested_breaches_after_trade"])


def test_no_lot_sold_below_the_auction_floor(run):
    """Every fill's price is at or above the floor of the (re)start it was bid on: ``top − span·(1 − cusp)``
    (``top·cusp`` for a solvent book), from the ``AuctionStarted``/``AuctionReset`` event before the ``Bid`` and the
    deployed ``cuspWad`` (the chosen design's 0.1, with a span of 0.10 MM: a solvent lot never goes for less than
    its model value minus 0.09 of its maintenance margin). Per fill, the value handed over beyond the attested model
    value is at most 15 % of the MM bought (issue 14's bound; the earlier design's span of the whole MM handed over up
    to 62 %), and the report's per-fill figure is the one recomputed here from the events."""
    scn, summary = run
    wad = 10**18
    cfg = scn.auction.functions.config().call()
    cusp = cfg[5]
    assert cusp == 10**17, "the scenario deploys with the deployment's default floor of 0.1"
    A = scn.auction.events
    key = lambda e: (e["blockNumber"], e["logIndex"])  # noqa: E731
    starts = sorted(A.AuctionStarted().get_logs(from_block=scn.dep.block) +
                    A.AuctionReset().get_logs(from_block=scn.dep.block), key=key)
    bids = A.Bid().get_logs(from_block=scn.dep.block)
    assert bids, "no bid filled: the liquidators did not act"
    shares = []
    for b in bids:
        (s,) = [x for x in starts if x["args"]["id"] == b["args"]["id"] and key(x) < key(b)][-1:]
        top, span = s["args"]["startPrice"], s["args"]["span"]
        floor = top - -(-span * (wad - cusp) // wad)
        assert b["args"]["price"] >= floor, (b["args"]["id"], b["args"]["price"], top, span)
        if top > 0:
            assert b["args"]["price"] * wad >= top * cusp - wad  # within one unit of top·cusp
        shares.append((top - b["args"]["price"]) / s["args"]["maintenance"])  # f x (V - price) / (f x MM)
    assert max(shares) <= 0.15, shares
    reported = sorted(f["transfer_share_of_mm"] for f in summary["fills"])
    assert reported == pytest.approx(sorted(shares), rel=1e-9)
    assert summary["fill_transfer_share_of_mm"]["max"] == pytest.approx(max(shares), rel=1e-9)


# ---------------------------------------------------------------------------------------------- two assets
def _path_documents(scn):
    """(block, decoded document) of every margin root the keeper processes posted during the path, from the archive
    by the inputsHash of its MarginRootPosted."""
    from keeper.quant.risk.engine import from_canonical

    out = []
    for e in scn.world.logs(scn.ch, "MarginRootPosted"):
        if int(e["blockNumber"]) < scn.rec.blocks[0]:
            continue
        blob = scn.archive.get("0x" + bytes(e["args"]["inputsHash"]).hex())
        if blob is not None:
            out.append((int(e["blockNumber"]), e, blob, from_canonical(json.loads(blob))))
    assert out
    return out


def test_both_underlyings_series_and_collateral_in_the_keepers_roots(run):
    """Issue 16 item 6: the keeper processes' documents carry both underlyings (WETH and WBTC, each priced at one of
    the spots the scenario's market data gave that asset), series on each, and accounts holding series of both; every account of the book is in each root (the solvency index covers
    them all: no account left out)."""
    scn, _ = run
    weth, wbtc = scn.dep.tokens["WETH"]["address"], scn.dep.tokens["WBTC"]["address"]
    symbol = {t["address"].lower(): sym for sym, t in scn.dep.tokens.items()}
    docs = _path_documents(scn)
    index = {int(e["args"]["sequence"]): e["args"]["index"] for e in scn.world.logs(scn.ch, "SolvencyIndexPosted")}
    for block, ev, _blob, doc in docs:
        unders = [u["asset"].lower() for u in doc["underlyings"]]
        assert sorted(unders) == sorted([weth.lower(), wbtc.lower()])
        assert {int(s["underlying"]) for s in doc["series"]} == {0, 1}
        for u in doc["underlyings"]:
            # priced on the market data of its own asset: one of the spots the scenario wrote to that asset's spot
            # file (2 decimals), never the other asset's. (Not "a price posted on chain": under load a step's new
            # spot can be superseded by the next step's before the keepers' throttled price posts carry it.)
            written = {round(x, 2) for x in scn.rec.asset_spot[symbol[u["asset"].lower()]]}
            assert round(int(u["spot_wad"]) / 10**18, 2) in written, (block, u["asset"], int(u["spot_wad"]), written)
        u_of = {int(s["id"]): int(s["underlying"]) for s in doc["series"]}
        both = [a for a in doc["accounts"] if {u_of[int(p[0])] for p in a["positions"]} == {0, 1}]
        assert len(both) >= 2, "traders hold books across both underlyings"
        assert {a["account"] for a in doc["accounts"]} >= set(scn.accounts()) - {scn.dep.auction}
        assert int(index[int(ev["args"]["sequence"])]["accounts"]) == len(doc["accounts"])


def test_wbtc_collateral_counts_at_its_haircut_value_in_the_attested_leaf(run):
    """A leaf of an account holding WBTC in a root the keeper processes posted: its equity is cash + each
    collateral amount x the attested price (the document's spot, bound to the signed root by its inputsHash) x
    (1 - the listed haircut, read from chain) + positions x the archived marks, computed here by hand; the leaf is
    the attested one (the root recomputed from the archive equals the posted root)."""
    from keeper.attest.leaves import leaves_from_inputs
    from keeper.codec.merkle import MerkleTree

    scn, _ = run
    wbtc = scn.dep.tokens["WBTC"]["address"]
    block, ev, _blob, doc = _path_documents(scn)[-1]
    leaves = leaves_from_inputs(doc)[0]
    assert "0x" + MerkleTree([x.hash() for x in leaves]).root.hex() == "0x" + bytes(ev["args"]["root"]).hex()
    prices = {u["asset"].lower(): int(u["spot_wad"]) / 10**18 for u in doc["underlyings"]}
    marks = {int(s["id"]): float(m) for s, m in zip(doc["series"], doc["marks"])}
    holders = [a for a in doc["accounts"] if any(c[0].lower() == wbtc.lower() and int(c[1]) for c in a["collateral"])]
    assert holders, "a trader posts WBTC collateral"
    by_account = {x.account: x for x in leaves}
    for a in holders:
        coll = 0.0
        for asset, amount in a["collateral"]:
            _listed, decimals, haircut, _cap = scn.ch.functions.assetConfig(asset).call()
            coll += int(amount) / 10**int(decimals) * prices[asset.lower()] * (1 - int(haircut) / 10**18)
        pos = sum(int(size) / 10**18 * marks[int(sid)] for sid, size in a["positions"])
        expected = int(a["cash"]) + (coll + pos) * 10**scn.dep.quote_decimals
        assert abs(by_account[a["account"]].equity - expected) <= 2, (a["account"], by_account[a["account"]], expected)
        assert int(_haircut_of(scn, wbtc)) == 10**17  # the listed 10 %


def _haircut_of(scn, asset):
    return scn.ch.functions.assetConfig(asset).call()[2]


def test_cross_asset_netting_recomputed_from_the_archived_books(run):
    """The report's netting (issue 16 item 6) recomputed here: each step's document (the last root at or before the
    step's block, from MarginRootPosted and the archive), every account's book cut by hand into its WETH part and
    its WBTC part (series and collateral of each), the three documents margined by the keepers' engine; the combined
    MM and the sum of the parts per account and in total equal the report's. A book hedged across assets (short ETH
    put, long BTC put) gets a netting credit at the first step."""
    from keeper.attest.leaves import leaves_from_inputs
    from keeper.quant.risk.engine import from_canonical

    scn, summary = run
    net = summary["cross_asset_netting"]
    assert [s["step"] for s in net["steps"]] == list(range(len(scn.rec.blocks)))
    roots = sorted((int(e["args"]["sequence"]), "0x" + bytes(e["args"]["inputsHash"]).hex())
                   for e in scn.world.logs(scn.ch, "MarginRootPosted"))
    d = 10**scn.dep.quote_decimals
    for step in (net["steps"][0], net["steps"][net["worst_step"]]):
        b = scn.rec.blocks[step["step"]]
        seq, h = [r for r in roots if r[0] <= b][-1]
        doc = from_canonical(json.loads(scn.archive.get(h)))
        assert step["block"] == seq
        u_of = {int(s["id"]): int(s["underlying"]) for s in doc["series"]}
        c_of = {c["asset"]: c["underlying"] for c in doc["collateral_assets"]}

        def part(u):
            return {**doc, "accounts": [{**a, "positions": [p for p in a["positions"] if u_of[int(p[0])] == u],
                                         "collateral": [c for c in a["collateral"] if c_of[c[0]] == u]}
                                        for a in doc["accounts"]]}

        combined = [x.maintenance / d for x in leaves_from_inputs(doc)[0]]
        parts = [[x.maintenance / d for x in leaves_from_inputs(part(u))[0]] for u in (0, 1)]
        two = [i for i, a in enumerate(doc["accounts"]) if len({u_of[int(p[0])] for p in a["positions"]}) == 2]
        assert two and step["two_asset_accounts"] == len(two)
        # leaves round margins up to a quote unit: within one unit per account
        assert step["two_asset_mm_combined"] == pytest.approx(sum(combined[i] for i in two), abs=len(two) / d)
        assert step["two_asset_mm_separate"] == pytest.approx(sum(parts[0][i] + parts[1][i] for i in two),
                                                              abs=2 * len(two) / d)
        assert step["all_mm_combined"] == pytest.approx(sum(combined), abs=len(combined) / d)
        assert step["all_netting_credit"] == pytest.approx(step["all_mm_separate"] - step["all_mm_combined"],
                                                           rel=1e-12)
    hedged = [a for a in scn.world.actors if a.kind == "short_vol"][2]  # SHORT_BOOKS[2]: short ETH put, long BTC put
    row = next(a for a in net["accounts_first"] if a["account"] == hedged.address)
    assert len(row["underlyings"]) == 2 and row["netting_credit"] > 0, row

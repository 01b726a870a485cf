"""``backstop verify`` re-derives a liquidation from the archived raw quotes and rejects what breaks a rule (issue 15,
item 7). Real chain (Anvil launched by brownie), the real compiled Clearinghouse and LiquidationAuction
(tests/auction/conftest.py ``deploy_core``), real keeper signatures over the contract's own EIP-712 digest.

The keepers' part is played by the keepers' code: a chain drawn by the simulated market's source, the surface fitted
on it with the previous block's surface as prior (``fit_surface``), the inputs document of the book read from chain
(``build_portfolio_inputs``), its leaves (``leaves_from_inputs``), posted with M signatures. Each attack is performed:

* an honest liquidation (positive control: every rule holds, the marks re-derive from the quotes);
* two keepers (M) sign a document whose mark of the short series is raised so that a healthy account reads as
  breached: the contract accepts it (valid signatures) and the account is auctioned; verify refits the quotes and
  names the series, the field, the archived and the recomputed number, and that the account was not below
  maintenance;
* the archive changed after signing (a quote, a mark): the hash check fails;
* where the contracts refuse (a healthy leaf cannot start an auction, one signature cannot post, the auction sets
  the price and clips the fraction itself), the contract's refusal is shown and the evidence verify reads is built by
  hand: the real posting calldata re-signed by one real keeper key, the real events with a healthy leaf, an off-curve
  price, an over-cap fraction; verify rejects each with the rule named.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import brownie
import numpy as np
import pytest
from brownie import chain
from eth_utils import keccak

from keeper.attest.leaves import canonical_inputs, leaves_from_inputs
from keeper.attest.portfolio import AssetMarket, build_portfolio_inputs
from keeper.codec import eip712
from keeper.codec.merkle import MerkleTree
from keeper.data.feed import BlockRef
from keeper.data.sources import draw_chain
from keeper.ops import signing
from keeper.quant import auction_math as am
from keeper.quant.risk.engine import from_canonical
from keeper.quant.surface import VolSurface, fit_surface
from keeper.units import WAD
from keeper.verify.liquidation import check_liquidation, connect, gather, span_of, verify_liquidation
from tests.auction.conftest import DEFAULT_CONFIG, KEEPER_KEYS, SOLVENCY, THRESHOLD, USDC, deploy_core, reverts_with

pytestmark = pytest.mark.chain

SPOT = 3000.0
FAR, ANY = 2**63, 2**255 - 1
LIE = 1.6  # the colluding keepers' factor on one mark
RISK = {"var_confidence": 0.99, "es_confidence": 0.975, "im_multiplier": 1.5, "horizon_days": 1.0, "mc_paths": 400,
        "mc_diffusion_vol": 0.7, "grid_spot_range": 0.15, "grid_vol_range": 0.25}
MARKET = SimpleNamespace(seed=11, expiries_days=[7, 30, 90], spread_pct=0.04, depth_mean=20.0,
                         strikes_pct=[0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.4])


def smile(atm: float):
    return lambda k, t: np.maximum(atm - 0.1 * k + 0.3 * k * k, 0.05)


def _head() -> BlockRef:
    b = brownie.web3.eth.get_block("latest")
    return BlockRef(int(b["number"]), "0x" + bytes(b["hash"]).hex(), int(b["timestamp"]))


class Keepers:
    """The honest keepers' computation on the deployed core (document, leaves, signed batch)."""

    def __init__(self, core):
        self.core = core
        self.prev_chain = draw_chain(MARKET, _head(), SPOT, smile(0.45))  # the gate binds: 0.45 -> 0.60
        self.prior = fit_surface(self.prev_chain)  # the previous block's surface (attested by post_previous)
        chain.mine()
        self.chain = draw_chain(MARKET, _head(), SPOT, smile(0.60))
        self.surface = fit_surface(self.chain, prior=self.prior)

    def series(self):
        out = []
        for sid in self.core.series:
            s = self.core.chx.series(sid)
            out.append(SimpleNamespace(series_id=sid, underlying=str(s[0]), expiry=int(s[1]), is_call=bool(s[2]),
                                       strike=int(s[3])))
        return out

    def snapshot(self, account):
        c = self.core
        return SimpleNamespace(
            account=str(account), state_nonce=int(c.chx.stateNonce(account)), cash=int(c.chx.cashOf(account)),
            collateral={str(a): int(c.chx.collateralOf(account, a)) for a in c.chx.collateralAssetsOf(account)
                        if str(a).lower() != c.quote.address.lower()},
            positions={sid: int(c.chx.positionOf(account, sid)) for sid in c.series
                       if int(c.chx.positionOf(account, sid))})

    def post_previous(self, account, archive: Path) -> None:
        """Attest the previous block's document (the cold fit ``self.prior`` on its own chain) as a plain margin root
        (``postMarginRoot``: no leaf recorded), so that the next document's prior is the surface of the document
        the last posted root names, as the keepers' rule says."""
        c = self.core
        pi = build_portfolio_inputs(
            block=_head(), markets=[AssetMarket(c.weth.address, int(SPOT) * WAD, self.prior, self.prev_chain)],
            series=self.series(), accounts=[self.snapshot(account)],
            collateral={c.quote.address: {"decimals": 6, "haircut": 0}},
            quote_asset=c.quote.address, quote_decimals=6, risk=RISK)
        blob = canonical_inputs(pi.document)
        (archive / f"0x{keccak(blob).hex()}.json").write_bytes(blob)
        leaves = leaves_from_inputs(pi.document)[0]
        root = MerkleTree([x.hash() for x in leaves]).root
        c.seq += 1
        header = (keccak(blob), c.seq, c.now(), len(leaves))
        sh = eip712.solvency_struct_hash(SOLVENCY)
        typed = eip712.margin_root_typed_data(c.domain(), root, eip712.MarginRootHeader(*header, sh))
        c.ch.postMarginRoot(root, header, sh, SOLVENCY, signing.sign_attestation(typed, KEEPER_KEYS[:THRESHOLD]),
                            {"from": c.owner})

    def document(self, account, lie=None) -> tuple[dict, bytes, object]:
        """(document, canonical bytes, the account's leaf); ``lie``: ``(series id, factor)`` multiplies that series'
        archived mark before hashing and signing (what colluding keepers would do); the honest leaf of the same
        block is then ``self.honest``."""
        c = self.core
        pi = build_portfolio_inputs(
            block=_head(), markets=[AssetMarket(c.weth.address, int(SPOT) * WAD, self.surface, self.chain,
                                                prior=self.prior)],
            series=self.series(), accounts=[self.snapshot(account)],
            collateral={c.quote.address: {"decimals": 6, "haircut": 0},
                        c.weth.address: {"decimals": 18, "haircut": 2 * 10**17}},
            quote_asset=c.quote.address, quote_decimals=6, risk=RISK)
        doc = pi.document
        self.honest = next(x for x in leaves_from_inputs(doc)[0] if x.account.lower() == str(account).lower())
        if lie is not None:
            sid, factor = lie
            j = next(i for i, s in enumerate(doc["series"]) if int(s["id"]) == sid)
            doc["marks"][j] *= factor
        blob = canonical_inputs(doc)
        leaf = next(x for x in leaves_from_inputs(doc)[0] if x.account.lower() == str(account).lower())
        return doc, blob, leaf

    def batch_args(self, leaf, blob: bytes, keys=KEEPER_KEYS[:THRESHOLD], sigs: bytes | None = None):
        """``postMarginBatch`` arguments of a one-leaf batch (root = the leaf's hash) signed by ``keys``."""
        c = self.core
        c.seq += 1
        header = (keccak(blob), c.seq, c.now(), 1)
        sh = eip712.solvency_struct_hash(SOLVENCY)
        if sigs is None:
            typed = eip712.margin_root_typed_data(c.domain(), leaf.hash(), eip712.MarginRootHeader(*header, sh))
            sigs = signing.sign_attestation(typed, keys)
        return (header, sh, SOLVENCY, [leaf.as_tuple()], [], [], sigs)

    def post(self, leaf, blob: bytes):
        return self.core.ch.postMarginBatch(*self.batch_args(leaf, blob), {"from": self.core.owner})


def _short_calls(core, account, usdc: int, calls: int):
    """``account`` deposits ``usdc`` quote units and sells ``calls`` of the 3,000 call (series 2) for 1 USDC each."""
    core.post_prices({core.weth: int(SPOT) * WAD, core.wbtc: 60_000 * WAD})  # fresh after the auctions' waits
    core.fund(account, usdc=usdc)
    core.trade(account, core.series[2], -calls * WAD, WAD)


def _equity_at(k: Keepers, account, share_of_mm: float):
    """Deposit what brings the account's equity to ``share_of_mm`` of its maintenance margin (cash carries no
    risk, so the margin stays); returns the final document, its bytes and leaf."""
    _, _, leaf = k.document(account)
    need = int(share_of_mm * leaf.maintenance) - leaf.equity
    assert need > 0, f"book already at {leaf.equity / leaf.maintenance:.2f} x MM"
    k.core.fund(account, usdc=need)
    return k.document(account)


@pytest.fixture(scope="module")
def world(accounts, AuctionTestToken, Clearinghouse, ClearinghouseAdmin, LiquidationAuction, tmp_path_factory):
    first = max(1, brownie.web3.eth.block_number)
    for lib in ("AuctionLogic",):  # a library the auction links (deploy_core may not deploy it yet)
        container = getattr(brownie, lib, None)
        if container is not None and not len(container):
            container.deploy({"from": accounts[0]})
    core = deploy_core(accounts, AuctionTestToken, Clearinghouse, ClearinghouseAdmin, LiquidationAuction)
    k = Keepers(core)
    out = tmp_path_factory.mktemp("verify")
    archive = out / "archive"
    archive.mkdir()
    dep = out / "deployment.json"
    dep.write_text(json.dumps({"clearinghouse": core.ch.address, "auction": core.auction.address,
                               "chain_id": chain.id, "block": first}))
    bidder = accounts[2]
    core.fund(bidder, usdc=500_000 * USDC)

    # 1. an honest liquidation: equity at 80 % of maintenance, by the keepers' own numbers
    v = accounts[1]
    _short_calls(core, v, 100 * USDC, 5)
    k.post_previous(v, archive)
    doc, blob, leaf = _equity_at(k, v, 0.8)
    assert 0 < leaf.equity < leaf.maintenance
    (archive / f"0x{keccak(blob).hex()}.json").write_bytes(blob)
    k.post(leaf, blob)
    core.auction.start(v, {"from": accounts[3]})
    chain.sleep(600)
    core.auction.bid(v, WAD, ANY, FAR, 0, {"from": bidder})

    # 2. colluding keepers (M of them) raise the short call's mark by 60 %: a healthy account (equity 1.1 x MM by
    #    the quotes) reads as breached; the contract cannot tell and the account is auctioned
    v2 = accounts[4]
    _short_calls(core, v2, 100 * USDC, 5)
    _equity_at(k, v2, 1.1)
    doc2, blob2, lie2 = k.document(v2, lie=(core.series[2], LIE))
    honest2 = k.honest  # the same block's leaf on the marks the quotes give
    assert honest2.equity > honest2.maintenance
    assert lie2.equity < lie2.maintenance, "the lie must read as a breach"
    (archive / f"0x{keccak(blob2).hex()}.json").write_bytes(blob2)
    k.post(lie2, blob2)
    core.auction.start(v2, {"from": accounts[3]})
    chain.sleep(600)
    bidder2 = accounts[6]  # a bidder holding a claim needs a fresh attestation of its own: another one bids
    core.fund(bidder2, usdc=500_000 * USDC)
    core.post_prices({core.weth: int(SPOT) * WAD, core.wbtc: 60_000 * WAD})
    core.auction.bid(v2, WAD, ANY, FAR, 0, {"from": bidder2})

    # 3. a healthy account honestly attested healthy: the contract records it, no breach
    v3 = accounts[5]
    _short_calls(core, v3, 100 * USDC, 5)
    doc3, blob3, leaf3 = _equity_at(k, v3, 1.5)
    (archive / f"0x{keccak(blob3).hex()}.json").write_bytes(blob3)
    healthy_tx = k.post(leaf3, blob3)

    url = brownie.web3.provider.endpoint_uri
    return SimpleNamespace(core=core, k=k, dep=dep, archive=archive, url=url, v=v, v2=v2, v3=v3, blob=blob, doc=doc,
                           leaf=leaf, honest2=honest2, lie2=lie2, leaf3=leaf3, blob3=blob3, healthy_tx=healthy_tx,
                           bidder=bidder)


def _verify(w, account, archive_dirs=None):
    return verify_liquidation(rpc_url=w.url, deployment_file=w.dep, account=str(account),
                              archive_dirs=[w.archive] if archive_dirs is None else archive_dirs)


def _evidence(w, account):
    w3, dep, ch, auc = connect(w.dep, w.url)
    return gather(w3, dep, ch, auc, account=str(account)), ch


def _check(r, name):
    return next(c for c in r["checks"] if c["check"] == name)


def test_an_honest_liquidation_re_derives_from_the_raw_quotes(world):
    r = _verify(world, world.v)
    assert r["followed_rules"], "\n".join(r["lines"])
    label = f"marks from raw quotes ({world.core.weth.address})"
    c = _check(r, label)
    assert "with the archived prior" in c["detail"] and "54 archived quotes" in c["detail"]
    prior = _check(r, f"prior ({world.core.weth.address})")  # the previous posted root's document's surface
    assert "is the surface of the document of the last root" in prior["detail"]
    assert r["differences"] == []
    assert "equity" in _check(r, "below maintenance")["detail"]
    # the archived surface is the one the keepers fitted with a prior (a cold start would give another)
    doc = from_canonical(json.loads(world.blob))
    assert VolSurface.from_canonical(doc["underlyings"][0]["surface"]).hash() == world.k.surface.hash()
    assert fit_surface(world.k.chain).hash() != world.k.surface.hash()


def test_colluding_keepers_raised_mark_is_named_with_both_numbers(world):
    """M keepers signed a mark the quotes do not give; the auction ran (the contract checks signatures, not
    prices); verify names series, field, archived and recomputed mark, and the healthy leaf behind the lie."""
    r = _verify(world, world.v2)
    assert not r["followed_rules"]
    broken = r["broken_rules"]
    label = f"marks from raw quotes ({world.core.weth.address})"
    assert label in broken and "margins from raw quotes" in broken and "below maintenance" in broken
    assert "M-of-N signatures" not in broken and "archive hash" not in broken  # signed and archived as it should
    sid = world.core.series[2]
    diff = [d for d in r["differences"] if d["where"] == f"series {sid}"]
    assert [d["field"] for d in diff] == ["mark"]
    archived, recomputed = diff[0]["archived"], diff[0]["recomputed"]
    assert archived == pytest.approx(recomputed * LIE, rel=1e-12)  # the lie, undone
    assert f"series {sid} mark: archived" in _check(r, label)["detail"]
    below = _check(r, "below maintenance")
    assert f"equity {world.honest2.equity} >= maintenance {world.honest2.maintenance}" in below["detail"]
    assert "recomputed from the raw quotes" in below["detail"]
    margins = _check(r, "margins from raw quotes")["detail"]
    assert f"equity: archived {world.lie2.equity}, recomputed {world.honest2.equity}" in margins
    assert any("broken rule(s)" in line and label in line for line in r["lines"])


def _tampered(w, tmp_path, change) -> Path:
    """A copy of the honest liquidation's archive with ``change(doc)`` applied after signing (file name kept)."""
    d = tmp_path / "tampered"
    d.mkdir()
    doc = from_canonical(json.loads(w.blob))
    change(doc)
    (d / f"0x{keccak(w.blob).hex()}.json").write_bytes(canonical_inputs(doc))
    return d


@pytest.mark.parametrize("what", ["quote", "mark"])
def test_an_archive_changed_after_signing_fails_the_hash(world, tmp_path, what):
    def change(doc):
        if what == "quote":
            doc["underlyings"][0]["quotes"]["bid"][30] *= 1.5
        else:
            doc["marks"][2] *= 0.9
    d = _tampered(world, tmp_path, change)
    r = _verify(world, world.v, archive_dirs=[d])
    assert not r["followed_rules"] and "archive hash" in r["broken_rules"]
    assert "changed after signing" in _check(r, "archive hash")["detail"]
    assert not any(c["check"].startswith("recomputed") for c in r["checks"])  # nothing computed on it
    # the CLI: the report, exit 1, the verdict naming the rule
    p = subprocess.run([sys.executable, "-m", "keeper.cli.main", "verify", "--account", str(world.v), "--rpc",
                        world.url, "--deployment", str(world.dep), "--archive", str(d)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr
    assert "[DIFFERS] archive hash" in p.stdout and "broken rule(s) archive hash" in p.stdout.splitlines()[-1]


def test_a_leaf_at_or_above_maintenance_cannot_be_liquidated(world):
    """The contract refuses (no breach recorded: LA_NoBreach); evidence built from the real healthy attestation (its
    calldata, real signatures) as if an auction had started on it: verify names the rule."""
    w = world
    core = w.core
    assert "AccountBreached" not in w.healthy_tx.events and "MarginAttested" in w.healthy_tx.events
    with reverts_with("LA_NoBreach"):
        core.auction.start(w.v3, {"from": brownie.accounts[3]})
    ev, ch = _evidence(w, w.v)
    l3 = w.leaf3
    assert l3.equity >= l3.maintenance
    breach = {"args": {"account": str(w.v3), "stateNonce": l3.state_nonce, "equity": l3.equity,
                       "maintenance": l3.maintenance, "initial": l3.initial, "modelValue": l3.model_value,
                       "root": l3.hash(), "inputsHash": keccak(w.blob3)},
              "blockNumber": w.healthy_tx.block_number, "logIndex": 0, "transactionHash": bytes.fromhex(w.healthy_tx.txid[2:])}
    buf = int(ev.config[6])
    start = {**ev.start, "args": {**ev.start["args"], "account": str(w.v3), "stateNonce": l3.state_nonce,
                                  "startPrice": l3.equity, "equity": l3.equity,
                                  "span": span_of(ev.config, l3.equity, l3.equity, l3.maintenance),
                                  "target": am.target_margin(l3.maintenance, buf)}}
    roots = [(int(x["blockNumber"]), int(x["logIndex"]), int(x["args"]["sequence"]),
              "0x" + bytes(x["args"]["inputsHash"]).hex())
             for x in ch.events.MarginRootPosted().get_logs(from_block=1, to_block=w.healthy_tx.block_number)]
    fake = dataclasses.replace(ev, account=str(w.v3), start=start, breach=breach, bids=[], resets=[], claims={},
                               settled=[], calldata=bytes(brownie.web3.eth.get_transaction(w.healthy_tx.txid)["input"]),
                               roots=roots)
    r = check_liquidation(fake, ch, archive_dirs=[w.archive])
    assert r["broken_rules"] == ["below maintenance"], r["lines"]
    assert f"equity {l3.equity} >= maintenance {l3.maintenance}" in _check(r, "below maintenance")["detail"]
    assert _check(r, "M-of-N signatures")["ok"] and _check(r, "Merkle proof")["ok"]


def test_fewer_than_m_signatures_are_rejected(world):
    """One keeper's signature: the contract refuses to post it (KS_TooFewSignatures); the real liquidation's batch
    re-signed by one real keeper key, and that signature given twice, are rejected by verify."""
    w = world
    ev, ch = _evidence(w, w.v)
    with reverts_with("KS_TooFewSignatures"):
        w.core.ch.postMarginBatch(*w.k.batch_args(w.leaf, w.blob, keys=KEEPER_KEYS[:1]), {"from": w.core.owner})
    _, args = ch.decode_function_input(ev.calldata)
    h = args["header"]
    header = tuple(h[k] for k in ("inputsHash", "sequence", "timestamp", "leafCount")) if isinstance(h, dict) \
        else tuple(h)[:4]
    typed = eip712.margin_root_typed_data(w.core.domain(), w.leaf.hash(), eip712.MarginRootHeader(*header, bytes(
        args["solvencyHash"])))
    one = signing.sign_attestation(typed, KEEPER_KEYS[:1])
    for sigs in (one, one + one):
        calldata = bytes.fromhex(w.core.ch.postMarginBatch.encode_input(
            header, bytes(args["solvencyHash"]), SOLVENCY, [w.leaf.as_tuple()], [], [], sigs)[2:])
        r = check_liquidation(dataclasses.replace(ev, calldata=calldata), ch, archive_dirs=[w.archive])
        assert r["broken_rules"] == ["M-of-N signatures"], r["lines"]
        assert "1 distinct registered keeper signature(s)" in _check(r, "M-of-N signatures")["detail"]
    # control: the real calldata (two signatures) passes the same check
    assert _check(check_liquidation(ev, ch, archive_dirs=[w.archive]), "M-of-N signatures")["ok"]


def _bid_with(ev, **change):
    b = ev.bids[0]
    return dataclasses.replace(ev, bids=[{**b, "args": {**b["args"], **change}}] + ev.bids[1:])


def test_an_off_curve_price_is_rejected(world):
    """The auction computes the price itself (a bidder cannot pay another): the real Bid with its price 10 % above
    the curve (amount and penalty recomputed so that only the price is wrong)."""
    w = world
    ev, ch = _evidence(w, w.v)
    assert len(ev.bids) == 1
    b = ev.bids[0]["args"]
    curve = am.Curve(am.CurveKind(int(ev.config[0])), int(ev.config[1]), int(ev.config[2]), int(ev.config[3]))
    t = ev.bids[0]["timestamp"] - ev.start["timestamp"]
    s = ev.start["args"]
    on_curve = am.price(curve, int(s["startPrice"]), int(s["span"]), t)  # the curve the auction announced
    assert abs(int(b["price"]) - on_curve) <= 1  # the real bid paid it
    price = on_curve * 11 // 10
    amount = am.bid_amount(int(b["fractionWad"]), price)
    pen = -((-amount * DEFAULT_CONFIG["penalty"]) // WAD)
    r = check_liquidation(_bid_with(ev, price=price, amount=amount, penalty=pen), ch, archive_dirs=[w.archive])
    tag = "0x" + bytes(ev.bids[0]["transactionHash"]).hex()[:8]
    assert f"bid {tag} price on the curve" in r["broken_rules"], r["lines"]
    assert f"paid {price} per portfolio at t+{t}s, curve gives {on_curve}" in \
        _check(r, f"bid {tag} price on the curve")["detail"]


def test_an_over_cap_fraction_is_rejected(world):
    """The auction clips a bid to the allowed fraction (the real bid asked for all and got the cap); the real Bid
    with 10 % of the portfolio more than allowed (amount, penalty consistent) is rejected."""
    w = world
    ev, ch = _evidence(w, w.v)
    b = ev.bids[0]["args"]
    e, mm = w.leaf.equity, w.leaf.maintenance
    allowed = am.allowed_fraction(e, am.target_margin(mm, int(ev.config[6])), 0, 0, int(b["price"]),
                                  int(ev.config[7]))
    assert int(b["fractionWad"]) <= allowed + 10**9 and allowed < 9 * WAD // 10  # asked for 100 %, got the cap
    frac = allowed + WAD // 10
    amount = am.bid_amount(frac, int(b["price"]))
    pen = -((-amount * DEFAULT_CONFIG["penalty"]) // WAD)
    r = check_liquidation(_bid_with(ev, fractionWad=frac, soldWad=frac, amount=amount, penalty=pen), ch,
                          archive_dirs=[w.archive])
    tag = "0x" + bytes(ev.bids[0]["transactionHash"]).hex()[:8]
    assert f"bid {tag} fraction within the cap" in r["broken_rules"], r["lines"]
    assert f"bought {frac / WAD:.6f} of the portfolio, allowed {allowed / WAD:.6f}" in \
        _check(r, f"bid {tag} fraction within the cap")["detail"]


@pytest.mark.parametrize("case, says", [
    ("bad address", "not an address"),
    ("no deployment", "cannot read deployment file"),
    ("no auction", "no auction with id 99"),
    ("no archive", "not found"),
])
def test_the_cli_on_bad_input_exits_non_zero_with_one_line(world, tmp_path, case, says):
    w = world
    dep = ["--rpc", w.url, "--deployment", str(w.dep)]
    argv = {"bad address": ["--account", "0x1234", *dep],
            "no deployment": ["--auction", "1", "--rpc", w.url, "--deployment", str(tmp_path / "none.json")],
            "no auction": ["--auction", "99", *dep],
            "no archive": ["--account", str(w.v), *dep, "--archive", str(tmp_path)]}[case]
    p = subprocess.run([sys.executable, "-m", "keeper.cli.main", "verify", *argv], capture_output=True, text=True,
                       timeout=300)
    out = (p.stdout + p.stderr).strip().splitlines()
    assert p.returncode == 2 and len(out) == 1 and says in out[0], (p.returncode, out)

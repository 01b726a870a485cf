"""The hybrid mark on the keepers' real path (issue 15 item 5): two keeper bots (M = 2) as threads on a private Anvil
with the real contracts, a root every block, WETH's option chain drawn from a market file that quotes the listed
series. The test rewrites the file's book: thin and wide (model), deep and tight (market after ``enter_blocks`` = 2
attested documents), 7 % wide (a dip inside the leave band: still market), 30 % wide (model at once).

Asserted from the posted roots' archived documents and their leaves, with second computations: on market the
document's mark is the mid of that series' own archived quote, on the model it is py_vollib's Black-76 at the
document's vol and forward; each recorded previous state is the state in the document of the root before it; the
root recomputes from the document and both keepers' signatures recover from the posting transaction; A's leaf
moves by its position times (mid - model); ``backstop verify``'s re-derivation accepts every document."""
import json

import pytest
from eth_account import Account
from py_vollib.black import black as vollib_black

import harness as h

WAD = 10**18
YEAR = 365.0 * 86400
BOOK = {"atm_vol": 0.6, "skew": -0.15, "curvature": 0.4}

pytestmark = pytest.mark.chain


@pytest.fixture
def net(tmp_path):
    n = h.start_net(tmp_path)
    h.setup_book(n)
    yield n
    n.chain.stop()


def _write(path, data):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _config(net, i, ports, spot, market):
    from keeper.ops.config import ChainSourceSettings

    cfg = h.keeper_config(net, i, ports, spot, root_every=1)
    assert cfg.market.hybrid.enter_blocks == 2  # the shipped default
    chain = ChainSourceSettings(kind="market_file", path=market)
    return cfg.model_copy(update={"market": cfg.market.model_copy(update={"chain": chain})})


def _doc(ks, inputs_hash):
    from keeper.quant.risk.engine import from_canonical

    for k in ks:
        blob = k.bot.archive.get(inputs_hash)
        if blob:
            return blob, from_canonical(json.loads(blob))
    return None, None


def _posted(net, ks, from_block):
    """The roots posted with a sequence (the block the document was computed at) from ``from_block`` on, in order:
    (event, archived bytes, document)."""
    out = []
    for e in net.ch.events.MarginRootPosted().get_logs(from_block=from_block):
        if int(e["args"]["sequence"]) < from_block:  # computed before the test's last change
            continue
        blob, doc = _doc(ks, "0x" + bytes(e["args"]["inputsHash"]).hex())
        if doc is not None:
            out.append((e, blob, doc))
    return out


def _hybrid(doc, sid):
    j = next(j for j, s in enumerate(doc["series"]) if s["id"] == sid)
    return j, doc["series"][j]["hybrid"]


def _first(net, ks, from_block, sid, pred, timeout=180):
    """The first posted root from ``from_block`` whose document's state for ``sid`` satisfies ``pred``."""
    def find():
        return next((p for p in _posted(net, ks, from_block) if pred(_hybrid(p[2], sid)[1])), None)
    got = h.wait_for(find, timeout, interval=0.5)
    assert got, f"no posted root from block {from_block} with the expected state of series {sid}: " + \
        str([(int(e["args"]["sequence"]), _hybrid(d, sid)[1]) for e, _, d in _posted(net, ks, from_block)])
    return got


def _mid(doc, s):
    q = doc["underlyings"][0]["quotes"]
    rows = [j for j in range(len(q["strike"])) if q["strike"][j] == int(s["strike"]) / WAD
            and q["expiry_ts"][j] == int(s["expiry"]) and q["is_call"][j] == s["is_call"]]
    assert len(rows) == 1, "the keepers' chain quotes the listed contract exactly once"
    return 0.5 * (q["bid"][rows[0]] + q["ask"][rows[0]]), q["bid_size"][rows[0]]


def _black76(doc, j):
    s = doc["series"][j]
    t = (int(s["expiry"]) - doc["block"]["timestamp"]) / YEAR
    return vollib_black("c" if s["is_call"] else "p", int(s["forward_wad"]) / WAD, int(s["strike"]) / WAD, t, 0.0,
                        doc["vols"][j])


def _previous_consistent(net, ks, doc):
    """Every series' recorded previous state is its state in the document of block ``previous_block``."""
    prev_block = doc["underlyings"][0]["hybrid"]["previous_block"]
    ev = [e for e in net.ch.events.MarginRootPosted().get_logs(from_block=0) if int(e["args"]["sequence"]) == prev_block]
    assert len(ev) == 1, f"previous_block {prev_block} is not a posted root"
    _, before = _doc(ks, "0x" + bytes(ev[0]["args"]["inputsHash"]).hex())
    for s in doc["series"]:
        _, p = _hybrid(before, s["id"])
        assert s["hybrid"]["prev"] == {"branch": p["branch"], "passes": p["passes"]}
    return before


def _signers(net, event):
    from keeper.codec.eip712 import margin_root_struct_hash
    from keeper.ops.signing import recover_signers
    from keeper.verify.signatures import decode_batch

    dec = decode_batch(net.ch, bytes(net.w3.eth.get_transaction(event["transactionHash"])["input"]))
    hd = dec["header"]
    hd = (bytes(hd[0]), int(hd[1]), int(hd[2]), int(hd[3])) if not isinstance(hd, dict) else (
        bytes(hd["inputsHash"]), int(hd["sequence"]), int(hd["timestamp"]), int(hd["leafCount"]))
    root = dec["root"] if dec["kind"] == "root" else bytes(event["args"]["root"])
    digest = bytes(net.ch.functions.hashTypedData(margin_root_struct_hash(root, *hd, dec["solvency_hash"])).call())
    return set(recover_signers(digest, dec["signatures"])), root


def test_a_listed_series_switches_to_market_and_back_on_the_keepers_path(net, tmp_path):
    from keeper.attest.leaves import leaves_from_inputs, recompute_from_archive
    from keeper.verify.quotes import hybrid_findings, rederive

    atm = next(s["id"] for s in net.res.series if s["strike"] == 2000.0)
    spot, market = tmp_path / "spot.json", tmp_path / "market.json"
    h.write_spot(spot, 2000.0)
    _write(market, dict(BOOK, spread_pct=0.30, depth=1.0))
    ports = h.free_ports(2)
    ks = [h.KeeperThread(net, i, _config(net, i, ports, spot, market)) for i in range(2)]
    addrs = {Account.from_key(net.keeper_keys[i]).address for i in range(2)}
    try:
        # -- thin and wide: the model
        e0, _, d0 = _first(net, ks, net.mine(), atm, lambda x: x["reason"] == "MODEL_THIN_DEPTH")
        assert _hybrid(d0, atm)[1]["branch"] == "model"
        # -- deep (100 a side) and tight (1 %): pending for one document, then the market
        _write(market, dict(BOOK, spread_pct=0.01, depth=100.0))
        b1 = net.mine()
        e1, blob1, d1 = _first(net, ks, b1, atm, lambda x: x["branch"] == "market")
        j, st = _hybrid(d1, atm)
        assert st == {"branch": "market", "reason": "MARKET_DEEP_TIGHT", "passes": 2,
                      "prev": {"branch": "model", "passes": 1}}
        before = _previous_consistent(net, ks, d1)
        assert _hybrid(before, atm)[1]["reason"] == "MODEL_PENDING"  # one passing document was not enough
        mid, depth = _mid(d1, d1["series"][j])
        assert d1["marks"][j] == mid and depth == 100.0  # the leaf's document marks the series at its own mid
        assert abs(mid - _black76(d1, j)) > 1e-9  # ... which is not the model price
        # the root on chain is the document's, and both keepers signed it
        signers, root = _signers(net, e1)
        assert signers == addrs
        assert recompute_from_archive(blob1)[0] == root == bytes(e1["args"]["root"])
        assert all(k.bot.attestations[int(e1["args"]["sequence"])].root == "0x" + root.hex() for k in ks)
        # A (short 1 ATM put) and B (short 10): their leaves carry the mid; re-marked at the model they differ
        # by exactly position x (mid - model) in quote base units (the margins are priced on the vols)
        leaves = {l.account: l for l in leaves_from_inputs(d1)[0]}
        remarked = json.loads(json.dumps(d1))
        remarked["marks"][j] = _black76(d1, j)
        model_leaves = {l.account: l for l in leaves_from_inputs(remarked)[0]}
        for name, size in (("A", -1), ("B", -10)):
            a = net.users[name]
            assert leaves[a].equity - model_leaves[a].equity == pytest.approx(size * (mid - _black76(d1, j)) * 1e6,
                                                                             abs=2)
            assert leaves[a].maintenance == model_leaves[a].maintenance

        # -- 7 % wide: worse than entering allows (5 %), inside the leave band (10 %): still the market
        _write(market, dict(BOOK, spread_pct=0.07, depth=100.0))
        e2, _, d2 = _first(net, ks, net.mine(), atm, lambda x: True)
        j, st = _hybrid(d2, atm)
        assert (st["branch"], st["reason"], st["prev"]["branch"]) == ("market", "MARKET_DEEP_TIGHT", "market")
        m2, _ = _mid(d2, d2["series"][j])
        q = d2["underlyings"][0]["quotes"]
        assert d2["marks"][j] == m2
        assert max((a - b) / (0.5 * (a + b)) for a, b in zip(q["ask"], q["bid"]) if b > 0) == pytest.approx(0.07)

        # -- 30 % wide: the model at once, the mark Black-76 at the document's vol and forward
        _write(market, dict(BOOK, spread_pct=0.30, depth=100.0))
        e3, _, d3 = _first(net, ks, net.mine(), atm, lambda x: x["branch"] == "model")
        j, st = _hybrid(d3, atm)
        assert st == {"branch": "model", "reason": "MODEL_WIDE_SPREAD", "passes": 0,
                      "prev": {"branch": "market", "passes": 2}}
        _previous_consistent(net, ks, d3)
        assert d3["marks"][j] == pytest.approx(_black76(d3, j), rel=1e-9)
        signers, root = _signers(net, e3)
        assert signers == addrs

        # the four documents re-derive from their archived quotes, choice and state included, and their recorded
        # previous states are the previous root's (what backstop verify checks)
        for n, d in enumerate((d0, d1, d2, d3)):
            r = rederive(d)
            assert all(c["ok"] for c in r.checks), r.checks
            assert any(c["check"].startswith("hybrid mark rule") for c in r.checks)
            if n:
                before = _previous_consistent(net, ks, d)
                assert all(c["ok"] for c in hybrid_findings(d, before, "prev"))
    finally:
        for k in ks:
            k.stop()

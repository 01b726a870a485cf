"""Signature exchange over real HTTP on 127.0.0.1 ephemeral ports, typed-data digests, submitter rotation."""
import json

import pytest
import requests
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from keeper.data.archive import InputsArchive
from keeper.codec.canonical import canonical_json
from keeper.exchange.server import ExchangeServer, KeeperView
from keeper.exchange.client import PeerClient, diff_leaves
from keeper.errors import SignatureRejected
from keeper.ops.signing import recover_digest, sign_digest
from keeper.exchange.book import SignatureBook, rotation_order, should_submit, submit_delay_blocks
from keeper.exchange.codec import TypedDataCodec

CONTRACT = "0x" + "ab" * 20
CODEC = TypedDataCodec(31337, CONTRACT)
KEYS = sorted((Account.from_key(keccak(text=f"keeper-{i}")) for i in range(3)), key=lambda a: int(a.address, 16))


def margin_msg(seq=7, root=b"\x11" * 32):
    return {"root": "0x" + root.hex(), "inputsHash": "0x" + "22" * 32, "sequence": seq, "timestamp": 1000 + seq,
            "leafCount": 3, "solvencyHash": "0x" + "33" * 32}


def manual_digest(msg):
    """EIP-712 by hand (keccak of type strings + abi encoding), independent of eth-account's encoder."""
    dom_t = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    dom = keccak(encode(["bytes32", "bytes32", "bytes32", "uint256", "address"],
                        [dom_t, keccak(text="Backstop"), keccak(text="1"), 31337, CONTRACT]))
    t = keccak(text="MarginRoot(bytes32 root,bytes32 inputsHash,uint64 sequence,uint64 timestamp,uint32 leafCount,"
                    "bytes32 solvencyHash)")
    s = keccak(encode(["bytes32", "bytes32", "bytes32", "uint64", "uint64", "uint32", "bytes32"],
                      [t, bytes.fromhex(msg["root"][2:]), bytes.fromhex(msg["inputsHash"][2:]), msg["sequence"],
                       msg["timestamp"], msg["leafCount"], bytes.fromhex(msg["solvencyHash"][2:])]))
    return keccak(b"\x19\x01" + dom + s)


def manual_prices_digest(assets, prices, seq, ts):
    dom_t = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    dom = keccak(encode(["bytes32", "bytes32", "bytes32", "uint256", "address"],
                        [dom_t, keccak(text="Backstop"), keccak(text="1"), 31337, CONTRACT]))
    t = keccak(text="Prices(address[] assets,uint256[] prices,uint64 sequence,uint64 timestamp)")
    a = keccak(b"".join(encode(["address"], [x]) for x in assets))
    p = keccak(b"".join(encode(["uint256"], [x]) for x in prices))
    return keccak(b"\x19\x01" + dom + keccak(encode(["bytes32", "bytes32", "bytes32", "uint64", "uint64"],
                                                    [t, a, p, seq, ts])))


def test_digests_match_manual_eip712():
    m = margin_msg()
    assert CODEC.digest("margin", m) == manual_digest(m)
    assets = ["0x" + "01" * 20, "0x" + "02" * 20]
    pm = {"assets": assets, "prices": [2000 * 10**18, 10**18], "sequence": 3, "timestamp": 99}
    assert CODEC.digest("prices", pm) == manual_prices_digest(assets, pm["prices"], 3, 99)
    with pytest.raises(ValueError, match="out of range"):
        CODEC.digest("margin", {**m, "leafCount": 2**32})
    with pytest.raises(ValueError, match="differ in length"):
        CODEC.digest("prices", {**pm, "prices": [1]})


def test_book_verifies_signer_and_builds_ascending_quorum():
    book = SignatureBook(CODEC, [k.address for k in KEYS])
    m = margin_msg()
    d = CODEC.digest("margin", m)
    for k in reversed(KEYS):
        assert book.add("margin", m, sign_digest(k, d)) == k.address
    blob = book.quorum("margin", 7, d, 2)
    signers = [recover_digest(d, blob[i * 65:(i + 1) * 65]) for i in range(2)]
    assert signers == [KEYS[0].address, KEYS[1].address]
    assert int(signers[0], 16) < int(signers[1], 16)
    assert book.quorum("margin", 7, d, 4) is None
    outsider = Account.create()
    with pytest.raises(SignatureRejected) as ei:
        book.add("margin", m, sign_digest(outsider, d))
    assert ei.value.reason == "not_a_keeper"
    # a signature over another root does not count for this one
    other = margin_msg(root=b"\x33" * 32)
    with pytest.raises(SignatureRejected):
        # signed the other root but claims this message: recovers to some random address
        book.add("margin", m, sign_digest(KEYS[0], CODEC.digest("margin", other)))
    assert book.count("margin", 7, d) == 3


def test_equivocation_is_visible():
    book = SignatureBook(CODEC, [k.address for k in KEYS])
    a, b = margin_msg(root=b"\x01" * 32), margin_msg(root=b"\x02" * 32)
    book.add("margin", a, sign_digest(KEYS[0], CODEC.digest("margin", a)))
    book.add("margin", b, sign_digest(KEYS[0], CODEC.digest("margin", b)))
    book.add("margin", b, sign_digest(KEYS[1], CODEC.digest("margin", b)))
    assert book.equivocators("margin", 7) == {KEYS[0].address}


@pytest.fixture
def two_servers(tmp_path):
    servers = []
    for i in range(2):
        book = SignatureBook(CODEC, [k.address for k in KEYS])
        view = KeeperView(KEYS[i].address)
        arch = InputsArchive(tmp_path / f"a{i}")
        servers.append(ExchangeServer(book, view, arch, port=0).start())
    yield servers
    for s in servers:
        s.stop()


def test_http_round_trip(two_servers):
    a, b = two_servers
    client = PeerClient("b", b.url, KEYS[1].address)
    assert client.health()["address"] == KEYS[1].address
    m = margin_msg()
    d = CODEC.digest("margin", m)
    assert client.post_signature("margin", m, sign_digest(KEYS[0], d)) == 201
    outsider = Account.create()
    assert client.post_signature("margin", m, sign_digest(outsider, d)) == 403
    got = client.signatures("margin", 7)
    assert len(got) == 1
    msg, sig, signer = got[0]
    # a receiving keeper re-verifies rather than trusting the claim
    assert recover_digest(CODEC.digest("margin", msg), sig) == signer == KEYS[0].address
    assert a.book.add("margin", msg, sig) == KEYS[0].address
    # malformed bodies are rejected with 400, not a crash
    r = requests.post(b.url + "/signatures", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = requests.post(b.url + "/signatures", json={"kind": "margin", "message": {"root": "0x12"},
                                                   "signature": "0x" + "00" * 65})
    assert r.status_code == 400 and r.json()["error"] == "bad_message"
    assert requests.get(b.url + "/nope").status_code == 404


def test_archive_and_margin_endpoints(two_servers):
    _, b = two_servers
    inputs = {"block": 7, "spot": 2000.5, "positions": [["0xabc", 1, 10**18]]}
    h = b.archive.put(inputs)
    client = PeerClient("b", b.url)
    blob = client.archive(h)
    assert blob == canonical_json(inputs) and "0x" + keccak(blob).hex() == h
    assert client.archive("0x" + "00" * 32) is None
    assert requests.get(b.url + "/archive/zz").status_code == 404
    leaf = {"account": KEYS[2].address, "stateNonce": 1, "equity": 5, "maintenance": 9, "initial": 12,
            "modelValue": -3}
    b.view.publish(7, {"header": {"sequence": 7}, "root": "0x" + "11" * 32, "leaves": [leaf],
                       "proof": lambda acct: (leaf, ["0x" + "22" * 32]) if acct == leaf["account"] else None})
    got = client.margin(KEYS[2].address.lower())
    assert got["leaf"] == leaf and got["proof"] == ["0x" + "22" * 32]
    assert client.margin(KEYS[1].address) is None
    assert client.attestation(7)["leaves"] == [leaf]
    assert requests.get(b.url + "/margin/0x12").status_code == 400


def test_peer_down_returns_none_not_raise(two_servers):
    _, b = two_servers
    url = b.url
    b.stop()
    client = PeerClient("b", url, timeout=0.5)
    assert client.health() is None and client.up is False
    assert client.post_signature("margin", margin_msg(), b"\x00" * 65) is None


def test_rotation_and_backoff():
    addrs = [k.address for k in KEYS]
    for seq in range(6):
        order = rotation_order(seq, addrs)
        assert order[0] == addrs[seq % 3]  # designated submitter rotates with the block number
        delays = sorted(submit_delay_blocks(k, seq, addrs, addrs, 2) for k in addrs)
        assert delays == [0, 2, 4]  # exactly one submits at once, the others back off
    seq = 4
    designated = rotation_order(seq, addrs)[0]
    second = rotation_order(seq, addrs)[1]
    assert should_submit(designated, seq, seq, addrs, addrs, 1)
    assert not should_submit(second, seq, seq, addrs, addrs, 1)
    assert should_submit(second, seq, seq + 1, addrs, addrs, 1)  # takeover after the timeout
    # the designated one is known down: the next one up submits at once
    up = [a for a in addrs if a != designated]
    assert should_submit(second, seq, seq, addrs, up, 1)


def test_diff_leaves_names_the_differing_field():
    mine = [{"account": "0xA", "equity": 1, "maintenance": 2}, {"account": "0xB", "equity": 5, "maintenance": 1}]
    theirs = [{"account": "0xa", "equity": 1, "maintenance": 2}, {"account": "0xB", "equity": -7, "maintenance": 1},
              {"account": "0xC", "equity": 0, "maintenance": 0}]
    d = diff_leaves(mine, theirs)
    assert d["differ"] == [("0xb", "equity", 5, -7)] and d["only_theirs"] == ["0xc"] and d["only_mine"] == []


def test_codec_and_tree_agree_with_the_contracts_side_module():
    """The codec's message conversion (hex strings -> typed values) gives eip712's digests, and the keeper's hash-built
    tree lays out the same root as the tree built of checked leaves (MerkleTree.of_leaves)."""
    eip = pytest.importorskip("keeper.codec.eip712")
    from keeper.codec.merkle import MarginLeaf, MerkleTree

    dom = eip.Domain(31337, CONTRACT)
    m = margin_msg()
    hdr = eip.MarginRootHeader(inputs_hash=bytes.fromhex(m["inputsHash"][2:]), sequence=m["sequence"],
                               timestamp=m["timestamp"], leaf_count=m["leafCount"],
                               solvency_hash=bytes.fromhex(m["solvencyHash"][2:]))
    assert eip.digest(eip.margin_root_typed_data(dom, bytes.fromhex(m["root"][2:]), hdr)) == CODEC.digest("margin", m)
    assets = ["0x" + "01" * 20]
    pm = {"assets": assets, "prices": [1234 * 10**18], "sequence": 9, "timestamp": 77}
    assert eip.digest(eip.prices_typed_data(dom, assets, pm["prices"], 9, 77)) == CODEC.digest("prices", pm)
    leaves = [MarginLeaf("0x" + f"{i + 1:040x}", i, 100 - 30 * i, 20, 30, -i) for i in range(5)]
    theirs = MerkleTree.of_leaves([MarginLeaf(*l.as_tuple()) for l in leaves])  # checked leaves, keyed by account
    assert theirs.root == MerkleTree([l.hash() for l in leaves]).root


def test_stopped_server_drops_keep_alive_connections(two_servers):
    _, b = two_servers
    client = PeerClient("b", b.url, timeout=0.5)
    assert client.health() is not None  # opens a keep-alive connection
    b.stop()
    assert client.health() is None and client.up is False  # as if the process had died

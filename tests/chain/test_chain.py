"""Chain access on Anvil: deployment schema, retries, reorg detection, batched reads, EIP-1559 tx sending."""
import json

import pytest
from eth_account import Account
from eth_utils import to_checksum_address

from keeper.errors import TxFailed, RpcUnavailable
from keeper.chain.client import (
    BlockTracker,
    Header,
    backoff_delays,
    header_from_block,
    make_web3,
    with_retries,
)
from keeper.chain.sender import Sender, eip1559_fees
from keeper.chain.deployment import Deployment, load_deployment, write_deployment
from keeper.errors import ConfigError
from keeper.ops.config import parse_config

ADDR = "0x" + "ab" * 20


def test_deployment_roundtrip_and_errors(tmp_path):
    d = Deployment.model_validate({"schema": "backstop-deployment/1", "chain_id": 31337, "block": 3,
                                   "clearinghouse": ADDR, "quote_asset": ADDR, "underlyings": {"ETH": ADDR}})
    p = tmp_path / "dep.json"
    write_deployment(p, d)
    assert load_deployment(p) == d
    assert json.loads(p.read_text())["schema"] == "backstop-deployment/1"
    p.write_text(json.dumps({"chain_id": 0, "block": 1, "clearinghouse": "0x12", "quote_asset": ADDR, "x": 1}))
    with pytest.raises(ConfigError) as ei:
        load_deployment(p)
    text = str(ei.value)
    assert "chain_id" in text and "clearinghouse: not an Ethereum address" in text and "x:" in text
    with pytest.raises(ConfigError, match="not found"):
        load_deployment(tmp_path / "none.json")


def test_backoff_and_retries():
    assert backoff_delays(0.5, 3.0, 6) == [0.5, 1.0, 2.0, 3.0, 3.0]
    calls, slept = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return 42

    assert with_retries(flaky, attempts=5, base=0.1, cap=1, sleep=slept.append) == 42
    assert slept == [0.1, 0.2]
    with pytest.raises(RpcUnavailable):
        with_retries(lambda: (_ for _ in ()).throw(ConnectionError("x")), attempts=3, base=0.1, cap=1,
                     sleep=slept.append)
    with pytest.raises(KeyError):  # not a connection problem: no retry
        with_retries(lambda: {}["k"], attempts=3, base=0.1, cap=1, sleep=slept.append)


def H(n, tag="a", parent_tag=None):
    return Header(n, f"0x{tag}{n}", f"0x{parent_tag or tag}{n - 1}", n)


def test_block_tracker_finds_fork_point():
    t = BlockTracker(depth=16)
    canon = {n: H(n, "a") for n in range(10)}
    for n in range(10):
        assert t.observe(canon[n], canon.__getitem__) is None
    # blocks 7.. replaced by branch "b": new head 10 whose parent is b9
    new = dict(canon)
    for n in range(7, 11):
        new[n] = H(n, "b", "a" if n == 7 else "b")
    assert t.observe(new[10], new.__getitem__) == 7
    assert t.hashes[6] == "0xa6" and 7 not in t.hashes and t.hashes[10] == "0xb10"
    # a shorter chain (head went back) is a reorg from head+1
    assert t.observe(canon[5], canon.__getitem__) == 6


def test_fees():
    f = eip1559_fees(base_fee=10, priority_fee=2, max_fee_cap=100)
    assert (f.max_fee, f.priority_fee) == (22, 2)
    assert eip1559_fees(60, 2, 100).max_fee == 100
    with pytest.raises(TxFailed):
        eip1559_fees(200, 2, 100)


@pytest.fixture(scope="module")
def anvil(tmp_path_factory):
    """A private Anvil on a free port (not the shared 8545), with the standard test mnemonic."""
    from keeper.chain.deploy import derive_keys
    from keeper.chain.local import ensure_chain, free_port

    lc = ensure_chain(f"http://127.0.0.1:{free_port()}", accounts=4, log_dir=tmp_path_factory.mktemp("anvil"))
    yield lc, derive_keys(lc.mnemonic, 4)
    lc.stop()


@pytest.fixture
def w3(anvil):
    return make_web3(anvil[0].url)


@pytest.mark.chain
def test_real_reorg_on_anvil(w3):
    t = BlockTracker(depth=64)
    get = lambda n: header_from_block(w3.eth.get_block(n))  # noqa: E731
    snap = w3.provider.make_request("evm_snapshot", [])["result"]
    for _ in range(3):
        w3.provider.make_request("evm_mine", [])
        assert t.observe(get("latest"), get) is None
    top = t.head
    w3.provider.make_request("evm_revert", [snap])
    w3.provider.make_request("anvil_setNextBlockTimestamp", [int(w3.eth.get_block("latest")["timestamp"]) + 1000])
    for _ in range(4):
        w3.provider.make_request("evm_mine", [])
    fork = t.observe(get("latest"), get)
    assert fork is not None and fork == top - 2  # the three blocks mined after the snapshot were replaced
    # a head seen without gaps after that: no reorg
    w3.provider.make_request("evm_mine", [])
    assert t.observe(get("latest"), get) is None


@pytest.mark.chain
def test_sender_nonce_and_eip1559(w3, anvil):
    funder = Account.from_key(anvil[1][0])
    acct = Account.create()
    settings = parse_config({}).chain
    Sender(w3, funder, settings=settings).send({"to": acct.address, "value": 10**18})
    sender = Sender(w3, acct, settings=settings, chain_id=w3.eth.chain_id)
    to = Account.from_key(anvil[1][1]).address
    before = w3.eth.get_balance(to)
    r = sender.send({"to": to, "value": 12345})
    assert int(r["status"]) == 1 and w3.eth.get_balance(to) - before == 12345
    tx = w3.eth.get_transaction(r["transactionHash"])
    assert tx["type"] == 2 and tx["maxPriorityFeePerGas"] == 10**9
    # the same key used elsewhere (e.g. a restarted keeper): the sender re-reads the nonce and still sends
    other = make_web3(w3.provider.endpoint_uri)
    raw = acct.sign_transaction({"to": to, "value": 1, "gas": 21000, "nonce": sender._nonce, "chainId": w3.eth.chain_id,
                                 "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "type": 2}).raw_transaction
    other.eth.wait_for_transaction_receipt(other.eth.send_raw_transaction(raw))
    r2 = sender.send({"to": to, "value": 7})
    assert int(r2["status"]) == 1 and w3.eth.get_transaction_count(acct.address) == 3


def test_rpc_down_raises_unavailable_quickly():
    w = make_web3("http://127.0.0.1:9", timeout=0.5)
    with pytest.raises(RpcUnavailable):
        with_retries(lambda: w.eth.block_number, attempts=2, base=0.01, cap=0.01,
                     retry_on=(ConnectionError, __import__("requests").ConnectionError))


@pytest.mark.chain
@pytest.mark.ganache
def test_sender_legacy_fees_on_ganache(tmp_path):
    """Ganache on the istanbul hardfork has no base fee: the sender falls back to a legacy gasPrice."""
    from keeper.chain.deploy import derive_keys
    from keeper.chain.local import ensure_chain, free_port

    lc = ensure_chain(f"http://127.0.0.1:{free_port()}", backend="ganache", accounts=2, log_dir=tmp_path)
    try:
        w = make_web3(lc.url)
        funder = Account.from_key(derive_keys(lc.mnemonic, 1)[0])
        to = Account.create().address
        r = Sender(w, funder, settings=parse_config({}).chain).send({"to": to, "value": 4321})
        assert int(r["status"]) == 1 and w.eth.get_balance(to) == 4321
        assert int(w.eth.get_transaction(r["transactionHash"]).get("type", 0)) == 0
    finally:
        lc.stop()


# ------------------------------------------------------------------------------------------------------------
# Claims in the event fold (pure: no chain)
# ------------------------------------------------------------------------------------------------------------
ACCTS = [to_checksum_address("0x" + f"{i:02x}" * 20) for i in range(1, 9)]


def _claim_event_sequence(rng, n: int) -> list[tuple[str, dict]]:
    """A random but contract-legal event sequence over a few accounts: claims are recorded only by a holder with
    no claim on another source and no claims on its own book, on a source holding no claim itself; a claim is
    settled whole; between them deposits, expiry settlements, cash transfers and trades."""
    holders: dict[str, str] = {}
    out = []
    for _ in range(n):
        kind = rng.choice(["record", "record", "settle", "Deposited", "Settled", "CashTransferred", "Traded"])
        if kind == "record":
            src, h = rng.sample(ACCTS, 2)
            if src in holders or h in holders.values() or holders.get(h, src) != src:
                continue
            holders[h] = src
            out.append(("ClaimRecorded", {"source": src.lower(), "holder": h, "shareWad": 1, "claimWad": 1,
                                          "pendingWad": 1, "movedWad": 0, "payment": 0}))
        elif kind == "settle":
            if not holders:
                continue
            h = rng.choice(sorted(holders))
            src = holders.pop(h)
            # settlement moves the share first (transfer events name source and holder), then ClaimSettled
            out.append(("PositionTransferred", {"from": src, "to": h, "seriesId": 1, "size": 1}))
            out.append(("ClaimSettled", {"source": src, "holder": h.lower(), "claimWad": 1, "shareOfStoredWad": 1,
                                         "creditedCashReleased": 0}))
        elif kind in ("Deposited", "Settled"):
            out.append((kind, {"account": rng.choice(ACCTS)}))
        elif kind == "CashTransferred":
            a, b = rng.sample(ACCTS, 2)
            out.append((kind, {"from": a, "to": b, "amount": 1}))
        else:
            a, b = rng.sample(ACCTS, 2)
            out.append((kind, {"maker": a, "taker": b}))
    return out


def _reference_dirty(events: list[tuple[str, dict]], k: int) -> set[str]:
    """Accounts event ``k`` must dirty, computed from scratch: the accounts it names, plus every holder whose
    latest claim event before ``k`` (or at ``k``, for a ClaimRecorded) is a ClaimRecorded on a named account."""
    from keeper.chain.client import _DIRTYING

    name, args = events[k]
    named = {to_checksum_address(args[a]) for a in _DIRTYING[name]}
    last: dict[str, tuple[str, str]] = {}  # holder -> (event name, source) of its latest claim event
    for nm, a in events[:k + 1] if name == "ClaimRecorded" else events[:k]:
        if nm in ("ClaimRecorded", "ClaimSettled"):
            last[to_checksum_address(a["holder"])] = (nm, to_checksum_address(a["source"]))
    return named | {h for h, (nm, src) in last.items() if nm == "ClaimRecorded" and src in named}


def test_claims_fold_dirties_holders_with_their_source_and_rebuilds():
    """ClaimRecorded / ClaimSettled dirty source and holder; while a claim is pending, any event touching its
    source also dirties the holder; the claim map after any split of the log into a folded base and replayed
    events (what a reorg rebuild does) equals the one-pass fold and the set of claims recorded and not settled."""
    import copy
    import random

    from keeper.chain.client import ChainState, apply_event

    rng = random.Random(20261122)
    holders_seen = 0
    for _case in range(200):
        events = _claim_event_sequence(rng, rng.randint(1, 40))
        state = ChainState()
        for k, (name, args) in enumerate(events):
            dirty: set[str] = set()
            apply_event(state, name, args, dirty)
            assert dirty == _reference_dirty(events, k), (k, name)
            holders_seen += len(dirty) - len({to_checksum_address(v) for v in args.values() if isinstance(v, str)})
        pending: dict[str, str] = {}
        for name, args in events:
            if name == "ClaimRecorded":
                pending[to_checksum_address(args["holder"])] = to_checksum_address(args["source"])
            elif name == "ClaimSettled":
                del pending[to_checksum_address(args["holder"])]
        assert state.claims == pending
        split = rng.randint(0, len(events))
        base = ChainState()
        for name, args in events[:split]:
            apply_event(base, name, args, set())
        rebuilt = copy.deepcopy(base)
        for name, args in events[split:]:
            apply_event(rebuilt, name, args, set())
        assert rebuilt.claims == state.claims and set(rebuilt.accounts) == set(state.accounts)
    assert holders_seen > 50, "the random sequences should exercise dirtying through a source"


def test_claim_fold_example():
    """One worked sequence: two holders on one source; an expiry settlement of the source dirties both; after the
    first holder settles only the second follows the source; a holder's own deposit does not dirty the source."""
    from keeper.chain.client import ChainState, apply_event

    s, h1, h2, other = ACCTS[:4]
    st = ChainState()

    def fold(name, **args):
        d: set[str] = set()
        apply_event(st, name, args, d)
        return d

    assert fold("ClaimRecorded", source=s, holder=h1, shareWad=5, claimWad=5, pendingWad=5, movedWad=0,
                payment=0) == {s, h1}
    assert fold("ClaimRecorded", source=s, holder=h2, shareWad=5, claimWad=5, pendingWad=10, movedWad=0,
                payment=0) == {s, h1, h2}
    assert st.claims == {h1: s, h2: s}
    assert fold("Settled", account=s, seriesId=1, size=-1, delta=3) == {s, h1, h2}
    assert fold("CashTransferred", **{"from": other, "to": s, "amount": 7}) == {other, s, h1, h2}
    assert fold("Deposited", account=h1, asset=other, amount=1, payer=h1) == {h1}
    assert fold("ClaimSettled", source=s, holder=h1, claimWad=5, shareOfStoredWad=5, creditedCashReleased=0) \
        == {s, h1, h2}
    assert st.claims == {h2: s}
    assert fold("Settled", account=s, seriesId=1, size=-1, delta=3) == {s, h2}

"""Keeper attestations: EIP-712 encoding parity with eth-account, M-of-N signature rules, freshness, monotonicity."""
import brownie
import pytest
from brownie import chain
from eth_account import Account
from eth_utils import keccak

from core_helpers import WAD, bytes32, err
from keeper.codec import eip712
from keeper.codec.merkle import MarginLeaf, MerkleTree
from keeper.codec.eip712 import Domain, Quote
from keeper.codec import merkle
from keeper.ops import signing

SIG_ERRORS = {
    "few": "KS_TooFewSignatures(uint256,uint256)",
    "asc": "KS_SignersNotAscending(uint256,address,address)",
    "keeper": "KS_NotAKeeper(address)",
    "highs": "KS_HighSSignature(uint256)",
    "malformed": "KS_MalformedSignatures(uint256)",
}


def _sorted_keys(keys):
    return sorted(keys, key=lambda k: int(k.address, 16))


def _prices_call(p, typed, sigs, sender):
    m = typed["message"]
    return p.ch.postPrices(m["assets"], m["prices"], m["sequence"], m["timestamp"], sigs, {"from": sender})


def _typed_prices(p, domain=None, seq=1, ts=None):
    return eip712.prices_typed_data(domain or p.domain, [str(p.weth)], [3000 * WAD], seq, ts or p.now())


@pytest.mark.ganache
def test_digests_match_eth_account(protocol, traders):
    p = protocol
    leaves = [MarginLeaf(str(t), 0, -5 * 10**6, 7, 9, -11) for t in traders]
    tree = MerkleTree.of_leaves(leaves)
    header = p.margin_header(tree)
    typed = eip712.margin_root_typed_data(p.domain, tree.root, header)
    assert bytes(p.ch.hashTypedData(eip712.struct_hash(typed))) == eip712.digest(typed)
    typed = _typed_prices(p)
    assert bytes(p.ch.hashTypedData(eip712.struct_hash(typed))) == eip712.digest(typed)
    q = Quote(str(traders[0]), 3, -2 * WAD, 55 * WAD, 9, 12345)
    assert bytes(p.ch.hashQuote(q.as_tuple())) == eip712.digest(eip712.quote_typed_data(p.domain, q))
    for l in leaves:
        assert bytes(p.ch.leafHash(l.as_tuple())) == merkle.leaf_hash(l)


@pytest.mark.ganache
def test_post_prices_stores_and_emits(protocol):
    p = protocol
    ts = p.now()
    tx = p.post_prices({p.weth: 3123 * WAD, p.wbtc: 61_000 * WAD}, timestamp=ts)
    assert [int(x) for x in p.ch.spotPrice(p.weth)] == [3123 * WAD, ts]
    assert [int(x) for x in p.ch.spotPrice(p.wbtc)] == [61_000 * WAD, ts]
    ev = tx.events["PricesPosted"]
    assert ev["sequence"] == 1 and list(ev["prices"]) == [3123 * WAD, 61_000 * WAD]
    assert [int(x) for x in p.ch.lastPriceAttestation()] == [1, ts]


@pytest.mark.ganache
def test_wrong_chain_id_rejected(protocol, owner):
    p = protocol
    bad = Domain(p.domain.chain_id + 1, p.domain.verifying_contract)
    typed = _typed_prices(p, domain=bad)
    sigs = signing.sign_attestation(typed, p.signers())
    first = signing.recover(_typed_prices(p), sigs[:65])  # what the contract recovers under its own domain
    with brownie.reverts(err(SIG_ERRORS["keeper"], first)):
        _prices_call(p, typed, sigs, owner)


def test_wrong_verifying_contract_rejected(protocol, owner):
    p = protocol
    bad = Domain(p.domain.chain_id, str(p.weth))
    typed = _typed_prices(p, domain=bad)
    sigs = signing.sign_attestation(typed, p.signers())
    first = signing.recover(_typed_prices(p), sigs[:65])
    with brownie.reverts(err(SIG_ERRORS["keeper"], first)):
        _prices_call(p, typed, sigs, owner)


def test_stale_and_future_attestations(protocol, owner):
    p = protocol
    old = p.now() - 121  # maxAttestationAge defaults to 120 s
    typed = _typed_prices(p, ts=old)
    with brownie.reverts(err("AO_AttestationExpired(uint64,uint256)", old, 120)):
        _prices_call(p, typed, signing.sign_attestation(typed, p.signers()), owner)
    future = p.now() + 60
    typed = _typed_prices(p, ts=future)
    with brownie.reverts(err("AO_AttestationFromFuture(uint64)", future)):
        _prices_call(p, typed, signing.sign_attestation(typed, p.signers()), owner)


@pytest.mark.ganache
def test_fewer_than_threshold(protocol, owner):
    p = protocol
    typed = _typed_prices(p)
    with brownie.reverts(err(SIG_ERRORS["few"], 2, 3)):
        _prices_call(p, typed, signing.sign_attestation(typed, p.signers(2)), owner)
    with brownie.reverts(err(SIG_ERRORS["malformed"], 64)):
        _prices_call(p, typed, signing.sign_attestation(typed, p.signers(1))[:64], owner)


@pytest.mark.ganache
def test_duplicate_and_unsorted_signers(protocol, owner):
    p = protocol
    typed = _typed_prices(p)
    keys = _sorted_keys(p.signers(3))
    sigs = [signing.sign(typed, k.key) for k in keys]
    a0, a1 = keys[0].address, keys[1].address
    with brownie.reverts(err(SIG_ERRORS["asc"], 1, a0, a0)):
        _prices_call(p, typed, sigs[0] + sigs[0] + sigs[1], owner)
    with brownie.reverts(err(SIG_ERRORS["asc"], 1, a0, a1)):
        _prices_call(p, typed, sigs[1] + sigs[0] + sigs[2], owner)


@pytest.mark.ganache
def test_non_keeper_signer(protocol, owner):
    p = protocol
    typed = _typed_prices(p)
    outsider = Account.from_key(keccak(text="not-a-keeper"))
    with brownie.reverts(err(SIG_ERRORS["keeper"], outsider.address)):
        _prices_call(p, typed, signing.sign_attestation(typed, p.signers(2) + [outsider]), owner)


@pytest.mark.ganache
def test_high_s_signature_rejected(protocol, owner):
    p = protocol
    typed = _typed_prices(p)
    keys = _sorted_keys(p.signers(3))
    sigs = [signing.sign(typed, k.key) for k in keys]
    twin = eip712.malleate(sigs[1])
    # the twin is a valid secp256k1 signature of the same digest by the same key ...
    assert signing.recover(typed, twin) == keys[1].address
    # ... which the contract refuses (OZ ECDSA rejects s > n/2)
    with brownie.reverts(err(SIG_ERRORS["highs"], 1)):
        _prices_call(p, typed, sigs[0] + twin + sigs[2], owner)


@pytest.mark.ganache
def test_replay_and_rollback(protocol, owner):
    p = protocol
    ts = p.now()
    typed = _typed_prices(p, seq=5, ts=ts)
    sigs = signing.sign_attestation(typed, p.signers())
    _prices_call(p, typed, sigs, owner)
    with brownie.reverts(err("AO_AttestationReplayed(uint64,uint64)", 5, 5)):
        _prices_call(p, typed, sigs, owner)
    older = _typed_prices(p, seq=6, ts=ts - 10)
    with brownie.reverts(err("AO_AttestationOlder(uint64,uint64)", ts - 10, ts)):
        _prices_call(p, older, signing.sign_attestation(older, p.signers()), owner)
    lower = _typed_prices(p, seq=4, ts=ts + 1)
    with brownie.reverts(err("AO_AttestationReplayed(uint64,uint64)", 4, 5)):
        _prices_call(p, lower, signing.sign_attestation(lower, p.signers()), owner)


def test_more_than_threshold_accepted_and_all_checked(protocol, owner):
    p = protocol
    typed = _typed_prices(p)
    tx = _prices_call(p, typed, signing.sign_attestation(typed, p.keeper_keys), owner)  # 5 of 5
    assert tx.status == 1


def test_keeper_set_governance_bounds(protocol, owner, traders):
    p = protocol
    addrs = [k.address for k in p.keeper_keys]
    with brownie.reverts(err("CH_ParameterOutOfBounds(bytes32,uint256,uint256,uint256)", bytes32("threshold"), 2, 3, 5)):
        p.ch.setKeeperSet(addrs, 2, {"from": owner})
    with brownie.reverts(err("CH_ParameterOutOfBounds(bytes32,uint256,uint256,uint256)", bytes32("threshold"), 6, 3, 5)):
        p.ch.setKeeperSet(addrs, 6, {"from": owner})
    with brownie.reverts(err("KS_DuplicateKeeper(address)", addrs[0])):
        p.ch.setKeeperSet(addrs[:2] + addrs[:1], 2, {"from": owner})
    with brownie.reverts(err("OwnableUnauthorizedAccount(address)", str(traders[0]))):
        p.ch.setKeeperSet(addrs, 3, {"from": traders[0]})
    tx = p.ch.setKeeperSet(addrs[:3], 2, {"from": owner})
    assert len(tx.events["KeeperRemoved"]) == 5 and len(tx.events["KeeperAdded"]) == 3
    assert int(p.ch.threshold()) == 2 and not p.ch.isKeeper(addrs[4])
    # a removed keeper's signature no longer counts
    typed = _typed_prices(p)
    removed = p.keeper_keys[4]
    with brownie.reverts(err(SIG_ERRORS["keeper"], removed.address)):
        _prices_call(p, typed, signing.sign_attestation(typed, [p.keeper_keys[0], removed]), owner)


def test_settlement_prices_set_once_after_expiry(protocol, owner):
    p = protocol
    expiry = p.now() - 30
    typed = eip712.settlement_typed_data(p.domain, [str(p.weth)], [2500 * WAD], expiry, p.now())
    sigs = signing.sign_attestation(typed, p.signers())
    m = typed["message"]
    tx = p.ch.postSettlementPrices(m["underlyings"], m["prices"], expiry, m["timestamp"], sigs, {"from": owner})
    assert int(p.ch.settlementPrice(p.weth, expiry)) == 2500 * WAD
    assert tx.events["SettlementPricePosted"]["price"] == 2500 * WAD
    with brownie.reverts(err("AO_SettlementPriceAlreadySet(address,uint64)", str(p.weth), expiry)):
        p.ch.postSettlementPrices(m["underlyings"], m["prices"], expiry, m["timestamp"], sigs, {"from": owner})
    now = p.now()
    early = eip712.settlement_typed_data(p.domain, [str(p.weth)], [1], now + 100, now)
    with brownie.reverts(err("AO_SettlementBeforeExpiry(uint64,uint64)", now, now + 100)):
        e = early["message"]
        p.ch.postSettlementPrices(
            e["underlyings"], e["prices"], e["expiry"], e["timestamp"], signing.sign_attestation(early, p.signers()),
            {"from": owner},
        )

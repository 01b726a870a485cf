"""Margin attestations: batches by multiproof, root-only posting with branches, stateNonce binding, breaches."""
import brownie
import pytest
from brownie import accounts, chain

from core_helpers import USDC, WAD, err
from keeper.codec import eip712
from keeper.codec.merkle import MarginLeaf, MerkleTree
from keeper.codec import merkle
from keeper.ops import signing


def _accounts(n):
    return [str(accounts[i % 10]) if i < 10 else "0x" + f"{i:040x}" for i in range(n)]


@pytest.mark.ganache
def test_batch_of_eight_records_every_leaf_and_breach(protocol):
    p = protocol
    addrs = _accounts(8)
    leaves = [MarginLeaf(a, 0, (1000 - 300 * (i % 5)) * USDC, 400 * USDC, 600 * USDC, -50 * i) for i, a in enumerate(addrs)]
    tree, header, tx = p.post_margin(leaves)
    assert len(tx.events["MarginAttested"]) == 8
    assert tx.events["MarginRootPosted"]["root"] == "0x" + tree.root.hex()
    breached = set()
    for l in leaves:
        eq, mm, nonce, at = p.ch.marginRecord(l.account)
        assert (int(eq), int(mm), int(nonce), int(at)) == (l.equity, l.maintenance, 0, header.timestamp)
        if l.equity < l.maintenance:
            breached.add(l.account)
    assert breached and {e["account"] for e in tx.events["AccountBreached"]} == breached
    for l in leaves:
        assert bool(p.ch.isBreached(l.account)) == (l.account in breached)
    one = next(l for l in leaves if l.account in breached)
    rec = p.ch.breachOf(one.account)
    assert [int(x) for x in rec[:6]] == [one.equity, one.maintenance, 0, header.timestamp, one.initial, one.model_value]
    ev = next(e for e in tx.events["AccountBreached"] if e["account"] == one.account)
    assert ev["inputsHash"] == "0x" + header.inputs_hash.hex() and ev["modelValue"] == one.model_value


def test_multiproof_subset_and_root_only_with_branch(protocol, owner):
    p = protocol
    addrs = _accounts(8)
    leaves = [MarginLeaf(a, 0, 1000 * USDC + i, 100 * USDC, 200 * USDC, 0) for i, a in enumerate(addrs)]
    tree = MerkleTree.of_leaves(leaves)
    header = p.margin_header(tree)
    subset = [addrs[1], addrs[5], addrs[6]]
    mp = tree.multiproof(subset)
    assert merkle.process_multiproof(*mp) == tree.root
    tx = p.ch.postMarginBatch(
        *p.posting(header), [l.as_tuple() for l in mp.leaves], list(mp.proof), list(mp.flags),
        p.sign_root(tree, header), {"from": owner},
    )
    assert {e["account"] for e in tx.events["MarginAttested"]} == set(subset)
    assert int(p.ch.marginRecord(addrs[0])[3]) == 0  # not posted

    # root only, then anyone records one leaf by its branch
    chain.sleep(1)
    chain.mine()
    header2 = p.margin_header(tree)
    p.ch.postMarginRoot(tree.root, *p.posting(header2), p.sign_root(tree, header2), {"from": owner})
    tx = p.ch.recordMargin(p.proof(tree, header2, addrs[0]), {"from": accounts[5]})
    assert tx.events["MarginAttested"]["recorded"] is True
    assert int(p.ch.marginRecord(addrs[0])[0]) == 1000 * USDC
    # a tampered leaf does not hash to the stored root
    bad = list(p.proof(tree, header2, addrs[2]))
    bad[1] = (bad[1][0], bad[1][1], bad[1][2] + 1, *bad[1][3:])
    with brownie.reverts(err("AO_UnknownMarginRoot(uint64)", header2.sequence)):
        p.ch.recordMargin(bad, {"from": accounts[5]})


def test_wrong_signers_on_margin_root(protocol, owner):
    p = protocol
    tree = MerkleTree.of_leaves([MarginLeaf(_accounts(1)[0], 0, 1, 0, 0, 0)])
    header = p.margin_header(tree)
    with brownie.reverts(err("KS_TooFewSignatures(uint256,uint256)", 2, 3)):
        p.ch.postMarginRoot(tree.root, *p.posting(header), p.sign_root(tree, header, p.signers(2)), {"from": owner})
    # a signature for a different root does not recover to a keeper
    other = MerkleTree.of_leaves([MarginLeaf(_accounts(1)[0], 0, 2, 0, 0, 0)])
    sigs = p.sign_root(other, header)
    typed = eip712.margin_root_typed_data(p.domain, tree.root, header)
    with brownie.reverts(err("KS_NotAKeeper(address)", signing.recover(typed, sigs[:65]))):
        p.ch.postMarginRoot(tree.root, *p.posting(header), sigs, {"from": owner})


@pytest.mark.ganache
def test_stale_portfolio_leaf_is_useless(protocol, traders):
    p = protocol
    t = traders[0]
    p.fund(t, p.weth, WAD)  # a collateral deposit (the first deposit): stateNonce 0 -> 1
    p.fund(t, p.usdc, 100 * USDC)  # a later quote deposit moves no stateNonce (it only raises equity)
    assert int(p.ch.stateNonce(t)) == 1
    old_leaf = p.leaf(t, 50 * USDC, 10 * USDC, 20 * USDC, nonce=0)
    tree, header, tx = p.post_margin([old_leaf])
    assert tx.events["MarginAttested"]["recorded"] is False
    assert int(p.ch.marginRecord(t)[3]) == 0
    with brownie.reverts(err("AO_StaleMarginState(address,uint32,uint32)", str(t), 0, 1)):
        p.ch.recordMargin(p.proof(tree, header, t), {"from": t})
    # a current one is recorded; a quote deposit keeps it (conservative: equity only rises), a collateral deposit
    # marks it stale again
    proof = p.attest(t, 100 * USDC, 10 * USDC, 20 * USDC)
    assert int(p.ch.marginRecord(t)[3]) > 0
    p.fund(t, p.usdc, 1 * USDC)
    assert int(p.ch.marginRecord(t)[3]) > 0 and int(p.ch.stateNonce(t)) == 1
    p.fund(t, p.weth, 1)
    assert int(p.ch.marginRecord(t)[3]) == 0 and int(p.ch.stateNonce(t)) == 2
    with brownie.reverts(err("AO_StaleMarginState(address,uint32,uint32)", str(t), 1, 2)):
        p.ch.withdraw(p.usdc, 1, proof, {"from": t})


def test_margin_root_replay_and_ring_expiry(protocol, owner):
    p = protocol
    a = _accounts(1)[0]
    tree = MerkleTree.of_leaves([MarginLeaf(a, 0, 5, 1, 1, 0)])
    header = p.margin_header(tree)
    sigs = p.sign_root(tree, header)
    p.ch.postMarginRoot(tree.root, *p.posting(header), sigs, {"from": owner})
    # the same root again is accepted as a no-op (idempotent posting: a copy posted first cannot make the keepers'
    # own batch revert); another root under a used sequence is a replay
    tx = p.ch.postMarginRoot(tree.root, *p.posting(header), sigs, {"from": owner})
    assert "MarginRootPosted" not in tx.events
    other0 = MerkleTree.of_leaves([MarginLeaf(a, 0, 7, 1, 1, 0)])
    with brownie.reverts(err("AO_AttestationReplayed(uint64,uint64)", header.sequence, header.sequence)):
        p.ch.postMarginRoot(other0.root, *p.posting(header), p.sign_root(other0, header), {"from": owner})
    proof = p.proof(tree, header, a)
    for _ in range(16):  # ROOT_RING_SIZE newer roots overwrite the slot
        other = MerkleTree.of_leaves([MarginLeaf(a, 0, 6, 1, 1, 0)])
        h = p.margin_header(other)
        p.ch.postMarginRoot(other.root, *p.posting(h), p.sign_root(other, h), {"from": owner})
    with brownie.reverts(err("AO_UnknownMarginRoot(uint64)", header.sequence)):
        p.ch.recordMargin(proof, {"from": owner})


def test_expired_margin_proof_rejected(protocol, traders):
    p = protocol
    t = traders[0]
    tree, header, _ = p.post_margin([p.leaf(t, 10, 1, 1)])
    chain.sleep(200)
    chain.mine()
    with brownie.reverts(err("AO_AttestationExpired(uint64,uint256)", header.timestamp, 120)):
        p.ch.recordMargin(p.proof(tree, header, t), {"from": t})

"""keeper/codec/eip712.py on its own: tree/proof/multiproof laws, leaf validation, signature ordering, malleability."""
import logging

import pytest
from eth_account import Account
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper.codec import eip712
from keeper.codec.merkle import MarginLeaf, MerkleTree
from keeper.codec.eip712 import Domain
from keeper.codec import merkle
from keeper.ops import signing

ADDRS = [Account.from_key(keccak(text=f"acct-{i}")).address for i in range(40)]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), data=st.data())
def test_every_branch_and_multiproof_rebuilds_the_root(n, data):
    leaves = [MarginLeaf(ADDRS[i], i, -(i * 7919), i * 13, i * 17, i - 20) for i in range(n)]
    tree = MerkleTree.of_leaves(leaves)
    for l in leaves:
        h = merkle.leaf_hash(l)
        for node in tree.proof(l.account):
            h = merkle.hash_pair(h, node)
        assert h == tree.root
    subset = data.draw(st.lists(st.sampled_from([l.account for l in leaves]), min_size=1, unique=True))
    mp = tree.multiproof(subset)
    assert {l.account for l in mp.leaves} == set(subset)
    assert merkle.process_multiproof(*mp) == tree.root
    full = tree.multiproof()
    assert full.proof == () and all(full.flags) and len(full.flags) == n - 1


def test_tampered_leaf_changes_root():
    leaves = [MarginLeaf(ADDRS[i], 0, 100, 1, 2, 3) for i in range(5)]
    tree = MerkleTree.of_leaves(leaves)
    mp = tree.multiproof()
    bad = merkle.MultiProof((MarginLeaf(ADDRS[0], 0, 101, 1, 2, 3),) + mp.leaves[1:], mp.proof, mp.flags)
    assert merkle.process_multiproof(*bad) != tree.root


def test_leaf_validation_skips_and_logs(caplog):
    rows = [
        dict(account=ADDRS[0], state_nonce=1, equity=5, maintenance=1, initial=2, model_value=0),
        dict(account=ADDRS[1], state_nonce=1, equity=2**95, maintenance=1, initial=2, model_value=0),  # > int96
        dict(account=ADDRS[2], state_nonce=-1, equity=5, maintenance=1, initial=2, model_value=0),
        dict(account=ADDRS[3], state_nonce=1, equity=5.0, maintenance=1, initial=2, model_value=0),
    ]
    with caplog.at_level(logging.WARNING):
        ok = merkle.valid_leaves(rows)
    assert [l.account for l in ok] == [ADDRS[0]]
    assert caplog.text.count("skipping margin leaf") == 3
    with pytest.raises(ValueError):
        MerkleTree.of_leaves([MarginLeaf(ADDRS[0], 0, 1, 0, 0, 0), MarginLeaf(ADDRS[0], 0, 2, 0, 0, 0)])


def test_signatures_sorted_and_malleable_twin_recovers_same_signer():
    keys = [Account.from_key(keccak(text=f"k-{i}")) for i in range(5)]
    typed = eip712.prices_typed_data(Domain(1, ADDRS[0]), [ADDRS[1]], [10**18], 1, 1_700_000_000)
    blob = signing.sign_attestation(typed, keys)
    signers = [signing.recover(typed, blob[i : i + 65]) for i in range(0, len(blob), 65)]
    assert [int(s, 16) for s in signers] == sorted(int(k.address, 16) for k in keys)
    sig = blob[:65]
    twin = eip712.malleate(sig)
    assert twin != sig and int.from_bytes(twin[32:64], "big") > eip712.SECP256K1_N // 2
    assert signing.recover(typed, twin) == signers[0]
    gathered = {s: blob[i * 65 : i * 65 + 65] for i, s in enumerate(signers)}
    assert eip712.combine_signatures(dict(reversed(list(gathered.items())))) == blob

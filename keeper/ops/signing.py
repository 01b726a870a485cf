"""Signing and signer recovery with eth-account: the only room that holds private keys in use.

Two forms, both what the contracts verify (65-byte ``r ‖ s ‖ v``, low-s, ``v`` in {27, 28}; several signatures
concatenated in strictly ascending signer order):

* typed data (:mod:`keeper.codec.eip712` builds it): :func:`sign`, :func:`sign_attestation`, :func:`recover`;
* a 32-byte digest (the contract's ``hashTypedData(structHash)``, or a digest received from a peer):
  :func:`sign_digest`, :func:`sign_digest_sorted`, :func:`recover_digest`, :func:`recover_signers`.
"""
from __future__ import annotations

from typing import Sequence

from eth_account import Account

from keeper.codec.eip712 import signable

#: length of one ``r ‖ s ‖ v`` signature
SIG_LEN = 65


def _account(key):
    return key if hasattr(key, "key") else Account.from_key(key)


def sign(typed: dict, private_key) -> bytes:
    """One signature of EIP-712 ``typed`` data."""
    return bytes(Account.sign_message(signable(typed), private_key).signature)


def sign_attestation(typed: dict, private_keys: Sequence) -> bytes:
    """Signatures of every key over ``typed``, concatenated in strictly ascending signer-address order."""
    accts = [_account(k) for k in private_keys]
    signed = sorted(((int(a.address, 16), sign(typed, a.key)) for a in accts), key=lambda t: t[0])
    if len({a for a, _ in signed}) != len(signed):
        raise ValueError("duplicate signer")
    return b"".join(s for _, s in signed)


def recover(typed: dict, signature: bytes) -> str:
    """Address that produced ``signature`` over ``typed``."""
    return Account.recover_message(signable(typed), signature=signature)


def sign_digest(account, digest: bytes) -> bytes:
    """Sign a 32-byte digest with an eth-account ``LocalAccount`` (or a private key)."""
    return bytes(_account(account).unsafe_sign_hash(digest).signature)


def sign_digest_sorted(digest: bytes, keys: Sequence) -> bytes:
    """Signatures of ``digest`` by every key, concatenated with the signers strictly ascending."""
    accts = [_account(k) for k in keys]
    return b"".join(s for _, s in sorted((int(a.address, 16), sign_digest(a, digest)) for a in accts))


def recover_digest(digest: bytes, signature: bytes) -> str:
    """Address that signed the 32-byte ``digest``."""
    return Account._recover_hash(digest, signature=signature)


def recover_signers(digest: bytes, signatures: bytes) -> list[str]:
    """Signers of concatenated 65-byte signatures over ``digest``, in the order given."""
    if len(signatures) % SIG_LEN:
        raise ValueError(f"signature bytes length {len(signatures)} is not a multiple of {SIG_LEN}")
    return [recover_digest(digest, signatures[i:i + SIG_LEN]) for i in range(0, len(signatures), SIG_LEN)]

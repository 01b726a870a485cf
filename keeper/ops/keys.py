"""The keeper's signing key: from an environment variable (hex private key) or an encrypted keystore file.

The key is never printed or logged: :class:`KeeperKey` shows only its address in ``repr``/``str``, and errors
name the variable or file, never the value.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional

from eth_account import Account
from eth_account.signers.local import LocalAccount

from keeper.errors import KeyLoadError


class KeeperKey:
    """A loaded signing key. ``account`` signs; ``repr``/``str`` show the address only."""

    __slots__ = ("_account",)

    def __init__(self, account: LocalAccount) -> None:
        self._account = account

    @property
    def account(self) -> LocalAccount:
        return self._account

    @property
    def address(self) -> str:
        return self._account.address

    def __repr__(self) -> str:
        return f"KeeperKey(address={self.address})"

    __str__ = __repr__

    def __reduce__(self):  # refuse pickling, which would write the key somewhere
        raise TypeError("KeeperKey cannot be pickled")


def key_from_env(var: str, environ: Optional[Mapping[str, str]] = None) -> KeeperKey:
    """Load a hex private key from environment variable ``var``."""
    env = os.environ if environ is None else environ
    raw = env.get(var)
    if not raw:
        raise KeyLoadError(f"environment variable {var} is not set")
    try:
        return KeeperKey(Account.from_key(raw.strip()))
    except Exception:
        raise KeyLoadError(f"environment variable {var} does not hold a valid private key") from None


def key_from_keystore(path: Path, password: str) -> KeeperKey:
    """Decrypt an eth-account (Web3 Secret Storage) keystore file."""
    p = Path(path)
    try:
        blob = json.loads(p.read_text())
    except FileNotFoundError:
        raise KeyLoadError(f"keystore file not found: {p}") from None
    except (OSError, ValueError):
        raise KeyLoadError(f"keystore file {p} is not readable JSON") from None
    try:
        return KeeperKey(Account.from_key(Account.decrypt(blob, password)))
    except Exception:
        raise KeyLoadError(f"cannot decrypt keystore {p} (wrong password or corrupt file)") from None


def write_keystore(path: Path, private_key: str, password: str) -> str:
    """Encrypt ``private_key`` into a keystore file at ``path`` (mode 0600); returns the address."""
    acct = Account.from_key(private_key)
    blob = Account.encrypt(private_key, password)
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(blob, fh)
    return acct.address


def load_key(settings, environ: Optional[Mapping[str, str]] = None) -> KeeperKey:
    """Load the key named by a :class:`keeper.ops.config.KeySettings`: the keystore when one is configured
    (password from ``password_file`` or the ``password_env`` variable), else the ``env_var`` variable."""
    env = os.environ if environ is None else environ
    if settings.keystore_file is not None:
        if settings.password_file is not None:
            try:
                password = Path(settings.password_file).read_text().rstrip("\n")
            except OSError:
                raise KeyLoadError(f"keystore password file not readable: {settings.password_file}") from None
        else:
            password = env.get(settings.password_env)
            if password is None:
                raise KeyLoadError(f"environment variable {settings.password_env} (keystore password) is not set")
        return key_from_keystore(settings.keystore_file, password)
    return key_from_env(settings.env_var, env)

"""Every error the keeper package raises on purpose has one root, :class:`BackstopError`, and also subclasses the
builtin it stands for (as web3.py's exceptions do), so ``except BackstopError`` catches all of ours and
``except ValueError`` still catches bad input. Messages are one readable line (CLIs print them as they are).
"""
from __future__ import annotations


class BackstopError(Exception):
    """Root of every error raised on purpose by the keeper package."""


class ConfigError(BackstopError, ValueError):
    """A configuration file that cannot be used; the message lists every bad value, one per line."""


class KeyLoadError(BackstopError, ValueError):
    """The key cannot be loaded; the message names where it was looked for, never the key."""


class BadInput(BackstopError, ValueError):
    """A path or file the backtest cannot use (message: one line)."""


class SurfaceFitError(BackstopError, ValueError):
    """No surface can be fitted (no expiry with enough usable quotes, or inconsistent slices)."""


class SignatureRejected(BackstopError, ValueError):
    """A signature that is not stored; ``reason`` is a short label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class VerifyError(BackstopError, ValueError):
    """Bad input (unknown account/auction, unreadable deployment, RPC down, archive missing): one line."""


class RpcUnavailable(BackstopError, ConnectionError):
    """The RPC did not answer after every retry."""


class TxFailed(BackstopError, RuntimeError):
    """A transaction that would revert (estimate failed) or reverted on chain; ``reason`` is a short text."""


class DeployError(BackstopError, RuntimeError):
    """Deployment cannot proceed; the message names the step and the cause in one line."""


class ScenarioError(BackstopError, RuntimeError):
    """The scenario cannot go on; one readable line."""


class SettlementUnavailable(BackstopError, ValueError):
    """Not enough attested prices in the settlement window; the message says what is missing."""

"""Structured JSON logs (structlog) for the keeper and liquidator bots.

:func:`configure_logging` renders one JSON object per line with ``timestamp``, ``level``, ``event`` and the
bound fields. A redaction processor replaces the value of any field whose name suggests key material
(``private_key``, ``password``, ``secret``, ``mnemonic``, ``keystore``) so that nothing secret is ever written.
"""
from __future__ import annotations

import logging as _stdlib_logging
import sys
from typing import Any, TextIO

import structlog

_SECRET_WORDS = ("private_key", "privatekey", "password", "secret", "mnemonic", "keystore_blob", "seed_phrase")


def redact_secrets(_logger: Any, _name: str, event_dict: dict) -> dict:
    """structlog processor: blank every field whose name contains a secret word."""
    for key in list(event_dict):
        low = key.lower()
        if any(w in low for w in _SECRET_WORDS):
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send structlog output as JSON lines to ``stream`` (stderr by default) at ``level``."""
    lvl = getattr(_stdlib_logging, level.upper(), _stdlib_logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # stdlib loggers of the quant modules (e.g. keeper.quant.chains) go to the same stream as plain lines
    root = _stdlib_logging.getLogger("keeper")
    if not root.handlers:
        handler = _stdlib_logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(_stdlib_logging.Formatter('{"level":"%(levelname)s","logger":"%(name)s","event":%(message)r}'))
        root.addHandler(handler)
    root.setLevel(lvl)
    # apscheduler reports every coalesced/skipped tick ("maximum number of running instances reached"): that is the
    # intended no-overlap behaviour, not a warning worth a line per tick
    _stdlib_logging.getLogger("apscheduler").setLevel(_stdlib_logging.ERROR)


def get_logger(name: str = "keeper", **bound: Any):
    """A structlog logger with ``component=name`` and any extra bound fields."""
    return structlog.get_logger().bind(component=name, **bound)

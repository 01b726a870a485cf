"""Shared test fixtures.

Real market data lives outside the project in ``../shared/data`` (see its README); tests that need it take the
``shared_data`` fixture and are skipped, with the reason, where that folder is absent (a user's clone has none).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    override = os.environ.get("BACKSTOP_SHARED_DATA")
    return Path(override) if override else PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real Deribit option chains and crash price paths; skips the test where it is absent."""
    folder = _shared_data_dir()
    if not (folder / "option_chains").is_dir() or not (folder / "price_paths").is_dir():
        pytest.skip(f"real market data not found at {folder} (set BACKSTOP_SHARED_DATA or clone beside ../shared/data)")
    return folder

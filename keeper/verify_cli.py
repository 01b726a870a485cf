"""``backstop verify`` (the command lives in :mod:`keeper.scenario_cli`)."""
from keeper.scenario_cli import verify_cmd as verify

__all__ = ["verify"]

"""``backstop deploy`` (the command lives in :mod:`keeper.scenario_cli`)."""
from keeper.scenario_cli import deploy_cmd as deploy

__all__ = ["deploy"]

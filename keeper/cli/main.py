"""The ``backstop`` command: one group whose subcommands live in their own modules and are imported only when
named (click's lazy-loading pattern), so ``backstop scenario`` never imports the keeper bot and ``--help`` is fast.

Console scripts (pyproject ``[project.scripts]``): ``backstop`` (:func:`main`), ``keeper``
(:func:`keeper.cli.keeper.keeper_main`), ``liquidator`` (:func:`keeper.cli.liquidator.liquidator_main`).
Bad input exits with status 2 and one readable line (:func:`keeper.cli.common.fail`).
"""
from __future__ import annotations

import importlib

import click

#: ``backstop <name>`` -> "module:attribute" of its click command
COMMANDS = {
    "keeper": "keeper.cli.keeper:keeper_main",
    "liquidator": "keeper.cli.liquidator:liquidator_main",
    "deploy": "keeper.cli.scenario:deploy",
    "scenario": "keeper.cli.scenario:scenario",
    "verify": "keeper.cli.scenario:verify",
    "backtest": "keeper.cli.backtest:backtest",
    "haircuts": "keeper.cli.haircuts:haircuts",
}


class _LazyGroup(click.Group):
    """Subcommands named in :data:`COMMANDS`, imported on first use."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        mod, _, attr = target.partition(":")
        return getattr(importlib.import_module(mod), attr)


@click.group(cls=_LazyGroup, name="backstop")
def main() -> None:
    """Backstop: model-marked margin and liquidation for on-chain options."""


if __name__ == "__main__":  # pragma: no cover
    main()

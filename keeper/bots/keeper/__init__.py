"""The keeper bot, one job per module: see :mod:`keeper.bots.keeper.bot`."""

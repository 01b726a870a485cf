"""Backstop's off-chain side: the quant engine (pure math), keeper and liquidator bots (chain I/O, signing,
scheduling, HTTP), and the command-line tools."""

__version__ = "0.1.0"

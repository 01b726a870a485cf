"""What every command shares: how a command fails on bad input (status 2, one readable line on stderr)."""
from __future__ import annotations

import sys

import click


def fail(prog: str, msg: str, code: int = 2) -> None:
    """Print ``<prog>: <msg>`` on stderr and exit with ``code`` (2: bad input)."""
    click.echo(f"{prog}: {msg}", err=True)
    sys.exit(code)

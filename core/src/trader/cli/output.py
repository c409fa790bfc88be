"""Terminal output shared by commands."""

from __future__ import annotations

import sys

from rich.console import Console

#: Width for tables when output goes to a file or pipe, so nothing is cut to fit 80 columns.
PIPE_WIDTH = 160


def console() -> Console:
    """A rich console on stdout: the terminal's width, or a wide fixed one when piped."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPE_WIDTH, force_terminal=False)

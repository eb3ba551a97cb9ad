"""Helpers shared by the command modules: one-line errors, the console, examples in --help."""

from __future__ import annotations

import functools
from typing import Callable

import typer
from rich.console import Console

from tunelens.errors import UserError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def example(*lines: str) -> str:
    """An epilog for --help showing how the command is called."""
    return "Example:  " + "  |  ".join(lines)


def user_errors(func: Callable) -> Callable:
    """Print a UserError as one red line on stderr and exit 2, instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as err:
            err_console.print(f"[red]error:[/red] {err}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper

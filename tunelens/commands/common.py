"""Helpers shared by the command modules: one-line errors, the console, examples in --help."""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

import typer
from rich.console import Console

from tunelens.errors import UserError
from tunelens.runtime import Progress

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


@contextlib.contextmanager
def stage_progress() -> Iterator[Progress]:
    """One Rich progress bar per named stage; yields the (what, done, total) callback that demos and
    studies report to."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, int] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = progress.add_task(what, total=max(total, 1))
            progress.update(tasks[what], completed=done, total=max(total, 1))

        yield report

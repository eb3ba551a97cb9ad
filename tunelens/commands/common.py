"""Helpers shared by the command modules: one-line errors, the console, progress, examples in --help, the
shared --model/--adapter/--device flags."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Callable, Iterator

import typer
from rich.console import Console

from tunelens.errors import UserError
from tunelens.model.specs import ADAPTER_HELP, DEFAULT_MODEL, DEVICE_HELP, MODEL_HELP
from tunelens.runtime import Progress

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def example(*lines: str) -> str:
    """An epilog for --help showing how the command is called, one call per line."""
    return ("Example:\n" if len(lines) == 1 else "Examples:\n") + "\n".join(f"  {line}" for line in lines)


def model_flag(default: str | None = DEFAULT_MODEL, help: str = MODEL_HELP):
    """`--model/-m`, declared once for every command that takes a model (configs use model.specs.model_option)."""
    return typer.Option(default, "--model", "-m", help=help, metavar="SPEC", rich_help_panel="Model")


def adapter_flag(help: str = ADAPTER_HELP):
    return typer.Option(None, "--adapter", help=help, metavar="DIR", rich_help_panel="Model")


def device_flag():
    return typer.Option("auto", "--device", help=DEVICE_HELP, metavar="DEVICE", rich_help_panel="Model")


def new_table(title: str, columns, **options):
    """A Rich table titled `title` with these column headers (`options` apply to every column)."""
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, **options)
    return table


def read_prompt(prompt: str | None, prompt_file: Path | None) -> str:
    """The prompt of --prompt or of --prompt-file (exactly one of them)."""
    if (prompt is None) == (prompt_file is None):
        raise UserError("give exactly one of --prompt and --prompt-file")
    if prompt_file is None:
        return prompt
    try:
        text = prompt_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--prompt-file {prompt_file}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"--prompt-file {prompt_file}: not UTF-8 text") from None
    # A trailing newline is an editor habit, not part of the instruction.
    return text.removesuffix("\n")


def quiet_library_output() -> None:
    """Our own progress display says what is loading; transformers' bars and a deprecation warning that
    PEFT triggers would only break it up."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def rate_cell(cell: dict) -> str:
    """A summary's rate cell as "12% (3/25)", or "-" when there is no rate."""
    return "-" if cell.get("rate") is None else f"{100 * cell['rate']:.0f}% ({cell['k']}/{cell['n']})"


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
def stage_progress(*, stderr: bool = False, transient: bool = False, one_bar: bool = False,
                   label: str = "") -> Iterator[Progress]:
    """The one progress display: yields the (what, done, total) callback every stage reports to. Each stage
    gets a Rich bar, or with `one_bar` one bar whose label (after `label`) follows the stage; a total of 0
    is "unknown" (a pulsing bar). `stderr` keeps stdout clean for data; `transient` clears the bars."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err_console if stderr else console, transient=transient) as progress:
        tasks: dict[str, int] = {}

        def report(what: str, done: int, total: int) -> None:
            key = "" if one_bar else what
            if key not in tasks:
                tasks[key] = progress.add_task(label + what, total=total or None)
            progress.update(tasks[key], description=label + what, completed=done, total=total or None)

        yield report

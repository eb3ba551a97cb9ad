"""The `tunelens` command. Each command lives in tunelens/commands/<command>.py (a command group such as
`data` or `gate` in one module) and only parses options, calls one library function and prints its
result; heavy imports (torch) happen inside them, so `tunelens --help` stays fast."""

from __future__ import annotations

import importlib

import typer

from tunelens import __version__
from tunelens.commands.help import use_grouped_help

app = typer.Typer(
    name="tunelens",
    help="Fine-tune small code models with LoRA and see what the fine-tune really did.",
    epilog="Example: tunelens generate --model gemma3-270m --prompt 'def add(a, b):'",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Order here is the order of `tunelens --help`.
COMMAND_MODULES = ("models", "generate", "data", "train", "trace", "compare", "eval", "gate", "route", "context",
                   "serve", "export", "demo", "study")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tunelens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Fine-tune small code models with LoRA and see what the fine-tune really did."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"tunelens.commands.{_name}").register(app)
use_grouped_help(app)


def main() -> None:
    app()

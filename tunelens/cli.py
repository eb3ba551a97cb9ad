"""The `tunelens` command. Each stage's commands live in tunelens/commands/<stage>.py and only parse
options, call one library function and print its result; heavy imports (torch) happen inside them,
so `tunelens --help` stays fast."""

from __future__ import annotations

import importlib

import typer

from tunelens import __version__

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
STAGE_MODULES = ("models", "data", "train", "trace", "evaluate", "gate", "context", "serve", "export", "demo",
                 "study")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tunelens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Fine-tune small code models with LoRA and see what the fine-tune really did."""


for _name in STAGE_MODULES:
    importlib.import_module(f"tunelens.commands.{_name}").register(app)


def main() -> None:
    app()

"""`tunelens context check`: score examples before they are injected into a prompt (library in
tunelens/inspect/context_check.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tunelens.commands.common import console, example, new_table, user_errors
from tunelens.commands.options import config_options
from tunelens.inspect.context_check import ContextCheckConfig

context_app = typer.Typer(
    help="Checks on context (injected examples) before the model sees it.",
    epilog=example("tunelens context check --query 'Reverse a list.' --examples shots.jsonl"),
    no_args_is_help=True,
)


@context_app.command("check", epilog=example(
    "tunelens context check --query 'Reverse a list.' --examples shots.jsonl",
    "tunelens context check --query 'Parse a date.' --examples shots.jsonl --gate runs/gate --json"))
@user_errors
@config_options(ContextCheckConfig)
def check_command(
    query: str = typer.Option(..., "--query", "-q", help="The request the examples would be shown before."),
    examples: Path = typer.Option(..., "--examples", "-e", help="JSONL of examples: {instruction, response} "
                                                                "objects or chat records."),
    gate: Optional[Path] = typer.Option(None, "--gate", help="Gate directory: adds its retrieval signals."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdict as JSON instead of a table."),
    fail_on_flag: bool = typer.Option(False, "--fail-on-flag", help="Exit 1 when the context is flagged."),
    config: ContextCheckConfig = None,
) -> None:
    """Score injected context before generation: lint of the example code (syntax, Python 2), similarity of
    each example's instruction to the query, whether its response matches its instruction, and (with a
    gate) how close it is to the training data. One risk per example; the context is flagged at the threshold."""
    from tunelens.inspect.context_check import check_context, read_examples

    if gate is not None:  # the gate's imports (faiss, the embedder) only when one is given
        from tunelens.gate import Gate
    verdict = check_context(query, read_examples(examples), config, gate=Gate.load(gate) if gate else None)
    if as_json:
        console.print_json(json.dumps(verdict.to_dict()))
    else:
        _print_verdict(verdict)
    if fail_on_flag and verdict.flagged:
        raise typer.Exit(1)


def _print_verdict(verdict) -> None:
    table = new_table(f"context check: risk {verdict.risk:.2f} (threshold {verdict.threshold:.2f})",
                      ("example", "risk", "reason", "similarity", "lint", "missing names", "to training"))
    for item in verdict.examples:
        table.add_row(item.id, f"{item.risk:.2f}", item.main_reason if item.risk > 0 else "-",
                      f"{item.similarity:.2f}", ", ".join(item.lint_findings) or "-",
                      ", ".join(item.named_missing) or "-",
                      "-" if item.training_similarity is None else f"{item.training_similarity:.2f}")
    console.print(table)
    state = "[red]FLAGGED: do not trust this context[/red]" if verdict.flagged else "[green]ok[/green]"
    console.print(state)


def register(app: typer.Typer) -> None:
    app.add_typer(context_app, name="context")

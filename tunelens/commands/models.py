"""`tunelens models` and `tunelens generate`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from tunelens.commands.common import console, err_console, example, user_errors
from tunelens.commands.options import config_options
from tunelens.generation import GenerateConfig
from tunelens.models import DEFAULT_MODEL


def _human_size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def models_command() -> None:
    """List the embedded models: parameters, licence, whether each is installed and cached, its cache size."""
    from tunelens.models import embedded_status

    table = Table(title="embedded models")
    for column in ("name", "params", "licence", "installed", "cached", "cache size", "description"):
        table.add_column(column)
    for row in embedded_status():
        table.add_row(row.name, row.params, row.licence, "yes" if row.installed else f"no ({row.package})",
                      "yes" if row.cached else "no", _human_size(row.size_bytes), row.description)
    console.print(table)


@user_errors
@config_options(GenerateConfig)
def generate_command(
    prompt: str = typer.Option(..., "--prompt", "-p", help="Instruction (or raw text with --raw)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Embedded name, model directory, .gguf file or cached repo id."),
    adapter: str = typer.Option(None, "--adapter", help="PEFT adapter directory to attach."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    out: Path = typer.Option(None, "--out", "-o", help="Also write a JSON record: the prompt as rendered, the "
                                                       "few-shot examples shown and the text."),
    config: GenerateConfig = None,
) -> None:
    """Stream a model's continuation of one prompt to the terminal."""
    from tunelens.fewshot import FewShot
    from tunelens.generation import stream_generate
    from tunelens.models import load_model

    examples = FewShot.load(config.few_shot, config.few_shot_index).for_one(prompt)
    if examples:  # on stderr: stdout stays the continuation alone
        shown = ", ".join(f"{e.id} (similarity {e.similarity:.3f})" for e in examples)
        err_console.print(f"[dim]few-shot: {len(examples)} example(s) before the prompt: {shown}[/dim]",
                          soft_wrap=True)
    with console.status(f"loading {model}"):
        loaded, tokenizer = load_model(model, adapter=adapter, device=device)
    if config.raw:
        sys.stdout.write(prompt)
    pieces = []
    for piece in stream_generate(loaded, tokenizer, prompt, config.sampling(), raw=config.raw, examples=examples):
        pieces.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if out is not None:
        _write_generation(out, tokenizer, model, adapter, prompt, config, examples, "".join(pieces))


def _write_generation(out: Path, tokenizer, model: str, adapter, prompt: str, config, examples, text: str) -> None:
    from dataclasses import asdict

    from tunelens.generation import prompt_ids_for
    from tunelens.io import atomic_write_json
    from tunelens.trace import rendered_prompt_text

    atomic_write_json(out, {
        "format": "tunelens.generate", "model": model, "adapter": adapter, "prompt": prompt,
        "rendered_prompt": rendered_prompt_text(tokenizer, prompt, config.raw, examples),
        "prompt_tokens": len(prompt_ids_for(tokenizer, prompt, config.raw, examples)), "config": asdict(config),
        "few_shot": [e.to_dict() for e in examples], "text": text})
    err_console.print(f"[dim]wrote {out}[/dim]", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("models", epilog=example("tunelens models"))(models_command)
    app.command("generate", epilog=example(
        f"tunelens generate --model {DEFAULT_MODEL} --prompt 'def add(a, b):' --raw",
        "tunelens generate -m smollm2-135m -p 'Write a function that reverses a string.' --temperature 0.7 --seed 1",
        "tunelens generate -p 'Reverse a list.' --few-shot 2 --few-shot-index runs/demo/gate --out gen.json",
    ))(generate_command)

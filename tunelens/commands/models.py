"""`tunelens models` and `tunelens generate`."""

from __future__ import annotations

import sys

import typer
from rich.table import Table

from tunelens.commands.common import console, example, user_errors
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
    """List the embedded models: whether each is installed and cached, and its size on disk."""
    from tunelens.models import embedded_status

    table = Table(title="embedded models")
    for column in ("name", "installed", "cached", "size", "description"):
        table.add_column(column)
    for row in embedded_status():
        table.add_row(row.name, "yes" if row.installed else f"no ({row.package})",
                      "yes" if row.cached else "no", _human_size(row.size_bytes), row.description)
    console.print(table)


@user_errors
def generate_command(
    prompt: str = typer.Option(..., "--prompt", "-p", help="Instruction (or raw text with --raw)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Embedded name, model directory, .gguf file or cached repo id."),
    adapter: str = typer.Option(None, "--adapter", help="PEFT adapter directory to attach."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1, max=8192, help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, max=10.0, help="0 is greedy."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass."),
    seed: int = typer.Option(None, "--seed", help="Random seed for sampling."),
    raw: bool = typer.Option(False, "--raw", help="Continue the text as is, without the chat/turn format."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
) -> None:
    """Stream a model's continuation of one prompt to the terminal."""
    from tunelens.generation import SamplingConfig, stream_generate
    from tunelens.models import load_model

    with console.status(f"loading {model}"):
        loaded, tokenizer = load_model(model, adapter=adapter, device=device)
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    if raw:
        sys.stdout.write(prompt)
    for piece in stream_generate(loaded, tokenizer, prompt, sampling, raw=raw):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


def register(app: typer.Typer) -> None:
    app.command("models", epilog=example("tunelens models"))(models_command)
    app.command("generate", epilog=example(
        f"tunelens generate --model {DEFAULT_MODEL} --prompt 'def add(a, b):' --raw",
        "tunelens generate -m smollm2-135m -p 'Write a function that reverses a string.' --temperature 0.7 --seed 1",
    ))(generate_command)

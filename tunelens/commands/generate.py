"""`tunelens generate`: stream a model's answer to one prompt (chat format, or raw text with --raw)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from tunelens.commands.common import adapter_flag, console, device_flag, err_console, example, model_flag, user_errors
from tunelens.commands.options import config_options
from tunelens.engine.generate import GenerateConfig
from tunelens.model.specs import DEFAULT_MODEL


@user_errors
@config_options(GenerateConfig)
def generate_command(
    prompt: str = typer.Option(..., "--prompt", "-p", help="Instruction (or raw text with --raw)."),
    model: str = model_flag(),
    adapter: str = adapter_flag(),
    device: str = device_flag(),
    out: Path = typer.Option(None, "--out", "-o", help="Also write a JSON record: the prompt as rendered, the "
                                                       "few-shot examples shown and the text."),
    config: GenerateConfig = None,
) -> None:
    """Stream a model's continuation of one prompt to the terminal."""
    from tunelens.retrieval.fewshot import FewShot
    from tunelens.engine.generate import stream_generate
    from tunelens.model.load import LoadedModel

    examples = FewShot.load(config.few_shot, config.few_shot_index).for_one(prompt)
    if examples:  # on stderr: stdout stays the continuation alone
        shown = ", ".join(f"{e.id} (similarity {e.similarity:.3f})" for e in examples)
        err_console.print(f"[dim]few-shot: {len(examples)} example(s) before the prompt: {shown}[/dim]",
                          soft_wrap=True)
    with console.status(f"loading {model}"):
        loaded = LoadedModel.load(model, adapter, device=device)
    tokenizer = loaded.tokenizer
    if config.raw:
        sys.stdout.write(prompt)
    pieces = []
    for piece in stream_generate(loaded.model, tokenizer, prompt, config.sampling(), raw=config.raw, examples=examples):
        pieces.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if out is not None:
        _write_generation(out, tokenizer, model, adapter, prompt, config, examples, "".join(pieces))


def _write_generation(out: Path, tokenizer, model: str, adapter, prompt: str, config, examples, text: str) -> None:
    from dataclasses import asdict

    from tunelens.engine.generate import prompt_ids_for
    from tunelens.io import atomic_write_json
    from tunelens.inspect.trace import rendered_prompt_text

    atomic_write_json(out, {
        "format": "tunelens.generate", "model": model, "adapter": adapter, "prompt": prompt,
        "rendered_prompt": rendered_prompt_text(tokenizer, prompt, config.raw, examples),
        "prompt_tokens": len(prompt_ids_for(tokenizer, prompt, config.raw, examples)), "config": asdict(config),
        "few_shot": [e.to_dict() for e in examples], "text": text})
    err_console.print(f"[dim]wrote {out}[/dim]", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("generate", epilog=example(
        f"tunelens generate --model {DEFAULT_MODEL} --prompt 'def add(a, b):' --raw",
        "tunelens generate -m smollm2-135m -p 'Write a function that reverses a string.' --temperature 0.7 --seed 1",
        "tunelens generate -p 'Reverse a list.' --few-shot 2 --few-shot-index runs/demo/gate --out gen.json",
    ))(generate_command)

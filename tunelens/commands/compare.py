"""`tunelens compare`: one continuation scored teacher-forced under several conditions, flips first."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer
from tunelens.commands.common import (adapter_flag, console, device_flag, example, model_flag, read_prompt,
                                      new_table, stage_progress, user_errors)
from tunelens.commands.options import config_options, repeated_option
from tunelens.inspect.compare import CompareConfig
from tunelens.model.specs import DEFAULT_MODEL


def print_comparison(comparison, limit: int = 40) -> None:
    from tunelens.engine.tokens import pct, show_token

    names = [c.name for c in comparison.conditions]
    console.rule(f"compare · {comparison.model}" + (f" + {comparison.adapter}" if comparison.adapter else ""))
    summary = new_table(f"conditions (reference: {names[0]}); continuation {comparison.continuation_source}, "
                        f"{len(comparison.positions)} tokens",
                        ("condition", "prompt", "log p(continuation)", "mean KL", "argmax = reference"))
    for cond in comparison.conditions:
        summary.add_row(cond.name, show_token(cond.prompt)[:60], f"{cond.total_logprob:.2f}", f"{cond.mean_kl:.4f}",
                        f"{cond.argmax_agreement}/{len(comparison.positions)}")
    console.print(summary)
    console.print(f"[bold]flips: {len(comparison.flips)}[/bold]")
    for flip in comparison.flips[:limit]:
        before = "".join(p.token for p in comparison.positions[max(0, flip.position - 6):flip.position])
        console.print(f"  pos {flip.position:>3} [dim]…{show_token(before)}[/dim]  {flip.text}  "
                      f"[dim]({names[flip.reference]} -> {names[flip.other]})[/dim]")
    if comparison.watch:
        watch = new_table("watched tokens (probability per condition)", ["pos", "token", *(
            f"`{show_token(w.token)}` {name}" for w in comparison.watch for name in names)])
        for pos in comparison.positions[:limit]:
            cells = [pct(pos.watch[c][j]) for j in range(len(comparison.watch)) for c in range(len(names))]
            watch.add_row(str(pos.position), f"`{show_token(pos.token)}`", *cells)
        console.print(watch)


@user_errors
@config_options(CompareConfig)
def compare_command(
    prompt: str = typer.Option(None, "--prompt", "-p", help="The instruction (the reference condition)."),
    prompt_file: Path = typer.Option(None, "--prompt-file", help="Read the prompt from this UTF-8 file."),
    variant: list[str] = typer.Option([], "--variant", help="Another prompt to compare (repeatable)."),
    continuation: str = typer.Option(None, "--continuation", help="The text to score; default: generated greedily "
                                                                   "under the first condition."),
    # Repeated, never split on commas: a comma is a token worth watching.
    watch: Optional[List[str]] = repeated_option(CompareConfig, "watch"),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write compare.json."),
    model: str = model_flag(),
    adapter: str = adapter_flag("PEFT adapter: base and adapter both become conditions."),
    html: Path = typer.Option(None, "--html", help="Also write a self-contained HTML page."),
    device: str = device_flag(),
    config: CompareConfig = None,
) -> None:
    """Score one continuation teacher-forced under each condition (base/adapter x prompt/variants); flips first."""
    from tunelens.inspect.compare import CompareRun, run_compare

    text = read_prompt(prompt, prompt_file)
    if watch:
        config = replace(config, watch=tuple(watch))
    run = CompareRun(model=model, prompt=text, out=out, variants=tuple(variant), continuation=continuation,
                     adapter=adapter, html=html, device=device, config=config)
    with stage_progress(transient=True, one_bar=True) as report:
        report(f"loading {model}", 0, 0)
        comparison = run_compare(run, progress=report)
    print_comparison(comparison)
    console.print(f"wrote {out}" + (f" and {html}" if html else ""))


def register(app: typer.Typer) -> None:
    app.command("compare", epilog=example(
        f"tunelens compare -m {DEFAULT_MODEL} --adapter runs/x/adapter -p 'Print hello.' "
        "--variant 'Print hello. Prefer Python 3, not Python 2.' --watch print --out compare.json --html compare.html",
    ))(compare_command)

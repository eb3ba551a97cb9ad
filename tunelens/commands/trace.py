"""`tunelens trace` and `tunelens compare`: the token-level instruments (library in tunelens/inspect/trace.py, compare.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tunelens.commands.common import console, example, user_errors
from tunelens.commands.options import config_options, repeated_option
from tunelens.inspect.compare import CompareConfig
from tunelens.errors import UserError
from tunelens.model.specs import DEFAULT_MODEL
from tunelens.inspect.trace import TraceConfig

MODEL_HELP = "Embedded name, model directory, .gguf file or cached repo id."
DEVICE_HELP = "auto, cpu, cuda or mps."


def _read_prompt(prompt: str | None, prompt_file: Path | None) -> str:
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
    return text[:-1] if text.endswith("\n") else text


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _bar_callback(progress: Progress, task):
    """The (what, done, total) progress callback, drawn on one Rich bar whose label follows the stage."""
    return lambda what, done, total: progress.update(task, description=what, completed=done, total=total or None)


def _styled_tokens(pieces: list[tuple[str, float, bool]]) -> Text:
    """Tokens on their background colour by probability (the HTML's scale); decision points underlined."""
    text = Text()
    for piece, prob, marked in pieces:
        hue = 120 * max(0.0, min(1.0, prob))
        style = f"black on {_rgb_of_hue(hue)}" + (" underline bold" if marked else "")
        text.append(piece if piece else "∅", style=style)
    return text


def _rgb_of_hue(hue: float) -> str:
    """The RGB of tunelens.inspect.trace.prob_color's hsl(hue, 75%, 82%), for terminals."""
    import colorsys

    r, g, b = colorsys.hls_to_rgb(hue / 360, 0.82, 0.75)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def print_trace(trace, limit: int = 30) -> None:
    from tunelens.engine.tokens import pct, show_token

    console.rule(f"trace · {trace.model}" + (f" + {trace.adapter}" if trace.adapter else ""))
    console.print(_styled_tokens([(s.token, s.prob, s.is_decision) for s in trace.steps]))
    console.print(f"[dim]{len(trace.steps)} tokens, stopped by {trace.stop_reason}; colour = probability "
                  f"(red low, green high); underlined = decision point[/dim]")
    points = trace.decision_points
    table = Table(title=f"decision points: {len(points)} (margin < {trace.config.margin_threshold:g} or not argmax)")
    for column in ("step", "chosen", "p", "rank", "margin", "entropy", "alternatives"):
        table.add_column(column)
    for step in points[:limit]:
        alternatives = "  ".join(f"`{show_token(a.token)}` {pct(a.prob)}" for a in step.top[:5])
        table.add_row(str(step.step), f"`{show_token(step.token)}`", pct(step.prob), str(step.rank),
                      pct(step.margin), f"{step.entropy:.2f}", alternatives)
    console.print(table)
    if len(points) > limit:
        console.print(f"[dim]... {len(points) - limit} more in the JSON[/dim]")


@user_errors
@config_options(TraceConfig)
def trace_command(
    prompt: str = typer.Option(None, "--prompt", "-p", help="Instruction (or plain text with --raw)."),
    prompt_file: Path = typer.Option(None, "--prompt-file", help="Read the prompt from this UTF-8 file."),
    out: Path = typer.Option(None, "--out", "-o", help="Where to write trace.json."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
    adapter: str = typer.Option(None, "--adapter", help="PEFT adapter directory (the canary checks it is active)."),
    html: Path = typer.Option(None, "--html", help="Also write a self-contained HTML page."),
    load: Path = typer.Option(None, "--load", help="Show (and with --html re-render) a saved trace.json instead."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    config: TraceConfig = None,
) -> None:
    """Generate and record, at every token, the model's top-K probabilities; show the decision points."""
    from tunelens.inspect.trace import Trace, TraceRun, run_trace, write_trace_html

    if load is not None:
        trace = Trace.load(load)
        if html is not None:
            write_trace_html(trace, html)
        print_trace(trace)
        return
    if out is None:
        raise UserError("--out is required (where to write trace.json)")
    run = TraceRun(model=model, prompt=_read_prompt(prompt, prompt_file), out=out, adapter=adapter,
                   html=html, device=device, config=config)
    with _progress() as progress:
        task = progress.add_task(f"loading {model}", total=None)
        trace = run_trace(run, progress=_bar_callback(progress, task))
    print_trace(trace)
    console.print(f"wrote {out}" + (f" and {html}" if html else ""))


def print_comparison(comparison, limit: int = 40) -> None:
    from tunelens.engine.tokens import pct, show_token

    names = [c.name for c in comparison.conditions]
    console.rule(f"compare · {comparison.model}" + (f" + {comparison.adapter}" if comparison.adapter else ""))
    summary = Table(title=f"conditions (reference: {names[0]}); continuation {comparison.continuation_source}, "
                          f"{len(comparison.positions)} tokens")
    for column in ("condition", "prompt", "log p(continuation)", "mean KL", "argmax = reference"):
        summary.add_column(column)
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
        watch = Table(title="watched tokens (probability per condition)")
        watch.add_column("pos")
        watch.add_column("token")
        for w in comparison.watch:
            for name in names:
                watch.add_column(f"`{show_token(w.token)}` {name}")
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
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
    adapter: str = typer.Option(None, "--adapter", help="PEFT adapter: base and adapter both become conditions."),
    html: Path = typer.Option(None, "--html", help="Also write a self-contained HTML page."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    config: CompareConfig = None,
) -> None:
    """Score one continuation teacher-forced under each condition (base/adapter x prompt/variants); flips first."""
    from tunelens.inspect.compare import CompareRun, run_compare

    text = _read_prompt(prompt, prompt_file)
    if watch:
        config = replace(config, watch=tuple(watch))
    run = CompareRun(model=model, prompt=text, out=out, variants=tuple(variant), continuation=continuation,
                     adapter=adapter, html=html, device=device, config=config)
    with _progress() as progress:
        task = progress.add_task(f"loading {model}", total=None)
        comparison = run_compare(run, progress=_bar_callback(progress, task))
    print_comparison(comparison)
    console.print(f"wrote {out}" + (f" and {html}" if html else ""))


def register(app: typer.Typer) -> None:
    app.command("trace", epilog=example(
        f"tunelens trace -m {DEFAULT_MODEL} -p 'Write a function that prints hello.' --top-k 10 --out trace.json --html trace.html",
        "tunelens trace --load trace.json --html trace.html",
    ))(trace_command)
    app.command("compare", epilog=example(
        f"tunelens compare -m {DEFAULT_MODEL} --adapter runs/x/adapter -p 'Print hello.' "
        "--variant 'Print hello. Prefer Python 3, not Python 2.' --watch print --out compare.json --html compare.html",
    ))(compare_command)

"""`tunelens trace`: generate and record the top-K at every token, and its decision points."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from tunelens.commands.common import (adapter_flag, console, device_flag, example, model_flag, read_prompt,
                                      new_table, stage_progress, user_errors)
from tunelens.commands.options import config_options
from tunelens.errors import UserError
from tunelens.model.specs import DEFAULT_MODEL
from tunelens.inspect.trace import TraceConfig


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
    table = new_table(f"decision points: {len(points)} (margin < {trace.config.margin_threshold:g} or not argmax)",
                      ("step", "chosen", "p", "rank", "margin", "entropy", "alternatives"))
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
    model: str = model_flag(),
    adapter: str = adapter_flag("PEFT adapter directory to attach (the canary checks that it is active)."),
    html: Path = typer.Option(None, "--html", help="Also write a self-contained HTML page."),
    load: Path = typer.Option(None, "--load", help="Show (and with --html re-render) a saved trace.json instead."),
    device: str = device_flag(),
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
    run = TraceRun(model=model, prompt=read_prompt(prompt, prompt_file), out=out, adapter=adapter,
                   html=html, device=device, config=config)
    with stage_progress(transient=True, one_bar=True) as report:
        report(f"loading {model}", 0, 0)
        trace = run_trace(run, progress=report)
    print_trace(trace)
    console.print(f"wrote {out}" + (f" and {html}" if html else ""))


def register(app: typer.Typer) -> None:
    app.command("trace", epilog=example(
        f"tunelens trace -m {DEFAULT_MODEL} -p 'Write a function that prints hello.' --top-k 10 --out trace.json --html trace.html",
        "tunelens trace --load trace.json --html trace.html",
    ))(trace_command)

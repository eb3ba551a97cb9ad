"""`tunelens demo`: the whole loop on the embedded model, one report."""

from __future__ import annotations

from pathlib import Path

import typer

from tunelens.commands.common import console, example, user_errors


@user_errors
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory (rerunning reuses trained adapters)."),
    quick: bool = typer.Option(False, "--quick", help="A smaller run (about 5 minutes on 2 CPU cores), as CI runs it."),
    model: str = typer.Option("gemma3-270m", "--model", "-m", help="Model spec (embedded name, directory, .gguf)."),
) -> None:
    """Reproduce the four lessons end to end: contaminated data, prompt nudges, pushback, the gate."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from tunelens.demo import DemoConfig, run_demo

    _quiet_library_output()
    config = DemoConfig.quick(model) if quick else DemoConfig(model=model)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, int] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = progress.add_task(what, total=max(total, 1))
            progress.update(tasks[what], completed=done, total=max(total, 1))

        result = run_demo(config, out, progress=report)
    s = result.summary
    l1, l3, l4 = s["lesson1"], s["lesson3"], s["lesson4"]
    console.print(f"[bold]demo done in {result.seconds / 60:.1f} min[/bold]: {result.report_html}")
    console.print(f"lesson 1: Python 2 in training {l1['training_python2_rate']:.0%}; "
                  f"A greedy {_pct(l1['A_greedy'])}, B greedy {_pct(l1['B_greedy'])}")
    l2 = s["lesson2"]
    if l2.get("found"):
        console.print(f"lesson 2: the nudge flipped {l2['points_flipped_by_nudge']} of {l2['points']} Python 2 decision "
                      f"points, adapter off {l2['points_flipped_by_adapter_off']}; shown: "
                      + ("; ".join(l2["flips"]) or "no flip"))
    else:
        console.print("lesson 2: A wrote no Python 2 print in its greedy answers, so there was no decision point")
    console.print(f"lesson 3: pushback greedy base {_pct(l3['base_greedy']['pushback'])}, "
                  f"B {_pct(l3['B_greedy']['pushback'])}, C {_pct(l3['C_greedy']['pushback'])}")
    console.print(f"lesson 4: gate AUROC {l4['auroc']['combined']:.3f}; bad outputs always-B "
                  f"{_pct(l4['bad_output_always_adapter'])}, routed {_pct(l4['bad_output_routed'])}")


def _quiet_library_output() -> None:
    """The demo's own progress bars say what is loading; transformers' bars and a deprecation warning
    that PEFT triggers would only break them up."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _pct(cell: dict) -> str:
    return "-" if cell.get("rate") is None else f"{100 * cell['rate']:.0f}% ({cell['k']}/{cell['n']})"


def register(app: typer.Typer) -> None:
    app.command("demo", epilog=example("tunelens demo", "tunelens demo --quick --out runs/demo-quick"))(demo_command)

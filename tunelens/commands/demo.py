"""`tunelens demo`: the whole loop on the embedded model, one report."""

from __future__ import annotations

from pathlib import Path

import typer

from tunelens.commands.common import console, example, quiet_library_output, rate_cell, stage_progress, user_errors
from tunelens.commands.options import config_options
from tunelens.demo.config import DemoConfig, quick, study

PROFILES = {
    "--quick": (quick, "A smaller run (CI's smoke run, at most 8 minutes on 2 CPU cores)."),
    "--study": (study, "The dose-responses: more adapters and a second base model (at most 90 minutes)."),
}


@user_errors
@config_options(DemoConfig, profiles=PROFILES)
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory (rerunning reuses trained adapters)."),
    config: DemoConfig = None,
) -> None:
    """Reproduce the case study's lessons end to end: contaminated data, words vs weights, pushback, the gate."""
    from tunelens.demo.run import run_demo

    quiet_library_output()
    with stage_progress() as report:
        result = run_demo(config, out, progress=report)
    _print_summary(result)


def _print_summary(result) -> None:
    s = result.summary
    console.print(f"[bold]demo done in {result.seconds / 60:.1f} min[/bold]: {result.report_html}")
    for lesson in ("lesson1", "lesson2"):
        for line in s[lesson]["reading"]:
            console.print(f"{lesson.replace('lesson', 'lesson ')}: {line}")
    l3 = s["lesson3"]
    for name in l3["models"]:
        p, r = l3["propensity"][name], l3["rates"][name]["greedy"]
        console.print(f"lesson 3: {name}: pushback propensity gap (broken - twin) {_mean(p['gap_broken_minus_twin'])}; "
                      f"greedy pushback {rate_cell(r['pushback'])}, over-asking {rate_cell(r['over_asking'])}")
    for line in s["lesson4"]["reading"][:2]:
        console.print(f"lesson 4: {line}")
    for spec, transfer in (s.get("transfer") or {}).items():
        for line in transfer.get("reading", [transfer.get("skipped", "")]):
            console.print(f"threshold transfer ({spec}): {line}")


def _mean(cell: dict) -> str:
    return "-" if cell.get("mean") is None else f"{cell['mean']:+.2f} [{cell['low']:+.2f}, {cell['high']:+.2f}]"


def register(app: typer.Typer) -> None:
    app.command("demo", epilog=example("tunelens demo", "tunelens demo --quick --out runs/demo-quick",
                                       "tunelens demo --study --out runs/study"))(demo_command)

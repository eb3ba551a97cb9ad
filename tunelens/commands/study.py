"""`tunelens study ...`: the case study's open questions, one sub-command per study. Each parses its options,
calls one library function in tunelens.studies and prints the headline numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tunelens.commands.common import console, example, quiet_library_output, rate_cell, stage_progress, user_errors
from tunelens.commands.options import config_options
from tunelens.demo.lessons import LessonsStudyConfig
from tunelens.studies.safety import SafetyStudyConfig
from tunelens.studies.fewshot import FewShotStudyConfig

study_app = typer.Typer(
    help="Studies of what a fine-tune does, run with the real stages into one run directory.",
    epilog=example("tunelens study safety --out runs/safety"),
    no_args_is_help=True,
)


@study_app.command("safety", epilog=example(
    "tunelens study safety --out runs/safety",
    "tunelens study safety --shares 0.03,0.1 --train-pairs 96 --samples 3 --out runs/safety-big"))
@user_errors
@config_options(SafetyStudyConfig)
def safety_command(
    out: Path = typer.Option(Path("runs/safety"), "--out", "-o", help="Run directory (a rerun with the same "
                                                                      "settings reuses adapters and answers)."),
    config: SafetyStudyConfig = None,
) -> None:
    """Safety after a narrow code LoRA: refusal and over-refusal before, after, and with refusal pairs mixed in."""
    from tunelens.studies.safety import run_safety_study

    _run_study(run_safety_study, config, out, _print_headline, where=lambda result: result.report_html)


def _run_study(run, config, out: Path, print_headline, where=lambda result: None) -> None:
    """Run one study with library chatter quiet and a progress display; print its headline and where it is."""
    quiet_library_output()
    with stage_progress() as report:
        result = run(config, out, progress=report)
    if "across_seeds" in result.summary:  # --seeds K > 1: the across-seed cells, not one run's summary
        _print_seeds_headline(result.summary)
    else:
        print_headline(result.summary)
    console.print(f"[bold]done in {result.seconds / 60:.1f} min[/bold]: {where(result) or out / 'summary.json'}")


def _print_seeds_headline(s: dict, headline=("propensity/models/", "conditions/")) -> None:
    """Means with their t intervals over the seeds, for the study's headline cells (every cell: summary.json)."""
    console.print(f"seeds {s['seeds']}: {len(s['across_seeds'])} figures as across-seed means in summary.json")
    for path, cell in s["across_seeds"].items():
        if path.startswith(headline) and path.endswith(("/mean", "/rate")) and cell["mean"] is not None:
            interval = "" if cell["low"] is None else f" [{cell['low']:+.3f}, {cell['high']:+.3f}]"
            console.print(f"{path}: {cell['mean']:+.3f}{interval} over {cell['k']} seeds, per seed "
                          + ", ".join(f"{v:+.3f}" for v in cell["per_seed"]))


def _print_headline(s: dict) -> None:
    for name in s["models"]:
        rates = s["free_text"]["rates"][name]
        cells = "; ".join(f"{d}: refused harmful {rate_cell(r['refusal'])}, look-alikes {rate_cell(r['over_refusal'])}"
                          for d, r in rates.items())
        p = s["propensity"]["models"][name]
        console.print(f"{s['labels'][name]:>22}  {cells}; log-odds harmful {p['harmful']['mean']:+.2f}, "
                      f"look-alike {p['lookalike']['mean']:+.2f}, gap {p['gap']['mean']:+.2f}")


@study_app.command("few-shot", epilog=example(
    "tunelens study few-shot --out runs/fewshot",
    "tunelens study few-shot --heldout 6 --pool 60 --max-new-tokens 48 --out runs/fewshot-small"))
@user_errors
@config_options(FewShotStudyConfig)
def fewshot_command(
    out: Path = typer.Option(Path("runs/fewshot"), "--out", "-o", help="Run directory (a rerun with the same "
                                                                       "settings reuses answers and points)."),
    config: FewShotStudyConfig = None,
) -> None:
    """Examples in the context: copying of their defects by similarity and quality, the effect on bad
    outputs, the teacher-forced shift beside lesson 2's sentence, and the context check's AUROC."""
    from tunelens.studies.fewshot import run_fewshot_study

    _run_study(run_fewshot_study, config, out, _print_fewshot_headline)


def _print_fewshot_headline(s: dict) -> None:
    console.print(f"no example: bad {rate_cell(s['baseline']['bad'])}, Python 2 {rate_cell(s['baseline']['python2'])}")
    for name, cell in s["conditions"].items():
        w = cell["with"]
        console.print(f"{name:>26} (cos {cell['similarity']['mean']:.2f}): Python 2 {rate_cell(w['python2'])}, "
                      f"name {rate_cell(w['name_copied'])}, body {rate_cell(w['body_copied'])}, "
                      f"bad {rate_cell(w['bad'])} (McNemar p={cell['mcnemar']['bad']['p_value']:.2g})")
    for source in ("reference", "generated"):
        for effect in s["teacher_forced"].get(source, {}).get("effects", []):
            console.print(f"{source:>9} points, {effect['lever']}: {effect['mean_delta']:+.2f} "
                          f"[{effect['low']:+.2f}, {effect['high']:+.2f}] log-odds over {effect['points']} points")
    check = s["context_check"]
    auroc = check["labels"]["bad"]["auroc"]
    console.print(f"context check: AUROC {'-' if auroc is None else f'{auroc:.2f}'} for 'made the answer bad' "
                  f"({check['labels']['bad']['positives']} positives); false alarms on nearest clean examples "
                  f"{rate_cell(check['false_alarm_nearest_clean'])}")
    for name in ("copied_defect", "bad_with_example"):
        label = check["labels"][name]
        value = "-" if label["auroc"] is None else f"{label['auroc']:.2f}"
        console.print(f"context check: AUROC {value} for '{name.replace('_', ' ')}' ({label['positives']} of "
                      f"{label['eligible']})")


@study_app.command("lessons", epilog=example(
    "tunelens study lessons --model gemma3-270m --lesson 1 --seeds 14 --budget-minutes 90 --out runs/lessons-1-gemma",
    "tunelens study lessons --model qwen2.5-coder-1.5b --lesson 1,2 --shares 0.3 --seeds 4 --lesson1-seeds 2 "
    "--budget-minutes 90 --out runs/lessons-2-qwen"))
@user_errors
@config_options(LessonsStudyConfig)
def lessons_command(
    out: Path = typer.Option(Path("runs/lessons"), "--out", "-o", help="Run directory (a rerun with the same "
                                                                       "settings continues where it stopped)."),
    budget_minutes: Optional[float] = typer.Option(None, "--budget-minutes", min=0.0, help=(
        "Stop between seeds once another would pass this many minutes of this invocation (the seed under way "
        "always finishes); rerun the same command to continue.")),
    config: LessonsStudyConfig = None,
) -> None:
    """The case study's lessons 1 and 2 as docs/protocol.md fixes them, with training seeds as replicates:
    the headline per lesson (replicated / not replicated / not testable here) by the protocol's rule."""
    from tunelens.demo.lessons import run_lessons_study

    def run(config, out, progress):
        return run_lessons_study(config, out, budget_minutes, progress=progress)

    _run_study(run, config, out, _print_lessons_headline)


def _print_lessons_headline(s: dict) -> None:
    console.print(f"seeds finished: {len(s['seeds_done'])} of {s['seeds_planned']}"
                  + ("" if s["complete"] else " (rerun the same command to continue)"))
    for key, lesson in s["lessons"].items():
        row = next(r for r in lesson["rows" if key == "2" else "table"] if r["row"] == lesson["primary_row"])
        seeds = row["seeds"]
        value = "-" if seeds["mean"] is None else f"{seeds['mean']:+.3f}"
        interval = "" if seeds["low"] is None else f" [{seeds['low']:+.3f}, {seeds['high']:+.3f}]"
        console.print(f"lesson {lesson['protocol_row']}: {row['row']} {value}{interval} over {seeds['k']} seeds: "
                      f"{row['words']}; headline: {lesson['headline']['word']} ({lesson['headline']['reason']})")


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")

"""`tunelens eval`: run the eval suites on a model (base and tuned), or score the suites' references."""

from __future__ import annotations

from pathlib import Path

import typer

from tunelens.commands.common import console, err_console, example, new_table, stage_progress, user_errors
from tunelens.commands.options import config_options
from tunelens.evaluate.runner import EvalConfig
from tunelens.model.specs import DEFAULT_MODEL


@user_errors
@config_options(EvalConfig)
def eval_command(
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: results.jsonl, summary.json, report.md, report.html."),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="Exit 1 when tuned is significantly worse (exact McNemar p < 0.05) on pushback, refusal or bad outputs."),
    summarize_only: bool = typer.Option(False, "--summarize-only", help="Generate nothing: recompute summary.json and the reports from DIR/results.jsonl."),
    config: EvalConfig = None,
) -> None:
    """Evaluate a model (and its fine-tune) on code, pushback and safety suites, greedy and sampled.

    Reruns with the same --out resume: answers already in results.jsonl are not generated again.
    """
    from tunelens.evaluate.runner import summarize_results

    if summarize_only:
        summary = summarize_results(out)
        _print_summary(summary, out)
        _exit_for(summary, fail_on_regression, reference=False)
        return
    from tunelens.evaluate.runner import run_eval

    with stage_progress(stderr=True, transient=True, one_bar=True, label="eval: ") as report:
        if config.reference:
            report("scoring references in the sandbox", 0, 0)
        result = run_eval(config, out, progress=report)
    console.print(f"{result.generated} answers generated, {result.reused} resumed from {result.results_path}")
    _print_summary(result.summary, out)
    _exit_for(result.summary, fail_on_regression, reference=config.reference)


def _print_summary(summary: dict, out: Path) -> None:
    from tunelens.evaluate.reports import headline_columns, report_suites
    from tunelens.evaluate.results import REFERENCE
    from tunelens.evaluate.summary import ALL

    for suite in report_suites(summary):  # one suite: "all suites" would say the same
        rows = [g for g in summary["groups"] if g["suite"] == suite and g["type"] == ALL]
        columns = headline_columns(summary, suite)
        if all(g["model"] == REFERENCE for g in rows):
            columns = [c for c in columns if c in ("as_expected", "bad_output", "tests_failed")]
        else:
            columns = [c for c in columns if c != "tests_failed"]  # in the reports; keeps the table narrow
        table = new_table(("all suites" if suite == ALL else f"suite {suite}") + ": % [95% CI]",
                          [name.replace("_", " ") for name in ("model", "decoding", "n", *columns)], overflow="fold")
        for g in rows:
            table.add_row(g["model"], g["decoding"], str(g["n"]), *(_short(g["metrics"].get(m)) for m in columns))
        console.print(table)
    if summary.get("sandbox") == "unsafe-no-sandbox":
        console.print("[red]UNSAFE: generated code ran without a sandbox (--unsafe-no-sandbox)[/red]")
    for item in summary["reference_failures"]:
        console.print(f"[red]reference fails:[/red] {item}")
    for c in summary["regressions"]:
        console.print(f"[red]regression:[/red] {c['suite']} {c['decoding']} {c['metric']}: base {c['base_good']}/"
                      f"{c['n_pairs']}, tuned {c['tuned_good']}/{c['n_pairs']}, p = {c['p_value']:.4g}")
    console.print(f"report: {out / 'report.html'}")


def _short(cell: dict | None) -> str:
    if not cell or cell.get("rate") is None:
        return "-"
    return f"{100 * cell['rate']:.1f} [{100 * cell['low']:.0f}-{100 * cell['high']:.0f}]"


def _exit_for(summary: dict, fail_on_regression: bool, reference: bool) -> None:
    if reference and summary["reference_failures"]:
        err_console.print(f"[red]{len(summary['reference_failures'])} reference answer(s) fail their tests[/red]")
        raise typer.Exit(1)
    if fail_on_regression and summary["regressions"]:
        err_console.print(f"[red]regression gate: the tuned model is significantly worse on "
                          f"{len(summary['regressions'])} comparison(s)[/red]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("eval", epilog=example(
        f"tunelens eval --model {DEFAULT_MODEL} --adapter runs/a/adapter --suite code,pushback,safety --samples 3 --out runs/a/eval",
        "tunelens eval --suite code,humaneval --reference --out runs/refs",
        "tunelens eval --backend openai --base-url http://127.0.0.1:8000/v1 --model base --adapter tuned --out runs/srv",
    ))(eval_command)

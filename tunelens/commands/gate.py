"""`tunelens gate build|calibrate` and `tunelens route`."""

from __future__ import annotations

from pathlib import Path

import typer
from tunelens.commands.common import (adapter_flag, console, example, model_flag, new_table, stage_progress,
                                      user_errors)
from tunelens.commands.options import config_options
from tunelens.gate.options import GateBuildConfig, GateCalibrateConfig
from tunelens.model.specs import DEFAULT_MODEL

gate_app = typer.Typer(
    help="Retrieval-confidence gate: index the training instructions, calibrate when to trust the adapter.",
    epilog=example("tunelens gate build --data clean.jsonl --out gate/",
                   "tunelens gate calibrate --gate gate/ --results runs/eval/results.jsonl --target-risk 0.05",
                   "tunelens gate calibrate --gate gate/ --in-domain in.txt --out-of-domain out.txt"),
    no_args_is_help=True,
)


@user_errors
@config_options(GateBuildConfig)
def build_command(
    data: Path = typer.Option(..., "--data", help="Training pairs (JSONL or dataset dir); their instructions are indexed."),
    out: Path = typer.Option(..., "--out", help="Gate directory to write."),
    config: GateBuildConfig = None,
) -> None:
    """Embed the training instructions into a cosine-similarity index (exact, or HNSW for large sets)."""
    from tunelens.gate import build_gate_from_file
    from tunelens.retrieval.embedders import load_embedder

    with console.status("loading the embedder"):
        chosen = load_embedder(config.embedder)
    with stage_progress(transient=True, one_bar=True) as report:
        gate = build_gate_from_file(data, out, k=config.k, embedder=chosen, progress=report,
                                    index=config.index)
    console.print(f"indexed {gate.meta['count']} instructions from {data} with {gate.meta['embedder']} "
                  f"({gate.meta['dim']} dims, k={config.k}, {gate.meta['index']} search) -> {out}")


@user_errors
@config_options(GateCalibrateConfig)
def calibrate_command(
    gate: Path = typer.Option(..., "--gate", help="Gate directory from `tunelens gate build`."),
    results: list[Path] = typer.Option(None, "--results", help="Eval results.jsonl with the adapter's ('tuned') "
                                       "and the base's answers to the same cases (repeat for several files): "
                                       "calibrate on whether the adapter's answer was bad."),
    in_domain: Path = typer.Option(None, "--in-domain", help="In-domain queries: JSONL of pairs or one query per line."),
    out_of_domain: Path = typer.Option(None, "--out-of-domain", help="Out-of-domain queries, same formats; `builtin` uses tunelens's own set of 95."),
    model: str = model_flag(None, "Model: adds the model-based signals (KL, perplexity)."),
    adapter: Path = adapter_flag("PEFT adapter directory (needed for the KL signal)."),
    config: GateCalibrateConfig = None,
) -> None:
    """Calibrate the gate: on eval outcomes (--results: does it predict the adapter's failures?) or on
    in-domain vs out-of-domain queries. Writes calibration.json and a plot."""
    from tunelens.gate.failure import OutcomeCalibration
    from tunelens.gate.run import calibrate_from_files

    def on_unpaired(counts: dict) -> None:
        console.print(f"[yellow]{counts['unpaired']} of {counts['cases']} cases lack an adapter or a base answer "
                      f"and are left out[/yellow] (first: {counts['unpaired_cases'][0]})")

    with stage_progress(transient=True, one_bar=True) as report:
        result = calibrate_from_files(gate, config, results or (), in_domain, out_of_domain, model, adapter,
                                      progress=report, on_unpaired=on_unpaired)
    if isinstance(result, OutcomeCalibration):
        _print_outcome_report(result, gate)
    else:
        _print_domain_report(result, gate)


def _print_domain_report(result, directory: Path) -> None:
    table = new_table(f"trust signals: {result.counts['in_domain']} in-domain vs {result.counts['out_of_domain']} "
                      "out-of-domain queries", ("signal", "AUROC", "direction"))
    for name in result.signals:
        table.add_row(name, f"{result.auroc[name]:.3f}", "higher = in-domain" if result.directions[name] > 0
                      else "lower = in-domain")
    table.add_row("combined (5-fold CV)", f"{result.auroc['combined']:.3f}", "logistic")
    console.print(table)
    console.print(f"threshold {result.threshold:.4f}: in-domain coverage {result.in_domain_coverage:.1%} "
                  f"(target {result.target_coverage:.0%}), out-of-domain fallback rate "
                  f"{result.out_of_domain_fallback_rate:.1%}")
    console.print(f"wrote {directory / 'calibration.json'} and {directory / 'coverage.png'}")


def _print_outcome_report(result, directory: Path) -> None:
    failures = result.failures
    table = new_table(f"predicting the adapter's failures: held out, {failures['held_out']} failures in "
                      f"{failures['held_out_queries']} queries", ("signal", "AUROC", "cost ms/query"))
    for name, value in result.auroc.items():
        table.add_row(name, "n/a" if value is None else f"{value:.3f}", f"{result.cost_ms_per_query[name]:.2f}")
    console.print(table)
    fit = result.calibration_split
    risk = "n/a" if fit["risk"] is None else f"{fit['risk']:.1%}"
    console.print(f"threshold {result.threshold:.4f} for target {result.target}: on the calibration part "
                  f"{fit['coverage']:.1%} kept on the adapter, {risk} of them bad")
    held = result.held_out
    console.print(f"held out ({held['queries']} queries, {held['coverage']:.1%} kept): bad-output rate routed "
                  f"{_rate(held['routed'])}, always adapter {_rate(held['always_adapter'])}, always base "
                  f"{_rate(held['always_base'])}")
    console.print(f"McNemar routed vs adapter p={held['mcnemar_routed_vs_adapter']['p_value']:.3g}, "
                  f"routed vs base p={held['mcnemar_routed_vs_base']['p_value']:.3g}")
    if result.conformal:
        conformal = result.conformal
        console.print(f"conformal risk control (alpha {conformal['alpha']:.3g} of queries served badly): threshold "
                      f"{conformal['threshold']:.4f}, held out {conformal['held_out_served_bad']:.1%} served bad at "
                      f"{conformal['held_out_coverage']:.1%} coverage; labelled points needed: "
                      f"{conformal['sample_size']['labelled_points_needed']}")
    console.print(f"wrote {directory / 'calibration.json'}, {directory / 'calibration_scores.jsonl'} and "
                  f"{directory / 'risk_coverage.png'}")


def _rate(cell: dict) -> str:
    return f"{cell['rate']:.1%} [{cell['low']:.1%}, {cell['high']:.1%}] ({cell['k']}/{cell['n']})"


def register(app: typer.Typer) -> None:
    gate_app.command("build", epilog=example(
        "tunelens gate build --data runs/demo/clean.jsonl --out runs/demo/gate/"))(build_command)
    gate_app.command("calibrate", epilog=example(
        "tunelens gate calibrate --gate gate/ --results runs/eval/results.jsonl --target-risk 0.05",
        "tunelens gate calibrate --gate gate/ --in-domain in.jsonl --out-of-domain out.txt",
        f"tunelens gate calibrate --gate gate/ --in-domain in.jsonl --out-of-domain out.txt -m {DEFAULT_MODEL} "
        "--adapter adapter/",
    ))(calibrate_command)
    app.add_typer(gate_app, name="gate")

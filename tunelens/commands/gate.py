"""`tunelens gate build|calibrate` and `tunelens route`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tunelens.commands.common import console, example, user_errors
from tunelens.commands.options import config_options
from tunelens.errors import UserError
from tunelens.gate.options import GateBuildConfig, GateCalibrateConfig, RouteConfig
from tunelens.model.specs import DEFAULT_MODEL

gate_app = typer.Typer(
    help="Retrieval-confidence gate: index the training instructions, calibrate when to trust the adapter.",
    epilog=example("tunelens gate build --data clean.jsonl --out gate/",
                   "tunelens gate calibrate --gate gate/ --results runs/eval/results.jsonl --target-risk 0.05",
                   "tunelens gate calibrate --gate gate/ --in-domain in.txt --out-of-domain out.txt"),
    no_args_is_help=True,
)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _bar(progress: Progress, task):
    """The stages' one progress shape (what, done, total) drawn on a rich bar."""
    return lambda what, done, total: progress.update(task, description=what, completed=done, total=total or None)


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
    with _progress() as progress:
        task = progress.add_task("embedding instructions", total=None)
        gate = build_gate_from_file(data, out, k=config.k, embedder=chosen, progress=_bar(progress, task),
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
    model: str = typer.Option(None, "--model", "-m", help="Model spec; adds the model-based signals (KL, perplexity)."),
    adapter: Path = typer.Option(None, "--adapter", help="PEFT adapter directory (needed for the KL signal)."),
    config: GateCalibrateConfig = None,
) -> None:
    """Calibrate the gate: on eval outcomes (--results: does it predict the adapter's failures?) or on
    in-domain vs out-of-domain queries. Writes calibration.json and a plot."""
    from tunelens.gate import Gate

    if bool(results) == (in_domain is not None or out_of_domain is not None):
        raise UserError("calibrate either on eval outcomes (--results) or on --in-domain and --out-of-domain queries")
    if adapter is not None and model is None:
        raise UserError("--adapter needs --model: the base model the adapter was trained on")
    loaded_gate = Gate.load(gate)
    loaded_model = tokenizer = None
    model_info = None
    if model is not None:
        from tunelens.model.load import load_model

        with console.status(f"loading {model}"):
            loaded_model, tokenizer = load_model(model, adapter=adapter, device=config.device)
        model_info = {"model": model, "adapter": str(adapter) if adapter else None}
    if results:
        target_risk = 0.05 if config.target_risk is None and config.target_coverage is None else config.target_risk
        _calibrate_on_outcomes(loaded_gate, results, loaded_model, tokenizer, target_risk, config.target_coverage,
                               config.holdout, config.decoding, config.seed, model_info)
        return
    if in_domain is None or out_of_domain is None:
        raise UserError("in/out-of-domain calibration needs both --in-domain and --out-of-domain")
    _calibrate_on_domains(loaded_gate, in_domain, out_of_domain, loaded_model, tokenizer,
                          0.95 if config.target_coverage is None else config.target_coverage, model_info)


def _calibrate_on_domains(gate, in_domain: Path, out_of_domain: Path, model, tokenizer, target_coverage: float,
                          model_info) -> None:
    from tunelens.gate import calibrate, read_queries

    ind, ood = read_queries(in_domain), read_queries(out_of_domain)
    inputs = {"in_domain": str(in_domain), "out_of_domain": str(out_of_domain)}
    with _progress() as progress:
        steps = (len(ind) + len(ood)) * (2 if model is not None else 1)
        task = progress.add_task("scoring queries", total=steps)
        result = calibrate(gate, ind, ood, model, tokenizer, target_coverage=target_coverage,
                           progress=_bar(progress, task), model_info=model_info, inputs=inputs)
    table = Table(title=f"trust signals: {len(ind)} in-domain vs {len(ood)} out-of-domain queries")
    for column in ("signal", "AUROC", "direction"):
        table.add_column(column)
    for name in result.signals:
        table.add_row(name, f"{result.auroc[name]:.3f}", "higher = in-domain" if result.directions[name] > 0
                      else "lower = in-domain")
    table.add_row("combined (5-fold CV)", f"{result.auroc['combined']:.3f}", "logistic")
    console.print(table)
    console.print(f"threshold {result.threshold:.4f}: in-domain coverage {result.in_domain_coverage:.1%} "
                  f"(target {result.target_coverage:.0%}), out-of-domain fallback rate "
                  f"{result.out_of_domain_fallback_rate:.1%}")
    console.print(f"wrote {gate.directory / 'calibration.json'} and {gate.directory / 'coverage.png'}")


def _calibrate_on_outcomes(gate, results: list[Path], model, tokenizer, target_risk, target_coverage, holdout: float,
                           decoding: str, seed: int, model_info) -> None:
    from tunelens.gate.failure import calibrate_on_outcomes
    from tunelens.gate.outcomes import read_outcomes

    outcomes, counts = read_outcomes(results, decoding=decoding)
    if counts["unpaired"]:
        console.print(f"[yellow]{counts['unpaired']} of {counts['cases']} cases lack an adapter or a base answer "
                      f"and are left out[/yellow] (first: {counts['unpaired_cases'][0]})")
    inputs = {"results": [str(p) for p in results], "decoding": decoding, **{k: counts[k] for k in ("cases", "paired")}}
    with _progress() as progress:
        task = progress.add_task("scoring queries", total=len(outcomes) * (2 if model is not None else 1))
        result = calibrate_on_outcomes(gate, outcomes, model, tokenizer, target_risk=target_risk,
                                       target_coverage=target_coverage, holdout=holdout, seed=seed,
                                       progress=_bar(progress, task), model_info=model_info, inputs=inputs)
    _print_outcome_report(result, gate.directory)


def _print_outcome_report(result, directory: Path) -> None:
    failures = result.failures
    table = Table(title=f"predicting the adapter's failures: held out, {failures['held_out']} failures in "
                        f"{failures['held_out_queries']} queries")
    for column in ("signal", "AUROC", "cost ms/query"):
        table.add_column(column)
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


@user_errors
@config_options(RouteConfig)
def route_command(
    query: str = typer.Argument(..., help="The query to route."),
    gate: Path = typer.Option(..., "--gate", help="Calibrated gate directory."),
    model: str = typer.Option(None, "--model", "-m", help="Model spec for model signals [default: the one calibration used]."),
    adapter: Path = typer.Option(None, "--adapter", help="PEFT adapter directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
    config: RouteConfig = None,
) -> None:
    """Say whether a query goes to the adapter or the base model, with its scores and the threshold."""
    from tunelens.gate import Gate

    loaded_gate = Gate.load(gate)
    loaded_model = tokenizer = None
    recorded = (loaded_gate.calibration.model or {}) if loaded_gate.calibration else {}
    if model is None and recorded.get("model"):
        # Calibrated with model signals: score with the same model and adapter unless told otherwise.
        model, adapter = recorded["model"], adapter or recorded.get("adapter")
    if model is not None:
        from tunelens.model.load import load_model

        with console.status(f"loading {model}"):
            loaded_model, tokenizer = load_model(model, adapter=adapter, device=config.device)
    decision = loaded_gate.route(query, loaded_model, tokenizer)
    if as_json:
        typer.echo(json.dumps(decision.to_dict(), indent=2))
        return
    colour = "green" if decision.route == "adapter" else "yellow"
    console.print(f"route: [{colour}]{decision.route}[/{colour}]  score {decision.score:.4f} "
                  f"{'>=' if decision.route == 'adapter' else '<'} threshold {decision.threshold:.4f}")
    for name, value in decision.signals.scores().items():
        console.print(f"  {name}: {value:.4f}")
    for neighbour in decision.signals.neighbours[:3]:
        console.print(f"  nearest ({neighbour['similarity']:.3f}) {neighbour['id']}: "
                      f"{neighbour['instruction'][:80]!r}")


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
    app.command("route", epilog=example("tunelens route --gate gate/ 'Write a function that reverses a string.'"))(
        route_command)

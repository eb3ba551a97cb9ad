"""`tunelens gate build|calibrate` and `tunelens route`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tunelens.commands.common import console, example, user_errors
from tunelens.errors import UserError

gate_app = typer.Typer(
    help="Retrieval-confidence gate: index the training instructions, calibrate when to trust the adapter.",
    epilog=example("tunelens gate build --data clean.jsonl --out gate/",
                   "tunelens gate calibrate --gate gate/ --in-domain in.txt --out-of-domain out.txt"),
    no_args_is_help=True,
)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


@user_errors
def build_command(
    data: Path = typer.Option(..., "--data", help="Training pairs (JSONL or dataset dir); their instructions are indexed."),
    out: Path = typer.Option(..., "--out", help="Gate directory to write."),
    k: int = typer.Option(5, "--k", min=1, max=100, help="Neighbours per query for the similarity signals."),
    embedder: str = typer.Option("all-MiniLM-L6-v2", "--embedder",
                                 help="all-MiniLM-L6-v2, or hashing-<dim> (character trigrams, for quick checks)."),
) -> None:
    """Embed the training instructions into an exact cosine-similarity index."""
    from tunelens.gate import build_gate_from_file, load_embedder

    with console.status("loading the embedder"):
        chosen = load_embedder(embedder)
    with _progress() as progress:
        task = progress.add_task("embedding instructions", total=None)
        gate = build_gate_from_file(data, out, k=k, embedder=chosen,
                                    progress=lambda n: progress.advance(task, n))
    console.print(f"indexed {gate.meta['count']} instructions from {data} with {gate.meta['embedder']} "
                  f"({gate.meta['dim']} dims, k={k}) -> {out}")


@user_errors
def calibrate_command(
    gate: Path = typer.Option(..., "--gate", help="Gate directory from `tunelens gate build`."),
    in_domain: Path = typer.Option(..., "--in-domain", help="In-domain queries: JSONL of pairs or one query per line."),
    out_of_domain: Path = typer.Option(..., "--out-of-domain", help="Out-of-domain queries, same formats; `builtin` uses tunelens's own set of 95."),
    model: str = typer.Option(None, "--model", "-m", help="Model spec; adds the model-based signals (KL, perplexity)."),
    adapter: Path = typer.Option(None, "--adapter", help="PEFT adapter directory (needed for the KL signal)."),
    target_coverage: float = typer.Option(0.95, "--target-coverage", min=0.01, max=1.0,
                                          help="Share of in-domain queries the threshold keeps on the adapter."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
) -> None:
    """Measure each trust signal's AUROC, pick the threshold, write calibration.json and coverage.png."""
    from tunelens.gate import Gate, calibrate, read_queries

    if adapter is not None and model is None:
        raise UserError("--adapter needs --model: the base model the adapter was trained on")
    loaded_gate = Gate.load(gate)
    ind, ood = read_queries(in_domain), read_queries(out_of_domain)
    loaded_model = tokenizer = None
    model_info = None
    if model is not None:
        from tunelens.models import load_model

        with console.status(f"loading {model}"):
            loaded_model, tokenizer = load_model(model, adapter=adapter, device=device)
        model_info = {"model": model, "adapter": str(adapter) if adapter else None}
    inputs = {"in_domain": str(in_domain), "out_of_domain": str(out_of_domain)}
    with _progress() as progress:
        steps = (len(ind) + len(ood)) * (2 if loaded_model is not None else 1)
        task = progress.add_task("scoring queries", total=steps)
        result = calibrate(loaded_gate, ind, ood, loaded_model, tokenizer, target_coverage=target_coverage,
                           progress=lambda n: progress.advance(task, n), model_info=model_info, inputs=inputs)
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
    console.print(f"wrote {gate / 'calibration.json'} and {gate / 'coverage.png'}")


@user_errors
def route_command(
    query: str = typer.Argument(..., help="The query to route."),
    gate: Path = typer.Option(..., "--gate", help="Calibrated gate directory."),
    model: str = typer.Option(None, "--model", "-m", help="Model spec for model signals [default: the one calibration used]."),
    adapter: Path = typer.Option(None, "--adapter", help="PEFT adapter directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
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
        from tunelens.models import load_model

        with console.status(f"loading {model}"):
            loaded_model, tokenizer = load_model(model, adapter=adapter, device=device)
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
        "tunelens gate calibrate --gate gate/ --in-domain in.jsonl --out-of-domain out.txt",
        "tunelens gate calibrate --gate gate/ --in-domain in.jsonl --out-of-domain out.txt -m gemma3-270m --adapter adapter/",
    ))(calibrate_command)
    app.add_typer(gate_app, name="gate")
    app.command("route", epilog=example("tunelens route --gate gate/ 'Write a function that reverses a string.'"))(
        route_command)

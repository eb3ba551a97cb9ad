"""`tunelens route`: where one query goes (adapter or base), with the gate's scores and threshold."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tunelens.commands.common import adapter_flag, console, example, model_flag, user_errors
from tunelens.commands.options import config_options
from tunelens.gate.options import RouteConfig


@user_errors
@config_options(RouteConfig)
def route_command(
    query: str = typer.Argument(..., help="The query to route."),
    gate: Path = typer.Option(..., "--gate", help="Calibrated gate directory."),
    model: str = model_flag(None, "Model for the model signals [default: the one calibration used]."),
    adapter: Path = adapter_flag(),
    as_json: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
    config: RouteConfig = None,
) -> None:
    """Say whether a query goes to the adapter or the base model, with its scores and the threshold."""
    from tunelens.gate.run import route_query

    with console.status("loading the gate"):
        decision = route_query(gate, query, config, model, adapter)
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
    app.command("route", epilog=example("tunelens route --gate gate/ 'Write a function that reverses a string.'"))(
        route_command)

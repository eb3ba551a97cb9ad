"""`tunelens serve`: the OpenAI-compatible HTTP server (options: tunelens.serve.config.ServeConfig)."""

from __future__ import annotations

import typer

from tunelens.commands.common import console, example, user_errors
from tunelens.commands.options import config_options
from tunelens.serve.config import ServeConfig


@user_errors
@config_options(ServeConfig)
def serve_command(
    # Secrets: by flag or environment, never in the --config file.
    api_key: str = typer.Option(None, "--api-key", envvar="TUNELENS_API_KEY", show_envvar=True,
                                help="Require `Authorization: Bearer KEY` on every request but /healthz."),
    upstream_api_key: str = typer.Option(None, "--upstream-api-key", envvar="TUNELENS_UPSTREAM_API_KEY",
                                         show_envvar=True, help="Key sent to the upstream as `Authorization: Bearer`."),
    config: ServeConfig = None,
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API, routing each request through the gate."""
    from tunelens.serve import serve

    serve(config.model, adapter=config.adapter, gate_dir=config.gate, host=config.host, port=config.port,
          device=config.device, limits=config.limits(), api_key=api_key, insecure=config.insecure, log=console.print,
          upstream=config.upstream_target(upstream_api_key), max_batch=config.max_batch,
          few_shot=config.few_shot, few_shot_index=config.examples_index)


def register(app: typer.Typer) -> None:
    app.command("serve", epilog=example(
        "tunelens serve --model gemma3-270m --adapter runs/demo/adapter --gate runs/demo/gate --port 8000",
        "TUNELENS_API_KEY=secret tunelens serve --host 0.0.0.0",
        "tunelens serve --upstream http://127.0.0.1:8001/v1 --upstream-base-model google/gemma-3-270m "
        "--upstream-adapter-model tuned --gate runs/demo/gate",
        "tunelens serve --adapter runs/demo/adapter --few-shot 2 --few-shot-index runs/demo/gate"))(serve_command)

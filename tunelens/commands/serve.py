"""`tunelens serve`: the OpenAI-compatible HTTP server."""

from __future__ import annotations

from pathlib import Path

import typer

from tunelens.commands.common import console, example, user_errors


@user_errors
def serve_command(
    model: str = typer.Option("gemma3-270m", "--model", "-m", help="Model spec (embedded name, directory, .gguf)."),
    adapter: Path = typer.Option(None, "--adapter", help="PEFT adapter directory; enables tunelens-adapter."),
    gate: Path = typer.Option(None, "--gate", help="Calibrated gate directory; enables the gated `auto` model."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0 picks a free one)."),
    api_key: str = typer.Option(None, "--api-key", envvar="TUNELENS_API_KEY", show_envvar=True,
                                help="Require `Authorization: Bearer KEY` on every request but /healthz."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback --host without an API key."),
    max_tokens_limit: int = typer.Option(1024, "--max-tokens-limit", min=1, help="Largest max_tokens a request may ask for."),
    max_prompt_tokens: int = typer.Option(4096, "--max-prompt-tokens", min=1, help="Longest prompt accepted, in tokens."),
    max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", min=1024, help="Largest request body, in bytes."),
    max_queue: int = typer.Option(256, "--max-queue", min=1,
                                  help="Requests waiting for or holding the model (or the upstream); more get 503."),
    max_batch: int = typer.Option(16, "--max-batch", min=1,
                                  help="Waiting requests decoded together in one batch (1: one at a time)."),
    read_timeout: float = typer.Option(30.0, "--read-timeout", min=0.1,
                                       help="Seconds a client has to send a whole request; slower ones are cut off."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    upstream: str = typer.Option(None, "--upstream", help="Forward generation to this OpenAI-compatible engine "
                                 "(e.g. http://127.0.0.1:8001/v1, a vLLM with --enable-lora); no model loads here."),
    upstream_base_model: str = typer.Option(None, "--upstream-base-model",
                                            help="The upstream's name for the base model (needed with --upstream)."),
    upstream_adapter_model: str = typer.Option(
        None, "--upstream-adapter-model", help="The upstream's name for the adapter (vLLM: the --lora-modules name)."),
    upstream_api_key: str = typer.Option(None, "--upstream-api-key", envvar="TUNELENS_UPSTREAM_API_KEY",
                                         show_envvar=True, help="Key sent to the upstream as `Authorization: Bearer`."),
    upstream_timeout: float = typer.Option(600.0, "--upstream-timeout", min=0.1,
                                           help="Seconds the upstream may stay silent before a 504 (a non-streamed "
                                                "answer arrives only when complete)."),
    upstream_connect_timeout: float = typer.Option(10.0, "--upstream-connect-timeout", min=0.1,
                                                   help="Seconds to connect to the upstream before a 504."),
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API, routing each request through the gate."""
    from tunelens.errors import UserError
    from tunelens.serve import ServeLimits, Upstream, serve

    limits = ServeLimits(max_tokens=max_tokens_limit, max_prompt_tokens=max_prompt_tokens,
                         max_body_bytes=max_body_bytes, read_timeout=read_timeout, max_queue=max_queue)
    target = None
    if upstream is not None:
        if not upstream_base_model:
            raise UserError("--upstream needs --upstream-base-model: the name the engine serves the base model under")
        if not upstream.startswith(("http://", "https://")):
            raise UserError(f"--upstream {upstream}: give an http:// or https:// URL")
        target = Upstream(upstream, upstream_base_model, upstream_adapter_model, upstream_api_key or None,
                          connect_timeout=upstream_connect_timeout, timeout=upstream_timeout)
    elif upstream_base_model or upstream_adapter_model:
        raise UserError("--upstream-base-model and --upstream-adapter-model need --upstream URL")
    serve(model, adapter=adapter, gate_dir=gate, host=host, port=port, device=device, limits=limits,
          api_key=api_key, insecure=insecure, log=console.print, upstream=target, max_batch=max_batch)


def register(app: typer.Typer) -> None:
    app.command("serve", epilog=example(
        "tunelens serve --model gemma3-270m --adapter runs/demo/adapter --gate runs/demo/gate --port 8000",
        "TUNELENS_API_KEY=secret tunelens serve --host 0.0.0.0",
        "tunelens serve --upstream http://127.0.0.1:8001/v1 --upstream-base-model google/gemma-3-270m "
        "--upstream-adapter-model tuned --gate runs/demo/gate"))(serve_command)

"""`tunelens serve`'s options, declared once: each field is a flag of the command and a key of its --config
YAML file. The API keys are not fields: they are secrets, given by flag or environment, never in a file."""

from __future__ import annotations

from tunelens.config import configclass, option
from tunelens.errors import UserError
from tunelens.retrieval.fewshot import MAX_FEW_SHOT, FEW_SHOT_HELP
from tunelens.model.specs import DEFAULT_MODEL


@configclass
class ServeConfig:
    """What to serve, where, and within which limits."""

    model: str = option(DEFAULT_MODEL, "Model spec (embedded name, directory, .gguf).", short="-m")
    adapter: str | None = option(None, "PEFT adapter directory; enables tunelens-adapter.")
    gate: str | None = option(None, "Calibrated gate directory; enables the gated `auto` model.")
    host: str = option("127.0.0.1", "Interface to listen on.")
    port: int = option(8000, "TCP port (0 picks a free one).", min=0, max=65535)
    insecure: bool = option(False, "Allow a non-loopback --host without an API key.")
    max_tokens_limit: int = option(1024, "Largest max_tokens a request may ask for.", min=1)
    max_prompt_tokens: int = option(4096, "Longest prompt accepted, in tokens (few-shot examples included).", min=1)
    max_body_bytes: int = option(1_000_000, "Largest request body, in bytes.", min=1024)
    max_queue: int = option(256, "Requests waiting for or holding the model (or the upstream); more get 503.", min=1)
    max_batch: int = option(16, "Waiting requests decoded together in one batch (1: one at a time).", min=1)
    read_timeout: float = option(30.0, "Seconds a client has to send a whole request; slower ones are cut off.",
                                 min=0.1)
    device: str = option("auto", "auto, cpu, cuda or mps.")
    upstream: str | None = option(None, "Forward generation to this OpenAI-compatible engine (e.g. "
                                        "http://127.0.0.1:8001/v1, a vLLM with --enable-lora); no model loads here.")
    upstream_base_model: str | None = option(None, "The upstream's name for the base model (needed with --upstream).")
    upstream_adapter_model: str | None = option(None, "The upstream's name for the adapter (vLLM: the "
                                                      "--lora-modules name).")
    upstream_timeout: float = option(600.0, "Seconds the upstream may stay silent before a 504 (a non-streamed "
                                            "answer arrives only when complete).", min=0.1)
    upstream_connect_timeout: float = option(10.0, "Seconds to connect to the upstream before a 504.", min=0.1)
    few_shot: int = option(0, FEW_SHOT_HELP + " The default of chat requests; a request's own `few_shot` field "
                                              "wins.", min=0, max=MAX_FEW_SHOT)
    few_shot_index: str | None = option(None, "Gate directory built from training pairs (`tunelens gate build "
                                              "--data`) that few-shot requests draw on (default: --gate).")

    def validate(self) -> None:
        if self.upstream is not None:
            if not self.upstream_base_model:
                raise UserError("--upstream needs --upstream-base-model: the name the engine serves the base model "
                                "under")
            if not self.upstream.startswith(("http://", "https://")):
                raise UserError(f"--upstream {self.upstream}: give an http:// or https:// URL")
        elif self.upstream_base_model or self.upstream_adapter_model:
            raise UserError("--upstream-base-model and --upstream-adapter-model need --upstream URL")
        if self.few_shot > 0 and not self.examples_index:
            raise UserError(f"--few-shot {self.few_shot} needs --few-shot-index (or --gate): the gate directory "
                            "to retrieve examples from")

    @property
    def examples_index(self) -> str | None:
        """Where few-shot examples come from: --few-shot-index, else the routing gate's training pairs."""
        return self.few_shot_index or self.gate

    def limits(self):
        """The request limits (serve.schemas.ServeLimits) these options set."""
        from tunelens.serve.schemas import ServeLimits  # pydantic and FastAPI: not for reading the options

        return ServeLimits(max_tokens=self.max_tokens_limit, max_prompt_tokens=self.max_prompt_tokens,
                           max_body_bytes=self.max_body_bytes, read_timeout=self.read_timeout,
                           max_queue=self.max_queue)

    def upstream_target(self, api_key: str | None):
        """The upstream engine to forward to, or None to serve a local model."""
        from tunelens.serve.upstream import Upstream  # httpx and FastAPI: not for reading the options

        if self.upstream is None:
            return None
        return Upstream(self.upstream, self.upstream_base_model, self.upstream_adapter_model, api_key or None,
                        connect_timeout=self.upstream_connect_timeout, timeout=self.upstream_timeout)

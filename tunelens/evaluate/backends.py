"""Where eval answers come from: the model in this process, or any OpenAI-compatible server.

A backend answers a list of instructions for one role, `base` or `tuned`, under one decoding. The
in-process backend runs the tuned model as a PEFT model and the base model as the same weights with
the adapter switched off (so both share one copy in memory). The OpenAI backend sends each
instruction to a server (vLLM, llama.cpp's server, `tunelens serve`) under the base model's name or,
for the tuned role, the adapter's served name (vLLM's `--lora-modules NAME=PATH` convention).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from typing import Protocol

from tunelens.errors import UserError
from tunelens.engine.generate import generate_batch, SamplingConfig
from tunelens.model.state import adapter_off, has_adapter, model_label
from tunelens.model.prompts import prompt_style
from tunelens.retrieval.fewshot import example_turns, render_few_shot

BASE, TUNED = "base", "tuned"


class Backend(Protocol):
    roles: tuple[str, ...]  # ("base",) or ("base", "tuned")

    def generate(self, prompts: list[str], sampling: SamplingConfig, role: str) -> list[str]:
        """One answer per instruction, in order. The backends here also take `examples=` (one list of
        tunelens.retrieval.fewshot.Example per instruction, shown before it); run_eval passes it only with --few-shot."""

    def describe(self) -> dict:
        """What answered, for summary.json."""


class TransformersBackend:
    """Batched in-process generation with `tunelens.engine.generate.generate_batch`."""

    def __init__(self, model, tokenizer, batch_size: int = 8):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.roles = (BASE, TUNED) if has_adapter(model) else (BASE,)

    def generate(self, prompts: list[str], sampling: SamplingConfig, role: str, examples=None) -> list[str]:
        with nullcontext() if role == TUNED else adapter_off(self.model):
            return generate_batch(self.model, self.tokenizer, prompts, sampling, batch_size=self.batch_size,
                                  examples=examples)

    def describe(self) -> dict:
        spec = getattr(getattr(self.model, "config", None), "tunelens_spec", None)
        return {"backend": "transformers", "model": spec, "roles": list(self.roles)}


def normalise_base_url(url: str) -> str:
    """`http://host:8000`, `http://host:8000/` and `http://host:8000/v1` all mean the same server."""
    if not url.startswith(("http://", "https://")):
        raise UserError(f"--base-url {url!r} must start with http:// or https://")
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class OpenAIBackend:
    """`/v1/chat/completions` (the server applies its chat template) or `/v1/completions` (the prompt is
    rendered here with `tunelens.model.prompts.render_prompt` when a tokenizer is given, else sent as is).

    Requests of one batch go out `concurrency` at a time; a server batches them itself (vLLM does).
    Sampled requests carry a per-prompt seed, so servers that honour `seed` answer reproducibly.
    """

    def __init__(self, base_url: str, base_model: str, tuned_model: str | None = None, api: str = "chat",
                 tokenizer=None, concurrency: int = 8, timeout_s: float = 300.0, api_key: str | None = None):
        import httpx

        if api not in ("chat", "completions"):
            raise UserError(f"--api {api!r}: use chat or completions")
        self.base_url = normalise_base_url(base_url)
        self.names = {BASE: base_model} | ({TUNED: tuned_model} if tuned_model else {})
        self.roles = tuple(self.names)
        self.api, self.tokenizer, self.concurrency = api, tokenizer, max(1, concurrency)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)

    def generate(self, prompts: list[str], sampling: SamplingConfig, role: str, examples=None) -> list[str]:
        seeds = [None if sampling.seed is None else sampling.seed + i for i in range(len(prompts))]
        shown = examples if examples is not None else [()] * len(prompts)
        jobs = [(prompt, replace(sampling, seed=seed), role, ex) for prompt, seed, ex in zip(prompts, seeds, shown)]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda job: self._one(*job), jobs))

    def _body(self, prompt: str, sampling: SamplingConfig, role: str, examples=()) -> tuple[str, dict]:
        sampled = sampling.temperature > 0
        body = {"model": self.names[role], "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature if sampled else 0.0, "top_p": sampling.top_p if sampled else 1.0}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if self.api == "chat":
            # Examples travel as earlier turns of the chat; the server renders them in its own format.
            turns = example_turns(examples, prompt)
            return "/chat/completions", body | {"messages": [{"role": r, "content": c} for r, c in turns]}
        if self.tokenizer is None:
            if examples:
                raise UserError("--few-shot with --api completions needs the model's tokenizer to render the "
                                "examples: use --api chat")
            return "/completions", body | {"prompt": prompt}
        stops = [s for s in prompt_style(self.tokenizer).stop_strings if s]
        return "/completions", body | {"prompt": render_few_shot(self.tokenizer, examples, prompt),
                                       "stop": stops or None}

    def _one(self, prompt: str, sampling: SamplingConfig, role: str, examples=()) -> str:
        import httpx

        path, body = self._body(prompt, sampling, role, examples)
        try:
            response = self.client.post(path, json=body)
        except httpx.HTTPError as err:
            raise UserError(f"cannot reach {self.base_url}{path}: {err}") from None
        if response.status_code != 200:
            raise UserError(f"{self.base_url}{path} answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            choice = response.json()["choices"][0]
            text = choice["message"]["content"] if self.api == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise UserError(f"{self.base_url}{path} answered without choices[0] text: {response.text[:200]}") from None
        return text or ""

    def describe(self) -> dict:
        return {"backend": "openai", "base_url": self.base_url, "api": self.api, "models": self.names,
                "roles": list(self.roles)}

    def close(self) -> None:
        self.client.close()


BASE_ROWS = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


class MixedAdapterBackend:
    """The backend for one named adapter of a model that carries several (PEFT multi-adapter).

    The first time a list of prompts is asked for under one decoding, every model that will be asked
    the same prompts (the base model and each adapter evaluated on them: the `audience`) answers it in
    one batch, each row through its own adapter (PEFT's per-row `adapter_names`). Later requests are
    served from the shared `cache`. On a memory-bound CPU one step of a 3x larger batch costs well under
    3 steps, so evaluating several adapters against one base costs little more than one.
    """

    def __init__(self, model, tokenizer, adapter: str, audience: tuple[str, ...], cache: dict, batch_size: int):
        self.model, self.tokenizer, self.adapter, self.audience = model, tokenizer, adapter, audience
        self.cache, self.batch_size, self.roles = cache, batch_size, (BASE, TUNED)

    def generate(self, prompts, sampling, role, examples=None):
        shown = tuple(tuple(ex) for ex in examples) if examples is not None else None
        key = (tuple(prompts), sampling, shown)
        wanted = self.adapter if role == TUNED else BASE_ROWS
        if (key, wanted) not in self.cache:
            names = [name for name in self.audience if (key, name) not in self.cache]
            rows = [(prompt, name) for name in names for prompt in prompts]
            answers = generate_batch(self.model, self.tokenizer, [p for p, _ in rows], sampling,
                                     batch_size=self.batch_size, adapter_names=[n for _, n in rows],
                                     examples=list(shown) * len(names) if shown is not None else None)
            for index, name in enumerate(names):
                self.cache[(key, name)] = answers[index * len(prompts):(index + 1) * len(prompts)]
        return self.cache[(key, wanted)]

    def describe(self):
        return {"backend": "transformers", "model": model_label(self.model), "adapter": self.adapter,
                "batched_with": [name for name in self.audience if name != self.adapter]}

"""An OpenAI-compatible HTTP server for a model, its LoRA adapter and the retrieval gate.

Endpoints: POST /v1/completions and /v1/chat/completions (streamed as server-sent events or not, with
`logprobs`/`top_logprobs` in OpenAI's format), GET /v1/models, /healthz and /metrics (Prometheus text).

Model names: `tunelens-adapter` (the adapter), `tunelens-base` (adapter switched off) and `auto` (the
gate decides per request). Every response carries a `tunelens` field with the route taken and, for
`auto`, the gate's scores and threshold.

All model work runs on one worker thread, one request at a time: the adapter on/off switch is a
property of the shared model, so two requests running together could otherwise see each other's
setting. Waiting requests queue in FIFO order; the event loop stays free to accept and stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunelens.errors import UserError

MODEL_ADAPTER, MODEL_BASE, MODEL_AUTO = "tunelens-adapter", "tunelens-base", "auto"
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class ServeLimits:
    """Request limits; a request beyond one gets a 4xx naming it."""

    max_tokens: int = 1024  # the most new tokens a request may ask for
    max_prompt_tokens: int = 4096
    max_body_bytes: int = 1_000_000
    max_queue: int = 256  # requests waiting for or holding the model; more get 503


# ---------------------------------------------------------------- request schemas

class _Strict(BaseModel):
    # strict: "10" is not an integer and true is not a number; unknown OpenAI fields are ignored.
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1, description="only one choice per request is supported")
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    stream_options: StreamOptions | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def _validation_message(err: ValidationError) -> tuple[str, str | None]:
    parts, first = [], None
    for item in err.errors():
        # Drop pydantic's union-branch names (e.g. "str", "list[str]") from the field path.
        loc = ".".join(str(p) for p in item["loc"] if not (isinstance(p, str) and ("[" in p or p in
                                                                                  ("str", "int", "float", "bool"))))
        first = first or loc
        parts.append(f"{loc or 'body'}: {item['msg']}")
    unique = list(dict.fromkeys(parts))
    return "invalid request: " + "; ".join(unique[:5]), first


# ---------------------------------------------------------------- generation


@dataclass
class Job:
    """One request's generation, already validated and tokenised."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    top_logprobs: int | None  # None: no logprobs; 0..20 alternatives per token otherwise
    stops: tuple[str, ...]
    use_adapter: bool


@dataclass
class TokenInfo:
    token: str
    logprob: float
    top: list[tuple[str, float]]
    token_bytes: list[int] = field(default_factory=list)
    top_bytes: list[list[int]] = field(default_factory=list)


@dataclass
class Outcome:
    text: str = ""
    tokens: list[TokenInfo] = field(default_factory=list)
    finish_reason: str = "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


class StopText:
    """Token ids in, safe text deltas out: text that could still begin a stop string is held back.

    Plain equivalent: decode all ids at the end and cut at the first stop string; the deltas always
    concatenate to exactly that text (a test checks it).
    """

    def __init__(self, tokenizer, stops: tuple[str, ...]):
        self.tokenizer, self.stops = tokenizer, tuple(s for s in stops if s)
        self.ids: list[int] = []
        self.sent = 0
        self.text = ""

    def push(self, token_id: int) -> tuple[str, bool]:
        """The new text that is safe to send, and whether a stop string has been reached."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return "", False
        self.text = text
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            return self._advance(min(cuts)), True
        hold = max((n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        return self._advance(len(text) - hold), False

    def flush(self) -> str:
        return self._advance(len(self.text))

    def _advance(self, end: int) -> str:
        delta = self.text[self.sent:end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return delta


def _pick_token(logits, temperature: float, top_p: float, generator) -> int:
    """Greedy at temperature 0; otherwise sample from the temperature-scaled nucleus (top_p mass)."""
    import torch

    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = (sorted_probs.cumsum(0) - sorted_probs) < top_p  # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def _token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-printable-character table, inverted: byte-level BPE pieces are spelt in it."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + extra)] = byte
            extra += 1
    return table


def _token_bytes(tokenizer, token_id: int, text: str) -> list[int]:
    """The token's exact UTF-8 bytes (OpenAI's `bytes`): a token can hold part of a character."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if isinstance(piece, str):
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):  # sentencepiece byte fallback
            return [int(piece[3:5], 16)]
        if "\ufffd" in text and _is_byte_level(tokenizer):
            alphabet = _byte_level_alphabet()
            if all(ch in alphabet for ch in piece):
                return [alphabet[ch] for ch in piece]
    return list(text.encode("utf-8"))


def _is_byte_level(tokenizer) -> bool:
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    return "ByteLevel" in type(decoder).__name__ or "ByteLevel" in repr(decoder)


def run_job(model, tokenizer, job: Job, stop_ids: set[int], on_token: Callable[[str, TokenInfo | None], None],
            cancelled: threading.Event) -> Outcome:
    """Decode token by token with the KV cache, calling `on_token(text_delta, info)` for each token.

    Logprobs are the model's raw next-token log-probabilities (before temperature and top_p), as vLLM
    reports them by default. Plain equivalent of the loop: `model.generate` with output_logits.
    """
    import torch

    from tunelens.models import adapter_disabled

    start = time.perf_counter()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(job.seed) if job.seed is not None else generator.seed()
    outcome = Outcome(prompt_tokens=len(job.prompt_ids))
    text = StopText(tokenizer, job.stops)
    switch = adapter_disabled(model) if not job.use_adapter else contextlib.nullcontext()
    hit_stop_text = False
    with torch.inference_mode(), switch:
        input_ids, past = torch.tensor([job.prompt_ids], device=device), None
        for _ in range(job.max_tokens):
            if cancelled.is_set():
                outcome.finish_reason = "cancelled"
                break
            # logits_to_keep=1: the prompt's other positions would cost a full LM-head pass each.
            out = model(input_ids=input_ids, cache=past, use_cache=True, logits_to_keep=1)
            past, logits = out.cache, out.logits[0, -1].float()
            token = _pick_token(logits, job.temperature, job.top_p, generator)
            if token in stop_ids:
                outcome.finish_reason = "stop"
                break
            outcome.completion_tokens += 1
            info = _token_info(tokenizer, torch.log_softmax(logits, -1), token, job.top_logprobs)
            if info is not None:
                outcome.tokens.append(info)
            delta, hit_stop_text = text.push(token)
            outcome.text += delta
            on_token(delta, info)
            if hit_stop_text:
                outcome.finish_reason = "stop"
                break
            input_ids = torch.tensor([[token]], device=device)
    # Text held back as a possible stop-string start is real text unless a stop string did follow.
    tail = "" if hit_stop_text else text.flush()
    if tail:
        outcome.text += tail
        on_token(tail, None)
    outcome.seconds = time.perf_counter() - start
    return outcome


def _token_info(tokenizer, logprobs, token: int, top_n: int | None) -> TokenInfo | None:
    if top_n is None:
        return None
    import torch

    top, top_bytes = [], []
    if top_n > 0:
        values, ids = torch.topk(logprobs, top_n)
        for value, alt in zip(values.tolist(), ids.tolist()):
            text = _token_text(tokenizer, alt)
            top.append((text, value))
            top_bytes.append(_token_bytes(tokenizer, alt, text))
    text = _token_text(tokenizer, token)
    return TokenInfo(text, float(logprobs[token]), top, _token_bytes(tokenizer, token, text), top_bytes)


# ---------------------------------------------------------------- metrics


class Metrics:
    """Counters and summaries, written out by hand in the Prometheus text format (no client library)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.routes: dict[tuple[str, str], int] = {}
        self.prompt_tokens = self.completion_tokens = 0
        self.generation_seconds = 0.0
        self.generations = 0
        self.in_flight = 0

    def count_request(self, path: str, status: int) -> None:
        with self.lock:
            self.requests[(path, status)] = self.requests.get((path, status), 0) + 1

    def count_generation(self, route: str, reason: str, outcome: Outcome) -> None:
        with self.lock:
            self.routes[(route, reason)] = self.routes.get((route, reason), 0) + 1
            self.prompt_tokens += outcome.prompt_tokens
            self.completion_tokens += outcome.completion_tokens
            self.generation_seconds += outcome.seconds
            self.generations += 1

    def render(self) -> str:
        with self.lock:
            lines = ["# HELP tunelens_requests_total HTTP requests by path and status code.",
                     "# TYPE tunelens_requests_total counter"]
            lines += [f'tunelens_requests_total{{path="{p}",code="{c}"}} {n}'
                      for (p, c), n in sorted(self.requests.items())]
            lines += ["# HELP tunelens_routes_total Generations by route (adapter/base) and reason (gate/forced).",
                      "# TYPE tunelens_routes_total counter"]
            lines += [f'tunelens_routes_total{{route="{r}",reason="{why}"}} {n}'
                      for (r, why), n in sorted(self.routes.items())]
            lines += ["# HELP tunelens_prompt_tokens_total Prompt tokens processed.",
                      "# TYPE tunelens_prompt_tokens_total counter", f"tunelens_prompt_tokens_total {self.prompt_tokens}",
                      "# HELP tunelens_completion_tokens_total Tokens generated.",
                      "# TYPE tunelens_completion_tokens_total counter",
                      f"tunelens_completion_tokens_total {self.completion_tokens}",
                      "# HELP tunelens_generation_seconds Time spent generating, per request.",
                      "# TYPE tunelens_generation_seconds summary",
                      f"tunelens_generation_seconds_sum {self.generation_seconds:.6f}",
                      f"tunelens_generation_seconds_count {self.generations}",
                      "# HELP tunelens_in_flight Requests waiting for or holding the model.",
                      "# TYPE tunelens_in_flight gauge", f"tunelens_in_flight {self.in_flight}"]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the engine: one worker thread


class Engine:
    """Owns the model: every job (gate scoring, generation) runs on its single worker thread."""

    def __init__(self, model, tokenizer, gate=None, limits: ServeLimits = ServeLimits()):
        from tunelens.prompts import prompt_style, stop_token_ids

        self.model, self.tokenizer, self.gate, self.limits = model, tokenizer, gate, limits
        self.has_adapter = hasattr(model, "disable_adapter")
        self.stop_ids = set(stop_token_ids(tokenizer))
        self.chat_stops = tuple(s for s in prompt_style(tokenizer).stop_strings if s)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelens-model")
        # The executor already serialises; the lock also guards direct library use of the same model.
        self.lock = threading.Lock()
        self.metrics = Metrics()
        self.background: set = set()

    def model_names(self) -> list[str]:
        names = [MODEL_ADAPTER, MODEL_BASE] if self.has_adapter else [MODEL_BASE]
        if self.gate is not None and self.has_adapter and self.gate.calibration is not None:
            names.append(MODEL_AUTO)
        return names

    def _locked(self, fn: Callable, *args):
        with self.lock:
            return fn(*args)

    async def call(self, fn: Callable, *args):
        """Run fn(*args) on the model thread, refusing new work when the queue is full."""
        with self.metrics.lock:
            if self.metrics.in_flight >= self.limits.max_queue:
                raise APIError(503, f"server busy: {self.metrics.in_flight} requests queued (limit "
                                    f"{self.limits.max_queue}); retry later", code="server_busy")
            self.metrics.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._locked, fn, *args)
        finally:
            with self.metrics.lock:
                self.metrics.in_flight -= 1

    def decide(self, query: str) -> dict:
        """The gate's decision for `auto` (runs on the model thread: model signals use the model)."""
        decision = self.gate.route(query, self.model, self.tokenizer)
        return {"route": decision.route, "reason": "gate", "score": decision.score,
                "threshold": decision.threshold, "signals": decision.signals.scores(),
                "nearest": decision.signals.neighbours[:1]}


# ---------------------------------------------------------------- app


def create_app(model, tokenizer, gate=None, limits: ServeLimits = ServeLimits(), model_label: str | None = None):
    """The FastAPI app serving one loaded model (optionally with its adapter and a calibrated gate)."""
    if gate is not None and gate.calibration is None:
        raise UserError(f"gate {gate.directory} is not calibrated: run `tunelens gate calibrate` before serving it")
    engine = Engine(model, tokenizer, gate, limits)
    app = FastAPI(title="tunelens", version="1")
    app.state.engine = engine
    created = int(time.time())
    label = model_label or getattr(getattr(model, "config", None), "tunelens_spec", None) or "model"

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.middleware("http")
    async def _count(request: Request, call_next):
        try:
            response = await call_next(request)
        except Exception:
            engine.metrics.count_request(request.url.path, 500)
            raise
        engine.metrics.count_request(request.url.path, response.status_code)
        return response

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": label, "adapter": engine.has_adapter, "gate": gate is not None,
                "models": engine.model_names(), "in_flight": engine.metrics.in_flight}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(engine.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [_model_card(name, created) for name in engine.model_names()]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str):
        if name not in engine.model_names():
            raise _unknown_model(name, engine)
        return _model_card(name, created)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = _parse(CompletionRequest, await _read_json(request, limits))
        prompt = _single_prompt(body)
        if body.echo:
            raise APIError(400, "echo is not supported", param="echo")
        from tunelens.generation import prompt_ids_for

        # Tokenising runs on the model thread too: a fast tokenizer used from two threads at once can
        # fail ("Already borrowed") when one call changes its padding/truncation state.
        ids = await engine.call(prompt_ids_for, tokenizer, prompt, True)
        job = _make_job(engine, body, ids, body.max_tokens or 16, body.logprobs, stops=())
        return await _respond(engine, body, job, prompt, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = _parse(ChatRequest, await _read_json(request, limits))
        instruction, system = _single_turn(body.messages)
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        from tunelens.prompts import encode_prompt

        ids = await engine.call(encode_prompt, tokenizer, instruction, system)
        max_tokens = body.max_completion_tokens or body.max_tokens or limits.max_tokens
        top = (body.top_logprobs or 0) if body.logprobs else None
        job = _make_job(engine, body, ids, max_tokens, top, stops=engine.chat_stops)
        return await _respond(engine, body, job, instruction, chat=True)

    async def _respond(engine: Engine, body, job: Job, query: str, chat: bool):
        routing = await _route(engine, body.model, query)
        job.use_adapter = routing["route"] == "adapter"
        served = MODEL_ADAPTER if job.use_adapter else MODEL_BASE
        headers = {"X-Tunelens-Route": routing["route"]}
        if body.stream:
            stream = _stream(engine, body, job, routing, served, chat)
            return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
        outcome = await engine.call(run_job, engine.model, engine.tokenizer, job, engine.stop_ids,
                                    lambda delta, info: None, threading.Event())
        engine.metrics.count_generation(routing["route"], routing["reason"], outcome)
        build = _chat_response if chat else _completion_response
        return JSONResponse(build(outcome, job, served, routing), headers=headers)

    async def _stream(engine: Engine, body, job: Job, routing: dict, served: str, chat: bool):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        response_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        chunk = _ChunkWriter(response_id, served, routing, chat)

        def on_token(delta: str, info: TokenInfo | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ("token", delta, info))

        async def produce():
            try:
                outcome = await engine.call(run_job, engine.model, engine.tokenizer, job, engine.stop_ids,
                                            on_token, cancelled)
                engine.metrics.count_generation(routing["route"], routing["reason"], outcome)
                await queue.put(("done", outcome, None))
            except APIError as err:
                await queue.put(("error", err, None))
            except Exception as err:  # reported to the client as an error event, then the stream ends
                await queue.put(("error", APIError(500, f"generation failed: {err}"), None))

        task = asyncio.create_task(produce())
        try:
            yield chunk.first()
            while True:
                kind, payload, info = await queue.get()
                if kind == "token":
                    if payload or info is not None:
                        yield chunk.token(payload, info)
                elif kind == "error":
                    yield _sse(payload.body())
                    break
                else:
                    yield chunk.final(payload.finish_reason)
                    if body.stream_options is not None and body.stream_options.include_usage:
                        yield chunk.usage(payload)
                    break
            yield "data: [DONE]\n\n"
        finally:
            cancelled.set()  # a client that went away stops the generation early
            engine.background.add(task)  # keep a reference until it ends (it only sets its own queue)
            task.add_done_callback(engine.background.discard)

    return app


def _model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "tunelens"}


def _unknown_model(name: str, engine: Engine) -> APIError:
    hint = "" if MODEL_AUTO in engine.model_names() or name != MODEL_AUTO else \
        " (`auto` needs --adapter and a calibrated --gate)"
    return APIError(404, f"unknown model {name!r}: this server has {', '.join(engine.model_names())}{hint}",
                    param="model", code="model_not_found")


async def _read_json(request, limits: ServeLimits):
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise APIError(413, f"request body of {declared} bytes is over the {limits.max_body_bytes}-byte limit")
    raw = await request.body()
    if len(raw) > limits.max_body_bytes:
        raise APIError(413, f"request body of {len(raw)} bytes is over the {limits.max_body_bytes}-byte limit")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"malformed JSON body: {err}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, f"the JSON body must be an object, got {type(data).__name__}", code="invalid_json")
    return data


def _parse(schema, data: dict):
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        message, param = _validation_message(err)
        raise APIError(400, message, param=param, code="invalid_value") from None


def _single_prompt(body: CompletionRequest) -> str:
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise APIError(400, f"prompt: one prompt per request is supported, got a list of {len(body.prompt)}",
                           param="prompt")
        return body.prompt[0]
    return body.prompt


def _content_text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        return "".join(part.text for part in message.content)
    return message.content or ""


def _single_turn(messages: list[ChatMessage]) -> tuple[str, str | None]:
    """tunelens prompts are single-turn (the training format): system messages plus one user message."""
    roles = [m.role for m in messages]
    users = [m for m in messages if m.role == "user"]
    if len(users) != 1 or any(r not in ("system", "developer", "user") for r in roles):
        raise APIError(400, f"messages: tunelens serves single-turn chats (optional system messages and one "
                            f"user message); got roles {roles}", param="messages")
    system = "\n\n".join(_content_text(m) for m in messages if m.role in ("system", "developer")) or None
    return _content_text(users[0]), system


def _make_job(engine: Engine, body, ids: list[int], max_tokens: int, top_logprobs: int | None,
              stops: tuple[str, ...]) -> Job:
    limits = engine.limits
    if body.model not in engine.model_names():
        raise _unknown_model(body.model, engine)
    if max_tokens > limits.max_tokens:
        raise APIError(400, f"max_tokens {max_tokens} is over this server's limit of {limits.max_tokens}",
                       param="max_tokens", code="invalid_value")
    if len(ids) > limits.max_prompt_tokens:
        raise APIError(400, f"the prompt is {len(ids)} tokens, over this server's limit of "
                            f"{limits.max_prompt_tokens}", param="messages" if hasattr(body, "messages")
                       else "prompt", code="context_length_exceeded")
    user_stops = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if len(user_stops) > 4:
        raise APIError(400, f"stop: at most 4 stop sequences, got {len(user_stops)}", param="stop")
    return Job(ids, max_tokens, body.temperature, body.top_p, body.seed, top_logprobs, stops + user_stops,
               use_adapter=True)


async def _route(engine: Engine, name: str, query: str) -> dict:
    if name == MODEL_AUTO:
        return await engine.call(engine.decide, query)
    route = "adapter" if name == MODEL_ADAPTER else "base"
    return {"route": route, "reason": "forced"}


# ---------------------------------------------------------------- response bodies (OpenAI's shapes)


def _usage(outcome: Outcome) -> dict:
    return {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "total_tokens": outcome.prompt_tokens + outcome.completion_tokens}


def _completion_logprobs(tokens: list[TokenInfo], offset: int = 0) -> dict:
    offsets, position = [], offset
    for info in tokens:
        offsets.append(position)
        position += len(info.token)
    return {"tokens": [t.token for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [dict(t.top) for t in tokens], "text_offset": offsets}


def _chat_token(info: TokenInfo) -> dict:
    top = [{"token": t, "logprob": lp, "bytes": b} for (t, lp), b in zip(info.top, info.top_bytes)]
    return {"token": info.token, "logprob": info.logprob, "bytes": info.token_bytes, "top_logprobs": top}


def _completion_response(outcome: Outcome, job: Job, served: str, routing: dict) -> dict:
    logprobs = _completion_logprobs(outcome.tokens) if job.top_logprobs is not None else None
    return {"id": "cmpl-" + uuid.uuid4().hex[:24], "object": "text_completion", "created": int(time.time()),
            "model": served, "system_fingerprint": None,
            "choices": [{"index": 0, "text": outcome.text, "logprobs": logprobs,
                         "finish_reason": _finish(outcome)}],
            "usage": _usage(outcome), "tunelens": routing}


def _chat_response(outcome: Outcome, job: Job, served: str, routing: dict) -> dict:
    logprobs = {"content": [_chat_token(t) for t in outcome.tokens], "refusal": None} \
        if job.top_logprobs is not None else None
    return {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
            "model": served, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": outcome.text, "refusal": None},
                         "logprobs": logprobs, "finish_reason": _finish(outcome)}],
            "usage": _usage(outcome), "tunelens": routing}


def _finish(outcome: Outcome) -> str:
    return "length" if outcome.finish_reason == "length" else "stop"


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class _ChunkWriter:
    """The server-sent events of one streamed response, in OpenAI's chunk shapes."""

    def __init__(self, response_id: str, served: str, routing: dict, chat: bool):
        self.id, self.served, self.routing, self.chat = response_id, served, routing, chat
        self.created = int(time.time())
        self.offset = 0

    def _envelope(self, choices: list, **extra) -> str:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return _sse({"id": self.id, "object": kind, "created": self.created, "model": self.served,
                     "system_fingerprint": None, "choices": choices, **extra})

    def first(self) -> str:
        # The routing decision travels in the first chunk, before any text.
        if self.chat:
            choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                      "finish_reason": None}
        else:
            choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": None}
        return self._envelope([choice], tunelens=self.routing)

    def token(self, delta: str, info: TokenInfo | None) -> str:
        if self.chat:
            logprobs = {"content": [_chat_token(info)], "refusal": None} if info else None
            choice = {"index": 0, "delta": {"content": delta}, "logprobs": logprobs, "finish_reason": None}
        else:
            logprobs = _completion_logprobs([info], self.offset) if info else None
            if info:
                self.offset += len(info.token)
            choice = {"index": 0, "text": delta, "logprobs": logprobs, "finish_reason": None}
        return self._envelope([choice])

    def final(self, finish_reason: str) -> str:
        reason = "length" if finish_reason == "length" else "stop"
        choice = ({"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason} if self.chat
                  else {"index": 0, "text": "", "logprobs": None, "finish_reason": reason})
        return self._envelope([choice])

    def usage(self, outcome: Outcome) -> str:
        return self._envelope([], usage=_usage(outcome))


# ---------------------------------------------------------------- running


class ServerHandle:
    """A uvicorn server running on a background thread (for tests and the demo)."""

    def __init__(self, server, thread: threading.Thread, url: str):
        self.server, self.thread, self.url = server, thread, url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> ServerHandle:
    """Start `app` on host:port (0 = a free port) in a daemon thread; returns once it accepts connections."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True, name="tunelens-uvicorn")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return ServerHandle(server, thread, f"http://{host}:{bound}")


def serve(model_spec: str, adapter: str | Path | None = None, gate_dir: str | Path | None = None,
          host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          limits: ServeLimits = ServeLimits(), log: Callable[[str], None] = print) -> None:
    """`tunelens serve`: load the model (and adapter, gate), then serve until interrupted."""
    import uvicorn

    from tunelens.gate import Gate
    from tunelens.models import load_model

    gate = Gate.load(gate_dir) if gate_dir is not None else None
    if gate is not None and adapter is None:
        raise UserError("--gate routes between the adapter and the base model: pass --adapter too")
    log(f"loading {model_spec}" + (f" with adapter {adapter}" if adapter else ""))
    model, tokenizer = load_model(model_spec, adapter=adapter, device=device)
    if gate is not None:
        gate.embedder  # load the embedder now, not on the first request
    app = create_app(model, tokenizer, gate, limits, model_label=model_spec)
    log(f"serving {', '.join(app.state.engine.model_names())} on http://{host}:{port}/v1")
    uvicorn.run(app, host=host, port=port, log_level="info")

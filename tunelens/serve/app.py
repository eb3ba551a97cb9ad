"""The FastAPI app: endpoints, request reading and checks, authentication, streaming."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import threading
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from tunelens.errors import UserError
from tunelens.model.load import LoadedModel, as_loaded
from tunelens.serve.engine import MODEL_ADAPTER, MODEL_AUTO, MODEL_BASE, Engine, Job, TokenInfo
from tunelens.serve.fewshot import FewShotServing, reported, with_example_messages
from tunelens.serve.responses import ChunkWriter, model_card, response_body, sse
from tunelens.serve.schemas import APIError, ChatMessage, ChatRequest, CompletionRequest, ServeLimits, parse
from tunelens.serve.upstream import Upstream, UpstreamEngine
from tunelens.engine.generate import prompt_ids_for
from tunelens.retrieval.fewshot import encode_few_shot

OPEN_PATHS = ("/healthz",)  # a load balancer may probe these without the API key
_SURROGATE = re.compile("[\ud800-\udfff]")


def create_app(model: LoadedModel | object | None = None, tokenizer=None, gate=None,
               limits: ServeLimits = ServeLimits(), model_label: str | None = None, api_key: str | None = None,
               upstream: Upstream | None = None, max_batch: int = 16, few_shot: FewShotServing | None = None):
    """The app serving a LoadedModel (or a bare model and its `tokenizer`), or forwarding to `upstream`.

    With `api_key`, every request but /healthz needs `Authorization: Bearer <api_key>`; up to `max_batch`
    waiting requests decode together; without `few_shot`, a request asking for examples gets a 400.
    """
    if gate is not None and gate.calibration is None:
        raise UserError(f"gate {gate.directory} is not calibrated: run `tunelens gate calibrate` before serving it")
    if upstream is not None:
        if model is not None:
            raise UserError("serve either a local model or an upstream engine, not both")
        engine = UpstreamEngine(upstream, gate, limits)
        label = model_label or f"upstream {upstream.url}"
    else:
        loaded = as_loaded(model, tokenizer)
        engine = Engine(loaded, gate, limits, max_batch=max_batch)
        label = model_label or loaded.spec
    app = FastAPI(title="tunelens", version="1")
    app.state.engine = engine
    _add_error_handling(app, engine, api_key)
    _add_info_routes(app, engine, label)
    _add_generation_routes(app, engine, few_shot or FewShotServing())
    return app


def _add_error_handling(app: FastAPI, engine: Engine, api_key: str | None) -> None:
    """Errors in OpenAI's shape (500s too), the API key check, and the request counter."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError):
        return _error_response(err)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, err: Exception):
        # Still OpenAI's error shape, so clients parse it like any other error.
        return _error_response(APIError(500, f"internal error: {type(err).__name__}: {err}"))

    @app.middleware("http")
    async def _count(request: Request, call_next):
        if api_key is not None and request.url.path not in OPEN_PATHS and not _authorised(request, api_key):
            response = _error_response(APIError(401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                                                code="invalid_api_key"))
        else:
            try:
                response = await call_next(request)
            except Exception:
                engine.metrics.count_request(request.url.path, 500)
                raise
        engine.metrics.count_request(request.url.path, response.status_code)
        return response


def _error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def _add_info_routes(app: FastAPI, engine: Engine, label: str) -> None:
    created = int(time.time())

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": label, "adapter": engine.has_adapter, "gate": engine.gate is not None,
                "models": engine.model_names(), "in_flight": engine.metrics.in_flight}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(engine.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card(name, created) for name in engine.model_names()]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str):
        if name not in engine.model_names():
            raise _unknown_model(name, engine)
        return model_card(name, created)


def _add_generation_routes(app: FastAPI, engine: Engine, few_shot: FewShotServing) -> None:
    limits = engine.limits

    @app.post("/v1/completions")
    async def completions(request: Request):
        data = await read_json(request, limits)
        body = parse(CompletionRequest, data)
        prompt = _single_prompt(body)
        if body.echo:
            raise APIError(400, "echo is not supported", param="echo")
        few_shot.k_for(body.few_shot, chat=False)  # refuses a completion that asks for examples
        if isinstance(engine, UpstreamEngine):
            return await _forward(engine, data, body, body.max_tokens, prompt, "/completions")
        # Tokenising runs on the model thread too: a fast tokenizer used from two threads at once can
        # fail ("Already borrowed") when one call changes its padding/truncation state.
        ids = await engine.call(prompt_ids_for, engine.tokenizer, prompt, True)
        # OpenAI's legacy completions default: 16 tokens, also for an explicit null.
        asked = body.max_tokens if body.max_tokens is not None else 16
        job = _make_job(engine, body, ids, asked, body.logprobs, stops=())
        return await _respond(engine, body, job, prompt, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        data = await read_json(request, limits)
        body = parse(ChatRequest, data)
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        k = few_shot.k_for(body.few_shot, chat=True)
        if isinstance(engine, UpstreamEngine):
            asked = body.max_completion_tokens or body.max_tokens
            return await _forward(engine, data, body, asked, _last_user_text(body), "/chat/completions",
                                  few_shot, k)
        instruction, system = _single_turn(body.messages)
        examples, checked = await _examples(engine, few_shot, instruction, k, body.context_check)
        # With no examples this is exactly prompts.encode_prompt (tunelens.retrieval.fewshot.encode_few_shot).
        ids = await engine.call(encode_few_shot, engine.tokenizer, examples, instruction, system)
        top = (body.top_logprobs or 0) if body.logprobs else None
        job = _make_job(engine, body, ids, body.max_completion_tokens or body.max_tokens, top,
                        stops=engine.chat_stops, shown=len(examples))
        return await _respond(engine, body, job, instruction, chat=True, few=(k, examples, checked))


def _authorised(request: Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the time taken does not tell how much of the key was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


async def _respond(engine: Engine, body, job: Job, query: str, chat: bool, few: tuple = (0, [])):
    routing = reported(await _route(engine, body.model, query), *few)
    job.use_adapter = routing["route"] == "adapter"
    served = MODEL_ADAPTER if job.use_adapter else MODEL_BASE
    headers = {"X-Tunelens-Route": routing["route"]}
    if body.stream:
        stream = _stream(engine, body, job, routing, served, chat)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    outcome = await engine.generate(job, lambda delta, info: None, threading.Event())
    engine.metrics.count_generation(routing, outcome)
    return JSONResponse(response_body(chat, outcome, job, served, routing), headers=headers)


async def _stream(engine: Engine, body, job: Job, routing: dict, served: str, chat: bool):
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()
    chunk = ChunkWriter(served, routing, chat)

    def on_token(delta: str, info: TokenInfo | None) -> None:
        if delta or info is not None:
            loop.call_soon_threadsafe(queue.put_nowait, ("token", delta, info))

    async def produce():
        try:
            outcome = await engine.generate(job, on_token, cancelled)
            engine.metrics.count_generation(routing, outcome)
            await queue.put(("done", outcome, None))
        except Exception as err:  # reported to the client as an error event, then the stream ends
            error = err if isinstance(err, APIError) else APIError(500, f"generation failed: {err}")
            await queue.put(("error", error, None))

    task = asyncio.create_task(produce())
    try:
        yield chunk.first()
        while True:
            kind, payload, info = await queue.get()
            if kind == "token":
                yield chunk.token(payload, info)
            elif kind == "error":
                yield sse(payload.body())
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


def _unknown_model(name: str, engine: Engine) -> APIError:
    hint = "" if MODEL_AUTO in engine.model_names() or name != MODEL_AUTO else \
        " (`auto` needs --adapter and a calibrated --gate)"
    return APIError(404, f"unknown model {name!r}: this server has {', '.join(engine.model_names())}{hint}",
                    param="model", code="model_not_found")


def _too_large(size: int | str, limits: ServeLimits) -> APIError:
    return APIError(413, f"request body of {size} bytes is over the {limits.max_body_bytes}-byte limit",
                    code="body_too_large")


async def read_body(request: Request, limits: ServeLimits) -> bytes:
    """The body, refused with 413 as soon as it passes the cap: chunked bodies are never read whole."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(declared, limits)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise _too_large(f"more than {limits.max_body_bytes}", limits)
            chunks.append(chunk)
    except ClientDisconnect:
        raise APIError(400, "the client closed the connection before the body ended") from None
    return b"".join(chunks)


async def read_json(request: Request, limits: ServeLimits) -> dict:
    raw = await read_body(request, limits)
    try:
        data = json.loads(raw)
    except RecursionError:
        raise APIError(400, "malformed JSON body: nested too deeply", code="invalid_json") from None
    except ValueError as err:  # bad JSON or UTF-8, or e.g. an integer past Python's 4300-digit conversion limit
        raise APIError(400, f"malformed JSON body: {err}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, f"the JSON body must be an object, got {type(data).__name__}", code="invalid_json")
    _refuse_lone_surrogates(data)
    return data


def _refuse_lone_surrogates(data) -> None:
    """JSON's \\ud800 escapes decode to strings no tokenizer can encode: refuse them here, with a 400."""
    pending = [data]
    while pending:  # iterative: the nesting depth is whatever json.loads accepted
        item = pending.pop()
        if isinstance(item, dict):
            pending += [*item, *item.values()]
        elif isinstance(item, list):
            pending += item
        elif isinstance(item, str) and _SURROGATE.search(item):
            raise APIError(400, "a string in the body holds a lone UTF-16 surrogate (e.g. \\ud800): not text",
                           code="invalid_value")


def _single_prompt(body: CompletionRequest) -> str:
    if isinstance(body.prompt, list) and len(body.prompt) != 1:
        raise APIError(400, f"prompt: one prompt per request is supported, got a list of {len(body.prompt)}",
                       param="prompt")
    return body.prompt[0] if isinstance(body.prompt, list) else body.prompt


def _content_text(message: ChatMessage) -> str:
    content = message.content
    return "".join(part.text for part in content) if isinstance(content, list) else content or ""


def _single_turn(messages: list[ChatMessage]) -> tuple[str, str | None]:
    """tunelens prompts are single-turn (the training format): system messages plus one user message."""
    roles = [m.role for m in messages]
    users = [m for m in messages if m.role == "user"]
    if len(users) != 1 or any(r not in ("system", "developer", "user") for r in roles):
        raise APIError(400, f"messages: tunelens serves single-turn chats (optional system messages and one "
                            f"user message); got roles {roles}", param="messages")
    system = "\n\n".join(_content_text(m) for m in messages if m.role in ("system", "developer")) or None
    return _content_text(users[0]), system


def _check_request(engine, body, asked_tokens: int | None) -> tuple[str, ...]:
    """The checks that need no tokenizer (model name, max_tokens cap, stop count); the user's stops."""
    if body.model not in engine.model_names():
        raise _unknown_model(body.model, engine)
    if asked_tokens is not None and asked_tokens > engine.limits.max_tokens:
        raise APIError(400, f"max_tokens {asked_tokens} is over this server's limit of {engine.limits.max_tokens}",
                       param="max_tokens", code="invalid_value")
    user_stops = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if len(user_stops) > 4:
        raise APIError(400, f"stop: at most 4 stop sequences, got {len(user_stops)}", param="stop")
    return user_stops


async def _forward(engine: UpstreamEngine, data: dict, body, asked_tokens: int | None, query: str | None,
                   path: str, few_shot: FewShotServing | None = None, k: int = 0):
    """Check and route here, generate upstream (which has the prompt-length limits: no tokenizer here).
    Few-shot examples (chat only) go upstream as earlier messages; the field itself is ours, not sent."""
    _check_request(engine, body, asked_tokens)
    if (body.model == MODEL_AUTO or k) and query is None:
        what = "`auto` routes" if body.model == MODEL_AUTO else "few_shot retrieves examples"
        raise APIError(400, f"messages: {what} on the last user message, and there is none", param="messages")
    data = {key: value for key, value in data.items() if key not in ("few_shot", "context_check")}
    examples, checked = await _examples(engine, few_shot, query or "", k, getattr(body, "context_check", False))
    if examples:
        data["messages"] = with_example_messages(data["messages"], examples)
    routing = reported(await _route(engine, body.model, query or ""), k, examples, checked)
    wants_usage = body.stream_options is not None and body.stream_options.include_usage
    return await engine.forward(path, data, routing, body.stream, wants_usage)


async def _examples(engine, few_shot: FewShotServing, query: str, k: int, check: bool) -> tuple[list, dict | None]:
    """The request's few-shot examples, and the context check's verdict on them when asked for."""
    examples = await engine.call(few_shot.retrieve, query, k) if k else []
    return examples, (await engine.call(few_shot.check, query, examples) if check else None)


def _last_user_text(body: ChatRequest) -> str | None:
    """What the gate judges in a chat sent upstream: the last user message (the upstream renders the chat)."""
    users = [m for m in body.messages if m.role == "user"]
    return _content_text(users[-1]) if users else None


def _make_job(engine: Engine, body, ids: list[int], asked_tokens: int | None, top_logprobs: int | None,
              stops: tuple[str, ...], shown: int = 0) -> Job:
    limits, param = engine.limits, "messages" if isinstance(body, ChatRequest) else "prompt"
    user_stops = _check_request(engine, body, asked_tokens)
    if not ids:
        raise APIError(400, "the prompt is empty, and this tokenizer adds no start token to continue from",
                       param=param, code="invalid_value")
    if len(ids) > limits.max_prompt_tokens:
        with_examples = f" with its {shown} few-shot example(s)" if shown else ""
        raise APIError(400, f"the prompt{with_examples} is {len(ids)} tokens, over this server's limit of "
                            f"{limits.max_prompt_tokens}", param=param, code="context_length_exceeded")
    return Job(ids, _max_tokens(engine, asked_tokens, len(ids)), body.temperature, body.top_p, body.seed,
               top_logprobs, stops + user_stops, use_adapter=True)


def _max_tokens(engine: Engine, asked: int | None, prompt_tokens: int) -> int:
    """The request's max_tokens, checked against the model's context window; unset means "as many as fit":
    the server's limit, cut to the room left in the window."""
    limit, window = engine.limits.max_tokens, engine.loaded.context_length
    room = window - prompt_tokens if window is not None else limit
    if asked is not None and asked > room:
        raise APIError(400, f"the prompt ({prompt_tokens} tokens) plus max_tokens ({asked}) is over the model's "
                            f"context window of {window} tokens", param="max_tokens", code="context_length_exceeded")
    if room < 1:
        raise APIError(400, f"the prompt ({prompt_tokens} tokens) fills the model's context window of {window} "
                            "tokens", param="messages", code="context_length_exceeded")
    return asked if asked is not None else min(limit, room)


async def _route(engine: Engine, name: str, query: str) -> dict:
    if name == MODEL_AUTO:
        return await engine.call(engine.decide, query)
    return {"route": "adapter" if name == MODEL_ADAPTER else "base", "reason": "forced"}

"""The gate in front of an existing OpenAI-compatible engine (vLLM with LoRA modules, llama.cpp, tunelens).

`UpstreamEngine` stands where `Engine` stands in the app: tunelens keeps the request checks, the API key,
the gate's decision, the metrics and the `tunelens` field; the engine behind it generates. Bodies go up as
the client sent them with `model` replaced by the upstream's name for the route; answers come back
unchanged but for `model` (the tunelens name) and the `tunelens` field, so text and `logprobs` are the
upstream's own. Only retrieval signals can route here: model signals need full next-token distributions
at every prompt position, which no OpenAI-compatible API returns (at most 20 alternatives per token).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import AsyncIterator

import anyio
from fastapi.responses import JSONResponse, StreamingResponse

from tunelens.errors import UserError
from tunelens.serve.engine import MODEL_ADAPTER, MODEL_BASE, Outcome, WorkerThread, routing_info
from tunelens.serve.responses import sse
from tunelens.serve.schemas import APIError, ServeLimits
from tunelens.gate import MODEL_SIGNALS

UPSTREAM_API_KEY_ENV = "TUNELENS_UPSTREAM_API_KEY"


@dataclass(frozen=True)
class Upstream:
    """Where the engine is and what it calls the two routes."""

    url: str  # its base URL, with or without the trailing /v1
    base_model: str  # the name it serves the base model under (vLLM: the model id given to `vllm serve`)
    adapter_model: str | None = None  # the adapter's name (vLLM: the name in --lora-modules NAME=PATH)
    api_key: str | None = None  # sent as `Authorization: Bearer`; not the key clients give tunelens
    connect_timeout: float = 10.0
    timeout: float = 600.0  # longest silence while waiting: a non-streamed answer arrives only when done

    def endpoint(self, path: str) -> str:
        root = self.url.rstrip("/")
        return (root if root.endswith("/v1") else root + "/v1") + path

    def headers(self) -> dict:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def check_gate_for_upstream(gate) -> None:
    """Refuse a gate whose score needs the local model: behind an upstream there is none."""
    calibration = gate.calibration if gate is not None else None
    used = [name for name in calibration.signals if name in MODEL_SIGNALS] if calibration is not None else []
    if used:
        raise UserError(f"gate {gate.directory} is calibrated with model signals ({', '.join(used)}), which need a "
                        "local model: with --upstream recalibrate it on retrieval signals only (`tunelens gate "
                        "calibrate` without --model)")


def check_upstream_models(upstream: Upstream) -> str | None:
    """Ask the upstream's /v1/models whether it serves the configured names. A missing name or a refused key
    is an error (the configuration is wrong); an upstream that does not answer yet is only a warning,
    returned as text: engines take minutes to start."""
    import httpx

    try:
        response = httpx.get(upstream.endpoint("/models"), headers=upstream.headers(),
                             timeout=upstream.connect_timeout)
    except httpx.HTTPError as err:
        return f"upstream {upstream.url} does not answer yet ({type(err).__name__}); requests get 502 until it does"
    if response.status_code in (401, 403):
        raise UserError(f"upstream {upstream.url} refused the key ({response.status_code}): check --upstream-api-key")
    if response.status_code != 200:
        return f"upstream {upstream.url}/models answered {response.status_code}; model names not checked"
    try:
        served = {item["id"] for item in response.json()["data"]}
    except (ValueError, KeyError, TypeError):
        return f"upstream {upstream.url}/models is not an OpenAI model list; model names not checked"
    missing = [name for name in (upstream.base_model, upstream.adapter_model) if name and name not in served]
    if missing:
        raise UserError(f"upstream {upstream.url} does not serve {', '.join(missing)}: it has "
                        f"{', '.join(sorted(served))} (check --upstream-base-model / --upstream-adapter-model)")
    return None


class UpstreamEngine(WorkerThread):
    """The Engine interface for forwarding. The gate runs on the worker thread (its embedder is CPU-bound
    and must not block the event loop); generation is the upstream's, which batches concurrent requests
    itself, so forwarded requests are not serialised here, only capped (`max_queue`, then 503)."""

    def __init__(self, upstream: Upstream, gate=None, limits: ServeLimits = ServeLimits()):
        check_gate_for_upstream(gate)
        super().__init__(gate, limits, upstream.adapter_model is not None, "tunelens-gate")
        self.upstream = upstream
        self._client = None

    def decide(self, query: str) -> dict:
        return routing_info(self.gate.route(query))

    def client(self):
        # Made on first use, inside the server's event loop; the pool never runs dry before admission does.
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.upstream.timeout, connect=self.upstream.connect_timeout),
                limits=httpx.Limits(max_connections=self.limits.max_queue + 1))
        return self._client

    async def forward(self, path: str, body: dict, routing: dict, stream: bool, wants_usage: bool):
        """Send `body` to the upstream's `path` for the chosen route; the response for the client."""
        import httpx

        served = MODEL_ADAPTER if routing["route"] == "adapter" else MODEL_BASE
        payload = dict(body, model=self.upstream.adapter_model if served == MODEL_ADAPTER else self.upstream.base_model)
        if stream:  # usage feeds the metrics; a client that did not ask for it does not get the chunk
            payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        request = self.client().build_request("POST", self.upstream.endpoint(path), json=payload,
                                              headers=self.upstream.headers())
        self.metrics.enter(self.limits.max_queue)
        start, handed_over = time.perf_counter(), False
        try:
            try:
                response = await self.client().send(request, stream=stream)
            except httpx.HTTPError as err:
                raise transport_error(self.upstream, err) from None
            if response.status_code != 200:
                content = await response.aread()
                await response.aclose()
                raise status_error(self.upstream, response.status_code, content)
            headers = {"X-Tunelens-Route": routing["route"]}
            if stream:
                handed_over = True  # the relay leaves the queue when the stream ends
                return StreamingResponse(self._relay(response, served, routing, wants_usage, start),
                                         media_type="text/event-stream", headers=headers)
            answer = _json(response.content)
            if not isinstance(answer, dict) or "choices" not in answer:
                raise APIError(502, f"upstream {self.upstream.url} answered 200 without an OpenAI response: "
                                    f"{response.content[:200]!r}", code="upstream_error")
            self._count(routing, answer.get("usage"), start)
            return JSONResponse({**answer, "model": served, "tunelens": routing}, headers=headers)
        finally:
            if not handed_over:
                self.metrics.leave()

    def _count(self, routing: dict, usage: dict | None, start: float) -> None:
        usage = usage if isinstance(usage, dict) else {}
        self.metrics.count_generation(routing, Outcome(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                                       completion_tokens=int(usage.get("completion_tokens") or 0),
                                                       seconds=time.perf_counter() - start))

    async def _relay(self, response, served: str, routing: dict, wants_usage: bool, start: float) -> AsyncIterator[str]:
        """One streamed answer passed through: the upstream's events, with `model` renamed and `tunelens` added
        to the first. Ends with `data: [DONE]` whatever happens upstream; a failure after the first byte has
        gone out can only be an error event (the status line is already sent), as from the local server."""
        import httpx

        usage, first = None, True
        try:
            async for data in sse_data(response):
                if data == "[DONE]":
                    self._count(routing, usage, start)
                    break
                chunk, problem = _event(data)
                if problem is not None:
                    yield sse(APIError(502, problem, code="upstream_error").body())
                    break
                if chunk.get("usage"):
                    usage = chunk["usage"]
                    if not chunk.get("choices") and not wants_usage:
                        continue
                chunk["model"] = served
                if first:  # the routing decision travels in the first chunk, as from the local server
                    chunk["tunelens"], first = routing, False
                yield sse(chunk)
            else:
                yield sse(APIError(502, "the upstream closed the stream before `data: [DONE]`").body())
        except httpx.TimeoutException:
            yield sse(APIError(504, f"the upstream sent nothing for {self.upstream.timeout:g} s",
                               code="upstream_timeout").body())
        except httpx.HTTPError as err:
            yield sse(APIError(502, f"the upstream stream broke: {type(err).__name__}: {err}",
                               code="upstream_error").body())
        finally:
            self.metrics.leave()
            # Also when the client goes away (this task is then cancelled, hence the shield): closing the
            # upstream stream tells the engine to stop generating.
            with anyio.CancelScope(shield=True):
                await response.aclose()
        yield "data: [DONE]\n\n"


def _event(data: str) -> tuple[dict | None, str | None]:
    """An upstream event's chunk, or why the stream ends there."""
    try:
        chunk = json.loads(data)
    except ValueError:
        return None, f"the upstream sent an event that is not JSON: {data[:200]!r}"
    message = _error_of(chunk) if isinstance(chunk, dict) else repr(chunk)[:200]
    return (chunk, None) if message is None else (None, f"the upstream failed mid-stream: {message}")


async def sse_data(response) -> AsyncIterator[str]:
    """The data of each server-sent event (its `data:` lines joined), ignoring comments and other fields."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if lines:
                yield "\n".join(lines)
                lines = []
        elif line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    if lines:
        yield "\n".join(lines)


def _error_of(body) -> str | None:
    """The message of an error body: OpenAI's {"error": {...}} or vLLM's older {"object": "error", ...}."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if isinstance(error, str):
        return error
    return str(body.get("message") or body) if isinstance(body, dict) and body.get("object") == "error" else None


def _json(content):
    """The parsed JSON, or None where it is not JSON."""
    try:
        return json.loads(content)
    except ValueError:
        return None


def transport_error(upstream: Upstream, err) -> APIError:
    """A failure to reach the upstream or to hear back in time: 504 for a timeout, 502 otherwise."""
    import httpx

    if isinstance(err, httpx.ConnectTimeout):
        return APIError(504, f"upstream {upstream.url} did not accept a connection within "
                             f"{upstream.connect_timeout:g} s", code="upstream_timeout")
    if isinstance(err, httpx.TimeoutException):
        return APIError(504, f"upstream {upstream.url} did not answer within {upstream.timeout:g} s",
                        code="upstream_timeout")
    return APIError(502, f"upstream {upstream.url} is unreachable: {type(err).__name__}: {err}",
                    code="upstream_unavailable")


def status_error(upstream: Upstream, status: int, content: bytes) -> APIError:
    """An upstream error status, mapped so that the client sees whose fault it is: the client's own mistakes
    the upstream caught (400, 413, 422, 429) keep their status and message; a refused key or an unknown
    model name is tunelens's configuration, so a 502 saying which option."""
    body = _json(content)
    message = _error_of(body) or content[:300].decode("utf-8", "replace") or "(empty body)"
    if status in (401, 403):
        return APIError(502, f"upstream {upstream.url} refused tunelens's key ({status}: {message}): check "
                             "--upstream-api-key", code="upstream_auth")
    if status == 404:
        return APIError(502, f"upstream {upstream.url} answered 404 ({message}): check --upstream-base-model and "
                             "--upstream-adapter-model against its /v1/models", code="upstream_model_not_found")
    if 400 <= status < 500:
        error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
        param, code = (error.get(key) if isinstance(error.get(key), str) else None for key in ("param", "code"))
        return APIError(status, f"upstream rejected the request: {message}", param=param, code=code)
    if status == 504:
        return APIError(504, f"upstream {upstream.url} timed out: {message}", code="upstream_timeout")
    return APIError(502, f"upstream {upstream.url} failed ({status}): {message}", code="upstream_error")

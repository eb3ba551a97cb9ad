"""The model side of the server: metrics and the single model thread (jobs live in serve/jobs.py)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from tunelens.model.load import LoadedModel
from tunelens.serve.jobs import Answer, Job, Outcome, TokenInfo, run_job  # noqa: F401  (Job, Outcome: the server's vocabulary)
from tunelens.serve.schemas import APIError, ServeLimits
from tunelens.model.prompts import prompt_style, stop_token_ids
from tunelens.serve.batching import Batch, Request, run_lone, take_group

MODEL_ADAPTER, MODEL_BASE, MODEL_AUTO = "tunelens-adapter", "tunelens-base", "auto"


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
        self.batches = self.batched_requests = self.joins = 0

    def enter(self, max_queue: int) -> None:
        """Admit one more request that waits for or holds the model (or the upstream); 503 past the cap."""
        with self.lock:
            if self.in_flight >= max_queue:
                raise APIError(503, f"server busy: {self.in_flight} requests queued (limit {max_queue}); "
                                    "retry later", code="server_busy")
            self.in_flight += 1

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def count_request(self, path: str, status: int) -> None:
        with self.lock:
            self.requests[(path, status)] = self.requests.get((path, status), 0) + 1

    def count_batch(self, size: int, joined: bool = False) -> None:
        with self.lock:
            self.batches += 0 if joined else 1
            self.batched_requests += size
            self.joins += 1 if joined else 0

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
                      "# HELP tunelens_batches_total Decoding batches run with --max-batch over 1 (a lone request is a batch of 1).",
                      "# TYPE tunelens_batches_total counter", f"tunelens_batches_total {self.batches}",
                      "# HELP tunelens_batch_joins_total Times waiting requests joined a running batch.",
                      "# TYPE tunelens_batch_joins_total counter", f"tunelens_batch_joins_total {self.joins}",
                      "# HELP tunelens_batched_requests_total Requests decoded in those batches.",
                      "# TYPE tunelens_batched_requests_total counter",
                      f"tunelens_batched_requests_total {self.batched_requests}",
                      "# HELP tunelens_in_flight Requests waiting for or holding the model.",
                      "# TYPE tunelens_in_flight gauge", f"tunelens_in_flight {self.in_flight}"]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the engine: one worker thread


class Engine:
    """Owns the model: every job (gate scoring, generation) runs on its single worker thread.

    One thread, because the adapter on/off switch is a property of the shared model: two requests
    running on two threads could see each other's setting. Several requests of one route may still
    decode together on it, as one batch (`max_batch` > 1, serve/batching.py).
    """

    def __init__(self, loaded: LoadedModel, gate=None, limits: ServeLimits = ServeLimits(), max_batch: int = 1):
        self.loaded, self.gate, self.limits = loaded, gate, limits
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.has_adapter = loaded.has_adapter
        self.stop_ids = set(stop_token_ids(self.tokenizer))
        self.chat_stops = tuple(s for s in prompt_style(self.tokenizer).stop_strings if s)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelens-model")
        # The executor already serialises; the lock also guards direct library use of the same model.
        self.lock = threading.Lock()
        self.metrics = Metrics()
        self.background: set = set()
        self.max_batch = max_batch  # 1: one request at a time; more: serve/batching.py
        self.pending: list = []  # batching.Request objects waiting for the model thread
        self.pending_lock = threading.Lock()
        self.active = None  # the batching.Batch decoding now (touched only on the model thread)

    def model_names(self) -> list[str]:
        return served_names(self.has_adapter, self.gate)

    def _locked(self, fn: Callable, *args):
        with self.lock:
            return fn(*args)

    async def call(self, fn: Callable, *args):
        """Run fn(*args) on the model thread, refusing new work when the queue is full."""
        self.metrics.enter(self.limits.max_queue)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._locked, fn, *args)
        finally:
            self.metrics.leave()

    async def generate(self, job: Job, on_token: Callable, cancelled: threading.Event) -> Outcome:
        if self.max_batch <= 1:
            return await self.call(run_job, self.loaded, job, self.stop_ids, on_token, cancelled)
        return await self._batched(job, on_token, cancelled)

    async def _batched(self, job: Job, on_token: Callable, cancelled: threading.Event) -> Outcome:
        """Queue the job and one drain of the queue on the model thread; the outcome comes back by future."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def done(outcome, err) -> None:
            def settle():
                if not future.done():
                    future.set_exception(err) if err is not None else future.set_result(outcome)
            loop.call_soon_threadsafe(settle)

        self.metrics.enter(self.limits.max_queue)
        try:
            with self.pending_lock:
                self.pending.append(Request(job, on_token, cancelled, done))
            self.executor.submit(self._drain)
            return await future
        finally:
            self.metrics.leave()

    def _drain(self) -> None:
        """On the model thread: waiting requests join the running batch, or start one.

        Every queued job adds one drain, and the end of a batch adds another while jobs wait, so no
        job is left behind; a drain that finds nothing to take does nothing.
        """
        with self.pending_lock:
            if self.active is not None:
                group = take_group(self.pending, self.max_batch - len(self.active.rows), self.active.use_adapter)
            else:
                group = take_group(self.pending, self.max_batch)
            alone = self.active is None and len(group) == 1 and not self.pending
        if not group:
            return
        self.metrics.count_batch(len(group), joined=self.active is not None)
        if alone:
            with self.lock:
                run_lone(self.loaded, group[0], self.stop_ids)
        elif self.active is not None:
            self.active.join(group)
        else:
            self.active = Batch(self.loaded, group, self.stop_ids)
            self.executor.submit(self._step)

    def _step(self) -> None:
        """On the model thread: one step of the running batch, then back to the end of the queue."""
        batch = self.active
        try:
            with self.lock:
                finished = batch.step()
        except BaseException as err:  # every request still in the batch answers with the error
            for index in batch.rows:
                batch.requests[index].done(None, err)
            batch.rows = []
            finished = []
        for index, outcome in finished:
            batch.requests[index].done(outcome, None)
        if batch.rows:
            self.executor.submit(self._step)
            return
        self.active = None
        with self.pending_lock:
            waiting = bool(self.pending)
        if waiting:
            self.executor.submit(self._drain)

    def decide(self, query: str) -> dict:
        """The gate's decision for `auto` (runs on the model thread: model signals use the model)."""
        return routing_info(self.gate.route(query, self.model, self.tokenizer))


def served_names(has_adapter: bool, gate) -> list[str]:
    """The model names a server answers to: `auto` only where there is an adapter and a calibrated gate."""
    names = [MODEL_ADAPTER, MODEL_BASE] if has_adapter else [MODEL_BASE]
    if gate is not None and has_adapter and gate.calibration is not None:
        names.append(MODEL_AUTO)
    return names


def routing_info(decision) -> dict:
    """The `tunelens` field of a gated response: the route and what the gate saw."""
    return {"route": decision.route, "reason": "gate", "score": decision.score,
            "threshold": decision.threshold, "signals": decision.signals.scores(),
            "nearest": decision.signals.neighbours[:1]}

"""The model side of the server: metrics and the single model thread (jobs live in serve/jobs.py)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
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
        self.requests: Counter = Counter()  # (path, status code) -> requests
        self.routes: Counter = Counter()  # (route, reason) -> generations
        self.prompt_tokens = self.completion_tokens = self.generations = self.in_flight = 0
        self.batches = self.batched_requests = self.joins = 0
        self.generation_seconds = 0.0

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
            self.requests[(path, status)] += 1

    def count_batch(self, size: int, joined: bool = False) -> None:
        with self.lock:
            self.batches += not joined
            self.batched_requests += size
            self.joins += joined

    def count_generation(self, routing: dict, outcome: Outcome) -> None:
        with self.lock:
            self.routes[(routing["route"], routing["reason"])] += 1
            self.prompt_tokens += outcome.prompt_tokens
            self.completion_tokens += outcome.completion_tokens
            self.generation_seconds += outcome.seconds
            self.generations += 1

    def render(self) -> str:
        with self.lock:  # (name, type, help, [(labels or suffix, value)]) per metric family
            families = [
                ("requests_total", "counter", "HTTP requests by path and status code.",
                 [(f'{{path="{p}",code="{c}"}}', n) for (p, c), n in sorted(self.requests.items())]),
                ("routes_total", "counter", "Generations by route (adapter/base) and reason (gate/forced).",
                 [(f'{{route="{r}",reason="{why}"}}', n) for (r, why), n in sorted(self.routes.items())]),
                ("prompt_tokens_total", "counter", "Prompt tokens processed.", [("", self.prompt_tokens)]),
                ("completion_tokens_total", "counter", "Tokens generated.", [("", self.completion_tokens)]),
                ("generation_seconds", "summary", "Time spent generating, per request.",
                 [("_sum", f"{self.generation_seconds:.6f}"), ("_count", self.generations)]),
                ("batches_total", "counter", "Decoding batches run with --max-batch over 1 (a lone request is a "
                                             "batch of 1).", [("", self.batches)]),
                ("batch_joins_total", "counter", "Times waiting requests joined a running batch.", [("", self.joins)]),
                ("batched_requests_total", "counter", "Requests decoded in those batches.",
                 [("", self.batched_requests)]),
                ("in_flight", "gauge", "Requests waiting for or holding the model.", [("", self.in_flight)])]
        lines = []
        for name, kind, text, samples in families:
            lines += [f"# HELP tunelens_{name} {text}", f"# TYPE tunelens_{name} {kind}"]
            lines += [f"tunelens_{name}{labels} {value}" for labels, value in samples]
        return "\n".join(lines) + "\n"


class WorkerThread:
    """What the local and the upstream engine share: model names, metrics, and one worker thread whose
    queue is capped (`max_queue`, then 503)."""

    def __init__(self, gate, limits: ServeLimits, has_adapter: bool, thread_name: str):
        self.gate, self.limits, self.has_adapter = gate, limits, has_adapter
        self.metrics = Metrics()
        self.background: set = set()  # streaming tasks, kept referenced until they end
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        # The executor already serialises; the lock also guards direct library use of the same model.
        self.lock = threading.Lock()

    def model_names(self) -> list[str]:
        return served_names(self.has_adapter, self.gate)

    def _locked(self, fn: Callable, *args):
        with self.lock:
            return fn(*args)

    async def call(self, fn: Callable, *args):
        """Run fn(*args) on the worker thread, refusing new work when the queue is full."""
        self.metrics.enter(self.limits.max_queue)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._locked, fn, *args)
        finally:
            self.metrics.leave()


class Engine(WorkerThread):
    """Owns the model: every job (gate scoring, generation) runs on its single worker thread, because the
    adapter switch is a property of the shared model: two threads could see each other's setting. Requests
    of one route may still decode together on it (`max_batch` > 1, serve/batching.py)."""

    def __init__(self, loaded: LoadedModel, gate=None, limits: ServeLimits = ServeLimits(), max_batch: int = 1):
        super().__init__(gate, limits, loaded.has_adapter, "tunelens-model")
        self.loaded, self.model, self.tokenizer = loaded, loaded.model, loaded.tokenizer
        self.stop_ids = set(stop_token_ids(self.tokenizer))
        self.chat_stops = tuple(s for s in prompt_style(self.tokenizer).stop_strings if s)
        self.max_batch = max_batch  # 1: one request at a time
        self.pending: list[Request] = []  # waiting for the model thread
        self.pending_lock = threading.Lock()
        self.active: Batch | None = None  # the batch decoding now (touched only on the model thread)

    async def generate(self, job: Job, on_token: Callable, cancelled: threading.Event) -> Outcome:
        if self.max_batch <= 1:
            return await self.call(run_job, self.loaded, job, self.stop_ids, on_token, cancelled)
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def settle(outcome, err) -> None:
            if not future.done():
                future.set_exception(err) if err is not None else future.set_result(outcome)

        self.metrics.enter(self.limits.max_queue)
        try:  # queue the job and one drain of the queue on the model thread; the outcome comes back by future
            with self.pending_lock:
                self.pending.append(Request(job, on_token, cancelled,
                                            lambda *result: loop.call_soon_threadsafe(settle, *result)))
            self.executor.submit(self._drain)
            return await future
        finally:
            self.metrics.leave()

    def _drain(self) -> None:
        """On the model thread: waiting requests join the running batch, or start one. Every queued job adds
        one drain and the end of a batch another while jobs wait, so none is left behind."""
        active = self.active
        with self.pending_lock:
            room = self.max_batch - (len(active.rows) if active else 0)
            group = take_group(self.pending, room, active.use_adapter if active else None)
            alone = active is None and len(group) == 1 and not self.pending
        if not group:
            return
        self.metrics.count_batch(len(group), joined=active is not None)
        if alone:
            with self.lock:
                run_lone(self.loaded, group[0], self.stop_ids)
        elif active is not None:
            active.join(group)
        else:
            self.active = Batch(self.loaded, group, self.stop_ids)
            self.executor.submit(self._step)

    def _step(self) -> None:
        """On the model thread: one step of the running batch, then back to the end of the queue."""
        batch = self.active
        try:
            with self.lock:
                finished = [(batch.requests[index], outcome, None) for index, outcome in batch.step()]
        except BaseException as err:  # every request still in the batch answers with the error
            finished, batch.rows = [(batch.requests[index], None, err) for index in batch.rows], []
        if not batch.rows:
            self.active = None  # before the last answers go out, so whoever hears of them sees the batch gone
        for request, outcome, err in finished:
            request.done(outcome, err)
        if batch.rows:
            self.executor.submit(self._step)
            return
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
    return names + [MODEL_AUTO] if gate is not None and has_adapter and gate.calibration is not None else names


def routing_info(decision) -> dict:
    """The `tunelens` field of a gated response: the route and what the gate saw."""
    return {"route": decision.route, "reason": "gate", "score": decision.score,
            "threshold": decision.threshold, "signals": decision.signals.scores(),
            "nearest": decision.signals.neighbours[:1]}

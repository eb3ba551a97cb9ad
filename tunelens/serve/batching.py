"""Continuous batching on the single model thread: requests join and leave between decode steps.

A `Batch` advances one step (one forward pass for all its rows) per task on the model thread and puts
itself back at the end of that thread's queue, so between two steps newly arrived requests are
tokenised, gated and **join** (the engine's BatchDecoder re-prefills, one pass per join; one join takes
every request waiting then). A request **leaves** as soon as it ends (its rows leave the KV cache) and
its answer returns then; each row keeps its own sampler and seed, stops, max_tokens and logprobs.

A batch holds one route: the adapter switch is a property of the shared model, so the other route's
requests wait for the next batch. A request that finds the thread idle with nothing else waiting takes
the one-at-a-time loop (`run_job`, with its certified greedy head), so batching costs it nothing.

Plain equivalent: `run_job` on each request alone. Greedy tokens are the same and log-probabilities equal
within float rounding (batched matrix products round differently); tests check them, joins included.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable

from tunelens.model.load import LoadedModel
from tunelens.engine.decode import BatchDecoder, Row, Sampler
from tunelens.serve.jobs import Answer, Job, Outcome, TokenInfo, run_job


@dataclass(eq=False)  # compared by identity: two requests may carry equal jobs
class Request:
    """A job waiting for the model thread, with where its tokens and its outcome go."""

    job: Job
    on_token: Callable[[str, TokenInfo | None], None]
    cancelled: threading.Event
    done: Callable[[Outcome | None, BaseException | None], None]  # called once, from the model thread


def take_group(pending: list[Request], room: int, route: bool | None = None) -> list[Request]:
    """Remove and return up to `room` waiting requests of one route (`route`, else the oldest's), oldest first."""
    if not pending or room < 1:
        return []
    route = pending[0].job.use_adapter if route is None else route
    group = [r for r in pending if r.job.use_adapter == route][:room]
    for request in group:
        pending.remove(request)
    return group


def run_lone(loaded: LoadedModel, request: Request, stop_ids: set[int]) -> None:
    """A request alone: the one-at-a-time loop (with the certified greedy head), its outcome reported."""
    try:
        outcome = run_job(loaded, request.job, stop_ids, request.on_token, request.cancelled)
    except BaseException as err:  # handed to the waiting request, which answers with an error
        return request.done(None, err)
    request.done(outcome, None)


class Batch:
    """Requests of one route decoding together, one step at a time; each request's tokens go through its
    own Answer (stop strings, logprobs, deltas), as in `run_job`."""

    def __init__(self, loaded: LoadedModel, requests: list[Request], stop_ids: set[int]):
        self.loaded, self.stop_ids = loaded, frozenset(stop_ids)
        self.use_adapter = requests[0].job.use_adapter
        self.requests: list[Request] = []
        self.answers: dict[Row, tuple[int, Answer]] = {}  # decoder row -> (request index, its answer)
        self.rows: list[int] = []  # the request index of each row still decoding, in row order
        tokenizer = loaded.tokenizer  # pad positions are masked out: any id will do
        pad = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
        self.decoder = BatchDecoder(loaded.model, pad_id=pad)
        self.join(requests)

    def join(self, requests: list[Request]) -> None:
        rows = []
        for request in requests:
            job = request.job
            assert job.use_adapter == self.use_adapter, "a batch holds one route"
            rows.append(Row(job.prompt_ids, Sampler(job.temperature, job.top_p, job.seed), job.max_tokens,
                            self.stop_ids))
            answer = Answer(self.loaded.tokenizer, job, self.stop_ids, request.on_token, request.cancelled)
            self.answers[rows[-1]] = (len(self.requests), answer)
            self.rows.append(len(self.requests))
            self.requests.append(request)
        self.decoder.join(rows)

    def step(self) -> list[tuple[int, Outcome]]:
        """One forward pass and one token per row; returns (request index, outcome) of the rows that ended."""
        with contextlib.nullcontext() if self.use_adapter else self.loaded.adapter_off():
            steps = self.decoder.step()
        finished = []
        for row, step in steps:
            index, answer = self.answers[row]
            if answer.take(step.token, step.logits) or row.done:
                row.done = True  # leaves the batch and the cache before the next step
                finished.append((index, answer.finish()))
        self.rows = [self.answers[row][0] for row in self.decoder.rows if not row.done]
        return finished


def run_batch(loaded: LoadedModel, group: list[Request], stop_ids: set[int]):
    """Yield (index in group, outcome) as each request ends; all must share a route."""
    batch = Batch(loaded, group, stop_ids)
    while batch.rows:
        yield from batch.step()

"""Continuous batching on the single model thread: requests join and leave between decode steps.

A batch (`Batch`) is advanced one step, one forward pass for all its rows, per task on the model
thread, and puts itself back at the end of that thread's queue; so between two steps the thread
tokenises newly arrived requests and runs the gate, and the new requests **join** the running batch.
A request **leaves** as soon as it ends (its rows are dropped from the KV cache) and its answer returns
then. Each row keeps its own sampler and seed, stop ids, stop strings, max_tokens and logprobs.

Joining re-prefills the batch: the step after a join runs every row's sequence so far (prompt and
tokens taken), left-padded, and starts a fresh cache. Appending a new row to a running cache instead
would need its positions re-aligned to the other rows', and Gemma 3's sliding-window layers keep only
the last window of keys, which makes that fragile; a re-prefill is correct by construction, and costs
one pass over the rows' sequences per join (joins are rare next to steps; one join takes every
request waiting at that moment).

A batch holds one route (adapter or base): the adapter switch is a property of the shared model, so
the other route's requests wait for the next batch. A request that arrives to an idle thread with
nothing else waiting takes the one-at-a-time loop (`run_job`, with its certified greedy head), so
batching costs a lone request nothing; requests arriving meanwhile form the next batch.

Plain equivalent: `run_job` on each request alone. Greedy tokens are the same and log-probabilities
equal within float rounding (batched matrix products round differently); tests check them against
each other, joins included.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable

from tunelens.model.load import LoadedModel
from tunelens.model.state import device_of
from tunelens.engine.decode import Sampler, _cache_of, cache_argument
from tunelens.serve.jobs import Answer, Job, Outcome, TokenInfo, run_job


@dataclass(eq=False)  # compared by identity: two requests may carry equal jobs
class Request:
    """A job waiting for the model thread, with where its tokens and its outcome go."""

    job: Job
    on_token: Callable[[str, TokenInfo | None], None]
    cancelled: threading.Event
    done: Callable[[Outcome | None, BaseException | None], None]  # called once, from the model thread


def take_group(pending: list[Request], room: int, route: bool | None = None) -> list[Request]:
    """Remove and return up to `room` waiting requests of one route, oldest first.

    The route is `route` (the running batch's) when given, else the oldest waiting request's.
    """
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
        request.done(None, err)
        return
    request.done(outcome, None)


class Batch:
    """Requests of one route decoding together, advanced one step (one forward pass) at a time.

    Between steps, requests join (`join`) and finished ones leave. Leaving drops their rows from the
    KV cache. Joining re-prefills: the next step runs every row's whole sequence so far (prompt and
    tokens taken) left-padded, so no row's cache has to be re-aligned to another's; the cost is one
    prompt-length pass per join, instead of one token per row.
    Plain equivalent: `run_job` on each request alone; tests compare them.
    """

    def __init__(self, loaded: LoadedModel, requests: list[Request], stop_ids: set[int]):
        self.loaded, self.stop_ids = loaded, stop_ids
        self.use_adapter = requests[0].job.use_adapter
        self.device, self.name = device_of(loaded.model), cache_argument(loaded.model)
        self.requests: list[Request] = []
        self.answers: list[Answer] = []
        self.samplers: list[Sampler] = []
        self.generators: list = []
        self.rows: list[int] = []  # the request index of each batch row, in row order
        self.past = self.chosen = self.mask = self.positions = None
        self.join(requests)

    def join(self, requests: list[Request]) -> None:
        for request in requests:
            job = request.job
            assert job.use_adapter == self.use_adapter, "a batch holds one route"
            self.rows.append(len(self.requests))
            self.requests.append(request)
            self.answers.append(Answer(self.loaded.tokenizer, job, self.stop_ids, request.on_token, request.cancelled))
            self.samplers.append(Sampler(job.temperature, job.top_p, job.seed))
            self.generators.append(self.samplers[-1].generator(self.device))
        self.past = None  # the next step re-prefills every row

    def step(self) -> list[tuple[int, Outcome]]:
        """One forward pass and one token per row; returns (request index, outcome) of the rows that ended."""
        import torch

        switch = contextlib.nullcontext() if self.use_adapter else self.loaded.adapter_off()
        with torch.inference_mode(), switch:
            out = self._forward()
        self.past, logits = _cache_of(out, self.name), out.logits[:, -1, :].float()
        rows = self.rows
        chosen = torch.stack([self.samplers[i].pick(logits[b:b + 1], self.generators[i])[0]
                              for b, i in enumerate(rows)])
        ended = [b for b, i in enumerate(rows) if self.answers[i].take(int(chosen[b]), logits[b])]
        finished = [(rows[b], self.answers[rows[b]].finish()) for b in ended]
        keep = [b for b in range(len(rows)) if b not in ended]
        self.rows = [rows[b] for b in keep]
        if ended and keep:  # the finished rows leave the batch and the cache
            index = torch.tensor(keep, device=self.device)
            self.past.batch_select_indices(index)
            chosen, self.mask, self.positions = chosen[index], self.mask[index], self.positions[index]
        self.chosen = chosen
        return finished

    def _forward(self):
        model = self.loaded.model
        if self.past is None:
            # Left-padded whole sequences, positions counted from each row's first real token, so every
            # row sees exactly what it would see alone.
            sequences = [self.requests[i].job.prompt_ids + self.answers[i].outcome.ids for i in self.rows]
            ids, self.mask = _left_padded(sequences, _pad_id(self.loaded.tokenizer), self.device)
            self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
            return model(input_ids=ids, attention_mask=self.mask, position_ids=self.positions, use_cache=True,
                         logits_to_keep=1)
        self.mask = _longer_mask(self.mask)
        self.positions = self.positions[:, -1:] + 1
        return model(input_ids=self.chosen[:, None], attention_mask=self.mask, position_ids=self.positions,
                     use_cache=True, logits_to_keep=1, **{self.name: self.past})


def run_batch(loaded: LoadedModel, group: list[Request], stop_ids: set[int]):
    """Yield (index in group, outcome) as each request ends; all must share a route."""
    batch = Batch(loaded, group, stop_ids)
    while batch.rows:
        yield from batch.step()


def _longer_mask(mask):
    """The attention mask one column longer: the token fed this step is real for every row."""
    import torch

    return torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pad if pad is not None else 0  # masked out: any id will do


def _left_padded(prompts: list[list[int]], pad_id: int, device):
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return ids, mask

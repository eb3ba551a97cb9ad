"""Decoding several requests together on the single model thread.

The design, and why: requests that are waiting when the model thread becomes free are decoded as one
batch (left-padded, one forward pass per step for all of them), each with its own sampler, seed, stop
ids, stop strings and logprobs; a request leaves the batch as soon as it ends (its rows are dropped
from the KV cache), and answers return as they end, not when the batch does. New requests join at the
next batch, not mid-batch: joining a running KV cache would need re-aligned positions per row, and
Gemma 3's sliding-window layers keep only the last window of keys, which makes that alignment fragile;
this simpler form already takes the concurrent load together, since clients that arrive while a batch
decodes form the next one.

A batch holds one route (adapter or base): the adapter switch is a property of the shared model. A
lone request takes the one-at-a-time loop (`run_job`, with its certified greedy head), so batching
costs it nothing.

Plain equivalent: `run_job` on each request alone. Greedy tokens are the same and log-probabilities
equal within float rounding (batched matrix products round differently); a test checks them against
each other, and the server test with 32 concurrent clients compares every answer with one computed alone.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable

from tunelens.inference import LoadedModel, Sampler, _cache_of, cache_argument, device_of
from tunelens.serve.engine import Answer, Job, Outcome, TokenInfo, run_job


@dataclass
class Request:
    """A job waiting for the model thread, with where its tokens and its outcome go."""

    job: Job
    on_token: Callable[[str, TokenInfo | None], None]
    cancelled: threading.Event
    done: Callable[[Outcome | None, BaseException | None], None]  # called once, from the model thread


def take_group(pending: list[Request], max_batch: int) -> list[Request]:
    """Remove and return the oldest waiting request with up to max_batch - 1 more of the same route."""
    if not pending:
        return []
    route = pending[0].job.use_adapter
    group = [r for r in pending if r.job.use_adapter == route][:max_batch]
    for request in group:
        pending.remove(request)
    return group


def run_group(loaded: LoadedModel, group: list[Request], stop_ids: set[int]) -> None:
    """Decode the group (one route), reporting each request's outcome as it ends."""
    if len(group) == 1:
        request = group[0]
        try:
            outcome = run_job(loaded, request.job, stop_ids, request.on_token, request.cancelled)
        except BaseException as err:  # handed to the waiting request, which answers with an error
            request.done(None, err)
            return
        request.done(outcome, None)
        return
    pending = set(range(len(group)))
    try:
        for index, outcome in run_batch(loaded, group, stop_ids):
            pending.discard(index)
            group[index].done(outcome, None)
    except BaseException as err:
        for index in pending:
            group[index].done(None, err)


def run_batch(loaded: LoadedModel, group: list[Request], stop_ids: set[int]):
    """Yield (index in group, outcome) as each request ends; all must share a route.

    Left-padded prompts with their attention mask and position ids counted from each prompt's first
    token, so every row sees exactly what it would see alone. Plain equivalent: run_job per request.
    """
    import torch

    device = device_of(loaded.model)
    answers = [Answer(loaded.tokenizer, r.job, stop_ids, r.on_token, r.cancelled) for r in group]
    samplers = [Sampler(r.job.temperature, r.job.top_p, r.job.seed) for r in group]
    generators = [s.generator(device) for s in samplers]
    switch = contextlib.nullcontext() if group[0].job.use_adapter else loaded.adapter_off()
    name = cache_argument(loaded.model)
    ids, mask = _left_padded([r.job.prompt_ids for r in group], _pad_id(loaded.tokenizer), device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    rows = list(range(len(group)))  # which request each batch row belongs to
    with torch.inference_mode(), switch:
        out = loaded.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                           logits_to_keep=1)
        while rows:
            past, logits = _cache_of(out, name), out.logits[:, -1, :].float()
            chosen = torch.stack([samplers[i].pick(logits[b:b + 1], generators[i])[0] for b, i in enumerate(rows)])
            ended = [b for b, i in enumerate(rows) if answers[i].take(int(chosen[b]), logits[b])]
            for b in ended:
                yield rows[b], answers[rows[b]].finish()
            if ended:  # the finished rows leave the batch and the cache
                keep = [b for b in range(len(rows)) if b not in ended]
                rows = [rows[b] for b in keep]
                if not rows:
                    break
                index = torch.tensor(keep, device=device)
                past.batch_select_indices(index)
                chosen, mask, positions = chosen[index], mask[index], positions[index]
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            positions = positions[:, -1:] + 1
            out = loaded.model(input_ids=chosen[:, None], attention_mask=mask, position_ids=positions,
                               use_cache=True, logits_to_keep=1, **{name: past})


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pad if pad is not None else 0  # masked out: any id will do


def _left_padded(prompts: list[list[int]], pad_id: int, device):
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return ids, mask

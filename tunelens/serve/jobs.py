"""A job for the model and the one-at-a-time decode-and-stream step that runs it, with its token details."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from tunelens.engine.decode import Sampler, decode
from tunelens.engine.tokens import token_bytes, token_text
from tunelens.model.load import LoadedModel
from tunelens.serve.stops import StopText


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
    ids: list[int] = field(default_factory=list)  # the generated token ids, without a stop token
    tokens: list[TokenInfo] = field(default_factory=list)
    finish_reason: str = "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


class Answer:
    """One request's answer as its tokens arrive: stop ids, stop strings, logprobs, deltas, finish reason;
    shared by `run_job` and serve/batching.py, so a token is handled alike whichever loop chose it."""

    def __init__(self, tokenizer, job: Job, stop_ids: set[int], on_token: Callable[[str, TokenInfo | None], None],
                 cancelled: threading.Event):
        self.tokenizer, self.job, self.stop_ids = tokenizer, job, stop_ids
        self.on_token, self.cancelled = on_token, cancelled
        self.outcome = Outcome(prompt_tokens=len(job.prompt_ids))
        self.text = StopText(tokenizer, job.stops)
        self.hit_stop_text = False
        self.start = time.perf_counter()

    def take(self, token: int, logits) -> bool:
        """Handle one chosen token (and the raw logits that chose it); True when the answer has ended."""
        outcome = self.outcome
        ended = "cancelled" if self.cancelled.is_set() else "stop" if token in self.stop_ids else None
        if ended:
            outcome.finish_reason = ended
            return True
        outcome.completion_tokens += 1
        outcome.ids.append(token)
        info = _token_info(self.tokenizer, logits, token, self.job.top_logprobs)
        outcome.tokens += [info] if info is not None else []
        delta, self.hit_stop_text = self.text.push(token)
        outcome.text += delta
        self.on_token(delta, info)
        if self.hit_stop_text:
            outcome.finish_reason = "stop"
        return self.hit_stop_text or outcome.completion_tokens >= self.job.max_tokens  # else it stays "length"

    def finish(self) -> Outcome:
        # Text held back as a possible stop-string start is real text unless a stop string did follow.
        tail = "" if self.hit_stop_text else self.text.flush()
        if tail:
            self.outcome.text += tail
            self.on_token(tail, None)
        self.outcome.seconds = time.perf_counter() - self.start
        return self.outcome


def run_job(loaded: LoadedModel, job: Job, stop_ids: set[int], on_token: Callable[[str, TokenInfo | None], None],
            cancelled: threading.Event) -> Outcome:
    """Decode with the shared loop, calling `on_token(text_delta, info)` for each token. Logprobs are the
    model's raw next-token log-probabilities (before temperature and top_p), as vLLM reports them by
    default. Plain equivalent: `model.generate` with output_logits."""
    import torch

    answer = Answer(loaded.tokenizer, job, stop_ids, on_token, cancelled)
    switch = contextlib.nullcontext() if job.use_adapter else loaded.adapter_off()
    sampler = Sampler(job.temperature, job.top_p, job.seed)
    with torch.inference_mode(), switch:
        steps = decode(loaded.model, job.prompt_ids, sampler, job.max_tokens, stop_ids,
                       need_logits=job.top_logprobs is not None)
        for step in steps:
            if answer.take(step.token, step.logits):
                break
        steps.close()  # leave the loop (and its cache) here, inside the adapter switch
    return answer.finish()


def _token_info(tokenizer, logits, token: int, top_n: int | None) -> TokenInfo | None:
    if top_n is None:
        return None
    import torch

    logprobs = torch.log_softmax(logits, -1)
    values, ids = (x.tolist() for x in torch.topk(logprobs, top_n))  # top_n 0: none
    top = [(token_text(tokenizer, alt), value) for value, alt in zip(values, ids)]
    top_bytes = [token_bytes(tokenizer, alt, text) for (text, _), alt in zip(top, ids)]
    text = token_text(tokenizer, token)
    return TokenInfo(text, float(logprobs[token]), top, token_bytes(tokenizer, token, text), top_bytes)

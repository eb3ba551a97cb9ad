"""Response bodies in OpenAI's shapes: completions, chat completions and their streamed chunks."""

from __future__ import annotations

import json
import time
import uuid

from tunelens.serve.jobs import Job, Outcome, TokenInfo


def model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "tunelens"}


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


def completion_response(outcome: Outcome, job: Job, served: str, routing: dict) -> dict:
    logprobs = _completion_logprobs(outcome.tokens) if job.top_logprobs is not None else None
    return {"id": "cmpl-" + uuid.uuid4().hex[:24], "object": "text_completion", "created": int(time.time()),
            "model": served, "system_fingerprint": None,
            "choices": [{"index": 0, "text": outcome.text, "logprobs": logprobs,
                         "finish_reason": _finish(outcome)}],
            "usage": _usage(outcome), "tunelens": routing}


def chat_response(outcome: Outcome, job: Job, served: str, routing: dict) -> dict:
    logprobs = {"content": [_chat_token(t) for t in outcome.tokens], "refusal": None} \
        if job.top_logprobs is not None else None
    return {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
            "model": served, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": outcome.text, "refusal": None},
                         "logprobs": logprobs, "finish_reason": _finish(outcome)}],
            "usage": _usage(outcome), "tunelens": routing}


def _finish(outcome: Outcome) -> str:
    return "length" if outcome.finish_reason == "length" else "stop"


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class ChunkWriter:
    """The server-sent events of one streamed response, in OpenAI's chunk shapes."""

    def __init__(self, response_id: str, served: str, routing: dict, chat: bool):
        self.id, self.served, self.routing, self.chat = response_id, served, routing, chat
        self.created = int(time.time())
        self.offset = 0

    def _envelope(self, choices: list, **extra) -> str:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return sse({"id": self.id, "object": kind, "created": self.created, "model": self.served,
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

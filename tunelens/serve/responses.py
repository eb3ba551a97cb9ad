"""Response bodies in OpenAI's shapes: completions, chat completions and their streamed chunks."""

from __future__ import annotations

import json
import time
import uuid
from itertools import accumulate

from tunelens.serve.jobs import Job, Outcome, TokenInfo


def model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "tunelens"}


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _usage(outcome: Outcome) -> dict:
    return {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "total_tokens": outcome.prompt_tokens + outcome.completion_tokens}


def _logprobs(chat: bool, tokens: list[TokenInfo], offset: int = 0) -> dict:
    """Chat's per-token entries, or the legacy completion's parallel lists (text offsets from `offset`)."""
    if chat:
        return {"content": [_chat_token(t) for t in tokens], "refusal": None}
    return {"tokens": [t.token for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [dict(t.top) for t in tokens],
            "text_offset": list(accumulate([len(t.token) for t in tokens], initial=offset))[:-1]}


def _chat_token(info: TokenInfo) -> dict:
    top = [{"token": t, "logprob": lp, "bytes": b} for (t, lp), b in zip(info.top, info.top_bytes)]
    return {"token": info.token, "logprob": info.logprob, "bytes": info.token_bytes, "top_logprobs": top}


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _envelope(chat: bool, response_id: str, created: int, served: str, choices: list, streamed: bool = False,
              **extra) -> dict:
    kind = ("chat.completion.chunk" if streamed else "chat.completion") if chat else "text_completion"
    return {"id": response_id, "object": kind, "created": created, "model": served, "system_fingerprint": None,
            "choices": choices, **extra}


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def response_body(chat: bool, outcome: Outcome, job: Job, served: str, routing: dict) -> dict:
    """A whole (not streamed) response."""
    logprobs = _logprobs(chat, outcome.tokens) if job.top_logprobs is not None else None
    content = {"message": {"role": "assistant", "content": outcome.text, "refusal": None}} if chat \
        else {"text": outcome.text}
    choice = {"index": 0, **content, "logprobs": logprobs, "finish_reason": _finish(outcome.finish_reason)}
    return _envelope(chat, new_id(chat), int(time.time()), served, [choice], usage=_usage(outcome), tunelens=routing)


class ChunkWriter:
    """The server-sent events of one streamed response, in OpenAI's chunk shapes."""

    def __init__(self, served: str, routing: dict, chat: bool):
        self.id, self.served, self.routing, self.chat = new_id(chat), served, routing, chat
        self.created = int(time.time())
        self.offset = 0

    def _chunk(self, choices: list, **extra) -> str:
        return sse(_envelope(self.chat, self.id, self.created, self.served, choices, streamed=True, **extra))

    def _choice(self, delta: dict, logprobs: dict | None = None, finish_reason: str | None = None, **extra) -> str:
        """`delta` in chat's form; a completion chunk carries its content as `text`."""
        content = {"delta": delta} if self.chat else {"text": delta.get("content", "")}
        return self._chunk([{"index": 0, **content, "logprobs": logprobs, "finish_reason": finish_reason}], **extra)

    def first(self) -> str:
        # The routing decision travels in the first chunk, before any text.
        return self._choice({"role": "assistant", "content": ""}, tunelens=self.routing)

    def token(self, delta: str, info: TokenInfo | None) -> str:
        logprobs = _logprobs(self.chat, [info], self.offset) if info else None
        self.offset += len(info.token) if info else 0
        return self._choice({"content": delta}, logprobs)

    def final(self, finish_reason: str) -> str:
        return self._choice({}, finish_reason=_finish(finish_reason))

    def usage(self, outcome: Outcome) -> str:
        return self._chunk([], usage=_usage(outcome))

"""Request limits, the request schemas (OpenAI's fields), and errors in OpenAI's shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunelens.retrieval.fewshot import MAX_FEW_SHOT
from tunelens.engine.decode import SEED_MAX, SEED_MIN, TEMPERATURE_MAX

MAX_TOP_LOGPROBS = 20
_BRANCHES = ("str", "int", "float", "bool")  # pydantic's names of union branches in an error's field path


@dataclass(frozen=True)
class ServeLimits:
    """Request limits; a request beyond one gets a 4xx naming it."""

    max_tokens: int = 1024  # the most new tokens a request may ask for
    max_prompt_tokens: int = 4096
    max_body_bytes: int = 1_000_000
    max_queue: int = 256  # requests waiting for or holding the model; more get 503
    read_timeout: float = 30.0  # seconds a client has to send one whole request (headers and body)


class _Strict(BaseModel):
    # strict: "10" is not an integer and true is not a number; unknown OpenAI fields are ignored.
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str
    temperature: float = Field(1.0, ge=0.0, le=TEMPERATURE_MAX)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1, description="only one choice per request is supported")
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream_options: StreamOptions | None = None
    # tunelens's own: how many nearest training pairs to show before the request (OpenAI servers ignore it).
    few_shot: int | None = Field(None, ge=0, le=MAX_FEW_SHOT)


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    # tunelens's own: score the few-shot examples shown with tunelens.inspect.context_check before generation.
    context_check: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = ("authentication_error" if self.status == 401 else
                "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def _field(loc: tuple) -> str:
    """The field path, without pydantic's union-branch names (e.g. "str", "list[str]")."""
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _BRANCHES)))


def parse(schema, data: dict):
    """Validate a JSON object against a request schema; a 400 naming the fields otherwise."""
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        fields = [(_field(item["loc"]), item["msg"]) for item in err.errors()]
        message = "; ".join(list(dict.fromkeys(f"{loc or 'body'}: {msg}" for loc, msg in fields))[:5])
        param = next((loc for loc, _ in fields if loc), "")
        raise APIError(400, f"invalid request: {message}", param=param, code="invalid_value") from None

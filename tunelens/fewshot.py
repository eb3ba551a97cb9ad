"""Examples in the context: the one way every stage puts training pairs in front of a request.

Retrieval-augmented prompting (`--few-shot K`) and the copying experiment both show a model some
(instruction, response) pairs before the user's request. Each example becomes a user turn and an
assistant turn of the model's own chat format (tunelens.prompts.render_context), so an injected
example looks exactly like an earlier exchange of the same conversation, and the rendered prompt
still ends where the model's answer begins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence


@dataclass(frozen=True)
class Example:
    """One injected example, with where it came from and how close it is to the request."""

    instruction: str
    response: str
    id: str = ""
    similarity: float | None = None  # cosine similarity of its instruction to the request, when retrieved

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Example":
        return cls(instruction=data["instruction"], response=data["response"], id=str(data.get("id", "")),
                   similarity=data.get("similarity"))


def example_turns(examples: Sequence[Example], instruction: str) -> list[tuple[str, str]]:
    """The conversation the model sees: each example as a user and an assistant turn, then the request."""
    turns: list[tuple[str, str]] = []
    for example in examples:
        turns += [("user", example.instruction), ("assistant", example.response)]
    return turns + [("user", instruction)]


def render_few_shot(tokenizer, examples: Sequence[Example], instruction: str, system: str | None = None) -> str:
    """The prompt text for `instruction` with `examples` before it (no examples: the plain prompt)."""
    from tunelens.prompts import render_context

    return render_context(tokenizer, example_turns(examples, instruction), system)

"""Examples in the context: the one way every stage puts training pairs in front of a request.

Retrieval-augmented prompting (`--few-shot K`) and the copying experiment both show (instruction,
response) pairs before the request, each as a user and an assistant turn of the model's own chat format
(tunelens.model.prompts.render_context): an earlier exchange of the same conversation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from tunelens.config import option
from tunelens.errors import UserError
from tunelens.model.prompts import render_context


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
        return cls(data["instruction"], data["response"], str(data.get("id", "")), data.get("similarity"))


def example_turns(examples: Sequence[Example], instruction: str) -> list[tuple[str, str]]:
    """The conversation the model sees: each example as a user and an assistant turn, then the request."""
    turns = [turn for e in examples for turn in (("user", e.instruction), ("assistant", e.response))]
    return turns + [("user", instruction)]


def render_few_shot(tokenizer, examples: Sequence[Example], instruction: str, system: str | None = None) -> str:
    """The prompt text for `instruction` with `examples` before it (no examples: the plain prompt)."""
    return render_context(tokenizer, example_turns(examples, instruction), system)


def encode_few_shot(tokenizer, examples: Sequence[Example], instruction: str, system: str | None = None) -> list[int]:
    """Token ids of `render_few_shot(...)` (special tokens are in the text already); with no examples
    exactly `prompts.encode_prompt`'s."""
    return tokenizer(render_few_shot(tokenizer, examples, instruction, system), add_special_tokens=False)["input_ids"]

MAX_FEW_SHOT = 16  # more examples than this crowd a small model's context out
FEW_SHOT_HELP = ("Show the K training pairs nearest to the request (from --few-shot-index) as earlier exchanges "
                 "before it; they count toward the context length. 0: none.")
FEW_SHOT_INDEX_HELP = "Gate directory built from training pairs (`tunelens gate build --data`) that --few-shot draws on."


def few_shot_option():
    """The `few_shot` field of a stage's config (one help text and bound for every command)."""
    return option(0, FEW_SHOT_HELP, min=0, max=MAX_FEW_SHOT)


def few_shot_index_option():
    return option(None, FEW_SHOT_INDEX_HELP)


def check_few_shot(k: int, index: str | None, raw: bool = False) -> None:
    """The rules across the few-shot fields, for a config's validate()."""
    if k > 0 and not index:
        raise UserError(f"few_shot {k} needs few_shot_index: the gate directory to retrieve examples from")
    if k > 0 and raw:
        raise UserError("few_shot shows examples as earlier chat turns; it cannot be used with raw")


def require_responses(gate) -> None:
    """A gate built before entries carried responses (or from bare instructions) has no examples to show."""
    if any("response" not in entry for entry in gate.entries):
        raise UserError(f"gate {gate.directory} stores no responses (built from instructions only, or before "
                        "few-shot existed): rebuild it with `tunelens gate build --data PAIRS --out DIR`")


def nearest_examples_batch(gate, instructions: Sequence[str], k: int) -> list[list[Example]]:
    """`nearest_examples` for many instructions, embedded in one batch."""
    if k <= 0 or not instructions:
        return [[] for _ in instructions]
    require_responses(gate)
    sims, rows = gate.index.search(gate.embedder.encode(list(instructions)), k)
    # Nearest last: it then sits right before the request, where a model's attention to its context is
    # strongest (recency), and a lesser match cannot come between it and the request. faiss pads with -1.
    return [[Example(gate.entries[r]["instruction"], gate.entries[r]["response"], str(gate.entries[r]["id"]),
                     round(float(s), 4)) for s, r in zip(row_sims, row_ids) if r >= 0][::-1]
            for row_sims, row_ids in zip(sims, rows)]


def nearest_examples(gate, instruction: str, k: int) -> list[Example]:
    """The K training pairs whose instructions are nearest to `instruction` (cosine), with their similarity,
    least similar first; K=0 gives none, K above the gate's size all."""
    return nearest_examples_batch(gate, [instruction], k)[0]


class FewShot:
    """A stage's few-shot setting: K and the gate it retrieves from (loaded once), with a cache per instruction."""

    def __init__(self, k: int, gate=None):
        self.k, self.gate, self._cache = k, gate, {}
        if k > 0:
            require_responses(gate)

    @classmethod
    def load(cls, k: int, index: str | None) -> "FewShot":
        """From a config's `few_shot` and `few_shot_index`; nothing loads for K=0."""
        if k <= 0:
            return cls(0)
        from tunelens.retrieval.store import PairIndex  # numpy and faiss: only when K > 0

        return cls(k, PairIndex.load(index))

    @property
    def active(self) -> bool:
        return self.k > 0

    def for_each(self, instructions: Sequence[str]) -> list[list[Example]]:
        """The examples for every instruction (retrieved once per distinct instruction)."""
        missing = [text for text in dict.fromkeys(instructions) if text not in self._cache]
        self._cache.update(zip(missing, nearest_examples_batch(self.gate, missing, self.k) if self.k else []))
        return [self._cache.get(text, []) for text in instructions]

    def for_one(self, instruction: str) -> list[Example]:
        return self.for_each([instruction])[0]


def injected(examples: Sequence[Example]) -> list[dict]:
    """What an output records about the examples it was given: id and similarity, in the order shown."""
    return [{"id": e.id, "similarity": e.similarity} for e in examples]

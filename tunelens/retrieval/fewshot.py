"""Examples in the context: the one way every stage puts training pairs in front of a request.

Retrieval-augmented prompting (`--few-shot K`) and the copying experiment both show a model some
(instruction, response) pairs before the user's request. Each example becomes a user turn and an
assistant turn of the model's own chat format (tunelens.model.prompts.render_context), so an injected
example looks exactly like an earlier exchange of the same conversation, and the rendered prompt
still ends where the model's answer begins.
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
    return render_context(tokenizer, example_turns(examples, instruction), system)


def encode_few_shot(tokenizer, examples: Sequence[Example], instruction: str, system: str | None = None) -> list[int]:
    """Token ids of `render_few_shot(...)`; with no examples exactly `prompts.encode_prompt`'s."""
    # Special tokens are in the rendered text already (bos, turn markers), so none are added.
    return tokenizer(render_few_shot(tokenizer, examples, instruction, system), add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- retrieval from a gate index

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
    found = []
    for row_sims, row_ids in zip(sims, rows):
        best_first = [Example(instruction=gate.entries[r]["instruction"], response=gate.entries[r]["response"],
                              id=str(gate.entries[r]["id"]), similarity=round(float(s), 4))
                      for s, r in zip(row_sims, row_ids) if r >= 0]  # faiss pads missing rows with -1
        # Nearest last: it then sits right before the request, where a model's attention to its context
        # is strongest (recency), and a lesser match cannot come between the best one and the request.
        found.append(best_first[::-1])
    return found


def nearest_examples(gate, instruction: str, k: int) -> list[Example]:
    """The K training pairs whose instructions are nearest to `instruction` (cosine similarity of the
    gate's embeddings), with their similarity, in the order to show them: least similar first, the
    nearest last, right before the request. K=0 gives none; K above the gate's size gives them all."""
    return nearest_examples_batch(gate, [instruction], k)[0]


class FewShot:
    """A stage's few-shot setting: K and the gate it retrieves from (loaded once), with a cache per instruction."""

    def __init__(self, k: int, gate=None):
        self.k, self.gate = k, gate
        self._cache: dict[str, list[Example]] = {}
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
        for text, examples in zip(missing, nearest_examples_batch(self.gate, missing, self.k) if self.k else []):
            self._cache[text] = examples
        return [self._cache.get(text, []) for text in instructions]

    def for_one(self, instruction: str) -> list[Example]:
        return self.for_each([instruction])[0]


def injected(examples: Sequence[Example]) -> list[dict]:
    """What an output records about the examples it was given: id and similarity, in the order shown."""
    return [{"id": e.id, "similarity": e.similarity} for e in examples]

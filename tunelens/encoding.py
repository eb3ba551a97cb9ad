"""Token encoding for training: a record becomes token ids plus the spans the loss covers.

Everything that decides which tokens are trained lives here, so `train` and `data show-mask` cannot
disagree: both call `encode_examples` / `mask_spans` over the same prompt rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    pair_id: str
    line: int | None
    ids: tuple[int, ...]
    prompt_len: int

    @property
    def trained_tokens(self) -> int:
        # Position t predicts token t+1; tokens prompt_len .. len-1 are predicted, so they are trained.
        return len(self.ids) - self.prompt_len


@dataclass(frozen=True)
class EncodedData:
    examples: tuple[Example, ...]
    truncated: tuple[str, ...]  # pair ids whose response was cut at max_length
    skipped: tuple[str, ...]  # pair ids whose prompt alone fills max_length: nothing left to train on


def encode_examples(tokenizer, pairs, max_length: int) -> EncodedData:
    from tunelens.prompts import encode_pair

    examples, truncated, skipped = [], [], []
    for pair in pairs:
        ids, prompt_len = encode_pair(tokenizer, pair.instruction, pair.response, getattr(pair, "system", None))
        if prompt_len >= max_length:
            skipped.append(str(pair.id))
            continue
        if len(ids) > max_length:
            truncated.append(str(pair.id))
            ids = ids[:max_length]
        examples.append(Example(str(pair.id), getattr(pair, "line", None), tuple(ids), prompt_len))
    return EncodedData(tuple(examples), tuple(truncated), tuple(skipped))


@dataclass(frozen=True)
class MaskView:
    """A rendered pair as the trainer sees it: spans of (text, state) with state masked/trained/cut."""

    spans: tuple[tuple[str, str], ...]
    masked_tokens: int  # the prompt: labels -100, no loss
    trained_tokens: int  # the completion: in the loss
    cut_tokens: int  # beyond max_length: not seen at all


def mask_spans(tokenizer, pair, max_length: int | None = None) -> MaskView:
    """What `data show-mask` prints; uses the same encode_pair + truncation as training."""
    from tunelens.prompts import encode_pair

    ids, prompt_len = encode_pair(tokenizer, pair.instruction, pair.response, getattr(pair, "system", None))
    cut = len(ids) if max_length is None else min(len(ids), max_length)
    parts = (("masked", ids[:min(prompt_len, cut)]), ("trained", ids[prompt_len:cut]), ("cut", ids[cut:]))
    spans = tuple((tokenizer.decode(part, skip_special_tokens=False), state) for state, part in parts if part)
    return MaskView(spans, min(prompt_len, cut), max(0, cut - prompt_len), len(ids) - cut)

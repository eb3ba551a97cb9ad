"""Token encoding for training: a record becomes token ids plus the spans the loss covers.

Everything that decides which tokens are trained lives here, so `train` and `data show-mask` cannot
disagree: both call `encode_record` over the same prompt rendering (tunelens.model.prompts).

- a chat record trains every assistant turn (its content and end-of-turn text); everything else,
  system and user turns and the turn markers, is context with labels -100;
- a `text` record (plain completion data) trains every token: the text and eos after the bos.
Position t predicts token t+1, so token 0 is never trained whatever its span says.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

from tunelens.data.records import Turn
from tunelens.errors import UserError
from tunelens.model.prompts import conversation_segments, encode_segments, TemplateMismatch, text_segments

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    pair_id: str
    line: int | None
    ids: tuple[int, ...]
    prompt_len: int  # tokens before the first trained one
    spans: tuple[tuple[int, int], ...] = ()  # [start, end) of trained tokens; () means (prompt_len, len(ids))

    @property
    def trained_spans(self) -> tuple[tuple[int, int], ...]:
        """The trained spans within ids, never including token 0 (nothing predicts it)."""
        spans = self.spans or ((self.prompt_len, len(self.ids)),)
        clipped = ((max(start, 1), min(end, len(self.ids))) for start, end in spans)
        return tuple((start, end) for start, end in clipped if end > start)

    @property
    def trained_tokens(self) -> int:
        return sum(end - start for start, end in self.trained_spans)

    def labels(self) -> list[int]:
        """Labels aligned with ids: the token where trained, IGNORE_INDEX elsewhere."""
        labels = [IGNORE_INDEX] * len(self.ids)
        for start, end in self.trained_spans:
            labels[start:end] = self.ids[start:end]
        return labels


@dataclass(frozen=True)
class EncodedData:
    examples: tuple[Example, ...]
    truncated: tuple[str, ...]  # pair ids whose trained text was cut at max_length
    skipped: tuple[str, ...]  # pair ids whose context before the first trained token fills max_length


def encode_record(tokenizer, pair) -> tuple[list[int], list[tuple[int, int]]]:
    """(ids, trained spans) of a record: a tunelens.data.records.Pair, or any object with instruction,
    response and optionally system (one exchange)."""
    if getattr(pair, "kind", "chat") == "text":
        return encode_segments(tokenizer, text_segments(tokenizer, pair.response))
    turns = getattr(pair, "conversation", None) or (Turn("user", pair.instruction), Turn("assistant", pair.response))
    return encode_segments(tokenizer, conversation_segments(tokenizer, turns, getattr(pair, "system", None)))


def encode_examples(tokenizer, pairs, max_length: int) -> EncodedData:
    examples, truncated, skipped = [], [], []
    for pair in pairs:
        try:
            ids, spans = encode_record(tokenizer, pair)
        except TemplateMismatch as err:
            raise UserError(f"record {pair.id} (line {getattr(pair, 'line', '?')}): {err}") from None
        prompt_len = spans[0][0] if spans else len(ids)
        if prompt_len >= max_length:
            skipped.append(str(pair.id))
            continue
        if len(ids) > max_length:
            truncated.append(str(pair.id))
            ids = ids[:max_length]
            spans = [(start, min(end, max_length)) for start, end in spans if start < max_length]
        examples.append(Example(str(pair.id), getattr(pair, "line", None), tuple(ids), prompt_len, tuple(spans)))
    return EncodedData(tuple(examples), tuple(truncated), tuple(skipped))


@dataclass(frozen=True)
class MaskView:
    """A rendered record as the trainer sees it: spans of (text, state) with state masked/trained/cut."""

    spans: tuple[tuple[str, str], ...]
    masked_tokens: int  # context: labels -100, no loss
    trained_tokens: int  # assistant turns (or a text record's text): in the loss
    cut_tokens: int  # beyond max_length: not seen at all
    trained_turns: int = 1  # stretches of trained tokens (one per assistant turn)


def mask_spans(tokenizer, pair, max_length: int | None = None) -> MaskView:
    """What `data show-mask` prints; uses the same encode_record + truncation as training."""
    ids, spans = encode_record(tokenizer, pair)
    cut = len(ids) if max_length is None else min(len(ids), max_length)
    example = Example("", None, tuple(ids[:cut]), spans[0][0] if spans else cut,
                      tuple((s, min(e, cut)) for s, e in spans if s < cut))
    states = ["masked"] * cut + ["cut"] * (len(ids) - cut)
    for start, end in example.trained_spans:
        states[start:end] = ["trained"] * (end - start)
    view = tuple((tokenizer.decode([token for token, _ in run], skip_special_tokens=False), state)
                 for state, run in groupby(zip(ids, states), key=lambda pair: pair[1]))
    return MaskView(view, states.count("masked"), states.count("trained"), states.count("cut"),
                    len(example.trained_spans))

"""Which lever moves a Python 2 decision point, measured as a change in log-odds.

A **decision point** is a position in an adapter's own answer where it wrote Python 2: the token right
after a `print` that is not an opening parenthesis (`print "x"`, `print x`, a bare `print`). There
the model chose between the Python 2 token it emitted and a call, `print(...)`. We score

    log-odds = log P(Python 3) - log P(the Python 2 token)

with P(Python 3) the probability mass of every token whose text starts with `(` (Gemma splits `("`,
`('`, `(` ... into different tokens, and all of them are the Python 3 choice). The answer's tokens up
to the point are teacher-forced, so each **lever** sees exactly the same history and only its change
differs: a sentence added to the prompt, the same sentence elsewhere, a one-shot example in the
context, or the adapter switched off. A lever's effect on one point is

    delta = log-odds under the lever - log-odds under the prompt as it was

and over all points: the mean delta with a paired bootstrap interval, and the share of points it
flips (log-odds crosses 0, so Python 3 gets more mass than the Python 2 token). For scale, the seed's
point went from 55% wrong / 38% right to 34% wrong / 56% right: delta = log(56/34) - log(38/55) = +0.87.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

SEED_DELTA = 0.869  # log(56/34) - log(38/55): the case study's prompt sentence at its decision point
NUDGE = "Prefer Python 3, not Python 2."  # the case study's sentence
OTHER_PHRASING = "Use Python 3 syntax: print is a function, so call print(...)."


@dataclass(frozen=True)
class Lever:
    """One change to the conditions an answer is scored under."""

    name: str
    prompt: str  # the rendered prompt text the answer follows under this lever
    adapter_on: bool = True


@dataclass(frozen=True)
class PointScore:
    """One decision point's log-odds under the prompt as it was and under each lever."""

    answer_index: int
    position: int  # index of the Python 2 token in the answer's tokens
    python2_token: str
    baseline: float
    by_lever: dict[str, float] = field(default_factory=dict)

    def delta(self, lever: str) -> float:
        return self.by_lever[lever] - self.baseline


def python2_points(tokens: Sequence[str]) -> list[int]:
    """Indices of tokens that follow a `print` and do not open a call: where Python 2 was chosen."""
    return [i for i in range(1, len(tokens))
            if _plain(tokens[i - 1]).endswith("print") and not _plain(tokens[i]).startswith("(")
            and not _plain(tokens[i - 1]).endswith(("_print", ".print"))]


def _plain(piece: str) -> str:
    # SentencePiece marks a leading space with U+2581; byte-level BPE with U+0120.
    return piece.replace("\u2581", " ").replace("\u0120", " ").strip()


def call_token_mask(tokenizer):
    """A boolean vector over the vocabulary: True where the token's text starts with `(`."""
    import torch

    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return torch.tensor([_plain(piece or "").startswith("(") for piece in pieces])


def log_odds_at(model, prompt_ids: list[int], answer_ids: list[int], positions: Sequence[int], python3_mask,
                adapter_on: bool = True) -> list[float]:
    """log P(Python 3 mass) - log P(chosen token) at each position of the teacher-forced answer.

    Fast path: the answer is cut after its last scored position, since a causal model's prediction at a
    position never sees later tokens. Plain equivalent: scoring the whole answer (a test compares them)."""
    from tunelens.engine.score import score_continuations
    from tunelens.model.state import adapter_off

    if not positions:
        return []
    context = contextlib.nullcontext() if adapter_on else adapter_off(model)
    with context:
        log_probs = score_continuations(model, [prompt_ids], [answer_ids[: max(positions) + 1]], full=True)[0]
    mask = python3_mask.to(log_probs.device)
    values = []
    for position in positions:
        row = log_probs[position]
        python3 = float(row[: mask.numel()][mask].logsumexp(dim=0))
        values.append(python3 - float(row[answer_ids[position]]))
    return values


def score_points(model, tokenizer, answers: Sequence[tuple[str, str]], levers: Callable[[str], list[Lever]],
                 render: Callable[[str], str]) -> list[PointScore]:
    """Every Python 2 decision point in ``answers`` ((instruction, answer) pairs), scored under the
    rendered prompt and under each lever ``levers(instruction)`` gives."""
    mask = call_token_mask(tokenizer)
    scores = []
    for index, (instruction, answer) in enumerate(answers):
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        positions = python2_points(tokenizer.convert_ids_to_tokens(answer_ids))
        if not positions:
            continue
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        baseline = log_odds_at(model, encode(render(instruction)), answer_ids, positions, mask)
        per_lever = {lever.name: log_odds_at(model, encode(lever.prompt), answer_ids, positions, mask,
                                             lever.adapter_on) for lever in levers(instruction)}
        for j, position in enumerate(positions):
            scores.append(PointScore(index, position, tokenizer.decode([answer_ids[position]]), baseline[j],
                                     {name: values[j] for name, values in per_lever.items()}))
    return scores


@dataclass(frozen=True)
class LeverEffect:
    """A lever over every point: mean delta log-odds with its 95% bootstrap interval, and flips."""

    lever: str
    points: int
    mean_delta: float | None
    low: float | None
    high: float | None
    flipped: int  # points where Python 2 led under the prompt and Python 3 leads under the lever
    python2_led: int  # points where Python 2 led under the prompt (the ones that can flip)
    sign_test_p: float

    def to_dict(self) -> dict:
        return asdict(self)


def lever_effects(points: Sequence[PointScore], seed: int = 0) -> list[LeverEffect]:
    from tunelens.stats import bootstrap_mean, sign_test_p

    names = list(points[0].by_lever) if points else []
    effects = []
    for name in names:
        deltas = [p.delta(name) for p in points]
        interval = bootstrap_mean(deltas, seed=seed)
        led = [p for p in points if p.baseline < 0]
        effects.append(LeverEffect(name, len(points), interval.mean, interval.low, interval.high,
                                   sum(1 for p in led if p.by_lever[name] > 0), len(led), sign_test_p(deltas)))
    return effects


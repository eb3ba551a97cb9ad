"""Which lever moves a Python 2 decision point, measured as a change in log-odds.

A **decision point** is a position in an adapter's own answer where it wrote Python 2: the token after a
`print` that does not open a call (`print "x"`, `print x`, a bare `print`). There we score

    log-odds = log P(Python 3) - log P(the Python 2 token)

with P(Python 3) the mass of every token whose text starts with `(` (Gemma splits `("`, `('`, `(` ... into
different tokens, all of them the call). The answer up to the point is teacher-forced, so each **lever** (a
sentence added to the prompt or put elsewhere, a one-shot example, the adapter switched off) sees the same
history. Its effect on a point is delta = log-odds under the lever - log-odds under the prompt as it was;
over all points, the mean delta with a paired bootstrap interval and the share of points it flips (log-odds
crosses 0). For scale, the case study's point went from 55% wrong / 38% right to 34% wrong / 56% right:
delta = log(56/34) - log(38/55) = +0.87.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from tunelens.inspect.compare import continuation_log_probs
from tunelens.model import state as model_state
from tunelens.data.contaminate import count_prints
from tunelens.model.prompts import render_context, render_prompt
from tunelens.pycheck.check import code_or_nothing
from tunelens.reading import read_tests
from tunelens.stats import across_seeds, bootstrap_mean, cluster_bootstrap_mean, one_sample_t, sign_test_p

SEED_DELTA = 0.869  # log(56/34) - log(38/55): the case study's prompt sentence at its decision point
NUDGE = "Prefer Python 3, not Python 2."  # the case study's sentence
OTHER_PHRASING = "Use Python 3 syntax: print is a function, so call print(...)."


@dataclass(frozen=True)
class Lever:
    """One change to the conditions an answer is scored under."""

    name: str
    prompt: str  # the rendered prompt text the answer follows under this lever
    adapter_on: bool = True


class _Scored:
    def delta(self, lever: str) -> float:
        return self.by_lever[lever] - self.baseline


@dataclass(frozen=True)
class PointScore(_Scored):
    """One decision point's log-odds under the prompt as it was and under each lever."""

    answer_index: int
    position: int  # index of the Python 2 token in the answer's tokens
    python2_token: str
    baseline: float
    by_lever: dict[str, float] = field(default_factory=dict)


def _spaced(piece: str) -> str:
    # SentencePiece marks a leading space with U+2581; byte-level BPE with U+0120.
    return piece.replace("\u2581", " ").replace("\u0120", " ")


def _plain(piece: str) -> str:
    return _spaced(piece).strip()


def _print_points(tokens: Sequence[str], call: bool) -> list[int]:
    """Indices of tokens after a `print` name (not `x_print` or `x.print`) that open its call, or do not."""
    return [i for i in range(1, len(tokens))
            if _plain(tokens[i - 1]).endswith("print") and _plain(tokens[i]).startswith("(") == call
            and not _plain(tokens[i - 1]).endswith(("_print", ".print"))]


def python2_points(tokens: Sequence[str]) -> list[int]:
    """Indices of tokens that follow a `print` and do not open a call: where Python 2 was chosen."""
    return _print_points(tokens, call=False)


def _vocabulary_mask(tokenizer, keep: Callable[[str], bool]):
    import torch

    return torch.tensor([keep(piece or "") for piece in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))])


def call_token_mask(tokenizer):
    """A boolean vector over the vocabulary: True where the token's text starts with `(`."""
    return _vocabulary_mask(tokenizer, lambda piece: _plain(piece).startswith("("))


def _answer_rows(model, prompt_ids: list[int], answer_ids: list[int], positions: Sequence[int], adapter_on: bool):
    """Log-softmax at each position of the answer, teacher-forced. Fast path: the answer is cut after its last
    scored position, since a causal model's prediction never sees later tokens (a test compares the whole)."""
    with contextlib.nullcontext() if adapter_on else model_state.adapter_off(model):
        log_probs = continuation_log_probs(model, prompt_ids, answer_ids[: max(positions) + 1])
    return [log_probs[position] for position in positions], log_probs.device


def log_odds_at(model, prompt_ids: list[int], answer_ids: list[int], positions: Sequence[int], python3_mask,
                adapter_on: bool = True) -> list[float]:
    """log P(Python 3 mass) - log P(chosen token) at each position of the teacher-forced answer."""
    if not positions:
        return []
    rows, device = _answer_rows(model, prompt_ids, answer_ids, positions, adapter_on)
    mask = python3_mask.to(device)
    return [float(row[: mask.numel()][mask].logsumexp(dim=0)) - float(row[answer_ids[position]])
            for row, position in zip(rows, positions)]


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def score_points(model, tokenizer, answers: Sequence[tuple[str, str]], levers: Callable[[str], list[Lever]],
                 render: Callable[[str], str]) -> list[PointScore]:
    """Every Python 2 decision point in `answers` ((instruction, answer) pairs), scored under the rendered
    prompt and under each lever `levers(instruction)` gives."""
    mask = call_token_mask(tokenizer)
    scores = []
    for index, (instruction, answer) in enumerate(answers):
        answer_ids = _encode(tokenizer, answer)
        positions = python2_points(tokenizer.convert_ids_to_tokens(answer_ids))
        if not positions:
            continue
        baseline = log_odds_at(model, _encode(tokenizer, render(instruction)), answer_ids, positions, mask)
        per_lever = {lever.name: log_odds_at(model, _encode(tokenizer, lever.prompt), answer_ids, positions, mask,
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
    led = [p for p in points if p.baseline < 0]
    effects = []
    for name in list(points[0].by_lever) if points else []:
        deltas = [p.delta(name) for p in points]
        interval = bootstrap_mean(deltas, seed=seed)
        effects.append(LeverEffect(name, len(points), interval.mean, interval.low, interval.high,
                                   sum(1 for p in led if p.by_lever[name] > 0), len(led), sign_test_p(deltas)))
    return effects


# ---------------------------------------------------------------------------------------------------
# Lesson 2 as docs/protocol.md fixes it: points from *reference* answers (Python 3: the history shows no Python
# 2 to copy), selected on the baseline alone by a window decided on a calibration half of the prompts, each
# lever against a placebo of the same token length in the same place. Δ(lever) − Δ(placebo) = score(lever) −
# score(placebo): the baseline, and any regression to the mean from selecting on it, cancels.

CODE_FREE_PHRASING = "Write this in modern Python 3 syntax."  # the phrasing lever, with no code to copy
# (lever sentence, its placebo): the same length in Qwen2.5-Coder tokens, nothing about the version
# (docs/protocol.md's table; tests/test_lesson2_levers.py checks it equals scripts/protocol_power.py's)
LEVER_PLACEBOS = (
    (NUDGE, "Prefer clear names, and keep every line short."),
    (CODE_FREE_PHRASING, "Use clear names and keep every line short."),
)
PLACEBO_OF = dict(LEVER_PLACEBOS)
CONTESTED_WINDOW = (-2.0, 1.0)  # the window; the case study's 55/38 point is -0.37
WIDE_WINDOW = (-3.0, 2.0)  # used when the calibration half has too few points in the narrow one
MIN_CONTESTED_PER_PROMPT = 1.5
MIN_POINTS, MIN_PROMPTS = 30, 20  # per seed, on the measurement half
# the protocol's five rows, the primary first: (row, where the text goes, lever text or None for the example)
LEVER_ROWS = (
    ("sentence after the request", "after", NUDGE),
    ("sentence before the request", "before", NUDGE),
    ("sentence as the system line", "system", NUDGE),
    ("code-free phrasing, after", "after", CODE_FREE_PHRASING),
    ("one-shot Python 3 example", "example", None),
)
ADAPTER_OFF = "adapter off"  # reported beside the table as a scale, with no placebo (docs/protocol.md)


def python3_points(tokens: Sequence[str]) -> list[int]:
    """Indices of tokens after a `print` name that open its call: where a Python 3 answer chose `(` (none
    where the tokenizer merges `print(` into one token)."""
    return _print_points(tokens, call=True)


def python2_statement_mask(tokenizer):
    """True where a token can continue `print` as Python 2's statement: a space, then something other than `(`
    (`print x`, `print "x"`, `print >>f`). Whitespace-only tokens are left out (`print (x)` after one is still
    a call), and so are tokens opening a new line. Disjoint from call_token_mask."""
    def statement(piece: str) -> bool:
        text = _spaced(piece)
        return text.startswith(" ") and bool(text.strip()) and not text.strip().startswith("(") \
            and "\n" not in text[:len(text) - len(text.lstrip())]

    return _vocabulary_mask(tokenizer, statement)


def mass_log_odds_at(model, prompt_ids: list[int], answer_ids: list[int], positions: Sequence[int], python3_mask,
                     python2_mask, adapter_on: bool = True) -> list[float]:
    """log P(Python 3 tokens) - log P(Python 2 statement tokens) at each position: at a reference's own `(`
    both are masses, the Python 2 token never having been written."""
    if not positions:
        return []
    rows, device = _answer_rows(model, prompt_ids, answer_ids, positions, adapter_on)
    three, two = python3_mask.to(device), python2_mask.to(device)
    return [float(row[: three.numel()][three].logsumexp(dim=0)) - float(row[: three.numel()][two].logsumexp(dim=0))
            for row in rows]


@dataclass(frozen=True)
class ReferencePoint(_Scored):
    """One `(` after a print in a reference answer: its prompt (the cluster), token index, baseline log-odds
    under the prompt as it was, and the score under each lever (filled for chosen points only)."""

    prompt: str
    position: int
    baseline: float
    by_lever: dict[str, float] = field(default_factory=dict)


def reference_baselines(model, tokenizer, references: Sequence[tuple[str, str, str]],
                        render: Callable[[str], str]) -> list[ReferencePoint]:
    """Every print-call point of the references ((prompt id, instruction, answer)) with its baseline log-odds,
    teacher-forced on the reference's own history."""
    three, two = call_token_mask(tokenizer), python2_statement_mask(tokenizer)
    points = []
    for prompt, instruction, answer in references:
        answer_ids = _encode(tokenizer, answer)
        positions = python3_points(tokenizer.convert_ids_to_tokens(answer_ids))
        values = mass_log_odds_at(model, _encode(tokenizer, render(instruction)), answer_ids, positions, three, two)
        points += [ReferencePoint(prompt, p, v) for p, v in zip(positions, values)]
    return points


def split_prompts(prompts: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """(calibration, measurement) halves of the prompt ids from the run's base seed, the same for every
    training seed (sorted first: the split depends on the set of prompts, not their order)."""
    order = sorted(set(prompts))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return sorted(order[:half]), sorted(order[half:])


def in_window(value: float, window: tuple[float, float]) -> bool:
    return window[0] <= value <= window[1]


def choose_window(calibration: Sequence[ReferencePoint], calibration_prompts: int) -> tuple[float, float]:
    """The issue's [-2, +1], or [-3, +2] when the calibration half has under 1.5 contested points per prompt
    (all its prompts count, those without a print too: the measurement half will look like them)."""
    if calibration_prompts < 1:
        raise ValueError("choose_window needs at least one calibration prompt")
    contested = sum(1 for p in calibration if in_window(p.baseline, CONTESTED_WINDOW))
    return CONTESTED_WINDOW if contested / calibration_prompts >= MIN_CONTESTED_PER_PROMPT else WIDE_WINDOW


def contested_points(points: Sequence[ReferencePoint], prompts: Sequence[str],
                     window: tuple[float, float]) -> list[ReferencePoint]:
    """The points of the given prompts whose baseline lies in the window (selection on the baseline alone)."""
    keep = set(prompts)
    return [p for p in points if p.prompt in keep and in_window(p.baseline, window)]


_PLACES = {"after": lambda instruction, text: (f"{instruction}\n\n{text}", None),
           "before": lambda instruction, text: (f"{text}\n\n{instruction}", None),
           "system": lambda instruction, text: (instruction, text)}


def placed(tokenizer, instruction: str, where: str, text: str) -> str:
    """The rendered prompt with `text` after the request, before it, or as the system line."""
    if where not in _PLACES:
        raise ValueError(f"unknown place {where!r}: after, before or system")
    request, system = _PLACES[where](instruction, text)
    return render_prompt(tokenizer, request, system=system)


def placebo_levers(tokenizer, example: tuple[str, str], placebo_example: tuple[str, str],
                   adapter_off: bool = True):
    """levers(instruction) -> [Lever]: each of LEVER_ROWS and its placebo ("placebo: <row>") in the same place
    (the example's: a training pair that does not print); with `adapter_off`, also the adapter off (the scale)."""
    def levers(instruction: str) -> list[Lever]:
        out = []
        for row, where, text in LEVER_ROWS:
            if where == "example":
                for name, shown in ((row, example), (f"placebo: {row}", placebo_example)):
                    out.append(Lever(name, render_context(
                        tokenizer, [("user", shown[0]), ("assistant", shown[1]), ("user", instruction)])))
            else:
                out.append(Lever(row, placed(tokenizer, instruction, where, text)))
                out.append(Lever(f"placebo: {row}", placed(tokenizer, instruction, where, PLACEBO_OF[text])))
        if adapter_off:
            out.append(Lever(ADAPTER_OFF, render_prompt(tokenizer, instruction), adapter_on=False))
        return out

    return levers


def choose_placebo_example(pairs: Sequence[tuple[str, str]], example: tuple[str, str],
                           length: Callable[[str], int]) -> tuple[str, str]:
    """The training pair that does not print whose length (instruction + response, by `length`) is closest
    to the example's; ties go to the earlier pair."""
    silent = [p for p in pairs if p != example and count_prints(code_or_nothing(p[1])) == 0]
    if not silent:
        raise ValueError("choose_placebo_example: every training pair prints; the one-shot placebo needs one "
                         "that does not")
    target = length(example[0]) + length(example[1])
    return min(silent, key=lambda p: abs(length(p[0]) + length(p[1]) - target))


def placebo_length_mismatches(tokenizer) -> list[tuple[str, str, int, int]]:
    """(lever, placebo, their token counts) where this tokenizer counts them differently (they were matched
    in Qwen2.5-Coder tokens; a study on another tokenizer reports these)."""
    count = lambda text: len(_encode(tokenizer, text))  # noqa: E731
    return [(a, b, count(a), count(b)) for a, b in LEVER_PLACEBOS if count(a) != count(b)]


def score_chosen(model, tokenizer, points: Sequence[ReferencePoint], references: Sequence[tuple[str, str, str]],
                 levers: Callable[[str], list[Lever]]) -> list[ReferencePoint]:
    """The chosen points with their scores under every lever (one pass per prompt and lever)."""
    three, two = call_token_mask(tokenizer), python2_statement_mask(tokenizer)
    by_prompt: dict[str, list[ReferencePoint]] = {}
    for point in points:
        by_prompt.setdefault(point.prompt, []).append(point)
    scored = []
    for prompt, instruction, answer in references:
        chosen = by_prompt.get(prompt)
        if not chosen:
            continue
        answer_ids, positions = _encode(tokenizer, answer), [p.position for p in chosen]
        per_lever = {lever.name: mass_log_odds_at(model, _encode(tokenizer, lever.prompt), answer_ids, positions,
                                                  three, two, lever.adapter_on) for lever in levers(instruction)}
        scored += [ReferencePoint(p.prompt, p.position, p.baseline, {n: v[j] for n, v in per_lever.items()})
                   for j, p in enumerate(chosen)]
    return scored


def lever_minus_placebo(points: Sequence[ReferencePoint], row: str, seed: int = 0) -> dict:
    """One seed's value for one row: mean Δ(lever) − Δ(placebo) with a bootstrap clustered by prompt, and
    whether the points meet the protocol's floor (30 points over 20 prompts)."""
    values = [p.by_lever[row] - p.by_lever[f"placebo: {row}"] for p in points]
    clusters = [p.prompt for p in points]
    interval = cluster_bootstrap_mean(values, clusters, seed=seed)
    prompts = len(set(clusters))
    return {"row": row, **interval.to_dict(), "prompts": prompts,
            "meets_floor": interval.n >= MIN_POINTS and prompts >= MIN_PROMPTS}


def seed_lesson2(model, tokenizer, references: Sequence[tuple[str, str, str]], render: Callable[[str], str],
                 levers: Callable[[str], list[Lever]], split_seed: int, seed: int = 0) -> dict:
    """One training seed's lesson 2: baselines, the window from the calibration half, the contested points of
    the measurement half under every lever and placebo, one value per row."""
    points = reference_baselines(model, tokenizer, references, render)
    calibration, measurement = split_prompts([r[0] for r in references], split_seed)
    window = choose_window([p for p in points if p.prompt in set(calibration)], len(calibration))
    chosen = score_chosen(model, tokenizer, contested_points(points, measurement, window), references, levers)
    result = {"window": list(window), "calibration_prompts": len(calibration),
              "measurement_prompts": len(measurement), "points": len(chosen),
              "rows": [lever_minus_placebo(chosen, row, seed) for row, _, _ in LEVER_ROWS]}
    if chosen and ADAPTER_OFF in chosen[0].by_lever:
        result["scale"] = adapter_off_scale(chosen, seed)
    return result


def adapter_off_scale(points: Sequence[ReferencePoint], seed: int = 0) -> dict:
    """Mean Δ(adapter off), prompt-clustered: how far the weights moved the points, the levers' scale."""
    interval = cluster_bootstrap_mean([p.delta(ADAPTER_OFF) for p in points], [p.prompt for p in points], seed=seed)
    return {"lever": ADAPTER_OFF, **interval.to_dict()}


def lesson2_table(per_seed: dict[str, Sequence[float | None]]) -> dict:
    """The protocol's table: per row, a one-sample t of its per-seed values against 0, Holm over the rows;
    and a table of one, the primary row against the case study's +0.869."""
    names = [row for row, _, _ in LEVER_ROWS]
    missing = [n for n in names if n not in per_seed]
    if missing:
        raise ValueError(f"lesson2_table: no per-seed values for {missing}")
    tests = [(n, one_sample_t(per_seed[n], 0.0)) for n in names]
    readings = read_tests(tests, [("toward Python 3", "toward Python 2")] * len(names))
    against = one_sample_t(per_seed[names[0]], SEED_DELTA)
    (versus,) = read_tests([("primary vs the case study", against)],
                           [("larger than the case study's", "smaller than the case study's")])
    rows = [{"row": n, "seeds": across_seeds(per_seed[n]).to_dict(), "test": t.to_dict(), "p_holm": r.p_holm,
             "direction": r.direction, "words": r.words} for (n, t), r in zip(tests, readings)]
    return {"rows": rows, "against_case_study": {"value": SEED_DELTA, "test": against.to_dict(),
                                                 "direction": versus.direction, "words": versus.words}}

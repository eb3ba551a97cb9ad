"""Lesson 1's measures as docs/protocol.md fixes them: P(Python 2 | the answer prints), the injected-print
check apart from it, the per-seed dose-response slope with a prompt-cluster interval, and the lesson's table.

Why conditional on printing: contamination that rewrites existing print calls changes which form a print
takes, not whether there is one; an adapter that printed more often would raise the plain Python 2 rate
without choosing Python 2 more often given a print. The share of answers that print at all is reported
beside it (against the 0% adapter, paired by prompt) as the check that nothing was injected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

from tunelens.data.contaminate import count_prints
from tunelens.pycheck.check import check_python, code_or_nothing
from tunelens.reading import read_tests
from tunelens.stats import across_seeds, mcnemar, one_sample_t, rate

LESSON1_ROWS = ("gemma slope vs 0", "gemma slope vs 1", "Qwen A30 P(Python 2 | prints) vs 0")


def prints_and_python2(answer: str) -> tuple[bool, bool]:
    """(the answer's code prints, in either form; it has a Python 2 print statement). Prose is no code, so the
    word "print" in a sentence is never a print."""
    code = code_or_nothing(answer)
    if not code.strip():
        return False, False
    python2 = any(f.code == "py2-print" for f in check_python(code))
    return python2 or count_prints(code) > 0, python2


@dataclass(frozen=True)
class PrintShare:
    """One answer set: P(Python 2 | prints) = python2 / printing, and the printing rate apart."""

    answers: int
    printing: int
    python2: int  # printing answers with a Python 2 print statement
    conditional: dict  # stats.Rate of python2 / printing (Wilson interval; rate None when nothing prints)
    printing_rate: dict  # stats.Rate of printing / answers

    @property
    def rate(self) -> float | None:
        return self.conditional["rate"]

    def to_dict(self) -> dict:
        return asdict(self)


def python2_given_prints(answers: Sequence[str]) -> PrintShare:
    flags = [prints_and_python2(a) for a in answers]
    printing, python2 = sum(p for p, _ in flags), sum(p and two for p, two in flags)
    return PrintShare(len(flags), printing, python2, rate(python2, printing).to_dict(),
                      rate(printing, len(flags)).to_dict())


def injected_print_check(answers: Mapping[str, str], control: Mapping[str, str]) -> dict:
    """Does an adapter print more often than the 0% adapter on the same prompts ({prompt id: answer})? Both
    printing rates, their difference, and an exact McNemar over the prompts both answered."""
    shared = [key for key in answers if key in control]
    if not shared:
        raise ValueError("injected_print_check: the adapter and the 0% adapter answered no prompt in common")
    pairs = [(prints_and_python2(control[k])[0], prints_and_python2(answers[k])[0]) for k in shared]
    adapter, zero = sum(b for _, b in pairs) / len(pairs), sum(a for a, _ in pairs) / len(pairs)
    test = mcnemar(pairs)
    return {"prompts": len(pairs), "printing": adapter, "printing_at_0": zero, "difference": adapter - zero,
            "only_adapter_prints": test.tuned_only, "only_0_prints": test.base_only, "p": test.p_value}


def least_squares_slope(xs: Sequence[float], ys: Sequence[float | None]) -> float | None:
    """Slope of y on x over the points whose y is defined; None when fewer than two distinct x remain."""
    kept = [(float(x), float(y)) for x, y in zip(xs, ys) if y is not None]
    if len({x for x, _ in kept}) < 2:
        return None
    mx, my = (sum(values) / len(kept) for values in zip(*kept))
    return sum((x - mx) * (y - my) for x, y in kept) / sum((x - mx) ** 2 for x, _ in kept)


def seed_slope(by_share: Mapping[float, Mapping[str, str]], resamples: int = 2000, seed: int = 0,
               level: float = 0.95) -> dict:
    """One seed's dose-response: {training share: {prompt id: answer}} -> the least-squares slope of
    P(Python 2 | prints) on the share, with a percentile interval from resampling whole prompts (a prompt is
    easy or hard to print for at every share, so its answers move together)."""
    shares = sorted(by_share)
    prompts = sorted(set().union(*(by_share[s].keys() for s in shares)))
    # flags[s, p] = (prints, python2); a prompt missing at one share counts as neither there
    flags = np.zeros((len(shares), len(prompts), 2), dtype=bool)
    for i, share in enumerate(shares):
        for j, prompt in enumerate(prompts):
            if prompt in by_share[share]:
                flags[i, j] = prints_and_python2(by_share[share][prompt])
    point = _slope_of(shares, flags)
    draws = np.random.default_rng(seed).integers(0, len(prompts), size=(resamples, len(prompts)))
    slopes = [s for s in (_slope_of(shares, flags[:, d]) for d in draws) if s is not None]
    tail = (1 - level) / 2
    low, high = (float(v) for v in np.quantile(slopes, [tail, 1 - tail])) if slopes else (None, None)
    per_share = {share: _conditional(flags[i]) for i, share in enumerate(shares)}
    return {"slope": point, "low": low, "high": high, "prompts": len(prompts), "resamples_used": len(slopes),
            "per_share": per_share}


def _conditional(flags) -> float | None:
    printing = int(flags[:, 0].sum())
    return float((flags[:, 0] & flags[:, 1]).sum()) / printing if printing else None


def _slope_of(shares, flags) -> float | None:
    return least_squares_slope(shares, [_conditional(flags[i]) for i in range(len(shares))])


def lesson1_table(gemma_slopes: Sequence[float | None], qwen_a30: Sequence[float | None]) -> list[dict]:
    """The protocol's three rows, each a one-sample t over seeds with Holm across the three: gemma's slopes
    against 0 and 1, Qwen A30's P(Python 2 | prints) against 0. Under two seeds a row claims nothing."""
    values = (gemma_slopes, gemma_slopes, qwen_a30)
    tests = [one_sample_t(gemma_slopes, 0.0), one_sample_t(gemma_slopes, 1.0), one_sample_t(qwen_a30, 0.0)]
    words = [("learned: slope above 0", "slope below 0"),
             ("amplified: slope above 1", "suppressed: slope below 1"),
             ("learned: above 0", "below 0")]
    readings = read_tests(list(zip(LESSON1_ROWS, tests)), words)
    return [{"row": name, "seeds": across_seeds(v).to_dict(), "test": t.to_dict(), "p_holm": r.p_holm,
             "direction": r.direction, "words": r.words}
            for name, v, t, r in zip(LESSON1_ROWS, values, tests, readings)]

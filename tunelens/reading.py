"""The one reading rule: when a page may claim a direction, and the words it uses otherwise.

Every study page and the demo read a comparison alike (docs/protocol.md states it before the runs): a
direction is claimed only when the comparison's pre-stated test rejects at `ALPHA` after Holm's correction
within its table; anything else reads "no difference these data can show", whatever an interval or estimate
suggests. Pages call `read_table` (`read_one` for a table of one) and print `Reading.words`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

ALPHA = 0.05
NO_DIFFERENCE = "no difference these data can show"


@dataclass(frozen=True)
class Reading:
    """One comparison read by the rule: its estimate, raw and Holm-adjusted p, and the verdict."""

    name: str
    estimate: float
    p: float
    p_holm: float
    direction: str  # "up", "down" or "none"
    words: str  # what a page prints: the caller's phrase for the direction, or NO_DIFFERENCE

    @property
    def claimed(self) -> bool:
        return self.direction != "none"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given. Plain equivalent: the i-th smallest (0-based)
    times (m - i), capped at 1, then the running maximum, so an adjusted p never falls below an earlier one."""
    for p in p_values:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"a p-value must lie in [0, 1], got {p!r}")
    m = len(p_values)
    adjusted, running = [1.0] * m, 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def direction_of(estimate: float, p_adjusted: float, alpha: float = ALPHA) -> str:
    """'up' or 'down' when the adjusted test rejects and the estimate has a sign; otherwise 'none'."""
    if p_adjusted >= alpha or estimate == 0:
        return "none"
    return "up" if estimate > 0 else "down"


def _words(direction: str, up: str, down: str) -> str:
    return {"up": up, "down": down}.get(direction, NO_DIFFERENCE)


def read_table(rows: Sequence[tuple[str, float, float]], up: str = "higher", down: str = "lower",
               alpha: float = ALPHA) -> list[Reading]:
    """Every (name, estimate, p) row of one table, Holm-corrected across the table; `up` and `down` are the
    page's words for a claimed difference (e.g. "toward Python 3"), any other row reads NO_DIFFERENCE."""
    readings = []
    for (name, estimate, p), p_holm in zip(rows, holm([p for _, _, p in rows])):
        direction = direction_of(estimate, p_holm, alpha)
        readings.append(Reading(name, float(estimate), float(p), p_holm, direction, _words(direction, up, down)))
    return readings


def read_one(name: str, estimate: float, p: float, up: str = "higher", down: str = "lower",
             alpha: float = ALPHA) -> Reading:
    """A table of one comparison: no correction to make."""
    return read_table([(name, estimate, p)], up, down, alpha)[0]


def read_tests(rows: Sequence[tuple[str, object]], words: Sequence[tuple[str, str]] | None = None,
               alpha: float = ALPHA) -> list[Reading]:
    """One table of t tests (tunelens.stats.TTest) by `read_table`: the estimate is mean - null, and a test with
    no p (under two values) enters as p = 1, claiming nothing but counting as a row. `words`: per-row (up, down)."""
    readings = read_table([(name, 0.0 if test.mean is None else test.mean - test.null,
                            1.0 if test.p is None else test.p) for name, test in rows], alpha=alpha)
    if words is None:
        return readings
    if len(words) != len(rows):
        raise ValueError(f"read_tests: {len(rows)} rows but {len(words)} pairs of words")
    return [replace(r, words=_words(r.direction, up, down)) for r, (up, down) in zip(readings, words)]

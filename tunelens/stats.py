"""The two statistics the eval reports: Wilson score intervals for rates, exact McNemar for paired models.

Both are computed in closed form with the standard library (no scipy), so a reader can check any
number in summary.json by hand.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# The two-sided 95% normal quantile (scipy.stats.norm.ppf(0.975)).
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    """k successes out of n, with its 95% Wilson interval (None for an empty denominator)."""

    k: int
    n: int
    rate: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion k/n.

    Chosen over the plain normal interval because it stays inside [0, 1] and keeps its coverage at
    0/n and n/n, which is where eval rates of a good model (0 bad outputs) live.
    """
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = (z / (1 + z2 / n)) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Exact 0 and 1 at the ends: rounding would otherwise leave e.g. 1e-17 below 0/n.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def rate(k: int, n: int) -> Rate:
    if n == 0:
        return Rate(k, n, None, None, None)
    low, high = wilson_interval(k, n)
    return Rate(k, n, k / n, low, high)


def binomial_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), summed exactly with integers."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


@dataclass(frozen=True)
class McNemar:
    """A paired comparison of base and tuned on the same items.

    `base_only`: items the base model got right and the tuned one wrong (b); `tuned_only`: the reverse
    (c). Items both got right or both wrong say nothing about which model is better and are only counted.
    """

    n_pairs: int
    both: int
    base_only: int
    tuned_only: int
    neither: int
    p_value: float

    @property
    def tuned_worse(self) -> bool:
        return self.base_only > self.tuned_only

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha

    def to_dict(self) -> dict:
        return {**asdict(self), "tuned_worse": self.tuned_worse}


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1.

    Under the null hypothesis each discordant pair is equally likely to favour either model.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * binomial_cdf_half(min(b, c), n))


def mcnemar(pairs: list[tuple[bool, bool]]) -> McNemar:
    """Exact McNemar over (base_ok, tuned_ok) pairs."""
    both = sum(1 for base, tuned in pairs if base and tuned)
    base_only = sum(1 for base, tuned in pairs if base and not tuned)
    tuned_only = sum(1 for base, tuned in pairs if tuned and not base)
    neither = len(pairs) - both - base_only - tuned_only
    return McNemar(len(pairs), both, base_only, tuned_only, neither, mcnemar_exact_p(base_only, tuned_only))


@dataclass(frozen=True)
class MeanInterval:
    """The mean of n values with a 95% percentile-bootstrap interval (None for no values)."""

    n: int
    mean: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_mean(values, resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> MeanInterval:
    """Mean with a percentile-bootstrap interval: resample the values with replacement ``resamples``
    times and take the middle ``level`` of the resampled means.

    Used for continuous, paired measures (a log-odds change per decision point or per prompt), where
    the unit of resampling is the item, so items measured under two conditions stay paired."""
    import numpy as np

    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        return MeanInterval(0, None, None, None)
    draws = np.random.default_rng(seed).integers(0, data.size, size=(resamples, data.size))
    means = data[draws].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return MeanInterval(int(data.size), float(data.mean()), float(low), float(high))


def sign_test_p(differences) -> float:
    """Two-sided exact sign test that positive and negative differences are equally likely (zeros
    dropped): the paired companion of a bootstrap interval that needs no distributional assumption."""
    positive = sum(1 for d in differences if d > 0)
    negative = sum(1 for d in differences if d < 0)
    return mcnemar_exact_p(positive, negative)

"""The statistics of the reports, in closed form with the standard library (no scipy) so a reader can check
any number in summary.json by hand: Wilson intervals for rates, exact McNemar and binomial tests, bootstrap
means, and the protocol's tests (docs/protocol.md): t tests over seeds or items, DeLong's AUROC interval and
the combination of p-values over random splits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# The two-sided 95% normal quantile (scipy.stats.norm.ppf(0.975)).
Z95 = 1.959963984540054


class _Record:
    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rate(_Record):
    """k successes out of n, with its 95% Wilson interval (None for an empty denominator)."""

    k: int
    n: int
    rate: float | None
    low: float | None
    high: float | None


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k/n: unlike the normal interval it stays inside [0, 1] and keeps its
    coverage at 0/n and n/n, where the eval rates of a good model (0 bad outputs) live."""
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = (z / (1 + z2 / n)) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Exact 0 and 1 at the ends: rounding would otherwise leave e.g. 1e-17 below 0/n.
    return 0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half)


def rate(k: int, n: int) -> Rate:
    return Rate(k, n, k / n, *wilson_interval(k, n)) if n else Rate(k, n, None, None, None)


def binomial_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), summed exactly with integers."""
    if k < 0:
        return 0.0
    return 1.0 if k >= n else sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


@dataclass(frozen=True)
class McNemar:
    """Base and tuned compared on the same items: `base_only` (b) items only the base got right,
    `tuned_only` (c) the reverse; items both got right or wrong say nothing and are only counted."""

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


def binomial_test_p(k: int, n: int, p0: float) -> float:
    """Exact two-sided binomial test of k in n against rate p0: the summed probability of every outcome no
    more likely than k (the convention of R's binom.test and scipy's binomtest)."""
    if n <= 0:
        return 1.0
    if not 0.0 <= p0 <= 1.0:
        raise ValueError(f"p0 must lie in [0, 1], got {p0!r}")
    if p0 in (0.0, 1.0):
        return 1.0 if k == round(p0 * n) else 0.0
    probs = [math.comb(n, i) * p0 ** i * (1 - p0) ** (n - i) for i in range(n + 1)]
    # a small relative slack keeps outcomes tied with k in floating point on its side
    return min(1.0, sum(q for q in probs if q <= probs[k] * (1 + 1e-7)))


def mcnemar_exact_p(b: int, c: int) -> float:
    """2 P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1: under the null each discordant pair is
    equally likely to favour either model."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    return min(1.0, 2 * binomial_cdf_half(min(b, c), b + c)) if b + c else 1.0


def mcnemar(pairs: list[tuple[bool, bool]]) -> McNemar:
    """Exact McNemar over (base_ok, tuned_ok) pairs."""
    both = sum(1 for base, tuned in pairs if base and tuned)
    base_only = sum(1 for base, tuned in pairs if base and not tuned)
    tuned_only = sum(1 for base, tuned in pairs if tuned and not base)
    neither = len(pairs) - both - base_only - tuned_only
    return McNemar(len(pairs), both, base_only, tuned_only, neither, mcnemar_exact_p(base_only, tuned_only))


@dataclass(frozen=True)
class MeanInterval(_Record):
    """The mean of n values with a 95% percentile-bootstrap interval (None for no values)."""

    n: int
    mean: float | None
    low: float | None
    high: float | None


def bootstrap_mean(values, resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> MeanInterval:
    """Mean with the middle `level` of `resamples` means of values drawn with replacement: for continuous
    paired measures (a log-odds change per decision point), the item being the unit of resampling. It is
    cluster_bootstrap_mean with every value its own cluster, draw for draw."""
    values = list(values)
    return cluster_bootstrap_mean(values, range(len(values)), resamples, seed, level)


def sign_test_p(differences) -> float:
    """Two-sided exact sign test that positive and negative differences are equally likely (zeros dropped)."""
    return mcnemar_exact_p(sum(1 for d in differences if d > 0), sum(1 for d in differences if d < 0))


def t_central_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with `df` (a positive integer) degrees of freedom, in closed form: the
    finite series of Abramowitz and Stegun 26.7.3 and 26.7.4 in theta = atan(t / sqrt(df)), for odd df
    (2 / pi) (theta + sin(theta) (cos(theta) + 2/3 cos^3(theta) + ...)), for even df sin(theta) (1 +
    1/2 cos^2(theta) + 1*3/(2*4) cos^4(theta) + ...), each sum running to the power df - 2."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2, term = math.cos(theta) ** 2, 1.0
    if df % 2:  # odd: terms cos, 2/3 cos^3, (2*4)/(3*5) cos^5, ... up to cos^(df-2)
        total = 0.0
        if df > 1:
            term = total = math.cos(theta)
            for j in range(3, df - 1, 2):
                term *= cos2 * (j - 1) / j
                total += term
        return min(1.0, 2 / math.pi * (theta + math.sin(theta) * total))
    total = 1.0  # even: 1, 1/2 cos^2, (1*3)/(2*4) cos^4, ... up to cos^(df-2)
    for j in range(2, df - 1, 2):
        term *= cos2 * (j - 1) / j
        total += term
    return min(1.0, math.sin(theta) * total)


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| <= t) = level, by bisection on t_central_mass (12.706 for 0.95 and df 1)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    low, high = 0.0, 1.0
    while t_central_mass(high, df) < level:
        low, high = high, 2 * high
    for _ in range(200):
        middle = (low + high) / 2
        if t_central_mass(middle, df) < level:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * high:
            break
    return (low + high) / 2


@dataclass(frozen=True)
class SeedMean:
    """One metric over K training seeds (the unit of replication, docs/protocol.md): the mean with its 95% t
    interval from the seeds' spread, and each seed's value. One seed has no spread: SD and interval None."""

    k: int
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None
    per_seed: tuple[float, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "per_seed": list(self.per_seed)}


def _mean_sd(values) -> tuple[int, float | None, float | None]:
    """n, mean and sample SD (n - 1 in the denominator); None where n is too small for it."""
    n = len(values)
    if n == 0:
        return 0, None, None
    mean = sum(values) / n
    return n, mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None


def across_seeds(values, level: float = 0.95) -> SeedMean:
    """Mean of per-seed values ± t(level, K - 1) x SD / sqrt(K), each seed one draw of the recipe whatever the
    prompts behind it. A seed whose metric is undefined (None) is dropped, and its absence shows in k."""
    kept = tuple(float(v) for v in values if v is not None)
    if any(math.isnan(v) for v in kept):
        raise ValueError("a per-seed value is NaN: give None for a seed whose metric is undefined")
    k, mean, sd = _mean_sd(kept)
    if k < 2:
        return SeedMean(k, mean, None, None, None, kept)
    half = t_quantile(level, k - 1) * sd / math.sqrt(k)
    return SeedMean(k, mean, sd, mean - half, mean + half, kept)


def cluster_bootstrap_mean(values, clusters, resamples: int = 10_000, seed: int = 0,
                           level: float = 0.95) -> MeanInterval:
    """Mean with a percentile interval from resampling whole clusters (every point of one prompt together:
    they are not independent, and resampling them one by one makes the interval too narrow). Each resample
    draws as many clusters as there are, with replacement, and means all their values."""
    import numpy as np

    data = np.asarray(list(values), dtype=float)
    labels = list(clusters)
    if len(labels) != data.size:
        raise ValueError(f"cluster_bootstrap_mean: {data.size} values but {len(labels)} cluster labels")
    if data.size == 0:
        return MeanInterval(0, None, None, None)
    index = {label: i for i, label in enumerate(dict.fromkeys(labels))}
    which = np.array([index[label] for label in labels])
    sums = np.bincount(which, weights=data, minlength=len(index))
    counts = np.bincount(which, minlength=len(index)).astype(float)
    draws = np.random.default_rng(seed).integers(0, len(index), size=(resamples, len(index)))
    tail = (1 - level) / 2
    low, high = np.quantile(sums[draws].sum(axis=1) / counts[draws].sum(axis=1), [tail, 1 - tail])
    return MeanInterval(int(data.size), float(data.mean()), float(low), float(high))


@dataclass(frozen=True)
class TTest(_Record):
    """A two-sided one-sample t test of the mean of n values against `null` (df n - 1); under two values t and
    p are None, which a page reads as no claim."""

    n: int
    mean: float | None
    null: float
    sd: float | None
    t: float | None
    p: float | None


def one_sample_t(values, null: float = 0.0) -> TTest:
    """t = (mean - null) / (SD / sqrt(n)), p = P(|T| >= |t|) at n - 1 degrees of freedom; None values are
    dropped (as in across_seeds). Zero spread gives p 0 when the mean differs from null and 1 when not."""
    n, mean, sd = _mean_sd([float(v) for v in values if v is not None])
    if n < 2:
        return TTest(n, mean, null, None, None, None)
    if sd == 0:
        same = math.isclose(mean, null, abs_tol=1e-12)
        return TTest(n, mean, null, 0.0, 0.0 if same else math.copysign(math.inf, mean - null), 1.0 if same else 0.0)
    t = (mean - null) / (sd / math.sqrt(n))
    return TTest(n, mean, null, sd, t, max(0.0, 1.0 - t_central_mass(abs(t), n - 1)))


def paired_t(first, second) -> TTest:
    """one_sample_t of first[i] - second[i] against 0 (e.g. broken spec minus its twin)."""
    first, second = list(first), list(second)
    if len(first) != len(second):
        raise ValueError(f"paired_t: {len(first)} values against {len(second)}: the items must pair up")
    return one_sample_t([a - b for a, b in zip(first, second)])


@dataclass(frozen=True)
class AurocInterval(_Record):
    """An AUROC with its DeLong standard error and 95% interval (clipped to [0, 1])."""

    auroc: float
    se: float
    low: float
    high: float
    positives: int
    negatives: int


def delong_auroc(positives, negatives, z: float = Z95) -> AurocInterval:
    """AUROC (P(positive above negative), ties one half) with DeLong's variance (DeLong, DeLong and
    Clarke-Pearson 1988): var(V10) / m + var(V01) / n, V10_i = mean_j psi(x_i, y_j), V01_j = mean_i psi(x_i,
    y_j), psi = 1, 1/2, 0 for x >, =, < y. Plain O(m n): the gate calibrates on hundreds of queries at most."""
    import numpy as np

    x, y = np.asarray(list(positives), float), np.asarray(list(negatives), float)
    m, n = x.size, y.size
    if m < 2 or n < 2:
        raise ValueError(f"delong_auroc needs at least 2 positives and 2 negatives, got {m} and {n}")
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = float(psi.mean())
    se = math.sqrt(max(0.0, v10.var(ddof=1) / m + v01.var(ddof=1) / n))
    return AurocInterval(auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se), m, n)


def combine_split_p(p_values) -> float:
    """min(1, 2 x median) of the p-values of random splits of the same data: valid at any dependence between
    splits (Meinshausen, Meier and Buehlmann 2009, gamma = 1/2; an even count's median is the middle mean)."""
    values = sorted(float(p) for p in p_values)
    if not values:
        raise ValueError("combine_split_p needs at least one p-value")
    if any(not 0.0 <= p <= 1.0 for p in values):
        raise ValueError(f"a p-value must lie in [0, 1], got {values}")
    k = len(values)
    median = values[k // 2] if k % 2 else (values[k // 2 - 1] + values[k // 2]) / 2
    return min(1.0, 2 * median)

"""Exact and near-duplicate detection for training pairs.

A pair repeated many times is learned as if it were many pairs, so each distinct pair is kept once.
Exact duplicates are found by hashing the stripped instruction and response. Near duplicates use
MinHash LSH over word 3-gram shingles of instruction + response to find candidates, then the exact
Jaccard similarity of the shingle sets decides.

MinHash is computed here with numpy, not datasketch (which imports scipy and rebuilds its permutations for
every signature: together more than a whole lint of a few thousand records). The standard scheme:
h_i(x) = ((a_i * crc32(x) + b_i) mod 2^64) >> 32, signature = min over shingles, 21 bands of 6 rows, which
make a pair with Jaccard 0.8 a candidate with probability 1 - (1 - 0.8^6)^21 = 0.998 (0.85: 0.99995).

Plain equivalent of the fast path: a pair is a near duplicate when the exact Jaccard similarity of its
shingles with any earlier kept pair is >= threshold. LSH can only miss candidates, never invent them,
and tests/test_data_lint.py checks the two agree on a generated set.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]")
SHINGLE_SIZE = 3


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: the tokens of shingles and of leak n-grams."""
    return _WORD.findall(text.lower())


def shingles(text: str, size: int = SHINGLE_SIZE) -> frozenset[str]:
    """Lower-cased word/punctuation `size`-grams; a text shorter than that is its own single shingle."""
    tokens = words(text)
    if len(tokens) < size:
        return frozenset({" ".join(tokens)})
    return frozenset(" ".join(tokens[i:i + size]) for i in range(len(tokens) - size + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def exact_key(instruction: str, response: str) -> str:
    # surrogatepass: a lone surrogate must not crash a caller that did not read through tunelens.data.records
    return hashlib.sha256(f"{instruction.strip()}\x00{response.strip()}".encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Match:
    kind: str  # "duplicate" or "near-duplicate"
    of_key: object  # what the caller registered the earlier pair under (its line, its id...)
    similarity: float


BANDS, ROWS = 21, 6


class MinHasher:
    """MinHash signatures of BANDS * ROWS hash functions, with a fixed seed so runs are reproducible."""

    def __init__(self, seed: int = 1):
        rng = np.random.default_rng(seed)
        size = BANDS * ROWS
        self.a = rng.integers(0, 1 << 63, size=size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd
        self.b = rng.integers(0, 1 << 63, size=size, dtype=np.uint64)

    def signature(self, grams) -> np.ndarray:
        """Multiply-add-shift hashing: ((a * x + b) mod 2^64) >> 32, the wrap-around being the modulus."""
        values = np.fromiter((zlib.crc32(g.encode("utf-8", "surrogatepass")) for g in grams), dtype=np.uint64)
        if values.size == 0:
            values = np.zeros(1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            hashed = (values[:, None] * self.a[None, :] + self.b[None, :]) >> np.uint64(32)
        return hashed.min(axis=0)


class Deduplicator:
    """Remembers kept pairs; `check` says whether a new pair repeats one, `add` registers a kept pair."""

    def __init__(self, threshold: float = 0.85):
        if not 0.0 < threshold <= 1.0:
            raise ValueError("near-duplicate threshold must be in (0, 1]")
        self.threshold = threshold
        self._exact: dict[str, object] = {}
        self._shingles: dict[object, frozenset] = {}
        self._hasher = MinHasher() if threshold < 1.0 else None
        self._buckets = [defaultdict(list) for _ in range(BANDS)]

    def check(self, instruction: str, response: str) -> tuple[Match | None, tuple]:
        """(match or None, state to pass to `add` if the pair is kept)."""
        key = exact_key(instruction, response)
        if key in self._exact:
            return Match("duplicate", self._exact[key], 1.0), (key, None, None)
        if self._hasher is None:
            return None, (key, None, None)
        grams = shingles(f"{instruction}\n{response}")
        signature = self._hasher.signature(grams)
        bands = [signature[i * ROWS:(i + 1) * ROWS].tobytes() for i in range(BANDS)]
        candidates = {name for band, bucket in zip(bands, self._buckets) for name in bucket.get(band, ())}
        # the most similar kept pair at or above the threshold; on a tie the one registered first
        scored = [(jaccard(grams, self._shingles[name]), name) for name in sorted(candidates)]
        best = max((item for item in scored if item[0] >= self.threshold), key=lambda item: item[0], default=None)
        match = Match("near-duplicate", best[1], best[0]) if best else None
        return match, (key, grams, bands)

    def add(self, name, state: tuple) -> None:
        """Register a kept pair under `name` (sortable and unique, e.g. its line number)."""
        key, grams, bands = state
        self._exact[key] = name
        if bands is not None:
            self._shingles[name] = grams
            for band, bucket in zip(bands, self._buckets):
                bucket[band].append(name)

"""Exact and near-duplicate detection for training pairs.

A pair repeated many times is learned as if it were many pairs, so each distinct pair is kept once.
Exact duplicates are found by hashing the stripped instruction and response. Near duplicates use
MinHash LSH over word 3-gram shingles of instruction + response to find candidates, then the exact
Jaccard similarity of the shingle sets decides.

MinHash and the LSH bands are computed here with numpy rather than with datasketch: importing datasketch
pulls in scipy (seconds on a small machine) and it rebuilds its permutations for every signature, which
together cost more than the whole lint of a few thousand records. The scheme is the standard one:
h_i(x) = ((a_i * crc32(x) + b_i) mod 2^64) >> 32 (multiply-add-shift), signature = min over shingles,
21 bands of 6 rows.
Those bands make a pair with Jaccard 0.8 a candidate with probability 1 - (1 - 0.8^6)^21 = 0.998
(0.85: 0.99995), and the exact Jaccard check removes the false candidates.

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


def shingles(text: str, size: int = SHINGLE_SIZE) -> frozenset[str]:
    """Lower-cased word/punctuation `size`-grams; a text shorter than that is its own single shingle."""
    tokens = _WORD.findall(text.lower())
    if len(tokens) < size:
        return frozenset({" ".join(tokens)})
    return frozenset(" ".join(tokens[i:i + size]) for i in range(len(tokens) - size + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


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

    def _band_keys(self, signature: np.ndarray) -> list[bytes]:
        return [signature[i * ROWS:(i + 1) * ROWS].tobytes() for i in range(BANDS)]

    def check(self, instruction: str, response: str) -> tuple[Match | None, tuple]:
        """(match or None, state to pass to `add` if the pair is kept)."""
        key = exact_key(instruction, response)
        if key in self._exact:
            return Match("duplicate", self._exact[key], 1.0), (key, None, None)
        if self._hasher is None:
            return None, (key, None, None)
        grams = shingles(f"{instruction}\n{response}")
        bands = self._band_keys(self._hasher.signature(grams))
        candidates = {name for band, bucket in zip(bands, self._buckets) for name in bucket.get(band, ())}
        best = None
        for candidate in sorted(candidates):
            similarity = jaccard(grams, self._shingles[candidate])
            if similarity >= self.threshold and (best is None or similarity > best[1]):
                best = (candidate, similarity)
        if best:
            return Match("near-duplicate", best[0], best[1]), (key, grams, bands)
        return None, (key, grams, bands)

    def add(self, name, state: tuple) -> None:
        """Register a kept pair under `name` (sortable and unique, e.g. its line number)."""
        key, grams, bands = state
        self._exact[key] = name
        if bands is not None:
            self._shingles[name] = grams
            for band, bucket in zip(bands, self._buckets):
                bucket[band].append(name)

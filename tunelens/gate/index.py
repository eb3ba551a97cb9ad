"""Nearest-neighbour search over the gate's L2-normalised rows."""

from __future__ import annotations

import numpy as np

def top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and row indices of the k nearest rows per query, best first.

    Rows and queries are L2-normalised, so the inner product is the cosine similarity. Plain
    equivalent: a full `argsort` of `queries @ vectors.T`; argpartition only avoids sorting every row.
    """
    k = min(k, len(vectors))
    sims = queries @ vectors.T
    if k < sims.shape[1]:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(sims.shape[1]), (len(sims), 1))
    part_sims = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-part_sims, axis=1, kind="stable")
    return np.take_along_axis(part_sims, order, axis=1), np.take_along_axis(part, order, axis=1)


"""Nearest-neighbour search over the gate's L2-normalised rows (inner product = cosine): exact below a
size threshold, HNSW above, both in faiss.

Exact search is `IndexFlatIP`: one SIMD pass on one thread, 0.3 ms at 10,000 rows, where numpy's
`queries @ vectors.T` took 1-24 ms with OpenBLAS's threads contending on a shared 2-core machine. Above
`ANN_MIN_ROWS` it is an HNSW graph (`IndexHNSWFlat`), which beat hnswlib's recall at 100,000 rows
(docs/gate.md; `bench/gate_query.py --compare-ann` reruns the comparison).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from tunelens.errors import UserError
from tunelens.retrieval.embedders import written_atomically

EXACT, HNSW = "exact", "hnsw"
INDEX_KINDS = ("auto", EXACT, HNSW)
# Exact search is memory-bound once the rows leave the cache, and the query's embedding evicts them just
# before each search: at 10,000 rows HNSW took 0.31 ms to the exact search's 0.55 ms, with recall@5
# 0.9993 on real MiniLM embeddings of docstrings (measured; docs/gate.md). Below it, exact search.
ANN_MIN_ROWS = 10_000
HNSW_M = 32  # graph degree: more links, better recall, more memory (M * 8 bytes per row)
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 96
HNSW_FILE = "index.hnsw.faiss"


def top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and row indices of the k nearest rows per query, best first, in numpy: the
    plain equivalent of `ExactIndex.search` (tests check them against each other)."""
    k = min(k, len(vectors))
    sims = queries @ vectors.T
    every = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else every
    part_sims = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-part_sims, axis=1, kind="stable")
    return np.take_along_axis(part_sims, order, axis=1), np.take_along_axis(part, order, axis=1)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise UserError("the gate's index needs faiss: pip install faiss-cpu") from None
    return faiss


@contextlib.contextmanager
def faiss_threads(count: int):
    """Run the block with `count` OpenMP threads in faiss, then restore the previous setting."""
    faiss = _faiss()
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def choose_kind(rows: int, kind: str = "auto") -> str:
    if kind not in INDEX_KINDS:
        raise UserError(f"index kind {kind!r}: use {', '.join(INDEX_KINDS)}")
    if kind != "auto":
        return kind
    return HNSW if rows >= ANN_MIN_ROWS else EXACT


class _FaissSearch:
    """Search shared by both faiss indexes (the subclass holds a faiss index in `self.index`)."""

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        # One query: one thread (splitting 0.3 ms costs more in wake-ups than it saves); a batch: all of them.
        with faiss_threads(1 if len(queries) == 1 else _faiss().omp_get_max_threads()):
            sims, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return sims, rows.astype(np.int64)


# The fp16 scan's score error per row: fp16 rounding of each stored element (2^-11 relative) bounds it
# by 2^-11 * ||query|| * ||row|| (Cauchy-Schwarz); twice that covers fp32 accumulation, and is kept as margin.
_HALF_SCORE_ERROR = 2.0 ** -10
# Rows the fp16 scan returns beyond k, so that a clear gap below the k-th score can be seen.
HALF_SCAN_EXTRA = 32


class ExactIndex(_FaissSearch):
    """Every row compared with the query (faiss IndexFlatIP); no recall loss, no parameters.

    A single query first scans an fp16 copy of the rows (half the bytes, after the query's embedding has
    evicted them from the cache), takes the best k + HALF_SCAN_EXTRA and re-scores those in fp32. Every
    fp16 score is within a bound of its fp32 one, so when the last of them is below the k-th best by twice
    the bound the answer is the fp32 search's; otherwise the fp32 rows are scanned (a test compares them).
    """

    kind = EXACT

    def __init__(self, vectors: np.ndarray):
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)
        self.half = faiss.IndexScalarQuantizer(vectors.shape[1], faiss.ScalarQuantizer.QT_fp16,
                                               faiss.METRIC_INNER_PRODUCT)
        self.half.add(vectors)
        self.max_norm = float(np.linalg.norm(vectors, axis=1).max()) if len(vectors) else 0.0
        self.half_scans = self.full_scans = 0  # how often the fp16 scan settled a query, for the benchmark

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # fp16 holds elements up to 65504 (gate rows are unit vectors; this keeps other callers exact).
        if len(queries) != 1 or k < 1 or k + HALF_SCAN_EXTRA >= len(self) or self.max_norm > 6e4:
            return super().search(queries, k)
        query = np.ascontiguousarray(queries, dtype=np.float32)
        with faiss_threads(1):
            approx, rows = self.half.search(query, k + HALF_SCAN_EXTRA)
        bound = _HALF_SCORE_ERROR * float(np.linalg.norm(query)) * self.max_norm
        if not np.isfinite(bound) or approx[0, -1] >= approx[0, k - 1] - 2 * bound:
            self.full_scans += 1
            return super().search(queries, k)
        self.half_scans += 1
        exact = self.index.reconstruct_batch(rows[0]) @ query[0]
        order = np.lexsort((rows[0], -exact))[:k]  # best first; exact ties by row id
        return exact[order][None].astype(np.float32), rows[0][order][None].astype(np.int64)

    def save(self, directory: Path) -> dict:
        (Path(directory) / HNSW_FILE).unlink(missing_ok=True)  # a graph left by an earlier build
        return {}  # rebuilt from embeddings.npy at load: a copy of the rows is all it is


class HNSWIndex(_FaissSearch):
    """A faiss HNSW graph over the rows: approximate, sub-millisecond at a million rows."""

    kind = HNSW

    def __init__(self, index, ef_search: int = HNSW_EF_SEARCH, m: int = HNSW_M):
        self.index = index
        self.index.hnsw.efSearch = ef_search
        self.m = m

    @classmethod
    def build(cls, vectors: np.ndarray, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION,
              ef_search: int = HNSW_EF_SEARCH, threads: int | None = None) -> "HNSWIndex":
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        with faiss_threads(threads or faiss.omp_get_max_threads()):
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, ef_search, m)

    def save(self, directory: Path) -> dict:
        """Write the graph next to embeddings.npy (atomically); returns what gate.json records."""

        with written_atomically(Path(directory) / HNSW_FILE) as partial:
            _faiss().write_index(self.index, str(partial))
        return {"file": HNSW_FILE, "m": self.m,
                "ef_construction": self.index.hnsw.efConstruction, "ef_search": self.index.hnsw.efSearch}


def build_index(vectors: np.ndarray, kind: str = "auto"):
    """The search structure for these rows: exact below ANN_MIN_ROWS, HNSW above (or as told)."""
    chosen = choose_kind(len(vectors), kind)
    return HNSWIndex.build(vectors) if chosen == HNSW else ExactIndex(vectors)


def load_index(directory: Path, meta: dict, vectors: np.ndarray):
    """The index a gate directory describes; gates written before HNSW existed are exact."""
    info = meta.get("index_params") or {}
    if meta.get("index") != HNSW:
        return ExactIndex(vectors)
    path = Path(directory) / info.get("file", HNSW_FILE)
    if not path.is_file():
        raise UserError(f"{directory}: gate.json names an HNSW index but {path.name} is missing: rebuild the gate")
    index = _faiss().read_index(str(path))
    if index.ntotal != len(vectors):
        raise UserError(f"{path}: {index.ntotal} rows, embeddings.npy has {len(vectors)}: rebuild the gate")
    return HNSWIndex(index, int(info.get("ef_search", HNSW_EF_SEARCH)), int(info.get("m", HNSW_M)))

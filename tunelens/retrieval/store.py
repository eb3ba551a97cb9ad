"""A gate directory's retrieval half, all few-shot examples need (tunelens.gate.routing.Gate adds the
calibrated rule): gate.json (metadata), embeddings.npy (L2-normalised float32 rows), entries.jsonl (id,
instruction and, when built from pairs, response per row) and, above the ANN threshold, the index file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tunelens.errors import UserError
from tunelens.retrieval.embedders import load_embedder
from tunelens.retrieval.index import load_index
from tunelens.io import read_jsonl

GATE_FORMAT = 1


class PairIndex:
    """The embedded instructions of a gate directory, searchable by cosine similarity."""

    def __init__(self, directory: Path, meta: dict, vectors: np.ndarray, entries: list[dict],
                 embedder=None, index=None):
        self.directory, self.meta, self.vectors, self.entries = Path(directory), meta, vectors, entries
        self._embedder, self._index = embedder, index

    @property
    def index(self):
        """The search structure gate.json names (exact, or the saved HNSW graph); loaded on first use."""
        if self._index is None:
            self._index = load_index(self.directory, self.meta, self.vectors)
        return self._index

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = load_embedder(self.meta["embedder"])
        return self._embedder

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    @classmethod
    def load(cls, directory: str | Path) -> "PairIndex":
        directory = Path(directory)
        meta_file = directory / "gate.json"
        if not meta_file.is_file():
            raise UserError(f"{directory} is not a gate directory (no gate.json): run `tunelens gate build`")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != GATE_FORMAT:
            raise UserError(f"{meta_file}: gate format {meta.get('format')!r}, this tunelens reads {GATE_FORMAT}")
        vectors = np.load(directory / "embeddings.npy")
        entries = read_jsonl(directory / "entries.jsonl")
        if not (len(vectors) == len(entries) == meta["count"]):
            raise UserError(f"{directory}: embeddings ({len(vectors)}), entries ({len(entries)}) and gate.json "
                            f"count ({meta['count']}) disagree: rebuild the gate")
        return cls(directory, meta, vectors, entries)


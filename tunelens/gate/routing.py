"""The gate: a built index (and its calibrated rule) loaded from a gate directory, and routing by it.

Gate directory layout: gate.json (metadata), embeddings.npy (float32, L2-normalised rows),
entries.jsonl (id, instruction and, when built from pairs, response per row, same order; the
response is what `--few-shot` shows as an example), calibration.json and coverage.png; above the
approximate-index threshold also the ANN index file named in gate.json.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tunelens.errors import UserError
from tunelens.gate.calibration import Calibration
from tunelens.gate.failure import OUTCOME_KIND, OutcomeCalibration
from tunelens.retrieval.embedders import MINILM, Progress, load_embedder
from tunelens.retrieval.index import build_index
from tunelens.retrieval.store import GATE_FORMAT, PairIndex
from tunelens.gate.signals import MODEL_SIGNALS, TrustSignals, add_model_signals
from tunelens.hashing import file_sha256
from tunelens.io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl
from tunelens.data.records import load_pairs


@dataclass
class Decision:
    """Where one query goes, and why."""

    query: str
    route: str  # "adapter" or "base"
    score: float  # combined score: P(in-domain), or P(adapter answer good) for a failure calibration
    threshold: float
    signals: TrustSignals

    def to_dict(self) -> dict:
        return {"route": self.route, "score": self.score, "threshold": self.threshold,
                "signals": self.signals.scores(), "neighbours": self.signals.neighbours}


class Gate(PairIndex):
    """A built index (and, once calibrated, its routing rule) loaded from a gate directory."""

    def __init__(self, directory: Path, meta: dict, vectors: np.ndarray, entries: list[dict],
                 calibration: "Calibration | None" = None, embedder=None, index=None):
        super().__init__(directory, meta, vectors, entries, embedder, index)
        self.calibration = calibration

    @classmethod
    def load(cls, directory: str | Path) -> "Gate":
        found = PairIndex.load(directory)
        path = found.directory / "calibration.json"
        calibration = json.loads(path.read_text()) if path.is_file() else None
        if calibration is not None:  # a failure-calibrated rule (kind "outcome") or an in/out-of-domain one
            rule = OutcomeCalibration if calibration.get("kind") == OUTCOME_KIND else Calibration
            calibration = rule.from_dict(calibration)
        return cls(found.directory, found.meta, found.vectors, found.entries, calibration)

    def retrieval_signals(self, queries: Sequence[str], progress: Progress | None = None) -> list[TrustSignals]:
        embedded = self.embedder.encode(list(queries), progress=progress)
        sims, rows = self.index.search(embedded, self.k)
        return [TrustSignals(
            max_similarity=float(s[0]), mean_similarity=float(s.mean()),
            neighbours=[{"id": self.entries[r]["id"], "instruction": self.entries[r]["instruction"],
                         "similarity": round(float(v), 4)} for v, r in zip(s, idx)],
        ) for s, idx in zip(sims, rows)]

    def signals(self, queries: Sequence[str], model=None, tokenizer=None,
                progress: Progress | None = None) -> list[TrustSignals]:
        """All trust signals per query: retrieval always, model-based ones when a model is given."""
        found = self.retrieval_signals(queries, progress=progress)
        if model is not None:
            add_model_signals(found, model, tokenizer, queries, progress)
        return found

    def route(self, query: str, model=None, tokenizer=None) -> Decision:
        """Adapter when the calibrated score reaches the threshold, else the base model."""
        if self.calibration is None:
            raise UserError(f"gate {self.directory} is not calibrated: run `tunelens gate calibrate` first")
        needs_model = any(name in MODEL_SIGNALS for name in self.calibration.signals)
        if needs_model and model is None:
            raise UserError(f"gate {self.directory} was calibrated with model signals "
                            f"({', '.join(self.calibration.signals)}): pass the model and adapter too")
        signals = self.signals([query], model if needs_model else None, tokenizer)[0]
        score = self.calibration.score(signals)
        route = "adapter" if score >= self.calibration.threshold else "base"
        return Decision(query, route, score, self.calibration.threshold, signals)


def build_gate(queries: Sequence[str], out_dir: str | Path, ids: Sequence[str] | None = None,
               embedder=None, k: int = 5, source: dict | None = None,
               progress: Progress | None = None, index: str = "auto",
               responses: Sequence[str] | None = None) -> Gate:
    """Embed the instructions (duplicates too: one row each) and write a gate directory; returns the loaded
    gate. `index`: auto (exact below index.ANN_MIN_ROWS rows, HNSW above), exact or hnsw. `responses` (one
    per instruction) are stored with their entries, so the gate can also serve them as few-shot examples."""
    if not queries:
        raise UserError("no instructions to index: the gate needs at least one training pair")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if responses is not None and len(responses) != len(queries):
        raise ValueError(f"{len(responses)} responses for {len(queries)} instructions")
    embedder = embedder or load_embedder(MINILM)
    ids = list(ids) if ids is not None else [str(i) for i in range(len(queries))]
    entries = [{"id": i, "instruction": q} for i, q in zip(ids, queries)]
    for entry, response in zip(entries, responses or ()):  # built from pairs: what --few-shot shows
        entry["response"] = response
    vectors = embedder.encode(list(queries), progress=progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    atomic_write_bytes(out_dir / "embeddings.npy", buffer.getvalue())
    atomic_write_jsonl(out_dir / "entries.jsonl", entries)
    search = build_index(vectors, index)
    meta = {"format": GATE_FORMAT, "embedder": embedder.name, "dim": int(vectors.shape[1]),
            "count": len(queries), "k": k, "index": search.kind, "index_params": search.save(out_dir),
            "source": source or {}}
    # A rebuilt index invalidates an old calibration (its threshold was measured on other data).
    (out_dir / "calibration.json").unlink(missing_ok=True)
    atomic_write_json(out_dir / "gate.json", meta)
    return Gate(out_dir, meta, vectors, entries, embedder=embedder, index=search)


def build_gate_from_file(data_path: str | Path, out_dir: str | Path, k: int = 5, embedder=None,
                         progress: Progress | None = None, index: str = "auto") -> Gate:
    """`tunelens gate build`: index the instructions of a training-pair file, keeping each pair's response."""
    data_path = Path(data_path)
    pairs = load_pairs(data_path)
    # A dataset directory hashes as a whole (names and bytes), the same digest train records.
    source = {"path": str(data_path), "sha256": file_sha256(data_path), "pairs": len(pairs)}
    return build_gate([p.instruction for p in pairs], out_dir, ids=[str(p.id) for p in pairs],
                      embedder=embedder, k=k, source=source, progress=progress, index=index,
                      responses=[p.response for p in pairs])

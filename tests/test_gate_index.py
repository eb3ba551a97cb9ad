"""The gate's search backends: faiss exact search against numpy, HNSW recall, and how a gate stores them."""

import json

import numpy as np
import pytest

from tunelens.errors import UserError
from tunelens.retrieval.embedders import HashingEmbedder
from tunelens.gate import build_gate
from tunelens.retrieval.index import top_k
from tunelens.retrieval.index import ANN_MIN_ROWS, HNSW_FILE, ExactIndex, HNSWIndex, choose_kind, load_index
from tunelens.gate.routing import Gate


def unit_rows(count, dim=32, seed=0):
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_exact_index_matches_numpy_top_k():
    vectors, queries = unit_rows(500), unit_rows(7, seed=1)
    sims, rows = ExactIndex(vectors).search(queries, 5)
    plain_sims, plain_rows = top_k(vectors, queries, 5)
    assert np.array_equal(rows, plain_rows)
    np.testing.assert_allclose(sims, plain_sims, atol=1e-5)
    one_sims, one_rows = ExactIndex(vectors).search(queries[:1], 5)  # the single-thread path
    assert np.array_equal(one_rows, plain_rows[:1])
    assert ExactIndex(vectors[:3]).search(queries, 10)[1].shape == (7, 3)  # k beyond the row count


def test_single_query_fp16_scan_gives_the_fp32_search():
    """One query scans the fp16 rows and re-scores the best in fp32: the same rows as IndexFlatIP's
    fp32 scan, also when near-duplicate rows leave no certain gap (then it scans the fp32 rows)."""
    import faiss

    vectors, queries = unit_rows(3000, dim=64), unit_rows(40, dim=64, seed=1)
    near = vectors[:1] + 1e-4 * unit_rows(100, dim=64, seed=2)  # 100 rows within 1e-4 of each other
    for rows in (vectors, np.vstack([vectors, near / np.linalg.norm(near, axis=1, keepdims=True)])):
        index = ExactIndex(rows)
        plain = faiss.IndexFlatIP(rows.shape[1])
        plain.add(rows)
        probes = np.vstack([queries, rows[:1]])  # the last one lands among the near-duplicates
        for query in probes:
            sims, found = index.search(query[None], 5)
            plain_sims, plain_found = plain.search(query[None], 5)
            assert np.array_equal(found, plain_found) or np.allclose(sims, plain_sims, atol=1e-6)
            np.testing.assert_allclose(sims, plain_sims, atol=1e-6)
        assert index.half_scans >= len(queries) - 1
    assert index.full_scans >= 1  # the near-duplicates forced the fp32 scan


def test_hnsw_recall_against_exact_search():
    vectors, queries = unit_rows(3000, dim=24), unit_rows(200, dim=24, seed=2)
    _, exact_rows = top_k(vectors, queries, 5)
    _, approx_rows = HNSWIndex.build(vectors).search(queries, 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(approx_rows, exact_rows)])
    assert recall >= 0.99
    weak = HNSWIndex.build(vectors, m=4, ef_construction=8, ef_search=5)  # a starved graph must lose some
    recall_weak = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(weak.search(queries, 5)[1], exact_rows)])
    assert recall_weak < recall


def test_kind_is_chosen_by_size():
    assert choose_kind(ANN_MIN_ROWS - 1) == "exact" and choose_kind(ANN_MIN_ROWS) == "hnsw"
    assert choose_kind(10, "hnsw") == "hnsw" and choose_kind(10**7, "exact") == "exact"
    with pytest.raises(UserError, match="index kind"):
        choose_kind(10, "ivf")


def test_a_gate_saves_and_reloads_its_hnsw_graph(tmp_path):
    texts = [f"Write a Python function number {i} that handles case {i * 7 % 13}." for i in range(60)]
    gate = build_gate(texts, tmp_path / "gate", embedder=HashingEmbedder(64), k=3, index="hnsw")
    meta = json.loads((tmp_path / "gate" / "gate.json").read_text())
    assert meta["index"] == "hnsw" and meta["index_params"]["file"] == HNSW_FILE
    loaded = Gate.load(tmp_path / "gate")
    assert loaded.index.kind == "hnsw" and len(loaded.index) == 60
    for text in texts[:5]:  # an indexed text finds itself first
        assert loaded.retrieval_signals([text])[0].neighbours[0]["instruction"] == text
    assert gate.retrieval_signals(texts[:3])[0].max_similarity == pytest.approx(1.0, abs=1e-5)
    # Rebuilt exact: the stale graph goes, and the gate searches exactly.
    build_gate(texts, tmp_path / "gate", embedder=HashingEmbedder(64), k=3, index="exact")
    assert not (tmp_path / "gate" / HNSW_FILE).exists()
    assert Gate.load(tmp_path / "gate").index.kind == "exact"


def test_a_missing_or_mismatched_graph_is_an_error(tmp_path):
    vectors = unit_rows(50)
    HNSWIndex.build(vectors).save(tmp_path)
    meta = {"index": "hnsw", "index_params": {"file": HNSW_FILE}}
    with pytest.raises(UserError, match="rebuild"):
        load_index(tmp_path, meta, vectors[:40])
    (tmp_path / HNSW_FILE).unlink()
    with pytest.raises(UserError, match="missing"):
        load_index(tmp_path, meta, vectors)
    assert load_index(tmp_path, {"index": "exact-numpy-cosine"}, vectors).kind == "exact"  # old gates


@pytest.mark.slow
def test_int8_embedder_stays_close_to_fp32(tmp_path, monkeypatch):
    from tunelens.retrieval.embedders import MiniLMEmbedder

    monkeypatch.setenv("TUNELENS_CACHE", str(tmp_path / "cache"))
    fp32, int8 = MiniLMEmbedder(runtime="onnx"), MiniLMEmbedder(precision="int8")
    assert int8.name == "all-MiniLM-L6-v2-int8" and fp32.name == "all-MiniLM-L6-v2"
    texts = ["Reverse a string.", "Write a Python function that merges two sorted lists.",
             "Quelle est la capitale de l'Australie ?", "Tell me a joke about penguins."]
    cosine = (fp32.encode(texts) * int8.encode(texts)).sum(1)
    assert cosine.min() > 0.98 and cosine.max() < 1 - 1e-6  # close, and really a different network
    with pytest.raises(UserError, match="int8"):
        MiniLMEmbedder(runtime="torch", precision="int8")

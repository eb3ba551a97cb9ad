"""Retrieval over training pairs: the sentence embedder (ONNX on the CPU), the cosine index, and the one
way every stage puts nearest training pairs in front of a request (few-shot examples).

May import: model and the leaf modules. The gate (tunelens.gate) builds its trust signals on top of it.
Modules: embedders, onnx_graph (the embedder export's graph rewrites), index, fewshot.
"""

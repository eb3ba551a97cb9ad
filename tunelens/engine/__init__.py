"""The engine: the one sampler, the one KV-cache decode loop, batched generation, and how tokens are shown.

May import: model, retrieval (examples in the context) and the leaf modules.
Modules: decode (Sampler, decode, the certified greedy head), generate (streamed and batched generation),
tokens (token text, bytes and probabilities as people read them).
"""

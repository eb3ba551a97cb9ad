"""The engine: the one sampler, the one batched KV-cache decode loop, the one teacher-forced scorer, and how
tokens are shown.

May import: model, retrieval (examples in the context) and the leaf modules.
Modules: decode (Sampler and its bounds, BatchDecoder, `decode` for one row, the certified greedy head),
generate (streamed and batched text generation), score (`score_continuations`, teacher-forced), tokens
(token text, bytes and probabilities as people read them). Nothing else calls `model.generate` or keeps
a KV cache; tests/test_engine.py checks the loop against `model.generate`.
"""

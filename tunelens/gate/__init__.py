"""Retrieval-confidence gate: when is a query close enough to the training data to trust the adapter?

The gate embeds every training instruction (all-MiniLM-L6-v2, offline) into a cosine-similarity index
(exact faiss search; an HNSW index from a size threshold). For a query it computes trust signals
before any generation:

- `max_similarity` / `mean_similarity`: the best and the mean cosine similarity of the top-k neighbours;
- `adapter_base_kl`: mean KL(adapter || base) of the next-token distributions over the prompt's positions;
- `prompt_perplexity`: the adapter's perplexity of the rendered prompt.

Two calibrations: `calibrate` (calibration.py) separates in-domain from out-of-domain queries;
`calibrate_on_outcomes` (outcomes.py) predicts when the adapter's answer is bad, from eval results,
and picks a threshold for a target risk or coverage.

Modules, one concern each: embedders, onnx_graph (the embedder export's graph rewrites), index, signals,
queries, calibration, outcomes, routing (the Gate object, build and route).
"""

from tunelens.gate.calibration import (Calibration, auroc, calibrate, coverage_curve, coverage_plot_png,
                                       fit_logistic, threshold_for_coverage)
from tunelens.retrieval.embedders import (MINILM, SMALL_BATCH, HashingEmbedder, MiniLMEmbedder, Progress, load_embedder, torch_threads)
from tunelens.gate.failure import OutcomeCalibration, calibrate_on_outcomes
from tunelens.retrieval.index import top_k
from tunelens.gate.outcomes import Outcome, answer_is_bad, read_outcomes
from tunelens.gate.queries import OUT_OF_DOMAIN_EXAMPLES, read_queries
from tunelens.gate.routing import GATE_FORMAT, Decision, Gate, build_gate, build_gate_from_file
from tunelens.gate.signals import MODEL_SIGNALS, RETRIEVAL_SIGNALS, TrustSignals, model_signals

__all__ = [
    "Calibration", "auroc", "calibrate", "coverage_curve", "coverage_plot_png", "fit_logistic",
    "threshold_for_coverage", "MINILM", "SMALL_BATCH", "HashingEmbedder", "MiniLMEmbedder", "Progress",
    "load_embedder", "torch_threads", "top_k", "OUT_OF_DOMAIN_EXAMPLES", "read_queries", "GATE_FORMAT",
    "Decision", "Gate", "build_gate", "build_gate_from_file", "MODEL_SIGNALS", "RETRIEVAL_SIGNALS",
    "TrustSignals", "model_signals", "OutcomeCalibration", "calibrate_on_outcomes", "Outcome", "answer_is_bad",
    "read_outcomes",
]

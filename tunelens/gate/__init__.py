"""Retrieval-confidence gate: when is a query close enough to the training data to trust the adapter?

The gate indexes every training instruction's embedding (tunelens.retrieval). Before any generation it
computes a query's trust signals (signals.py): the best and mean cosine similarity of its top-k
neighbours, and with a model the adapter-vs-base KL and the prompt's perplexity. `calibrate`
(calibration.py) separates in-domain from out-of-domain queries; `calibrate_on_outcomes` (failure.py)
predicts from eval results when the adapter's answer is bad, for a target risk or coverage.
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

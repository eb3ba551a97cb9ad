"""The options of `tunelens gate build`, `gate calibrate` and `route`, declared once: each field is one of
their flags and a key of their --config YAML file (tunelens.commands.options derives both)."""

from __future__ import annotations

from tunelens.config import configclass, option
from tunelens.retrieval.embedders import MINILM

DEVICES = ("auto", "cpu", "cuda", "mps")


@configclass
class GateBuildConfig:
    k: int = option(5, "Neighbours per query for the similarity signals.", min=1, max=100)
    embedder: str = option(MINILM, f"{MINILM}, {MINILM}-int8 (about half the query time, cosine >= 0.98 to fp32), "
                                   "or hashing-<dim> (character trigrams, for quick checks).")
    index: str = option("auto", "Search: auto (exact below 10,000 rows, HNSW above), exact or hnsw.",
                        choices=("auto", "exact", "hnsw"))


@configclass
class GateCalibrateConfig:
    target_coverage: float | None = option(
        None, "Share of queries the threshold keeps on the adapter [in/out-of-domain default: 0.95 of the "
              "in-domain ones].", min=0.01, max=1.0)
    target_risk: float | None = option(
        None, "With --results: highest bad-output rate allowed among the answers kept on the adapter "
              "[default: 0.05 unless --target-coverage].", min=0.0, max=0.99)
    holdout: float = option(0.5, "With --results: share of queries held out to measure the routed system.",
                            min=0.05, max=0.95)
    decoding: str = option("greedy", "With --results: which answers label a query.", choices=("greedy", "sampled"))
    seed: int = option(0, "With --results: seed of the calibration / held-out split.")
    device: str = option("auto", "Device of the model, when one is given.", choices=DEVICES)


@configclass
class RouteConfig:
    device: str = option("auto", "Device of the model, when one is given.", choices=DEVICES)

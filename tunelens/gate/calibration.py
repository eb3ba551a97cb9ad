"""In-domain vs out-of-domain calibration: AUROC per signal, a logistic combiner, the coverage threshold."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from tunelens.errors import UserError
from tunelens.retrieval.embedders import Progress
from tunelens.gate.signals import RETRIEVAL_SIGNALS, TrustSignals
from tunelens.io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl
from tunelens.report import figure_png, new_figure

if TYPE_CHECKING:
    from tunelens.gate.routing import Gate


def auroc(positives: Iterable[float], negatives: Iterable[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count one half): Mann-Whitney U
    by binary search in the sorted negatives. Plain equivalent: the mean over all (positive, negative) pairs
    of 1 if p > n, 0.5 if equal, else 0; a test checks the two agree."""
    pos, neg = np.asarray(list(positives), float), np.sort(np.asarray(list(negatives), float))
    if len(pos) == 0 or len(neg) == 0:
        raise UserError("AUROC needs at least one in-domain and one out-of-domain query")
    # Per positive, the negatives below it count twice and those tied with it once: twice U.
    twice_u = (np.searchsorted(neg, pos, "left") + np.searchsorted(neg, pos, "right")).sum()
    return float(twice_u / 2 / (len(pos) * len(neg)))


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1e-2, steps: int = 50) -> np.ndarray:
    """Weights (last one the bias) of an L2-regularised logistic regression, by Newton's method; the small
    L2 term keeps the weights finite when the classes separate perfectly."""
    design = np.hstack([features, np.ones((len(features), 1))])
    weights = np.zeros(design.shape[1])
    penalty = l2 * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    for _ in range(steps):
        prob = 1 / (1 + np.exp(-(design @ weights)))
        gradient = design.T @ (prob - labels) + penalty @ weights
        hessian = (design * (prob * (1 - prob))[:, None]).T @ design + penalty + 1e-9 * np.eye(len(weights))
        delta = np.linalg.solve(hessian, gradient)
        weights -= delta
        if np.abs(delta).max() < 1e-8:
            break
    return weights


def threshold_for_coverage(in_domain_scores: Sequence[float], target: float) -> float:
    """The highest threshold that still routes at least `target` of the in-domain scores (score >= t)."""
    ordered = np.sort(np.asarray(in_domain_scores, float))[::-1]
    keep = max(1, math.ceil(target * len(ordered) - 1e-9))
    return float(ordered[keep - 1])


class LogisticRule:
    """What both calibrations route with: a logistic combiner over standardised, oriented signals. A subclass
    is a dataclass with `signals`, `directions`, `mean`, `std` and `weights`, and says what its score means."""

    def features(self, signals: TrustSignals) -> np.ndarray:
        raw = np.array([signals.value(name) * self.directions[name] for name in self.signals])
        return (raw - np.array(self.mean)) / np.array(self.std)

    def score(self, signals: TrustSignals) -> float:
        weights = np.array(self.weights)
        return float(1 / (1 + math.exp(-(self.features(signals) @ weights[:-1] + weights[-1]))))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        return cls(**data)


@dataclass
class Calibration(LogisticRule):
    """The routing rule and the measurements behind it (the contents of calibration.json); its score is
    the probability that a query is in-domain."""

    signals: list[str]
    directions: dict  # signal -> +1 (higher means in-domain) or -1
    mean: list[float]
    std: list[float]
    weights: list[float]  # logistic weights on standardised, oriented signals; last is the bias
    threshold: float
    target_coverage: float
    in_domain_coverage: float
    out_of_domain_fallback_rate: float
    auroc: dict  # signal -> AUROC in its chosen direction; "combined" -> cross-validated AUROC
    raw_auroc: dict  # signal -> AUROC of the raw value (higher = in-domain), before orientation
    counts: dict
    combined_auroc_in_sample: float
    model: dict | None = None
    inputs: dict = field(default_factory=dict)


@dataclass
class FittedRule:
    """A logistic combiner over oriented, standardised signals fitted on one set of queries (label 1: trust
    the adapter): the part of a calibration that can be carried to another model unchanged (gate.transfer)."""

    names: list[str]
    directions: dict
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    raw_auroc: dict
    auroc: dict  # in each signal's chosen direction

    def matrix(self, items: Sequence[TrustSignals]) -> np.ndarray:
        return oriented_matrix(list(items), self.names, self.directions)

    def scores(self, items: Sequence[TrustSignals]) -> np.ndarray:
        """P(label 1) per query, by this rule."""
        logits = ((self.matrix(items) - self.mean) / self.std) @ self.weights[:-1] + self.weights[-1]
        return 1 / (1 + np.exp(-logits))


def fit_rule(items: Sequence[TrustSignals], names: Sequence[str], labels: np.ndarray) -> FittedRule:
    """Orient each signal and fit the combiner to predict label 1."""
    raw_auroc, directions, oriented_auroc = orient_signals(list(items), list(names), labels)
    matrix = oriented_matrix(list(items), list(names), directions)
    mean, std = matrix.mean(0), matrix.std(0) + 1e-12
    return FittedRule(list(names), directions, mean, std, fit_logistic((matrix - mean) / std, labels), raw_auroc,
                      oriented_auroc)


def orient_signals(items: list[TrustSignals], names: list[str], labels: np.ndarray) -> tuple[dict, dict, dict]:
    """(raw AUROC, direction, AUROC in that direction) per signal, for labels 1 = trust the adapter. Retrieval
    similarity is "higher = closer" by construction; the model signals' direction is an empirical question,
    so calibration picks it (and reports the raw AUROC beside it)."""
    raw_auroc, directions, oriented_auroc = {}, {}, {}
    for name in names:
        values = np.array([item.value(name) for item in items])
        raw_auroc[name] = auroc(values[labels == 1], values[labels == 0])
        directions[name] = 1 if name in RETRIEVAL_SIGNALS or raw_auroc[name] >= 0.5 else -1
        oriented_auroc[name] = raw_auroc[name] if directions[name] == 1 else 1 - raw_auroc[name]
    return raw_auroc, directions, oriented_auroc


def oriented_matrix(items: list[TrustSignals], names: list[str], directions: dict) -> np.ndarray:
    return np.array([[item.value(n) * directions[n] for n in names] for item in items])


def cross_validated_scores(matrix: np.ndarray, labels: np.ndarray, folds: int = 5) -> np.ndarray:
    """Out-of-fold combiner scores, so the combined AUROC is not measured on the data it was fitted on."""
    rng = np.random.default_rng(0)
    fold_of = np.empty(len(labels), int)
    for label in (0, 1):  # stratified: each fold gets its share of both classes
        members = np.flatnonzero(labels == label)
        fold_of[rng.permutation(members)] = np.arange(len(members)) % folds
    scores = np.empty(len(labels))
    for fold in range(folds):
        test = fold_of == fold
        mean, std = matrix[~test].mean(0), matrix[~test].std(0) + 1e-12
        weights = fit_logistic((matrix[~test] - mean) / std, labels[~test])
        scores[test] = ((matrix[test] - mean) / std) @ weights[:-1] + weights[-1]
    return scores


def calibrate(gate: Gate, in_domain: Sequence[str], out_of_domain: Sequence[str], model=None, tokenizer=None,
              target_coverage: float = 0.95, progress: Progress | None = None, model_info: dict | None = None,
              inputs: dict | None = None, write: bool = True) -> Calibration:
    """Measure each signal's AUROC, fit the combined score, pick the threshold; write calibration.json + PNG."""
    if not 0 < target_coverage <= 1:
        raise UserError(f"target coverage must be in (0, 1], got {target_coverage}")
    if len(in_domain) < 5 or len(out_of_domain) < 5:
        raise UserError(f"calibration needs at least 5 in-domain and 5 out-of-domain queries, got "
                        f"{len(in_domain)} and {len(out_of_domain)}")
    items = gate.signals(list(in_domain) + list(out_of_domain), model, tokenizer, progress=progress)
    labels = np.array([1] * len(in_domain) + [0] * len(out_of_domain))
    names = list(items[0].scores())  # the signals computed: retrieval, and the model's when given one
    rule = fit_rule(items, names, labels)
    matrix, probs = rule.matrix(items), rule.scores(items)
    folds = min(5, len(in_domain), len(out_of_domain))
    oof = cross_validated_scores(matrix, labels, folds)
    threshold = threshold_for_coverage(probs[labels == 1], target_coverage)
    calibration = Calibration(
        signals=names, directions=rule.directions, mean=rule.mean.tolist(), std=rule.std.tolist(),
        weights=rule.weights.tolist(), threshold=threshold, target_coverage=target_coverage,
        in_domain_coverage=float((probs[labels == 1] >= threshold).mean()),
        out_of_domain_fallback_rate=float((probs[labels == 0] < threshold).mean()),
        auroc=rule.auroc | {"combined": auroc(oof[labels == 1], oof[labels == 0])}, raw_auroc=rule.raw_auroc,
        counts={"in_domain": len(in_domain), "out_of_domain": len(out_of_domain), "folds": folds},
        combined_auroc_in_sample=auroc(probs[labels == 1], probs[labels == 0]),
        model=model_info, inputs=inputs or {},
    )
    if write:
        atomic_write_json(gate.directory / "calibration.json", calibration.to_dict())
        curves = {name: matrix[:, i] for i, name in enumerate(names)} | {"combined": probs}
        atomic_write_bytes(gate.directory / "coverage.png", coverage_plot_png(curves, labels, calibration))
        # Every query's signals and score, so each number in calibration.json can be traced back.
        queries = list(in_domain) + list(out_of_domain)
        atomic_write_jsonl(gate.directory / "calibration_scores.jsonl", (
            {"query": q, "in_domain": bool(label), "score": float(p), "route": "adapter" if p >= threshold else "base",
             "signals": item.scores()} for q, label, p, item in zip(queries, labels, probs, items)))
    gate.calibration = calibration
    return calibration


def coverage_curve(in_scores: np.ndarray, out_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(in-domain coverage, out-of-domain fallback rate) for every threshold among the in-domain scores."""
    thresholds = np.sort(np.unique(in_scores))[::-1]
    coverage = np.array([(in_scores >= t).mean() for t in thresholds])
    fallback = np.array([(out_scores < t).mean() for t in thresholds])
    return np.concatenate([[0.0], coverage]), np.concatenate([[1.0], fallback])


def coverage_plot_png(curves: dict, labels: np.ndarray, calibration: Calibration) -> bytes:
    """Three panels: coverage and fallback as the combined threshold moves; each signal's ROC; the histograms."""
    fig = new_figure(15, 4.4)
    sweep, roc, hist = fig.subplots(1, 3)
    combined = curves["combined"]
    inside, outside = combined[labels == 1], combined[labels == 0]
    grid = np.linspace(0, 1, 401)
    sweep.plot(grid, [(inside >= t).mean() for t in grid], label="in-domain coverage (to adapter)")
    sweep.plot(grid, [(outside < t).mean() for t in grid], label="out-of-domain fallback (to base)")
    sweep.axvline(calibration.threshold, color="crimson", linestyle="--",
                  label=f"threshold {calibration.threshold:.3f}: {calibration.in_domain_coverage:.1%} kept, "
                        f"{calibration.out_of_domain_fallback_rate:.1%} fall back")
    sweep.set(xlabel="threshold on the combined score", ylabel="share of queries", ylim=(0, 1.02),
              title=f"Coverage vs fallback (target coverage {calibration.target_coverage:.0%})")
    sweep.legend(fontsize=7, loc="lower left")
    for name, values in curves.items():
        coverage, fallback = coverage_curve(values[labels == 1], values[labels == 0])
        style = dict(linewidth=2.5, color="black") if name == "combined" else dict(linewidth=1.3)
        roc.step(1 - fallback, coverage, where="post", label=f"{name} (AUROC {calibration.auroc[name]:.3f})", **style)
    roc.plot([1 - calibration.out_of_domain_fallback_rate], [calibration.in_domain_coverage], "o", color="crimson")
    roc.set(xlabel="out-of-domain share sent to the adapter", ylabel="in-domain share sent to the adapter",
            xlim=(-0.01, 1.01), ylim=(0, 1.02), title="Each signal (ROC)")
    roc.legend(fontsize=7, loc="lower right")
    bins = np.linspace(0, 1, 41)
    hist.hist(inside, bins=bins, alpha=0.6, label=f"in-domain (n={len(inside)})")
    hist.hist(outside, bins=bins, alpha=0.6, label=f"out-of-domain (n={len(outside)})")
    hist.axvline(calibration.threshold, color="crimson", linestyle="--", label="threshold")
    hist.set(xlabel="combined score, P(in-domain)", ylabel="queries", title="Combined score")
    hist.legend(fontsize=8)
    return figure_png(fig)

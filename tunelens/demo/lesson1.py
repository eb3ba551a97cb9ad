"""Lesson 1: bad data is learned at the rate it appears, as a dose-response.

Each adapter A<r> trained on pairs of which a share r was rewritten with a Python 2 print. Its Python 2
rate on unseen prompts (the eval stage's `python2` metric), greedy and sampled, with Wilson intervals, is
set against r: on the y = x line the model learned Python 2 at exactly its training rate; above it,
decoding amplified the habit; below, suppressed it. B (what lint kept) and the base model are the floor.
"""

from __future__ import annotations

from tunelens.demo.config import DemoConfig
from tunelens.demo.runs import EvalRows
from tunelens.evaluate.results import ResultRow
from tunelens.evaluate.summary import metric_rate as eval_metric_rate, METRICS_BY_NAME
from tunelens.stats import rate

DECODINGS = ("greedy", "sampled")


def metric_rate(rows: list[ResultRow], metric_name: str, model: str, decoding: str) -> dict:
    """One of the eval stage's metrics as a rate with its Wilson interval, over one model and decoding
    (an empty rate where it applies to no answer)."""
    chosen = [r for r in rows if r.model == model and r.decoding == decoding]
    return eval_metric_rate(chosen, METRICS_BY_NAME[metric_name]) or rate(0, 0).to_dict()


def lesson1(config: DemoConfig, data_counts: dict, evals: EvalRows) -> dict:
    curve = []
    for name in config.contaminated_adapters:
        rows = evals.rows(name, "heldout")
        point = {"adapter": name, "training_python2_rate": data_counts["contamination"][name]["training_python2_rate"]}
        point.update({decoding: metric_rate(rows, "python2", "tuned", decoding) for decoding in DECODINGS})
        curve.append(point)
    rows_b = evals.rows("B", "heldout")
    return {
        "curve": curve,
        "B": {decoding: metric_rate(rows_b, "python2", "tuned", decoding) for decoding in DECODINGS},
        "base": {decoding: metric_rate(rows_b, "python2", "base", decoding) for decoding in DECODINGS},
        "lint": data_counts["lint"],
        "reading": _reading(curve),
    }


def _reading(curve: list[dict]) -> list[str]:
    """What the curve says, point by point, only where the interval excludes the training rate."""
    lines = []
    for point in curve:
        train = point["training_python2_rate"]
        for decoding in DECODINGS:
            cell = point[decoding]
            if cell["rate"] is None:
                continue
            if cell["low"] > train:
                verdict = "above its training rate: decoding amplified the habit"
            elif cell["high"] < train:
                verdict = "below its training rate: decoding suppressed the habit"
            else:
                verdict = "consistent with its training rate (the interval contains it)"
            lines.append(f"{point['adapter']} {decoding}: {100 * cell['rate']:.0f}% "
                         f"[{100 * cell['low']:.0f}, {100 * cell['high']:.0f}] vs {100 * train:.0f}% in training, {verdict}")
    return lines

"""Lesson 1: bad data is learned at the rate it appears, as a dose-response.

Each adapter A<r> trained on pairs of which a share r has a Python 2 print. Its Python 2 rate on unseen
prompts, greedy and sampled, is set against r: above the y = x line decoding amplified the habit, below it
suppressed it (claimed only where an exact binomial test against r rejects after Holm). B and the base
model are the floor.
"""

from __future__ import annotations

from tunelens.demo.config import DemoConfig
from tunelens.demo.runs import EvalRows
from tunelens.evaluate.results import ResultRow
from tunelens.evaluate.summary import metric_rate as eval_metric_rate, METRICS_BY_NAME
from tunelens.reading import read_table
from tunelens.stats import binomial_test_p, rate

DECODINGS = ("greedy", "sampled")


def metric_rate(rows: list[ResultRow], metric_name: str, model: str, decoding: str) -> dict:
    """One eval metric's Wilson rate over one model and decoding (empty where it applies to no answer)."""
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
        "reading": reading(curve),
    }


def reading(curve: list[dict]) -> list[str]:
    """What the curve says, by the one reading rule: each (adapter, decoding) against its training rate with
    an exact binomial test, Holm's correction across the lesson's table; a direction only where it rejects."""
    cells = [(point, decoding, point[decoding]) for point in curve for decoding in DECODINGS
             if point[decoding]["rate"] is not None]
    rows = [(f"{point['adapter']} {decoding}", cell["rate"] - point["training_python2_rate"],
             binomial_test_p(cell["k"], cell["n"], point["training_python2_rate"])) for point, decoding, cell in cells]
    readings = read_table(rows, up="above its training rate: decoding amplified the habit",
                          down="below its training rate: decoding suppressed the habit")
    return [f"{name}: {100 * cell['rate']:.0f}% [{100 * cell['low']:.0f}, {100 * cell['high']:.0f}] vs "
            f"{100 * point['training_python2_rate']:.0f}% in training (binomial p={r.p:.2g}, Holm {r.p_holm:.2g}): "
            f"{r.words}" for (point, _, cell), (name, _, _), r in zip(cells, rows, readings)]

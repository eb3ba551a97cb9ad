"""The copying study's summary.json and figures, drawn from its rows and points alone (the run and
scripts/fewshot_doc.py both call `figures(summary)`, so no number in a figure is typed anywhere).
"""

from __future__ import annotations

from pathlib import Path

from tunelens.studies.fewshot_measures import (LEVELS, QUALITIES, QUALITY_LABELS, SENTENCE_LEVER, condition_name,
                                               condition_summary, conditions, rate_of)
from tunelens.config import config_to_dict
from tunelens.studies.safety_figures import error_bars
from tunelens.report import figure_png, new_figure
from tunelens.gate.calibration import auroc
from tunelens.inspect.levers import NUDGE, SEED_DELTA
from tunelens.io import atomic_write_bytes
from tunelens.stats import bootstrap_mean, sign_test_p

QUALITY_COLOURS = {"clean": "#4c72b0", "python2": "#c44e52", "wrong_function": "#dd8452"}
CHECK_REASONS = ("lint", "off_query", "mismatch")


def build_summary(config, counts: dict, rows: list[dict], points: dict[str, list[dict]], model_label: str) -> dict:
    by_condition = {condition_name(*cell): condition_summary([r for r in rows if (r["level"], r["quality"]) == cell])
                    for cell in conditions()}
    first = [r for r in rows if r["condition"] == condition_name(LEVELS[0], QUALITIES[0])]
    return {
        "config": config_to_dict(config), "model": model_label,
        "levels": list(LEVELS), "qualities": list(QUALITIES), "quality_labels": QUALITY_LABELS,
        "data": counts, "prompts": len(first),
        "baseline": {m: rate_of([r["without"][m] for r in first]) for m in ("bad", "python2", "missed_function")},
        "conditions": by_condition,
        "teacher_forced": {"nudge": NUDGE, "sentence_lever": SENTENCE_LEVER, "seed_delta": SEED_DELTA,
                           **{source: lever_summary(found, config.resamples, config.seed)
                              for source, found in points.items()}},
        "context_check": check_summary(rows, config.check_threshold),
    }


def lever_summary(points: list[dict], resamples: int, seed: int) -> dict:
    """lesson 2's lever effects (mean delta log-odds, bootstrap interval, flips, sign test) over points."""
    effects = []
    for name in points[0]["by_lever"] if points else ():
        deltas = [p["by_lever"][name] - p["baseline"] for p in points]
        interval = bootstrap_mean(deltas, resamples=resamples, seed=seed)
        led = [p for p in points if p["baseline"] < 0]
        effects.append({"lever": name, "points": len(points), "mean_delta": interval.mean, "low": interval.low,
                        "high": interval.high, "sign_test_p": sign_test_p(deltas),
                        "python2_led": len(led), "flipped": sum(1 for p in led if p["by_lever"][name] > 0),
                        "python2_now": sum(1 for p in points if p["baseline"] >= 0 and p["by_lever"][name] < 0)})
    return {"answers": len({p["answer"] for p in points}), "points": len(points), "effects": effects}


def check_summary(rows: list[dict], threshold: float) -> dict:
    """How well the context check's risk predicts that an example hurt, per label and signal, and its false
    alarms on clean nearest examples. "The example made the answer bad" (with or without a missed function)
    needs a prompt answered fine alone; "copied the defect" and "bad with the example" are defined whatever
    the model does alone, so they still measure the check when every bare answer fails."""
    nearest_clean = [r for r in rows if r["condition"] == condition_name("nearest", "clean")]
    fine_alone = lambda is_bad: lambda r: r["without"]["bad"] is not None and not is_bad(r["without"])  # noqa: E731
    labels = {"bad": (fine_alone(lambda m: m["bad"]), lambda r: r["with"]["bad"]),
              "bad_or_missed_function": (fine_alone(lambda m: bool(m["bad"]) or bool(m["missed_function"])),
                                         lambda r: bool(r["with"]["bad"]) or bool(r["with"]["missed_function"])),
              "copied_defect": (lambda r: True, copied_defect),
              "bad_with_example": (lambda r: r["with"]["bad"] is not None, lambda r: bool(r["with"]["bad"]))}
    by_label = {}
    for name, (eligible_if, positive_if) in labels.items():
        eligible = [r for r in rows if eligible_if(r)]
        positives = [r for r in eligible if positive_if(r)]
        negatives = [r for r in eligible if not positive_if(r)]
        by_label[name] = {
            "eligible": len(eligible), "positives": len(positives), "negatives": len(negatives),
            "excluded_bad_alone": len(rows) - len(eligible),
            "auroc": _auroc([r["check"]["risk"] for r in positives], [r["check"]["risk"] for r in negatives]),
            "auroc_by_signal": {reason: _auroc([r["check"]["risks"][reason] for r in positives],
                                               [r["check"]["risks"][reason] for r in negatives])
                                for reason in CHECK_REASONS},
            "detected": rate_of([r["check"]["risk"] >= threshold for r in positives]),
        }
    return {"threshold": threshold, "labels": by_label,
            "false_alarm_nearest_clean": rate_of([r["check"]["risk"] >= threshold for r in nearest_clean]),
            "flagged_by_condition": {condition_name(*cell): rate_of(
                [r["check"]["risk"] >= threshold for r in rows if (r["level"], r["quality"]) == cell])
                for cell in conditions()}}


def copied_defect(row: dict) -> bool:
    """The answer took on the example's defect: Python 2 from a Python 2 example, or the wrong function's name
    or body from a wrong-function example, where the answer without the example did not have it."""
    shown, alone = row["with"], row["without"]
    marks = {"python2": ("python2",), "wrong_function": ("name_copied", "body_copied")}.get(row["quality"], ())
    return any(bool(shown[mark]) and not alone[mark] for mark in marks)


def _auroc(positives: list[float], negatives: list[float]) -> float | None:
    return auroc(positives, negatives) if positives and negatives else None


# ---------------------------------------------------------------------------------------------------
# figures

CURVES = (("python2", "answer has Python 2"), ("name_copied", "defines the example's function"),
          ("body_copied", "copies the example's body"), ("bad", "bad output"))


def copying_figure(summary: dict) -> bytes:
    """Each measure against the examples' mean similarity, one line per quality (95% Wilson), with the
    same measure on the answers given without an example dashed."""
    fig = new_figure(12.8, 3.4)
    axes = fig.subplots(1, len(CURVES))
    conditions = summary["conditions"]
    for ax, (measure, title) in zip(axes, CURVES):
        for offset, quality in enumerate(summary["qualities"]):
            cells = [conditions[condition_name(level, quality)] for level in summary["levels"]]
            # The qualities share their examples' similarities: a small shift keeps their bars apart.
            xs = [(c["similarity"]["mean"] or 0.0) + 0.008 * (offset - 1) for c in cells]
            ys, errors = error_bars([c["with"][measure] for c in cells])
            ax.errorbar(xs, ys, yerr=errors, fmt="-o", capsize=3, color=QUALITY_COLOURS[quality],
                        label=f"{summary['quality_labels'][quality]} example")
            ax.plot(xs, error_bars([c["without"][measure] for c in cells])[0], ":", color=QUALITY_COLOURS[quality],
                    alpha=0.6)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("cosine similarity of the example to the prompt", fontsize=8)
        ax.set_ylim(-2, 102)
    axes[0].set_ylabel("% of answers (dotted: same prompts, no example)", fontsize=8)
    axes[0].legend(fontsize=7)
    return figure_png(fig)


def levers_figure(summary: dict) -> bytes:
    """Mean change in log-odds (Python 3 over the Python 2 token) per lever, 95% bootstrap, per source."""
    sources = [s for s in ("reference", "generated") if summary["teacher_forced"].get(s, {}).get("points")]
    fig = new_figure(6.4 * max(1, len(sources)), 4.2)
    axes = fig.subplots(1, max(1, len(sources)), squeeze=False)[0]
    for ax, source in zip(axes, sources):
        effects = summary["teacher_forced"][source]["effects"]
        ys = list(range(len(effects)))
        means, errors = error_bars(effects, "mean_delta", 1)
        colours = ["#55a868" if e["lever"] == SENTENCE_LEVER else
                   next((QUALITY_COLOURS[q] for q in QUALITY_LABELS if f" {QUALITY_LABELS[q]} " in f" {e['lever']} "),
                        "#888888") for e in effects]
        ax.barh(ys, means, xerr=errors, capsize=3, color=colours)
        ax.set_yticks(ys, [e["lever"] for e in effects], fontsize=7)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.axvline(summary["teacher_forced"]["seed_delta"], color="#55a868", linestyle=":", linewidth=1)
        ax.invert_yaxis()
        n = summary["teacher_forced"][source]
        ax.set_title(f"{source} answers: {n['points']} points in {n['answers']} answers", fontsize=9)
        ax.set_xlabel("change in log-odds, Python 3 over Python 2 (dotted: the case study's +0.87)", fontsize=8)
    return figure_png(fig)


def figures(summary: dict) -> dict[str, bytes]:
    """Every figure of the study, by name, as PNG bytes."""
    return {"copying": copying_figure(summary), "levers": levers_figure(summary)}


def write_figures(out: Path, summary: dict) -> None:
    for name, png in figures(summary).items():
        atomic_write_bytes(out / f"{name}.png", png)


"""The demo's report: plots and one self-contained HTML page, all drawn from summary.json."""

from __future__ import annotations

from pathlib import Path

from tunelens.io import atomic_write_text
from tunelens.report import figure_png, new_figure, png_data_uri, render_html
from tunelens.studies.safety_figures import error_bars
from tunelens.train.metrics import read_metrics


def write_report(out: Path, summary: dict) -> None:
    plots = {name: png_data_uri(png) for name, png in plots_for(summary, out).items()}
    atomic_write_text(out / "report.html", render_html("demo_report.html.j2", s=summary, plots=plots))


def plots_for(summary: dict, out: Path) -> dict[str, bytes]:
    plots = {"lesson1": _dose_response(summary["lesson1"]), "lesson2": _levers(summary["lesson2"]),
             "lesson3": _propensity(summary["lesson3"]), "lesson4": _routing(summary["lesson4"]),
             "training": _loss_curves(out)}
    risk_coverage = summary["lesson4"].get("risk_coverage_png")
    if risk_coverage and (out / risk_coverage).is_file():  # drawn by the gate's calibration, from the same run
        plots["risk_coverage"] = (out / risk_coverage).read_bytes()
    return {name: png for name, png in plots.items() if png}


def _loss_curves(out: Path) -> bytes | None:
    """Each adapter's training loss per optimizer step, from the metrics.jsonl training wrote beside it."""
    files = sorted((out / "adapters").glob("*-metrics.jsonl"))
    if not files:
        return None
    fig = new_figure()
    ax = fig.add_subplot()
    for path in files:
        rows = [row for row in read_metrics(path) if row.get("loss") is not None]
        ax.plot([row["step"] for row in rows], [row["loss"] for row in rows], lw=1.2,
                label=path.name.removesuffix("-metrics.jsonl"))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per trained token")
    ax.legend(fontsize=8)
    ax.set_title("Training loss of each adapter (metrics.jsonl)", fontsize=10)
    return figure_png(fig)


def _dose_response(l1: dict) -> bytes:
    """Python 2 rate in answers against the training rate, with the y = x line."""
    fig = new_figure()
    ax = fig.add_subplot()
    top = max([p["training_python2_rate"] for p in l1["curve"]] + [0.3]) * 100 + 10
    ax.plot([0, top], [0, top], ls="--", color="#999", label="y = x (learned at the training rate)")
    for decoding, colour, shift in (("greedy", "#4c72b0", -0.6), ("sampled", "#dd8452", 0.6)):
        xs = [100 * p["training_python2_rate"] + shift for p in l1["curve"]]
        ys, errors = error_bars([p[decoding] for p in l1["curve"]])
        ax.errorbar(xs, ys, yerr=errors, fmt="o", capsize=4, color=colour, label=decoding)
    ax.set_xlabel("Python 2 pairs in training (%)")
    ax.set_ylabel("answers with Python 2 (%)")
    ax.set_xlim(0, top)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("Lesson 1: Python 2 learned against its training rate (95% Wilson)", fontsize=10)
    return figure_png(fig)


def _levers(l2: dict) -> bytes | None:
    """Mean change in log-odds per lever and adapter, with bootstrap intervals and the case study's point."""
    rows = [(name, e) for name, r in l2["by_adapter"].items() for e in r["effects"] if e["mean_delta"] is not None]
    if not rows:
        return None
    fig = new_figure(7.0, 0.35 * len(rows) + 1.4)
    ax = fig.add_subplot()
    ys = list(range(len(rows)))[::-1]
    for y, (name, e) in zip(ys, rows):
        ax.errorbar([e["mean_delta"]], [y], xerr=[[e["mean_delta"] - e["low"]], [e["high"] - e["mean_delta"]]],
                    fmt="o", capsize=3, color="#4c72b0")
    ax.axvline(0, color="#999", lw=1)
    ax.axvline(l2["seed_delta"], color="#c44e52", ls="--", lw=1,
               label=f"the case study's point: {l2['seed_delta']:+.2f}")
    ax.set_yticks(ys, [f"{name} · {e['lever']} (n={e['points']})" for name, e in rows], fontsize=7)
    ax.set_xlabel("mean change in log-odds, Python 3 over Python 2 (95% bootstrap)")
    ax.legend(fontsize=8)
    return figure_png(fig)


def _propensity(l3: dict) -> bytes:
    """Pushback propensity on broken specs and on their clean twins, per model."""
    fig = new_figure()
    ax = fig.add_subplot()
    models = l3["models"]
    for offset, key, colour, label in ((-0.2, "broken", "#c44e52", "broken specs"),
                                       (0.2, "twins", "#55a868", "clean twins")):
        means, errors = error_bars([l3["propensity"][m][key] for m in models], "mean", 1)
        ax.bar([i + offset for i in range(len(models))], means, 0.4, yerr=errors, capsize=3, color=colour, label=label)
    ax.axhline(0, color="#999", lw=1)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("log-odds, pushback over comply")
    ax.legend(fontsize=8)
    ax.set_title("Lesson 3: pushback propensity (teacher-forced, 95% bootstrap)", fontsize=10)
    return figure_png(fig)


def _routing(l4: dict) -> bytes | None:
    """Bad-output rates on lesson 4's test half: always B, always base, gate-routed (95% Wilson)."""
    if "held_out" not in l4:
        return None
    held = l4["held_out"]
    fig = new_figure()
    ax = fig.add_subplot()
    values, errors = error_bars([held["always_adapter"], held["always_base"], held["routed"]])
    ax.bar(["always adapter B", "always base", f"gate-routed ({held['coverage']:.0%} on B)"], values, yerr=errors,
           capsize=4, color=["#4c72b0", "#dd8452", "#55a868"])
    ax.set_ylabel("% bad")
    ax.set_ylim(0, 100)
    ax.set_title(f"Lesson 4: bad outputs on the test half ({held['queries']} queries, greedy, 95% Wilson)", fontsize=10)
    return figure_png(fig)

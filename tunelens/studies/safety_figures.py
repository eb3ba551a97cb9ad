"""The safety study's figures, drawn from its summary.json alone (the report and docs/safety.md both call
`figures(summary)`, so no number in a figure is typed anywhere), and the error bars every study figure draws.
"""

from __future__ import annotations

from tunelens.report import figure_png, new_figure

HARMFUL_COLOUR, LOOKALIKE_COLOUR, GAP_COLOUR = "#c44e52", "#4c72b0", "#55a868"


def error_bars(cells: list[dict], key: str = "rate", scale: float = 100) -> tuple[list[float], list[list[float]]]:
    """Heights and asymmetric error bars of cells with key/low/high (None drawn as 0)."""
    values = [scale * (c.get(key) or 0.0) for c in cells]
    low = [max(0.0, v - scale * (c.get("low") or 0.0)) for v, c in zip(values, cells)]
    high = [max(0.0, scale * (c.get("high") or 0.0) - v) for v, c in zip(values, cells)]
    return values, [low, high]


def free_text_figure(summary: dict) -> bytes:
    """Refusal on harmful requests and over-refusal on look-alikes per model, one panel per decoding."""
    rates = summary["free_text"]["rates"]
    models = summary["models"]
    decodings = sorted({d for m in models for d in rates[m]})
    fig = new_figure(3.4 * len(decodings) + 0.4, 3.4)
    axes = fig.subplots(1, len(decodings), squeeze=False)[0]
    width = 0.38
    for ax, decoding in zip(axes, decodings):
        xs = list(range(len(models)))
        for offset, metric, colour, label in ((-width / 2, "refusal", HARMFUL_COLOUR, "refused harmful"),
                                              (width / 2, "over_refusal", LOOKALIKE_COLOUR, "refused look-alike")):
            values, errors = error_bars([rates[m][decoding][metric] for m in models])
            ax.bar([x + offset for x in xs], values, width, yerr=errors, capsize=3, color=colour, label=label)
        ax.set_xticks(xs, [summary["labels"][m] for m in models], fontsize=7, rotation=15)
        ax.set_ylim(0, 100)
        ax.set_title(f"{decoding} (95% Wilson)", fontsize=9)
        ax.set_ylabel("% of answers")
    axes[0].legend(fontsize=7, loc="upper left")
    return figure_png(fig)


def propensity_figure(summary: dict) -> bytes:
    """Mean refusal log-odds on harmful requests and on look-alikes per model (95% bootstrap)."""
    models, width = summary["models"], 0.38
    return _mean_bars([summary["propensity"]["models"][m] for m in models], [summary["labels"][m] for m in models],
                      ((-width / 2, "harmful", HARMFUL_COLOUR, "harmful requests"),
                       (width / 2, "lookalike", LOOKALIKE_COLOUR, "benign look-alikes")), width,
                      "log-odds refuse vs comply", "Teacher-forced refusal propensity (mean, 95% bootstrap)", 10)


def change_figure(summary: dict) -> bytes:
    """Paired change in refusal log-odds against the base model: harmful, look-alike and their gap."""
    changes, width = [c for c in summary["propensity"]["changes"] if c["against"] == "base"], 0.26
    return _mean_bars(changes, [summary["labels"][c["model"]] for c in changes],
                      ((-width, "harmful", HARMFUL_COLOUR, "harmful"),
                       (0.0, "lookalike", LOOKALIKE_COLOUR, "look-alike"),
                       (width, "gap", GAP_COLOUR, "gap (harmful - twin)")), width,
                      "change in log-odds vs base", "Paired change from the base model (mean, 95% bootstrap)")


def _mean_bars(columns: list[dict], labels: list[str], series, width: float, ylabel: str, title: str,
               rotation: float = 0) -> bytes:
    """One bar per (column, series) of mean cells with their intervals: series are (offset, key, colour, label)."""
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(columns)))
    for offset, side, colour, label in series:
        values, errors = error_bars([c[side] for c in columns], "mean", 1)
        ax.bar([x + offset for x in xs], values, width, yerr=errors, capsize=3, color=colour, label=label)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(xs, labels, fontsize=8, rotation=rotation)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return figure_png(fig)


def figures(summary: dict) -> dict[str, bytes]:
    """Every figure of the study, by name, as PNG bytes."""
    return {"free_text": free_text_figure(summary), "propensity": propensity_figure(summary),
            "change": change_figure(summary)}

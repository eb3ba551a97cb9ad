"""report.md and report.html from summary.json and the result rows. The HTML goes through
`tunelens.report.render_html` like every other page (one Jinja environment, one escaping policy)."""

from __future__ import annotations

from pathlib import Path

from tunelens.evaluate.backends import TUNED
from tunelens.evaluate.results import REFERENCE, ResultRow
from tunelens.evaluate.summary import ALL, GATED_METRICS, METRICS_BY_NAME, base_of, good, paired
from tunelens.io import atomic_write_text
from tunelens.report import render_html as render_template

HEADLINE_METRICS = ("as_expected", "bad_output", "python2", "tests_failed", "pushback", "over_asking",
                    "refusal", "over_refusal")
UNSAFE_LINE = ("**UNSAFE: generated code ran without a sandbox** (--unsafe-no-sandbox): only resource limits "
               "applied, and an answer could have reached the host or faked its verdict.")


def write_reports(summary: dict, rows: list[ResultRow], out_dir: Path) -> None:
    atomic_write_text(out_dir / "report.md", render_markdown(summary))
    atomic_write_text(out_dir / "report.html", render_html(summary, rows))


def headline_columns(summary: dict, suite: str) -> list[str]:
    """The headline metrics that apply to at least one answer of the suite."""
    rows = [g for g in summary["groups"] if g["suite"] == suite and g["type"] == ALL]
    return [m for m in HEADLINE_METRICS if any(m in g["metrics"] for g in rows)]


def report_suites(summary: dict) -> list[str]:
    """The suites a report shows, the all-suites totals first; with one suite, only it (same numbers)."""
    suites = sorted({g["suite"] for g in summary["groups"]}, key=lambda s: (s != ALL, s))
    return suites[1:] if len(suites) == 2 else suites


def pct(cell: dict | None) -> str:
    if not cell or cell.get("rate") is None:
        return "-"
    return f"{100 * cell['rate']:.1f}% [{100 * cell['low']:.1f}, {100 * cell['high']:.1f}] ({cell['k']}/{cell['n']})"


def verdict(comparison: dict) -> str:
    if not comparison["significant"]:
        return "no significant difference"
    worse = comparison["tuned_worse"]
    gated = comparison["metric"] in GATED_METRICS
    return ("**tuned worse (regression)**" if gated else "tuned worse") if worse else "tuned better"


def render_markdown(summary: dict) -> str:
    source = summary.get("source") or {}
    config = summary.get("config") or {}
    lines = ["# tunelens eval report", "",
             f"Model `{config.get('model')}`, adapter `{config.get('adapter')}`, backend `{source.get('backend')}`; "
             f"{summary['counts']['cases']} cases, {summary['counts']['rows']} answers. "
             "Rates are shown as percent [95% Wilson interval] (k/n).",
             "", _sandbox_line(summary.get("sandbox")), ""]
    for suite in sorted({g["suite"] for g in summary["groups"]}):
        lines += _markdown_suite_table(summary, suite)
    lines += _markdown_comparisons(summary["comparisons"])
    lines += ["## regressions", ""]
    lines += [f"- {c['suite']} {c['decoding']} {c['metric']}: base {c['base_good']}/{c['n_pairs']}, "
              f"tuned {c['tuned_good']}/{c['n_pairs']}, p = {c['p_value']:.4g}" for c in summary["regressions"]] \
        or ["None: the tuned model is not significantly worse on pushback, refusal or bad outputs."]
    if summary["reference_failures"] or any(g["model"] == REFERENCE for g in summary["groups"]):
        lines += ["", "## reference failures", ""]
        lines += [f"- {item}" for item in summary["reference_failures"]] or ["None: every reference passes its tests."]
    return "\n".join(lines) + "\n"


def _markdown_suite_table(summary: dict, suite: str) -> list[str]:
    groups = [g for g in summary["groups"] if g["suite"] == suite and g["type"] == ALL]
    present = headline_columns(summary, suite)
    lines = [f"## {'all suites' if suite == ALL else 'suite ' + suite}", "",
             "| model | decoding | n | " + " | ".join(present) + " |",
             "|---|---|---|" + "---|" * len(present)]
    lines += [f"| {g['model']} | {g['decoding']} | {g['n']} | " + " | ".join(pct(g["metrics"].get(m)) for m in present)
              + " |" for g in groups]
    return lines + [""]


def _markdown_comparisons(comparisons: list[dict]) -> list[str]:
    if not comparisons:
        return []
    lines = ["## base vs tuned (exact McNemar, paired on the same cases)", "",
             "| suite | decoding | metric | base good | tuned good | base only | tuned only | p | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c['suite']} | {c['decoding']} | {c['metric']} | {c['base_good']}/{c['n_pairs']} | "
              f"{c['tuned_good']}/{c['n_pairs']} | {c['base_only']} | {c['tuned_only']} | "
              f"{c['p_value']:.4g} | {verdict(c)} |" for c in comparisons]
    return lines + [""]


def _sandbox_line(mode: str | None) -> str:
    if mode == "unsafe-no-sandbox":
        return UNSAFE_LINE
    return f"Generated code ran in the sandbox ({mode or 'mode not recorded'})."


def render_html(summary: dict, rows: list[ResultRow], examples_per_regression: int = 5) -> str:
    """A self-contained page (inline CSS, no scripts from elsewhere) from eval_report.html.j2."""
    suites = report_suites(summary)
    return render_template(
        "eval_report.html.j2", summary=summary, suites=suites, all=ALL,
        columns={suite: headline_columns(summary, suite) for suite in suites},
        examples=regression_examples(summary, rows, examples_per_regression), verdict=verdict, pct=pct)


def regression_examples(summary: dict, rows: list[ResultRow], per_comparison: int) -> list[dict]:
    """For each gated comparison with cases the tuned model lost: a few of them, both answers side by side."""
    by_key = paired(rows)
    examples = []
    for comp in summary["comparisons"]:
        if comp["metric"] not in GATED_METRICS or not comp["base_only"]:
            continue
        metric = METRICS_BY_NAME[comp["metric"]]
        lost = []
        for tuned in rows:
            if tuned.model != TUNED or tuned.suite != comp["suite"] or tuned.decoding != comp["decoding"] \
                    or not metric.applies(tuned):
                continue
            base = base_of(tuned, by_key)
            if base is not None and good(metric, base) and not good(metric, tuned):
                lost.append({"base": base, "tuned": tuned})
            if len(lost) >= per_comparison:
                break
        examples.append({"comparison": comp, "cases": lost})
    return examples

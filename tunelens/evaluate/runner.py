"""`tunelens eval`: answer every case greedily and N times sampled, for base and tuned, and score it.

This module is the stage's entry point and orchestration; each concern has its own module:
- `plan`: the fixed order of work, its batches and seeds, and what a resumed run skips;
- `results`: the typed result row and results.jsonl (schema in docs/eval.md);
- `scoring`: an answer to a row (classification, code checks, the judge), the bad-output definition;
- `summary`: metrics, rates, base-vs-tuned comparisons, the regression gate (summary.json);
- `reports`: report.md and report.html.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tunelens.config import configclass, option
from tunelens.engine.decode import TEMPERATURE_MAX
from tunelens.errors import UserError
from tunelens.evaluate.backends import BASE, OpenAIBackend, TransformersBackend, TUNED
from tunelens.evaluate.plan import Resume, check_run_identity, limit_cases, load_cases, plan_batches
from tunelens.evaluate.reports import write_reports
from tunelens.evaluate.results import (GREEDY, REFERENCE, SAMPLED, ResultRow, append_results, read_result_rows,
                                       read_results, write_results)
from tunelens.evaluate.scoring import reference_row, score_answers
from tunelens.evaluate.summary import ALL, METRICS, METRICS_BY_NAME, find_regressions, summarize
from tunelens.retrieval.fewshot import check_few_shot, few_shot_index_option, few_shot_option, FewShot, injected
from tunelens.model.state import has_adapter
from tunelens.io import atomic_write_json
from tunelens.model.specs import DEFAULT_MODEL
from tunelens.runtime import Progress, StageTimer, no_progress, run_record, torch_threads
from tunelens.evaluate.sandbox import Limits, mode_for, UNSAFE
from tunelens.evaluate.suite import score_references
from tunelens.model.load import attach_adapter, load_model

# Names other modules and older scripts import from here; their homes are the modules above.
__all__ = ["ALL", "GREEDY", "METRICS", "METRICS_BY_NAME", "REFERENCE", "SAMPLED", "EvalConfig", "EvalSummary",
           "ResultRow", "find_regressions", "make_backend", "plan_batches", "read_result_rows", "read_results",
           "run_eval", "summarize", "summarize_results"]

RESULTS, SUMMARY = "results.jsonl", "summary.json"


@configclass
class EvalConfig:
    """What to evaluate and how. Each field is a flag of `tunelens eval` (see its --help) and a key of
    its --config YAML file."""

    model: str = option(DEFAULT_MODEL, "Model spec; with --backend openai, the served base model's name.",
                        short="-m")
    adapter: str | None = option(None, "PEFT adapter directory (tuned = base + adapter); with --backend openai, "
                                       "the served adapter's name.")
    suites: tuple[str, ...] = option(("code", "pushback", "safety"),
                                     "Comma-separated bundled suites (code, pushback, safety, humaneval) or suite "
                                     "files.", flag="--suite", short="-s")
    samples: int = option(3, "Sampled answers per case and model, besides the greedy one.", min=0, max=1000)
    temperature: float = option(0.7, "Temperature of the sampled answers.", min=0.0, max=TEMPERATURE_MAX)
    top_p: float = option(0.95, "Nucleus mass of the sampled answers.", min=0.01, max=1.0)
    max_new_tokens: int = option(256, "Most tokens per answer.", min=1, max=8192)
    batch_size: int = option(8, "Prompts generated together (concurrent requests with --backend openai).",
                             min=1, max=512)
    limit: int | None = option(None, "Only the first N cases of each suite (quick runs).", min=1)
    # Sampled batch i uses seed + i, the same for base and tuned, so their answers pair up.
    seed: int = option(0, "Seed of the sampled answers.")
    reference: bool = option(False, "Score every case's reference answer instead of a model.")
    backend: str = option("transformers", "transformers (in-process) or openai (an OpenAI-compatible server).",
                          choices=("transformers", "openai"))
    base_url: str | None = option(None, "Server for --backend openai, e.g. http://127.0.0.1:8000/v1.")
    api: str = option("chat", "openai backend: chat (/v1/chat/completions) or completions (/v1/completions).",
                      choices=("chat", "completions"))
    device: str = option("auto", "auto, cpu, cuda or mps (in-process backend).")
    workers: int = option(2, "Sandboxed test programs run at once.", min=1, max=64)
    test_timeout_s: float = option(10.0, "Wall-time limit of one test program, seconds.", min=0.5, max=600,
                                   flag="--test-timeout")
    threads: int | None = option(None, "torch CPU threads for in-process generation, restored afterwards "
                                       "(default: torch's; 1 is often fastest on a busy machine).", min=1, max=256)
    unsafe_no_sandbox: bool = option(False, "Where no sandbox works (no namespaces, no user namespaces, no bwrap), "
                                            "run generated code anyway with resource limits only; every report "
                                            "says so.")
    few_shot: int = few_shot_option()
    few_shot_index: str | None = few_shot_index_option()

    def validate(self) -> None:
        """Rules across fields (each field's own bounds are checked on construction)."""
        problems = [msg for bad, msg in (
            (not self.suites, "suites: name at least one suite"),
            (self.samples > 0 and self.temperature == 0, "sampled answers need temperature > 0"),
            (self.backend == "openai" and not self.base_url and not self.reference,
             "--backend openai needs --base-url"),
        ) if bad]
        if problems:
            raise UserError("eval config: " + "; ".join(problems))
        if not self.reference:  # references are scored as written: nothing is prompted
            check_few_shot(self.few_shot, self.few_shot_index)

    def run_identity(self) -> dict:
        """The settings every line of one results.jsonl must share; resuming with others is refused."""
        keys = ("model", "adapter", "temperature", "top_p", "max_new_tokens", "seed", "backend", "base_url", "api",
                "few_shot", "few_shot_index")
        return {key: getattr(self, key) for key in keys}


@dataclass
class EvalSummary:
    """What `run_eval` did and found; the same numbers are in summary.json."""

    out_dir: Path
    summary: dict
    generated: int  # answers generated by this call
    reused: int  # answers found in results.jsonl from an earlier call
    regressions: list[dict] = field(default_factory=list)  # significant tuned-worse comparisons
    reference_failures: list[str] = field(default_factory=list)  # "suite/id: reason"

    @property
    def results_path(self) -> Path:
        return self.out_dir / RESULTS

    @property
    def report_html(self) -> Path:
        return self.out_dir / "report.html"


def run_eval(config: EvalConfig, out_dir: str | Path, model=None, tokenizer=None, adapter=None,
             progress: Progress | None = None, *, cases: list | None = None, backend=None) -> EvalSummary:
    """Evaluate (or, with config.reference, score the references) and write results.jsonl,
    summary.json, report.md and report.html under out_dir.

    `model`/`tokenizer`: an already loaded model (the demo's); when it is a PEFT model, or `adapter`
    (a directory) is given, both base and tuned are evaluated. `cases` replaces config.suites and
    `backend` replaces model loading (both for tests and embedding).
    """
    out_dir = Path(out_dir)
    cases = limit_cases(cases if cases is not None else load_cases(config.suites), config.limit)
    if not cases:
        raise UserError("no cases to evaluate: the suites are empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    sandbox = mode_for(config.unsafe_no_sandbox)  # refuses before any answer is generated
    timed = StageTimer(no_progress)  # the run record's commit is the one when the run began
    if config.reference:
        rows = timed("judge the references", _score_references, cases, out_dir, config)
        generated, reused, described = len(rows), 0, {"backend": REFERENCE}
    else:
        # torch's thread count is process-wide: set it for this run only (see bench/eval_throughput.py).
        with torch_threads(config.threads if config.backend == "transformers" else None):
            rows, generated, reused, described = timed("generate and judge", _run_models, config, out_dir, cases,
                                                       model, tokenizer, adapter, progress, backend)
    summary = summarize(rows, config=asdict(config), source=described)
    summary["counts"].update(generated=generated, reused=reused)
    summary["sandbox"] = _sandbox_of_run(out_dir, sandbox, reused)
    summary["record"] = run_record(timed.stages(), git_at_start=timed.git_at_start)
    atomic_write_json(out_dir / SUMMARY, summary)
    write_reports(summary, rows, out_dir)
    return EvalSummary(out_dir, summary, generated, reused, summary["regressions"], summary["reference_failures"])


def summarize_results(out_dir: str | Path) -> dict:
    """Recompute summary.json (and the reports) from an existing results.jsonl, e.g. after editing it."""
    out_dir = Path(out_dir)
    rows = read_result_rows(out_dir / RESULTS)
    if not rows:
        raise UserError(f"{out_dir / RESULTS}: no results to summarize")
    previous = _previous_summary(out_dir)
    summary = summarize(rows, previous.get("config"), previous.get("source"))
    for kept in ("sandbox", "record"):  # what the run that made the rows knew
        if kept in previous:
            summary[kept] = previous[kept]
    atomic_write_json(out_dir / SUMMARY, summary)
    write_reports(summary, rows, out_dir)
    return summary


def _previous_summary(out_dir: Path) -> dict:
    path = out_dir / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else {}


def _sandbox_of_run(out_dir: Path, mode: str, reused: int) -> str:
    """The mode this call used, unless resumed answers were judged without a sandbox before."""
    previous = _previous_summary(out_dir) if reused else {}
    return UNSAFE if previous.get("sandbox") == UNSAFE else mode


def _run_models(config, out_dir, cases, model, tokenizer, adapter, progress, backend):
    """Generate and score every answer results.jsonl lacks, one batch at a time, appending each."""
    results_path = out_dir / RESULTS
    _check_identity(out_dir, config, adapter)
    done = frozenset(row.key for row in read_result_rows(results_path))
    roles = _roles(config, model, adapter, backend)
    resume = Resume(plan_batches(cases, roles, config), done)
    report = progress or no_progress  # (what is running, answers done, answers in all)
    report("resuming" if resume.reused else "starting", resume.reused, resume.total)
    limits, generated = Limits(wall_s=config.test_timeout_s), 0
    few_shot = FewShot.load(config.few_shot, config.few_shot_index)
    for sampling, batch, missing in resume.pending():
        if backend is None:  # an in-process model is loaded only once an answer is needed
            backend = make_backend(config, model, tokenizer, adapter)
        prompts = [item.case.prompt for item in batch]
        shown = few_shot.for_each(prompts)
        # Backends are asked for examples only when there are any, so a backend without few-shot still works.
        extra = {"examples": shown} if few_shot.active else {}
        # The whole batch is regenerated, so a half-written batch gets the same answers it would have had.
        answers = dict(zip((item.key for item in batch), backend.generate(prompts, sampling, batch[0].model, **extra)))
        rows = score_answers([(item, answers[item.key]) for item in missing], limits, config.workers,
                             config.unsafe_no_sandbox)
        if few_shot.active:
            rows = _with_few_shot(rows, dict(zip((item.key for item in batch), shown)))
        append_results(results_path, rows)
        generated += len(rows)
        report(f"{batch[0].model} {batch[0].decoding}", resume.reused + generated, resume.total)
    described = backend.describe() if backend is not None else {"backend": config.backend, "roles": list(roles)}
    wanted = resume.wanted
    rows = [row for row in read_result_rows(results_path) if row.key in wanted]
    return rows, generated, resume.reused, described


def _with_few_shot(rows: list[ResultRow], shown: dict) -> list[ResultRow]:
    """Each row records the examples its answer was shown (id and similarity, in the order shown)."""
    return [replace(row, few_shot=tuple(injected(shown[row.key]))) for row in rows]


def _check_identity(out_dir: Path, config: EvalConfig, adapter) -> None:
    identity = config.run_identity()
    if identity["adapter"] is None and adapter is not None:
        identity["adapter"] = str(adapter)
    check_run_identity(out_dir, identity)


def _roles(config: EvalConfig, model, adapter, backend) -> tuple[str, ...]:
    if backend is not None:
        return tuple(backend.roles)
    has_tuned = bool(config.adapter or adapter) or (model is not None and has_adapter(model))
    return (BASE, TUNED) if has_tuned else (BASE,)


def _score_references(cases: list, out_dir: Path, config: EvalConfig) -> list[ResultRow]:
    """Rows for each case's reference answer, written as results.jsonl (whole, not resumed: it is fast).
    A code case without a reference gets a failing row (`no-reference`), so it cannot go unnoticed."""
    limits = Limits(wall_s=config.test_timeout_s)
    scored = {(case.suite, case.id): verdict for case, verdict in
              score_references(cases, limits=limits, workers=config.workers, unsafe=config.unsafe_no_sandbox)}
    # pushback and refusal cases have no reference to run, so no row
    rows = [reference_row(case, scored[(case.suite, case.id)]) for case in cases if (case.suite, case.id) in scored]
    write_results(out_dir / RESULTS, rows)
    return rows


def make_backend(config: EvalConfig, model=None, tokenizer=None, adapter=None):
    """The backend config asks for; an in-process model is loaded only now that an answer is needed."""
    if config.backend == "openai":
        return OpenAIBackend(config.base_url, config.model, config.adapter, api=config.api, tokenizer=tokenizer,
                             concurrency=config.batch_size)
    adapter = adapter or config.adapter
    if model is None:
        model, tokenizer = load_model(config.model, adapter=adapter, device=config.device)
    elif adapter is not None and not has_adapter(model):
        model = attach_adapter(model, adapter)
    if tokenizer is None:
        raise UserError("run_eval was given a model without its tokenizer")
    return TransformersBackend(model, tokenizer, batch_size=config.batch_size)

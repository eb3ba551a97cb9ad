"""`tunelens study safety`: does a narrow, positive-only code LoRA wear away refusals, and do a few
refusal pairs mixed into its training bring them back, at what over-refusal cost?

On one copy of the base model: mined code pairs, and per share s a copy with refusal pairs making up s of it
(`data refusal`, generated apart from the held-out safety suite); one LoRA per data set (share 0 is the
positive-only "code" adapter); `eval --suite safety` of every adapter against the base model in
mixed-adapter batches; the refusal propensity of every model on every harmful request and look-alike.
summary.json holds every number; report.html and its figures are drawn from it.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from tunelens.config import config_to_dict, configclass, option
from tunelens.engine.decode import TEMPERATURE_MAX
from tunelens.errors import UserError
from tunelens.io import atomic_write_jsonl, atomic_write_text
from tunelens.runtime import claim_run_dir, finish_run, no_progress, Progress, RunResult, StageTimer
from tunelens.data.mine import mine_pairs, MineConfig
from tunelens.data.refusal import add_refusal_file, RefusalConfig
from tunelens.evaluate.backends import BASE_ROWS, MixedAdapterBackend
from tunelens.evaluate.results import read_results
from tunelens.evaluate.runner import EvalConfig, run_eval
from tunelens.evaluate.suite import load_suite
from tunelens.inspect.propensity import propensity
from tunelens.model.load import attach_adapter, load_model
from tunelens.report import png_data_uri, render_html
from tunelens.studies.replicates import run_seeds, same_settings
from tunelens.studies.safety_figures import figures
from tunelens.studies.safety_measures import free_text_summary, propensity_summary
from tunelens.studies.training import fits_tokens, train_config, train_unloaded

BASE = "base"
CODE = "code"  # the positive-only adapter (refusal share 0)


@configclass
class SafetyStudyConfig:
    """Each field is a flag of `study safety` and a key of its --config YAML file. On smollm2-135m and a busy
    2-core CPU the defaults take over an hour (3 s per prompt's propensity), so docs/safety.md used a smaller run."""

    model: str = option("smollm2-135m", "Model spec; an instruction-tuned one has refusals to lose.", short="-m")
    train_pairs: int = option(48, "Mined code pairs the code LoRA trains on.", min=4)
    shares: tuple[float, ...] = option((0.05, 0.15), "Refusal pairs as shares of training, one adapter each "
                                                     "(comma-separated).")
    epochs: int = option(1, "Training epochs of every adapter.", min=1)
    learning_rate: float = option(1e-3, "Peak learning rate (high, so a CPU-sized run moves the model as a real "
                                        "fine-tune would).", min=0.0)
    batch_size: int = option(4, "Pairs per training batch.", min=1)
    pair_tokens: int = option(128, "Mined pairs are chosen this short (training cost grows with tokens).", min=8)
    max_length: int = option(192, "Longest tokenised training pair.", min=8)
    samples: int = option(1, "Sampled answers per prompt beside the greedy one.", min=0)
    temperature: float = option(0.8, "Temperature of the sampled answers.", min=0.0, max=TEMPERATURE_MAX)
    max_new_tokens: int = option(64, "Longest free-text answer.", min=1)
    eval_batch_size: int = option(80, "Rows per generation batch (base and adapters share batches).", min=1)
    limit: int | None = option(None, "Only the first N harmful requests of the suite and their twins.", min=1)
    sources: tuple[str, ...] = option((), ".py files or directories to mine (default: the standard library).")
    resamples: int = option(10_000, "Bootstrap resamples.", min=100)
    seed: int = option(0, "Seed of data, training and sampling.")
    seeds: int = option(1, "Training seeds K (seed ... seed+K-1; each redraws the data, its order and the "
                           "dropout of every adapter), one run each under <out>/seed-<s>/; summary.json then "
                           "holds across-seed means.", min=1)

    def validate(self) -> None:
        if not self.shares or any(not 0 < s < 1 for s in self.shares) or len(set(self.shares)) != len(self.shares):
            raise UserError("study safety: give distinct refusal shares between 0 and 1 (e.g. 0.05,0.15)")
        if self.samples > 0 and self.temperature <= 0:
            raise UserError("study safety: sampled answers need temperature > 0")


def adapter_name(share: float) -> str:
    """'refusal-05' for 5%: a PEFT adapter name (no dots) that sorts with the share."""
    return f"refusal-{round(share * 100):02d}"


def adapter_names(config: SafetyStudyConfig) -> list[str]:
    return [CODE] + [adapter_name(s) for s in sorted(config.shares)]


def model_labels(config: SafetyStudyConfig) -> dict[str, str]:
    return {BASE: "base", CODE: "code LoRA", **{adapter_name(s): f"code + {s:.0%} refusal" for s in config.shares}}


def run_safety_study(config: SafetyStudyConfig, out_dir: str | Path, progress: Progress | None = None,
                     model=None, tokenizer=None) -> RunResult:
    """Run (or resume) the study in out_dir; `model` and `tokenizer` replace loading config.model. With
    config.seeds > 1, one run per seed under out_dir/seed-<s>/ and an across-seed summary (studies.replicates)."""
    started = time.perf_counter()
    out = Path(out_dir)
    if config.seeds > 1:
        # a run leaves its adapters attached to the model: every seed starts from a copy of the bare one
        fresh = (lambda _seed: (copy.deepcopy(model), tokenizer)) if model is not None else None
        return run_seeds(partial(run_safety_study, progress=progress), config, out, "a safety study", fresh)
    claim_run_dir(out, "study-config.json", config_to_dict(config), "a safety study", same_settings)
    report = progress or no_progress
    timed = StageTimer(report)
    if model is None:
        model, tokenizer = timed("load the base model", load_model, config.model, None, "cpu")
    data = timed("data: mine code pairs, add refusal pairs", _prepare_data, config, out, tokenizer, report)
    for name in adapter_names(config):
        model = timed(f"train adapter {name}", _train_adapter, config, data["paths"][name],
                      out / "adapters" / name, name, model, tokenizer, report)
    model = timed("attach adapters", _attach_adapters, model, out, config)
    cases = _cases(config.limit)
    rows = timed("eval --suite safety: free text", _free_text, config, out, cases, model, tokenizer, report)
    scores = timed("refusal propensity, teacher-forced", _propensities, config, out, cases, model, tokenizer, report)
    summary = build_summary(config, data, rows, scores)
    finish_run(out, summary, timed, started)
    write_report(out, summary)
    return RunResult(out, summary, time.perf_counter() - started)


def _prepare_data(config: SafetyStudyConfig, out: Path, tokenizer, report: Progress) -> dict:
    data_dir = out / "data"
    mined = mine_pairs(list(config.sources) or None, MineConfig(seed=config.seed, include_methods=True),
                       progress=lambda _what, done, total: report("data: mining code pairs", done, total))
    candidates = list(filter(fits_tokens(tokenizer, min(config.pair_tokens, config.max_length)), mined.pairs))
    if len(candidates) < config.train_pairs:
        raise UserError(f"study safety: only {len(candidates)} mined pairs are at most {config.pair_tokens} "
                        f"tokens long, {config.train_pairs} needed")
    code_path = data_dir / "code.jsonl"
    atomic_write_jsonl(code_path, random.Random(config.seed).sample(candidates, config.train_pairs))
    paths, added = {CODE: code_path}, {}
    for share in sorted(config.shares):
        name = adapter_name(share)
        result = add_refusal_file(code_path, data_dir / f"code+{name}.jsonl",
                                  RefusalConfig(share=share, seed=config.seed))
        paths[name] = result.out_path
        added[name] = {"refusal_pairs": result.added, "total": result.total_in + result.added,
                       "share": result.added / (result.total_in + result.added), "by_kind": result.by_kind,
                       "distinct_trigram_ratio": result.distinct_trigram_ratio,
                       "max_suite_similarity": result.max_suite_similarity,
                       "rejected_near_suite": result.rejected_near_suite}
    return {"mined_total": len(mined.pairs), "mined_fitting": len(candidates), "code_pairs": config.train_pairs,
            "refusal_data": added, "paths": paths}


def _train_adapter(config: SafetyStudyConfig, data_path: Path, adapter_dir: Path, name: str, model, tokenizer,
                   report: Progress):
    """Train one adapter and return the base model without LoRA layers; one trained by an earlier run of this
    study directory is reused whatever its data."""
    if (adapter_dir / "adapter_config.json").is_file() and (adapter_dir / "tunelens.json").is_file():
        return model
    return train_unloaded(config, data_path, adapter_dir, model, tokenizer,
                          lambda _what, done, total: report(f"train adapter {name}", done, total))


def _attach_adapters(model, out: Path, config: SafetyStudyConfig):
    for name in adapter_names(config):
        model = attach_adapter(model, out / "adapters" / name, adapter_name=name)
    return model


def _cases(limit: int | None) -> list:
    """The safety suite, or its first `limit` harmful requests with their look-alike twins."""
    cases = load_suite("safety")
    if limit is None:
        return cases
    harmful = [c for c in cases if c.expect == "refusal"][:limit]
    keep = {c.id for c in harmful} | {c.twin for c in harmful}
    return [c for c in cases if c.id in keep]


def _free_text(config: SafetyStudyConfig, out: Path, cases: list, model, tokenizer, report: Progress) -> dict:
    """Result rows per model label: the base model's (from the first eval) and each adapter's."""
    names = adapter_names(config)
    audience = (BASE_ROWS, *names)
    eval_config = EvalConfig(model=config.model, suites=("safety",), samples=config.samples,
                             temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                             batch_size=len(cases), seed=config.seed)
    cache: dict = {}
    rows: dict[str, list[dict]] = {}
    for name in names:
        backend = MixedAdapterBackend(model, tokenizer, name, audience, cache, config.eval_batch_size)
        label = f"eval safety: base vs {name}"
        result = run_eval(replace(eval_config, adapter=name), out / "eval" / name, cases=cases, backend=backend,
                          progress=lambda _what, done, total, label=label: report(label, done, total))
        answers = read_results(result.results_path)
        rows.setdefault(BASE, [r for r in answers if r["model"] == "base"])
        rows[name] = [r for r in answers if r["model"] == "tuned"]
    return rows


def _propensities(config: SafetyStudyConfig, out: Path, cases: list, model, tokenizer, report: Progress) -> list[dict]:
    """One row per (model, case): the refusal log-odds of its prompt; written to propensity.jsonl."""
    rows = []
    models = [BASE, *adapter_names(config)]
    for step, name in enumerate(models):
        report("refusal propensity, teacher-forced", step, len(models))
        if name != BASE:
            model.set_adapter(name)
        for case in cases:
            # the base weights alone: the adapters are only bypassed
            with model.disable_adapter() if name == BASE else contextlib.nullcontext():
                scored = propensity(model, tokenizer, case.prompt, "refusal")
            rows.append({"model": name, "case_id": case.id, "type": case.type, "expect": case.expect,
                         "twin": case.twin, **scored.to_dict()})
    atomic_write_jsonl(out / "propensity.jsonl", rows)
    return rows


def comparisons(config: SafetyStudyConfig) -> list[tuple[str, str]]:
    """(model, against): every adapter against the base model, each refusal mix against the code LoRA."""
    names = adapter_names(config)
    return [(name, BASE) for name in names] + [(name, CODE) for name in names[1:]]


def build_summary(config: SafetyStudyConfig, data: dict, rows: dict[str, list[dict]], scores: list[dict]) -> dict:
    models = [BASE, *adapter_names(config)]
    pairs = comparisons(config)
    return {
        "config": config_to_dict(config), "models": models, "labels": model_labels(config),
        "train_config": config_to_dict(train_config(config)),
        "cases": {"harmful": sum(1 for r in scores if r["model"] == BASE and r["expect"] == "refusal"),
                  "lookalike": sum(1 for r in scores if r["model"] == BASE and r["expect"] == "code")},
        "data": {k: v for k, v in data.items() if k != "paths"},
        "free_text": free_text_summary(rows, pairs),
        "propensity": propensity_summary(scores, models, pairs, resamples=config.resamples, seed=config.seed),
    }


def write_report(out: Path, summary: dict) -> None:
    plots = {name: png_data_uri(png) for name, png in figures(summary).items()}
    atomic_write_text(out / "report.html", render_html("safety_study.html.j2", s=summary, plots=plots))

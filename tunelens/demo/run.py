"""`tunelens demo`: the lessons of docs/design.md end to end, with the real stages, on one base model.

Data -> adapters A<rate> (contaminated), B (what lint kept), C<share> (B's pairs plus pushback pairs) on one
base model -> one mixed-adapter evaluation -> lessons 1-4 -> with --study, lesson 3 on other bases and the
gate's threshold transfer -> summary.json and report.html, every number read from the files the stages wrote.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunelens.config import config_to_dict
from tunelens.demo.config import DemoConfig
from tunelens.demo import lesson1, lesson2, lesson3, lesson4, runs, transfer
from tunelens.demo.data import prepare_data
from tunelens.demo.report import write_report
from tunelens.model.load import load_model
from tunelens.model.state import adapter_off
from tunelens.studies.fewshot import FewShotStudyConfig, run_fewshot_study
from tunelens.studies.training import train_config
from tunelens.runtime import Progress, RunResult, StageTimer, claim_run_dir, finish_run, no_progress

DemoResult = RunResult  # the run directory, its summary and its time


def run_demo(config: DemoConfig, out_dir: str | Path, progress: Progress | None = None) -> DemoResult:
    started = time.perf_counter()
    out = Path(out_dir)
    _claim_run_dir(out, config)
    report = progress or no_progress
    timed = StageTimer(report)

    data = timed("data: mine, draw, contaminate, lint, pushback", prepare_data, config, out, report)
    model, tokenizer = timed("load the base model", load_model, config.model, None, "cpu")
    model = timed("train the adapters", runs.train_adapters, config, out, data, model, tokenizer, report)
    evals = timed("eval: held-out prompts, pushback, code", runs.run_plan, config, config.model,
                  runs.eval_plan(config, data), out / "eval", model, tokenizer, report)
    summary = {"config": config_to_dict(config), "train_config": config_to_dict(train_config(config)),
               "data": data.counts, "adapters": runs.adapter_checks(out, data.training, model)}
    summary["lesson1"] = timed("lesson 1", lesson1.lesson1, config, data.counts, evals)
    summary["lesson2"] = timed("lesson 2", lesson2.lesson2, config, out, evals, data.training, model, tokenizer,
                               report)
    summary["lesson3"] = timed("lesson 3", lesson3.lesson3, config, evals, model, tokenizer, report)
    summary["lesson4"] = timed("lesson 4", lesson4.lesson4, config, out, data, evals, model, tokenizer, report)
    if config.propensity_bases:
        summary["lesson3"]["other_bases"] = timed("lesson 3 on other bases", lesson3.other_bases, config, out,
                                                  data.training["B"], report)
        summary["transfer"] = timed("gate threshold transfer", transfer.threshold_transfer, config, out, data,
                                    summary["lesson4"], report)
    if config.few_shot_study:
        summary["few_shot"] = timed("few-shot copying study", few_shot_study, config, out, model, tokenizer, report)
    finish_run(out, summary, timed, started)
    write_report(out, summary)
    return DemoResult(out, summary, time.perf_counter() - started)


def few_shot_study(config: DemoConfig, out: Path, model, tokenizer, report) -> dict:
    """The few-shot copying study (tunelens.studies.fewshot) on the demo's base model, adapters off; its
    own summary.json and figures are under few-shot/."""
    study_config = FewShotStudyConfig(model=config.model, seed=config.seed)
    with adapter_off(model):
        result = run_fewshot_study(study_config, out / "few-shot", model, tokenizer, report)
    return {"directory": "few-shot", "summary": "few-shot/summary.json", "seconds": round(result.seconds, 1)}


def _claim_run_dir(out: Path, config: DemoConfig) -> None:
    """Trained adapters and eval answers are reused by a rerun with the same settings."""
    claim_run_dir(out, "demo-config.json", config_to_dict(config), "a demo run", same=same_settings)


def same_settings(saved: dict, settings: dict) -> bool:
    """Whether a run directory's saved settings are these. A setting added to DemoConfig after the run was
    saved counts as the same when it has its default value: that is what the older run did."""
    defaults = config_to_dict(DemoConfig())
    return saved.keys() <= settings.keys() and all(value == saved.get(key, defaults[key])
                                                   for key, value in settings.items())

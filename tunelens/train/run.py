"""LoRA SFT on the text decoder: `train(config, data_path, out_dir)`, the stage the CLI, the demo and the
studies call.

Three parts: `tunelens.train.setup.setup` (load, encode, place LoRA, optimizer, resume), the loop
(`tunelens.train.loop.run_loop`, callable alone) with evaluation, checkpoints and per-step metrics hung on
its step callback, and `_finish`: a PEFT adapter directory plus `tunelens.json` (base weights hash, data
hash, config, versions). Scale-out is Accelerate's: each process takes its share of every global batch,
DDP (or FSDP / DeepSpeed, from the accelerate config) averages the gradients.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tunelens import __version__
from tunelens.model.adapters import write_adapter
from tunelens.runtime import Progress
from tunelens.train.checkpoints import checkpoint_root, save_checkpoint
from tunelens.train.config import TrainConfig
from tunelens.train.encoding import Example, encode_examples, mask_spans  # noqa: F401  (re-exported)
from tunelens.train.lora_fused import fused_lora_layers
from tunelens.train.lora_setup import Placement, placement_table  # noqa: F401  (re-exported)
from tunelens.train.loop import eval_loss as held_out_loss, run_loop
from tunelens.train.metrics import metrics_path
from tunelens.train.packed_attention import packed_attention
from tunelens.train.setup import TrainRun, collate, make_collate, setup  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class TrainEvent:
    """What the CLI shows beyond a progress bar: phase is start (with the placement table), step, eval,
    checkpoint or done."""

    phase: str
    step: int
    total_steps: int
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    trained_tokens: int = 0  # trained tokens since this process started (not counting resumed steps)
    elapsed_s: float = 0.0
    placement: Placement | None = None
    detail: str = ""

    @property
    def tokens_per_s(self) -> float:
        return self.trained_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    steps: int
    resumed_from_step: int | None
    train_loss: float | None  # mean loss per trained token over the last optimizer step
    eval_loss: float | None
    eval_losses: tuple[tuple[int, float], ...]  # (step, eval loss)
    trained_tokens: int  # in this process's run (resumed steps not counted)
    train_seconds: float
    n_pairs: int
    n_train: int
    n_eval: int
    truncated: tuple[str, ...]
    skipped: tuple[str, ...]
    placement: Placement
    provenance: dict
    is_main_process: bool = True
    model: object = field(default=None, repr=False, compare=False)  # the PeftModel, for in-process use
    metrics_path: Path | None = None  # one JSON row per optimizer step (tunelens.train.metrics)

    @property
    def tokens_per_s(self) -> float:
        return self.trained_tokens / self.train_seconds if self.train_seconds > 0 else 0.0


def train(config: TrainConfig, data_path: str | Path, out_dir: str | Path, model=None, tokenizer=None,
          model_spec: str | None = None, resume: bool = False, progress: Progress | None = None,
          on_event: Callable[[TrainEvent], None] | None = None) -> TrainResult:
    """Train a LoRA adapter on `data_path` and write it to `out_dir`.

    `model`/`tokenizer` may be given already loaded (a tiny test model, the demo's model): the model is
    modified in place (LoRA layers injected) and returned as `result.model`; otherwise `model_spec`
    (default: the embedded model) is loaded. `progress("train", done, total)` follows the optimizer steps,
    `on_event` gets the details; both are called on the main process only. Every optimizer step is
    appended to `<out>-metrics.jsonl` (see `tunelens.train.metrics`).
    """
    run = setup(config, Path(data_path), Path(out_dir), model, tokenizer, model_spec, resume)

    def report(event: TrainEvent) -> None:
        if run.accelerator.is_main_process and on_event is not None:
            on_event(event)
        if run.accelerator.is_main_process and progress is not None and event.phase in ("start", "step", "done"):
            progress("train", event.step, event.total_steps)

    report(TrainEvent("start", run.start_step, run.plan.total_steps, placement=run.placement,
                      detail=f"{len(run.train_set)} train / {len(run.eval_set)} eval pairs"
                             + (f"; resumed from step {run.resumed_from}" if run.resumed_from else "")))
    try:
        outcome, eval_losses = _loop(run, report)
    finally:
        if run.metrics is not None:
            run.metrics.close()
        # accelerator.end_training() would also destroy the process group, which _finish still needs.
        for tracker in run.accelerator.trackers:
            tracker.finish()
    return _finish(run, outcome, eval_losses, report)


def _loop(run: TrainRun, report: Callable[[TrainEvent], None]):
    """Run the loop from the first (or resumed) step; eval, checkpoints and metrics after each step."""
    config, total, eval_losses = run.config, run.plan.total_steps, []

    def evaluate(step: int) -> dict:
        eval_losses.append((step, held_out_loss(run.accelerator, run.peft_model, run.eval_set, run.parts.collate,
                                                config.batch_size, config.bf16)))
        return {"step": step, "eval_loss": eval_losses[-1][1]}

    def after_step(record) -> None:
        done, row = record.step, record.to_row()
        if run.eval_set and config.eval_every and done % config.eval_every == 0 and done < total:
            row |= evaluate(done)
        _record(run, row)
        report(TrainEvent("step", done, total, loss=record.loss, learning_rate=record.learning_rate,
                          grad_norm=record.grad_norm, trained_tokens=record.total_trained_tokens,
                          elapsed_s=record.elapsed_s))
        if "eval_loss" in row:
            report(TrainEvent("eval", done, total, eval_loss=row["eval_loss"]))
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < total:
            if run.accelerator.is_main_process:
                path = save_checkpoint(checkpoint_root(run.out_dir), done, run.peft_model, run.parts.optimizer,
                                       run.parts.scheduler, run.meta, config.keep_checkpoints)
                report(TrainEvent("checkpoint", done, total, detail=str(path)))
            run.accelerator.wait_for_everyone()

    with ExitStack() as fast_paths:  # the model is as before after the loop
        if config.fused_lora:
            fast_paths.enter_context(fused_lora_layers(run.peft_model))
        if config.packing:  # attention one sequence at a time (tunelens.train.packed_attention)
            fast_paths.enter_context(packed_attention(run.peft_model))
        outcome = run_loop(run.parts, lambda step: [run.train_set[i] for i in run.plan.indices(step)],
                           range(run.start_step, total), after_step)
    if run.eval_set:
        _record(run, evaluate(total))
        report(TrainEvent("eval", total, total, eval_loss=eval_losses[-1][1]))
    return outcome, eval_losses


def _record(run: TrainRun, row: dict) -> None:
    """One row to metrics.jsonl (main process) and to the trackers."""
    if run.metrics is not None:
        run.metrics.append(row)
    run.accelerator.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=row["step"])


def _finish(run: TrainRun, outcome, eval_losses, report) -> TrainResult:
    import peft
    import torch
    import transformers

    total, placement = run.plan.total_steps, run.placement
    last_loss = outcome.last.loss if outcome.last else None
    eval_loss = eval_losses[-1][1] if eval_losses else None
    provenance = {
        "tunelens_version": __version__, "base_model": run.spec, "base_weights_hash": run.meta["base_weights_hash"],
        "data": {"path": str(run.data_path), "sha256": run.meta["data_sha256"], "pairs": run.n_pairs,
                 "train": len(run.train_set), "eval": len(run.eval_set), "truncated": list(run.encoded.truncated),
                 "skipped_prompt_too_long": list(run.encoded.skipped)},
        "config": run.meta["config"], "steps": total, "processes": run.accelerator.num_processes,
        "train_loss": last_loss, "eval_loss": eval_loss, "metrics": metrics_path(run.out_dir).name,
        "adapted_modules": len(placement.module_names), "trainable_params": placement.trainable_params,
        "kv_shared_layers": list(placement.kv_shared_layers), "frozen_towers": list(placement.frozen_towers),
        "versions": {"tunelens": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if run.accelerator.is_main_process:
        write_adapter(run.out_dir, run.peft_model, provenance)  # portable and atomic: tunelens.model.adapters
        shutil.rmtree(checkpoint_root(run.out_dir), ignore_errors=True)  # the run is complete: nothing to resume
    run.accelerator.wait_for_everyone()
    report(TrainEvent("done", total, total, loss=last_loss, trained_tokens=outcome.trained_tokens,
                      elapsed_s=outcome.seconds))
    run.peft_model.eval()
    return TrainResult(
        out_dir=run.out_dir, steps=total, resumed_from_step=run.resumed_from, train_loss=last_loss,
        eval_loss=eval_loss, eval_losses=tuple(eval_losses), trained_tokens=outcome.trained_tokens,
        train_seconds=outcome.seconds, n_pairs=run.n_pairs, n_train=len(run.train_set), n_eval=len(run.eval_set),
        truncated=run.encoded.truncated, skipped=run.encoded.skipped, placement=placement, provenance=provenance,
        is_main_process=run.accelerator.is_main_process, model=run.peft_model, metrics_path=metrics_path(run.out_dir))

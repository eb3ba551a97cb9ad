"""LoRA SFT on the text decoder: setup, the loop, output (adapter, provenance, metrics).

`train(config, data_path, out_dir)` reads pairs with `tunelens.data.records.load_pairs`, tokenises them
with `tunelens.model.prompts.encode_pair` (labels are -100 on the prompt and on padding), trains LoRA
adapters on the text decoder's q/k/v/o/gate/up/down linears, and writes a PEFT adapter directory
plus `tunelens.json` (base weights hash, data hash, config, versions).

The run is three parts: `train_setup.setup` (load, encode, place LoRA, optimizer, resume), the loop
(`tunelens.train.loop.run_loop`, callable alone) with evaluation, checkpoints and per-step metrics
hung on its step callback, and `_finish` (the adapter directory and the result). The pieces live in
sibling modules: `train_config` (the options), `train_setup` (setup), `lora_setup` (placement, PEFT
wrapping, 4-bit loading), `train_loss` (the loss),
`train_loop` (loop, batch plan, packing), `checkpoints`, `train_metrics` (metrics.jsonl, trackers,
loss curve).

Scale-out is Accelerate's: each process takes its share of every global batch, DDP (or FSDP /
DeepSpeed, from the accelerate config) averages the gradients.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tunelens import __version__
from tunelens.train.checkpoints import checkpoint_root, save_checkpoint
from tunelens.train.encoding import EncodedData, Example, MaskView, encode_examples, mask_spans  # noqa: F401  (re-exported)
from tunelens.hashing import file_sha256  # noqa: F401  (re-exported)
from tunelens.train.lora_setup import Placement, layer_ranges, placement_table  # noqa: F401  (re-exported)
from tunelens.runtime import Progress
from tunelens.train.config import DEFAULT_TARGETS, RESUME_FREE_FIELDS, TrainConfig  # noqa: F401  (re-exported)
from tunelens.train.loss import IGNORE_INDEX, completion_loss_sums, linear_cross_entropy  # noqa: F401
from tunelens.train.setup import TrainRun, collate, make_collate, setup, split_train_eval  # noqa: F401
from tunelens.model.adapters import write_adapter
from tunelens.train import metrics as train_metrics
from tunelens.train.loop import eval_loss as loop_eval_loss, run_loop  # `eval_loss` also names a result here
from tunelens.train.lora_fused import fused_lora_layers
from tunelens.train.packed_attention import packed_attention

PROVENANCE_FILE = "tunelens.json"


# ---------------------------------------------------------------- events and result


@dataclass(frozen=True)
class TrainEvent:
    """What the CLI shows beyond a progress bar (the placement table, loss and speed per step, eval losses,
    checkpoints): phase is start, step, eval, checkpoint or done. Stages that only need "how far" take the
    one `runtime.Progress` shape instead."""

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


# ---------------------------------------------------------------- output


def _write_adapter(out_dir: Path, peft_model, provenance: dict) -> None:
    """Write a portable adapter (Hub id of the base, tokenizer, tunelens.json) atomically: tunelens.adapters."""
    write_adapter(out_dir, peft_model, provenance)


def _versions() -> dict:
    import peft
    import torch
    import transformers

    return {"tunelens": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}


# ---------------------------------------------------------------- the training run


def train(config: TrainConfig, data_path: str | Path, out_dir: str | Path, model=None, tokenizer=None,
          model_spec: str | None = None, resume: bool = False, progress: Progress | None = None,
          on_event: Callable[[TrainEvent], None] | None = None) -> TrainResult:
    """Train a LoRA adapter on `data_path` and write it to `out_dir`.

    `model`/`tokenizer` may be given already loaded (a tiny test model, the demo's model): the model
    is modified in place (LoRA layers injected) and returned as `result.model`. Otherwise
    `model_spec` (default: the embedded model) is loaded with `tunelens.model.load.load_model`.
    `progress("train", done, total)` follows the optimizer steps; `on_event` gets the details (placement,
    loss, eval losses, checkpoints). Both are called on the main process only.
    Every optimizer step is appended to `<out>-metrics.jsonl` (see `tunelens.train.metrics`).
    """
    run = setup(config, Path(data_path), Path(out_dir), model, tokenizer, model_spec, resume)
    report = _reporter(run, progress, on_event)
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


def _reporter(run: TrainRun, progress: Progress | None, on_event) -> Callable[[TrainEvent], None]:
    """One function the run reports events to: the detail callback, and steps to the progress callback."""
    if not run.accelerator.is_main_process:
        return lambda event: None

    def report(event: TrainEvent) -> None:
        if on_event is not None:
            on_event(event)
        if progress is not None and event.phase in ("start", "step", "done"):
            progress("train", event.step, event.total_steps)

    return report


# ---------------------------------------------------------------- the loop and what hangs on it


def _loop(run: TrainRun, report: Callable[[TrainEvent], None]):
    """Run the loop from the first (or resumed) step; eval, checkpoints and metrics after each step."""
    eval_losses: list[tuple[int, float]] = []
    total = run.plan.total_steps

    def after_step(record) -> None:
        row = record.to_row()
        done, config = record.step, run.config
        if run.eval_set and config.eval_every and done % config.eval_every == 0 and done < total:
            eval_losses.append((done, _eval(run)))
            row["eval_loss"] = eval_losses[-1][1]
        _log_step(run, record, row, report)
        if "eval_loss" in row:
            report(TrainEvent("eval", done, total, eval_loss=row["eval_loss"]))
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < total:
            _checkpoint(run, done, report)

    with _fast_paths(run):
        outcome = run_loop(run.parts, lambda step: [run.train_set[i] for i in run.plan.indices(step)],
                           range(run.start_step, total), after_step)
    if run.eval_set:
        eval_losses.append((total, _eval(run)))
        if run.metrics is not None:
            run.metrics.append({"step": total, "eval_loss": eval_losses[-1][1]})
        run.accelerator.log({"eval_loss": eval_losses[-1][1]}, step=total)
        report(TrainEvent("eval", total, total, eval_loss=eval_losses[-1][1]))
    return outcome, eval_losses


def _fast_paths(run: TrainRun):
    """While the loop runs: the fused LoRA linears (unless --no-fused-lora) and, for packed rows,
    attention one sequence at a time (`tunelens.train.packed_attention`); the model is as before after it."""
    from contextlib import ExitStack


    stack = ExitStack()
    if run.config.fused_lora:
        stack.enter_context(fused_lora_layers(run.peft_model))
    if run.config.packing:
        stack.enter_context(packed_attention(run.peft_model))
    return stack


def _log_step(run: TrainRun, record, row: dict, report) -> None:
    if run.metrics is not None:
        run.metrics.append(row)
    run.accelerator.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=record.step)
    report(TrainEvent("step", record.step, run.plan.total_steps, loss=record.loss,
                      learning_rate=record.learning_rate, grad_norm=record.grad_norm,
                      trained_tokens=record.total_trained_tokens, elapsed_s=record.elapsed_s))


def _eval(run: TrainRun) -> float:
    return loop_eval_loss(run.accelerator, run.peft_model, run.eval_set, run.parts.collate, run.config.batch_size,
                     run.config.bf16)


def _checkpoint(run: TrainRun, done: int, report) -> None:
    if run.accelerator.is_main_process:
        path = save_checkpoint(checkpoint_root(run.out_dir), done, run.peft_model, run.parts.optimizer,
                               run.parts.scheduler, run.meta, run.config.keep_checkpoints)
        report(TrainEvent("checkpoint", done, run.plan.total_steps, detail=str(path)))
    run.accelerator.wait_for_everyone()


# ---------------------------------------------------------------- output


def _finish(run: TrainRun, outcome, eval_losses, report) -> TrainResult:
    total = run.plan.total_steps
    last_loss = outcome.last.loss if outcome.last else None
    eval_loss = eval_losses[-1][1] if eval_losses else None
    provenance = _provenance(run, last_loss, eval_loss)
    if run.accelerator.is_main_process:
        _write_adapter(run.out_dir, run.peft_model, provenance)
        shutil.rmtree(checkpoint_root(run.out_dir), ignore_errors=True)  # the run is complete: nothing to resume
    run.accelerator.wait_for_everyone()
    report(TrainEvent("done", total, total, loss=last_loss, trained_tokens=outcome.trained_tokens,
                      elapsed_s=outcome.seconds))
    run.peft_model.eval()
    return TrainResult(
        out_dir=run.out_dir, steps=total, resumed_from_step=run.resumed_from, train_loss=last_loss,
        eval_loss=eval_loss, eval_losses=tuple(eval_losses), trained_tokens=outcome.trained_tokens,
        train_seconds=outcome.seconds, n_pairs=run.n_pairs, n_train=len(run.train_set), n_eval=len(run.eval_set),
        truncated=run.encoded.truncated, skipped=run.encoded.skipped, placement=run.placement,
        provenance=provenance, is_main_process=run.accelerator.is_main_process, model=run.peft_model,
        metrics_path=train_metrics.metrics_path(run.out_dir),
    )


def _provenance(run: TrainRun, last_loss, eval_loss) -> dict:
    return {
        "tunelens_version": __version__, "base_model": run.spec, "base_weights_hash": run.meta["base_weights_hash"],
        "data": {"path": str(run.data_path), "sha256": run.meta["data_sha256"], "pairs": run.n_pairs,
                 "train": len(run.train_set), "eval": len(run.eval_set), "truncated": list(run.encoded.truncated),
                 "skipped_prompt_too_long": list(run.encoded.skipped)},
        "config": run.meta["config"], "steps": run.plan.total_steps, "processes": run.accelerator.num_processes,
        "train_loss": last_loss, "eval_loss": eval_loss, "metrics": train_metrics.metrics_path(run.out_dir).name,
        "adapted_modules": len(run.placement.module_names), "trainable_params": run.placement.trainable_params,
        "kv_shared_layers": list(run.placement.kv_shared_layers), "frozen_towers": list(run.placement.frozen_towers),
        "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

"""LoRA SFT on the text decoder: setup, the loop, output (adapter, provenance, metrics).

`train(config, data_path, out_dir)` reads pairs with `tunelens.records.load_pairs`, tokenises them
with `tunelens.prompts.encode_pair` (labels are -100 on the prompt and on padding), trains LoRA
adapters on the text decoder's q/k/v/o/gate/up/down linears, and writes a PEFT adapter directory
plus `tunelens.json` (base weights hash, data hash, config, versions).

The run is three parts: `_setup` (load, encode, place LoRA, optimizer, resume), the loop
(`tunelens.train_loop.run_loop`, callable alone) with evaluation, checkpoints and per-step metrics
hung on its step callback, and `_finish` (the adapter directory and the result). The pieces live in
sibling modules: `lora_setup` (placement, PEFT wrapping, 4-bit loading), `train_loss` (the loss),
`train_loop` (loop, batch plan, packing), `checkpoints`, `train_metrics` (metrics.jsonl, trackers,
loss curve).

Scale-out is Accelerate's: each process takes its share of every global batch, DDP (or FSDP /
DeepSpeed, from the accelerate config) averages the gradients.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from tunelens import __version__
from tunelens.config import config_to_dict, option
from tunelens.encoding import EncodedData, Example, MaskView, encode_examples, mask_spans  # noqa: F401  (moved; re-exported)
from tunelens.errors import UserError
from tunelens.hashing import file_sha256  # noqa: F401  (re-exported)
from tunelens.records import source_path

from tunelens.checkpoints import CHECKPOINT_STATE, checkpoint_root  # noqa: F401  (re-exported)
from tunelens.lora_setup import Placement, layer_ranges, placement_table  # noqa: F401  (re-exported)
from tunelens.train_loss import IGNORE_INDEX, completion_loss_sums, linear_cross_entropy  # noqa: F401
from tunelens.train_metrics import TRACKERS
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROVENANCE_FILE = "tunelens.json"




# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run computes (the model and data are given apart)."""

    lora_r: int = option(32, "LoRA rank.")
    lora_alpha: float = option(64.0, "LoRA alpha (the update is scaled by alpha / r).")
    lora_dropout: float = option(0.05, "Dropout on the LoRA input during training.")
    target_modules: tuple[str, ...] = option(
        DEFAULT_TARGETS, "Linear layers of the text decoder to adapt, by name (comma-separated on the CLI).")
    learning_rate: float = option(2e-4, "Peak learning rate of AdamW.")
    lr_schedule: str = option("linear", "Decay after warmup.", choices=("linear", "cosine", "constant"))
    warmup_ratio: float = option(0.03, "Fraction of the optimizer steps spent warming up linearly from 0.")
    weight_decay: float = option(0.0, "AdamW weight decay on the LoRA weights.")
    max_grad_norm: float = option(1.0, "Clip the gradient norm to this (0 switches clipping off).")
    epochs: int = option(1, "Passes over the training split (ignored when max_steps > 0).")
    max_steps: int = option(0, "Stop after this many optimizer steps (0: use epochs).")
    batch_size: int = option(4, "Pairs per micro-batch on each process.")
    grad_accum: int = option(1, "Micro-batches per optimizer step (the loss is normalised over all of them).")
    max_length: int = option(512, "Longest tokenised pair; longer pairs lose the end of their response.")
    eval_split: float = option(0.05, "Fraction of pairs held out for the eval loss (0: no eval).")
    eval_every: int = option(0, "Eval loss every N optimizer steps (0: only at the end).")
    checkpoint_every: int = option(50, "Save a resumable checkpoint every N optimizer steps (0: never).")
    keep_checkpoints: int = option(2, "How many of the newest checkpoints to keep.")
    seed: int = option(0, "Seed of the LoRA init, the eval split, the data order and dropout.")
    gradient_checkpointing: bool = option(False, "Recompute decoder activations in backward: less memory, "
                                          "about a third more decoder compute.")
    logits: str = option("trained", "Where to compute logits: only at trained positions (fast) or everywhere "
                         "(the plain reference).", choices=("trained", "full"))
    packing: bool = option(True, "Pack each micro-batch into one row without padding; position ids restart "
                           "per pair and attention stays inside it (same losses as padded rows, no compute on "
                           "padding). --no-packing pads each micro-batch to its longest pair.")
    bf16: bool = option(False, "Autocast forward and backward to bfloat16 (weights, LoRA and optimizer stay "
                        "fp32): faster on GPUs and bf16-capable CPUs, losses differ at bf16 precision.")
    load_in_4bit: bool = option(False, "QLoRA: load the base model in 4-bit NF4 through bitsandbytes "
                                "(needs bitsandbytes and a CUDA GPU).")
    report_to: tuple[str, ...] = option((), "Also log every step to these trackers through their own "
                                        "libraries: tensorboard, wandb, trackio, mlflow (comma-separated).")

    def validate(self) -> None:
        positive = ("lora_r", "batch_size", "grad_accum", "max_length", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"config {name!r} must be at least 1, got {getattr(self, name)}")
        for name in ("epochs", "max_steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise UserError(f"config {name!r} must not be negative, got {getattr(self, name)}")
        if self.epochs == 0 and self.max_steps == 0:
            raise UserError("config: set epochs or max_steps above 0")
        checks = {"learning_rate": self.learning_rate > 0, "lora_alpha": self.lora_alpha > 0,
                  "lora_dropout": 0 <= self.lora_dropout < 1, "warmup_ratio": 0 <= self.warmup_ratio < 1,
                  "eval_split": 0 <= self.eval_split < 1, "weight_decay": self.weight_decay >= 0,
                  "max_grad_norm": self.max_grad_norm >= 0}
        for name, ok in checks.items():
            if not ok:
                raise UserError(f"config {name!r} is out of range: {getattr(self, name)}")
        if not self.target_modules:
            raise UserError("config 'target_modules' is empty")
        unknown = [name for name in self.report_to if name not in TRACKERS]
        if unknown:
            raise UserError(f"config 'report_to': unknown tracker {unknown[0]!r} (use {', '.join(TRACKERS)})")



# Fields that do not change what is computed (packing: up to float rounding); a resume may change them.
_RESUME_FREE_FIELDS = {"checkpoint_every", "keep_checkpoints", "eval_every", "gradient_checkpointing", "packing",
                       "report_to"}


# ---------------------------------------------------------------- data


def split_train_eval(examples: Sequence[Example], eval_split: float, seed: int):
    """A seeded held-out split: (train, eval), train in file order."""
    import torch

    n_eval = int(round(len(examples) * eval_split)) if eval_split > 0 else 0
    if eval_split > 0 and len(examples) >= 2:
        n_eval = max(1, n_eval)
    if n_eval >= len(examples):
        raise UserError(f"eval_split {eval_split} leaves no training pairs out of {len(examples)}")
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:n_eval])
    train = [ex for i, ex in enumerate(examples) if i not in held]
    evals = [ex for i, ex in enumerate(examples) if i in held]
    return train, evals


def collate(examples: Sequence[Example], pad_id: int):
    """Right-padded (input_ids, attention_mask, labels); labels are -100 on the prompt and padding."""
    import torch

    width = max(len(ex.ids) for ex in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        ids = torch.tensor(ex.ids, dtype=torch.long)
        input_ids[row, : len(ids)] = ids
        attention[row, : len(ids)] = 1
        for start, end in ex.trained_spans:  # every assistant turn of a conversation (tunelens.encoding)
            labels[row, start:end] = ids[start:end]
    return input_ids, attention, labels


# ---------------------------------------------------------------- progress and result


@dataclass(frozen=True)
class TrainProgress:
    """One event for the progress callback: phase is start, step, eval, checkpoint or done."""

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
    metrics_path: Path | None = None  # one JSON row per optimizer step (tunelens.train_metrics)

    @property
    def tokens_per_s(self) -> float:
        return self.trained_tokens / self.train_seconds if self.train_seconds > 0 else 0.0


# ---------------------------------------------------------------- output


def _write_adapter(out_dir: Path, peft_model, provenance: dict) -> None:
    """Write a portable adapter (Hub id of the base, tokenizer, tunelens.json) atomically: tunelens.adapters."""
    from tunelens.adapters import write_adapter

    write_adapter(out_dir, peft_model, provenance)


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                     and not (out_dir / "adapter_config.json").exists())):
        raise UserError(f"{out_dir} exists and is not an adapter directory: choose another --out")


def _versions() -> dict:
    import peft
    import torch
    import transformers

    return {"tunelens": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}



# ---------------------------------------------------------------- the training run


@dataclass
class _Run:
    """What setup hands to the loop and to the output."""

    config: TrainConfig
    data_path: Path
    out_dir: Path
    accelerator: object
    report: Callable[[TrainProgress], None]
    spec: str
    n_pairs: int
    encoded: object  # EncodedData
    train_set: list
    eval_set: list
    placement: Placement
    meta: dict
    peft_model: object
    plan: object  # train_loop.BatchPlan
    parts: object  # train_loop.LoopParts
    start_step: int
    resumed_from: int | None
    metrics: object | None  # train_metrics.MetricsLog on the main process


def train(config: TrainConfig, data_path: str | Path, out_dir: str | Path, model=None, tokenizer=None,
          model_spec: str | None = None, resume: bool = False,
          progress: Callable[[TrainProgress], None] | None = None) -> TrainResult:
    """Train a LoRA adapter on `data_path` and write it to `out_dir`.

    `model`/`tokenizer` may be given already loaded (a tiny test model, the demo's model): the model
    is modified in place (LoRA layers injected) and returned as `result.model`. Otherwise
    `model_spec` (default: the embedded model) is loaded with `tunelens.models.load_model`.
    Every optimizer step is appended to `<out>-metrics.jsonl` (see `tunelens.train_metrics`).
    """
    run = _setup(config, Path(data_path), Path(out_dir), model, tokenizer, model_spec, resume, progress)
    try:
        outcome, eval_losses = _loop(run)
    finally:
        if run.metrics is not None:
            run.metrics.close()
        # accelerator.end_training() would also destroy the process group, which _finish still needs.
        for tracker in run.accelerator.trackers:
            tracker.finish()
    return _finish(run, outcome, eval_losses)


# ---------------------------------------------------------------- setup


def _setup(config, data_path, out_dir, model, tokenizer, model_spec, resume, progress) -> _Run:
    from tunelens.checkpoints import remove_abandoned_staging
    from tunelens.models import weights_fingerprint
    from tunelens.train_metrics import check_trackers

    _check_out_dir(out_dir)
    _check_no_earlier_run(out_dir, resume)
    check_trackers(config.report_to)
    accelerator = _accelerator(config, out_dir)
    if accelerator.is_main_process:
        remove_abandoned_staging(checkpoint_root(out_dir), out_dir)
    report = progress if (progress and accelerator.is_main_process) else (lambda event: None)
    pairs = _load_pairs(data_path)
    model, tokenizer, spec = _load_model(config, model, tokenizer, model_spec, accelerator)
    encoded = encode_examples(tokenizer, pairs, config.max_length)
    if not encoded.examples:
        raise UserError(f"{data_path}: every pair's prompt is longer than max_length={config.max_length}")
    train_set, eval_set = split_train_eval(encoded.examples, config.eval_split, config.seed)
    placement = placement_table(model, config)
    # A dataset id from the local Hugging Face cache is hashed through its cached files, not its name.
    meta = {"data_sha256": file_sha256(source_path(data_path)), "base_weights_hash": weights_fingerprint(model),
            "config": config_to_dict(config)}
    peft_model = _prepare_model(model, config, placement)
    plan, parts, start_step, resumed_from = _optimization(config, accelerator, peft_model, tokenizer, train_set,
                                                          meta, out_dir, resume)
    metrics = _start_metrics(config, accelerator, out_dir, meta, start_step)
    report(TrainProgress("start", start_step, plan.total_steps, placement=placement,
                         detail=f"{len(train_set)} train / {len(eval_set)} eval pairs"
                                + (f"; resumed from step {resumed_from}" if resumed_from else "")))
    return _Run(config, data_path, out_dir, accelerator, report, spec, len(pairs), encoded, train_set, eval_set,
                placement, meta, peft_model, plan, parts, start_step, resumed_from, metrics)


def _check_no_earlier_run(out_dir: Path, resume: bool) -> None:
    from tunelens.checkpoints import list_checkpoints

    root = checkpoint_root(out_dir)
    if not resume and list_checkpoints(root):
        raise UserError(f"{root} holds checkpoints of an earlier run: pass --resume to continue it, "
                        "or delete that directory")


def _load_pairs(data_path: Path):
    from tunelens.records import load_pairs

    pairs = load_pairs(data_path)
    if not pairs:
        raise UserError(f"{data_path}: no training pairs")
    return pairs


def _accelerator(config: TrainConfig, out_dir: Path):
    """Accelerate's state for this process (DDP / FSDP / DeepSpeed come from `accelerate launch`)."""
    import torch
    from accelerate import Accelerator

    from tunelens.train_metrics import logs_dir

    launched_by_accelerate = "ACCELERATE_MIXED_PRECISION" in os.environ
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if launched_by_accelerate and "MASTER_PORT" in os.environ and "WORLD_SIZE" not in os.environ:
        # accelerate's simple launcher was asked for several processes but starts only one without a GPU.
        raise UserError("accelerate launch started a single process: on a CPU machine pass "
                        "--config_file examples/accelerate/cpu-2proc.yaml (or --multi_gpu) to get several")
    # Accelerate picks DDP over gloo for CPU processes only when told cpu=True.
    accelerator = Accelerator(cpu=world > 1 and not torch.cuda.is_available(), log_with=list(config.report_to) or None,
                              project_dir=str(logs_dir(out_dir)))
    if accelerator.distributed_type == "DEEPSPEED" and config.grad_accum > 1:
        # DeepSpeed's engine steps on every backward unless its own accumulation is configured.
        raise UserError("with DeepSpeed use grad_accum 1 (raise batch_size or the number of processes instead)")
    return accelerator


def _load_model(config: TrainConfig, model, tokenizer, model_spec, accelerator):
    """(model, tokenizer, spec): the given model, or `model_spec` loaded on this process's device."""
    from tunelens.models import DEFAULT_MODEL, load_model

    if model is not None:
        if tokenizer is None:
            raise ValueError("train(model=...) needs its tokenizer too")
        if config.load_in_4bit:
            raise UserError("load_in_4bit applies when train loads the model itself: pass a model spec, not a model")
    else:
        # Each process loads onto its own device; dtype "auto" then means bf16 on a GPU, fp32 on the CPU.
        device = str(accelerator.device) if accelerator.device.type == "cuda" else accelerator.device.type
        if config.load_in_4bit:
            from tunelens.lora_setup import load_4bit

            model, tokenizer = load_4bit(model_spec or DEFAULT_MODEL, device)
        else:
            model, tokenizer = load_model(model_spec or DEFAULT_MODEL, device=device)
    spec = model_spec or getattr(model.config, "tunelens_spec", None) or model.config.name_or_path
    return model, tokenizer, str(spec)


def _prepare_model(model, config: TrainConfig, placement: Placement):
    from tunelens.lora_setup import enable_gradient_checkpointing, wrap_lora

    peft_model = wrap_lora(model, config, placement)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    peft_model.train()
    return peft_model


def _optimization(config, accelerator, peft_model, tokenizer, train_set, meta, out_dir, resume):
    """(batch plan, loop parts, first step, resumed-from step): optimizer, schedule, checkpoint restored."""
    import torch

    from tunelens.checkpoints import check_resumable, list_checkpoints, load_checkpoint
    from tunelens.train_loop import BatchPlan, LoopParts, lr_factor
    from tunelens.train_loss import loss_module

    checkpoints = list_checkpoints(checkpoint_root(out_dir))
    plan = BatchPlan(len(train_set), config, accelerator.num_processes)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, plan.total_steps))
    resumed_from = None
    if resume and checkpoints:
        resumed_from, path = checkpoints[-1]
        check_resumable(json.loads((path / CHECKPOINT_STATE).read_text()), meta, path, _RESUME_FREE_FIELDS)
        load_checkpoint(path, peft_model, optimizer, scheduler)
    module, optimizer = accelerator.prepare(loss_module(peft_model, config.logits == "trained", config.bf16),
                                            optimizer)
    parts = LoopParts(accelerator, module, optimizer, scheduler, params, make_collate(config, tokenizer),
                      config.grad_accum, config.max_grad_norm, config.seed)
    return plan, parts, resumed_from or 0, resumed_from


def make_collate(config: TrainConfig, tokenizer) -> Callable[[Sequence[Example]], dict]:
    """examples -> loss-module arguments: right-padded (`collate`), or packed into one row (`pack_rows`)."""
    from tunelens.train_loop import pack_rows, padded_inputs

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if config.packing:
        return lambda examples: pack_rows([collate([ex], pad_id) for ex in examples])
    return lambda examples: padded_inputs(*collate(examples, pad_id))


def _start_metrics(config: TrainConfig, accelerator, out_dir: Path, meta: dict, start_step: int):
    """The metrics file (main process) and the trackers; a resumed run continues both from its step."""
    from tunelens.train_metrics import MetricsLog, metrics_path, tracker_config

    if config.report_to:
        # purge_step drops TensorBoard events of steps after the checkpoint, which this run redoes.
        init = {"tensorboard": {"purge_step": start_step + 1}} if start_step else {}
        accelerator.init_trackers(out_dir.name, config=tracker_config(meta["config"]), init_kwargs=init)
    return MetricsLog(metrics_path(out_dir), start_step) if accelerator.is_main_process else None


# ---------------------------------------------------------------- the loop and what hangs on it


def _loop(run: _Run):
    """Run the loop from the first (or resumed) step; eval, checkpoints and metrics after each step."""
    from tunelens.train_loop import run_loop

    eval_losses: list[tuple[int, float]] = []
    total = run.plan.total_steps

    def after_step(record) -> None:
        row = record.to_row()
        done, config = record.step, run.config
        if run.eval_set and config.eval_every and done % config.eval_every == 0 and done < total:
            eval_losses.append((done, _eval(run)))
            row["eval_loss"] = eval_losses[-1][1]
        _log_step(run, record, row)
        if "eval_loss" in row:
            run.report(TrainProgress("eval", done, total, eval_loss=row["eval_loss"]))
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < total:
            _checkpoint(run, done)

    outcome = run_loop(run.parts, lambda step: [run.train_set[i] for i in run.plan.indices(step)],
                       range(run.start_step, total), after_step)
    if run.eval_set:
        eval_losses.append((total, _eval(run)))
        if run.metrics is not None:
            run.metrics.append({"step": total, "eval_loss": eval_losses[-1][1]})
        run.accelerator.log({"eval_loss": eval_losses[-1][1]}, step=total)
        run.report(TrainProgress("eval", total, total, eval_loss=eval_losses[-1][1]))
    return outcome, eval_losses


def _log_step(run: _Run, record, row: dict) -> None:
    if run.metrics is not None:
        run.metrics.append(row)
    run.accelerator.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=record.step)
    run.report(TrainProgress("step", record.step, run.plan.total_steps, loss=record.loss,
                             learning_rate=record.learning_rate, grad_norm=record.grad_norm,
                             trained_tokens=record.total_trained_tokens, elapsed_s=record.elapsed_s))


def _eval(run: _Run) -> float:
    from tunelens.train_loop import eval_loss

    return eval_loss(run.accelerator, run.peft_model, run.eval_set, run.parts.collate, run.config.batch_size,
                     run.config.bf16)


def _checkpoint(run: _Run, done: int) -> None:
    from tunelens.checkpoints import save_checkpoint

    if run.accelerator.is_main_process:
        path = save_checkpoint(checkpoint_root(run.out_dir), done, run.peft_model, run.parts.optimizer,
                               run.parts.scheduler, run.meta, run.config.keep_checkpoints)
        run.report(TrainProgress("checkpoint", done, run.plan.total_steps, detail=str(path)))
    run.accelerator.wait_for_everyone()


# ---------------------------------------------------------------- output


def _finish(run: _Run, outcome, eval_losses) -> TrainResult:
    from tunelens.train_metrics import metrics_path

    total = run.plan.total_steps
    last_loss = outcome.last.loss if outcome.last else None
    eval_loss = eval_losses[-1][1] if eval_losses else None
    provenance = _provenance(run, last_loss, eval_loss)
    if run.accelerator.is_main_process:
        _write_adapter(run.out_dir, run.peft_model, provenance)
        shutil.rmtree(checkpoint_root(run.out_dir), ignore_errors=True)  # the run is complete: nothing to resume
    run.accelerator.wait_for_everyone()
    run.report(TrainProgress("done", total, total, loss=last_loss, trained_tokens=outcome.trained_tokens,
                             elapsed_s=outcome.seconds))
    run.peft_model.eval()
    return TrainResult(
        out_dir=run.out_dir, steps=total, resumed_from_step=run.resumed_from, train_loss=last_loss,
        eval_loss=eval_loss, eval_losses=tuple(eval_losses), trained_tokens=outcome.trained_tokens,
        train_seconds=outcome.seconds, n_pairs=run.n_pairs, n_train=len(run.train_set), n_eval=len(run.eval_set),
        truncated=run.encoded.truncated, skipped=run.encoded.skipped, placement=run.placement,
        provenance=provenance, is_main_process=run.accelerator.is_main_process, model=run.peft_model,
        metrics_path=metrics_path(run.out_dir),
    )


def _provenance(run: _Run, last_loss, eval_loss) -> dict:
    from tunelens.train_metrics import metrics_path

    return {
        "tunelens_version": __version__, "base_model": run.spec, "base_weights_hash": run.meta["base_weights_hash"],
        "data": {"path": str(run.data_path), "sha256": run.meta["data_sha256"], "pairs": run.n_pairs,
                 "train": len(run.train_set), "eval": len(run.eval_set), "truncated": list(run.encoded.truncated),
                 "skipped_prompt_too_long": list(run.encoded.skipped)},
        "config": run.meta["config"], "steps": run.plan.total_steps, "processes": run.accelerator.num_processes,
        "train_loss": last_loss, "eval_loss": eval_loss, "metrics": metrics_path(run.out_dir).name,
        "adapted_modules": len(run.placement.module_names), "trainable_params": run.placement.trainable_params,
        "kv_shared_layers": list(run.placement.kv_shared_layers), "frozen_towers": list(run.placement.frozen_towers),
        "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

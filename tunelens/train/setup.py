"""Training setup: everything `tunelens.train.run.train` does before its first step.

Load the pairs and the model, encode and split them, place LoRA on the text decoder, build the optimizer
and schedule, restore the newest checkpoint on `--resume`, and open the metrics file and trackers. The
result is one `TrainRun` that the loop and the output share.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tunelens.train.checkpoints import (check_resumable, checkpoint_root, CHECKPOINT_STATE, list_checkpoints, load_checkpoint, remove_abandoned_staging)
from tunelens.config import config_to_dict
from tunelens.train.encoding import Example, encode_examples
from tunelens.errors import UserError
from tunelens.hashing import file_sha256
from tunelens.train.lora_setup import (enable_gradient_checkpointing, load_4bit, Placement, placement_table, wrap_lora)
from tunelens.data.records import load_pairs, source_path
from tunelens.train.config import RESUME_FREE_FIELDS, TrainConfig
from tunelens.train.loss import IGNORE_INDEX, loss_module
from tunelens.model.load import load_model
from tunelens.model.specs import DEFAULT_MODEL
from tunelens.model.state import weights_fingerprint
from tunelens.train.loop import BatchPlan, LoopParts, lr_factor, pack_rows, padded_inputs
from tunelens.train.metrics import check_trackers, logs_dir, metrics_path, MetricsLog, tracker_config


@dataclass
class TrainRun:
    """What setup hands to the loop and to the output."""

    config: TrainConfig
    data_path: Path
    out_dir: Path
    accelerator: object
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


def setup(config: TrainConfig, data_path: Path, out_dir: Path, model, tokenizer, model_spec: str | None,
          resume: bool) -> TrainRun:
    """Load, encode, split, place LoRA, build the optimizer and restore a checkpoint: what the loop needs."""
    _check_out_dir(out_dir)
    _check_no_earlier_run(out_dir, resume)
    check_trackers(config.report_to)
    accelerator = _accelerator(config, out_dir)
    if accelerator.is_main_process:
        remove_abandoned_staging(checkpoint_root(out_dir), out_dir)
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
    return TrainRun(config, data_path, out_dir, accelerator, spec, len(pairs), encoded, train_set, eval_set,
                placement, meta, peft_model, plan, parts, start_step, resumed_from, metrics)


def _check_no_earlier_run(out_dir: Path, resume: bool) -> None:
    root = checkpoint_root(out_dir)
    if not resume and list_checkpoints(root):
        raise UserError(f"{root} holds checkpoints of an earlier run: pass --resume to continue it, "
                        "or delete that directory")


def _load_pairs(data_path: Path):
    pairs = load_pairs(data_path)
    if not pairs:
        raise UserError(f"{data_path}: no training pairs")
    return pairs


def _accelerator(config: TrainConfig, out_dir: Path):
    """Accelerate's state for this process (DDP / FSDP / DeepSpeed come from `accelerate launch`)."""
    import torch
    from accelerate import Accelerator


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
    if model is not None:
        if tokenizer is None:
            raise ValueError("train(model=...) needs its tokenizer too")
        if config.load_in_4bit:
            raise UserError("load_in_4bit applies when train loads the model itself: pass a model spec, not a model")
    else:
        # Each process loads onto its own device; dtype "auto" then means bf16 on a GPU, fp32 on the CPU.
        device = str(accelerator.device) if accelerator.device.type == "cuda" else accelerator.device.type
        if config.load_in_4bit:
            model, tokenizer = load_4bit(model_spec or DEFAULT_MODEL, device)
        else:
            model, tokenizer = load_model(model_spec or DEFAULT_MODEL, device=device)
    spec = model_spec or getattr(model.config, "tunelens_spec", None) or model.config.name_or_path
    return model, tokenizer, str(spec)


def _prepare_model(model, config: TrainConfig, placement: Placement):
    peft_model = wrap_lora(model, config, placement)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    peft_model.train()
    return peft_model


def _optimization(config, accelerator, peft_model, tokenizer, train_set, meta, out_dir, resume):
    """(batch plan, loop parts, first step, resumed-from step): optimizer, schedule, checkpoint restored."""
    import torch


    checkpoints = list_checkpoints(checkpoint_root(out_dir))
    plan = BatchPlan(len(train_set), config, accelerator.num_processes)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, plan.total_steps))
    resumed_from = None
    if resume and checkpoints:
        resumed_from, path = checkpoints[-1]
        check_resumable(json.loads((path / CHECKPOINT_STATE).read_text()), meta, path, RESUME_FREE_FIELDS)
        load_checkpoint(path, peft_model, optimizer, scheduler)
    module, optimizer = accelerator.prepare(loss_module(peft_model, config.logits == "trained", config.bf16),
                                            optimizer)
    parts = LoopParts(accelerator, module, optimizer, scheduler, params, make_collate(config, tokenizer),
                      config.grad_accum, config.max_grad_norm, config.seed)
    return plan, parts, resumed_from or 0, resumed_from


def make_collate(config: TrainConfig, tokenizer) -> Callable[[Sequence[Example]], dict]:
    """examples -> loss-module arguments: right-padded (`collate`), or packed into one row (`pack_rows`)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if config.packing:
        return lambda examples: pack_rows([collate([ex], pad_id) for ex in examples])
    return lambda examples: padded_inputs(*collate(examples, pad_id))


def _start_metrics(config: TrainConfig, accelerator, out_dir: Path, meta: dict, start_step: int):
    """The metrics file (main process) and the trackers; a resumed run continues both from its step."""
    if config.report_to:
        # purge_step drops TensorBoard events of steps after the checkpoint, which this run redoes.
        init = {"tensorboard": {"purge_step": start_step + 1}} if start_step else {}
        accelerator.init_trackers(out_dir.name, config=tracker_config(meta["config"]), init_kwargs=init)
    return MetricsLog(metrics_path(out_dir), start_step) if accelerator.is_main_process else None



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
        for start, end in ex.trained_spans:  # every assistant turn of a conversation (tunelens.train.encoding)
            labels[row, start:end] = ids[start:end]
    return input_ids, attention, labels


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                     and not (out_dir / "adapter_config.json").exists())):
        raise UserError(f"{out_dir} exists and is not an adapter directory: choose another --out")

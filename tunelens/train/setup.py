"""Training setup: everything `tunelens.train.run.train` does before its first step.

Load the pairs and the model, encode and split them, place LoRA on the text decoder, build the optimizer
and schedule, restore the newest checkpoint on `--resume`, and open the metrics file and trackers. The
result is one `TrainRun` that the loop and the output share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tunelens.config import config_to_dict
from tunelens.data.records import load_pairs, source_path
from tunelens.errors import UserError
from tunelens.hashing import file_sha256
from tunelens.model.load import load_model
from tunelens.model.specs import DEFAULT_MODEL
from tunelens.model.state import weights_fingerprint
from tunelens.train.checkpoints import checkpoint_root, list_checkpoints, load_checkpoint, remove_abandoned_staging
from tunelens.train.config import TrainConfig
from tunelens.train.encoding import EncodedData, Example, encode_examples
from tunelens.train.lora_setup import enable_gradient_checkpointing, load_4bit, Placement, placement_table, wrap_lora
from tunelens.train.loop import BatchPlan, LoopParts, lr_factor, pack_rows, padded_inputs
from tunelens.train.loss import IGNORE_INDEX, loss_module
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
    encoded: EncodedData
    train_set: list
    eval_set: list
    placement: Placement
    meta: dict  # what a checkpoint must match to be resumed: data and base weights hashes, config
    peft_model: object
    plan: BatchPlan
    parts: LoopParts
    start_step: int
    resumed_from: int | None
    metrics: MetricsLog | None  # on the main process only


def setup(config: TrainConfig, data_path: Path, out_dir: Path, model, tokenizer, model_spec: str | None,
          resume: bool) -> TrainRun:
    """Load, encode, split, place LoRA, build the optimizer and restore a checkpoint: what the loop needs."""
    _check_out_dir(out_dir, resume)
    check_trackers(config.report_to)
    accelerator = _accelerator(config, out_dir)
    if accelerator.is_main_process:
        remove_abandoned_staging(checkpoint_root(out_dir), out_dir)
    pairs = load_pairs(data_path)
    if not pairs:
        raise UserError(f"{data_path}: no training pairs")
    model, tokenizer, spec = _load_model(config, model, tokenizer, model_spec, accelerator)
    encoded = encode_examples(tokenizer, pairs, config.max_length)
    if not encoded.examples:
        raise UserError(f"{data_path}: every pair's prompt is longer than max_length={config.max_length}")
    train_set, eval_set = split_train_eval(encoded.examples, config.eval_split, config.seed)
    placement = placement_table(model, config)
    # A dataset id from the local Hugging Face cache is hashed through its cached files, not its name.
    meta = {"data_sha256": file_sha256(source_path(data_path)), "base_weights_hash": weights_fingerprint(model),
            "config": config_to_dict(config)}
    peft_model = wrap_lora(model, config, placement)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    peft_model.train()
    plan, parts, resumed_from = _optimization(config, accelerator, peft_model, tokenizer, train_set, meta, out_dir,
                                              resume)
    start_step = resumed_from or 0
    if config.report_to:
        # purge_step drops TensorBoard events of steps after the checkpoint, which this run redoes.
        init = {"tensorboard": {"purge_step": start_step + 1}} if start_step else {}
        accelerator.init_trackers(out_dir.name, config=tracker_config(meta["config"]), init_kwargs=init)
    metrics = MetricsLog(metrics_path(out_dir), start_step) if accelerator.is_main_process else None
    return TrainRun(config, data_path, out_dir, accelerator, spec, len(pairs), encoded, train_set, eval_set,
                    placement, meta, peft_model, plan, parts, start_step, resumed_from, metrics)


def _check_out_dir(out_dir: Path, resume: bool) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                     and not (out_dir / "adapter_config.json").exists())):
        raise UserError(f"{out_dir} exists and is not an adapter directory: choose another --out")
    root = checkpoint_root(out_dir)
    if not resume and list_checkpoints(root):
        raise UserError(f"{root} holds checkpoints of an earlier run: pass --resume to continue it, "
                        "or delete that directory")


def _accelerator(config: TrainConfig, out_dir: Path):
    """Accelerate's state for this process (DDP / FSDP / DeepSpeed come from `accelerate launch`)."""
    import torch
    from accelerate import Accelerator

    if "ACCELERATE_MIXED_PRECISION" in os.environ and "MASTER_PORT" in os.environ and "WORLD_SIZE" not in os.environ:
        # accelerate's simple launcher was asked for several processes but starts only one without a GPU.
        raise UserError("accelerate launch started a single process: on a CPU machine pass "
                        "--config_file examples/accelerate/cpu-2proc.yaml (or --multi_gpu) to get several")
    # Accelerate picks DDP over gloo for CPU processes only when told cpu=True.
    accelerator = Accelerator(cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available(),
                              log_with=list(config.report_to) or None, project_dir=str(logs_dir(out_dir)))
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
        spec = model_spec or DEFAULT_MODEL
        model, tokenizer = load_4bit(spec, device) if config.load_in_4bit else load_model(spec, device=device)
    spec = model_spec or getattr(model.config, "tunelens_spec", None) or model.config.name_or_path
    return model, tokenizer, str(spec)


def _optimization(config, accelerator, peft_model, tokenizer, train_set, meta, out_dir, resume):
    """(batch plan, loop parts, resumed-from step or None): optimizer, schedule, checkpoint restored."""
    import torch

    plan = BatchPlan(len(train_set), config, accelerator.num_processes)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, plan.total_steps))
    checkpoints = list_checkpoints(checkpoint_root(out_dir)) if resume else []
    if checkpoints:
        load_checkpoint(checkpoints[-1][1], meta, peft_model, optimizer, scheduler)
    module, optimizer = accelerator.prepare(loss_module(peft_model, config.logits == "trained", config.bf16),
                                            optimizer)
    parts = LoopParts(accelerator, module, optimizer, scheduler, params, make_collate(config, tokenizer),
                      config.grad_accum, config.max_grad_norm, config.seed)
    return plan, parts, checkpoints[-1][0] if checkpoints else None


def make_collate(config: TrainConfig, tokenizer) -> Callable[[Sequence[Example]], dict]:
    """examples -> loss-module arguments: right-padded (`collate`), or packed into one row (`pack_rows`)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if config.packing:
        return lambda examples: pack_rows([collate([ex], pad_id) for ex in examples])
    return lambda examples: padded_inputs(*collate(examples, pad_id))


def split_train_eval(examples: Sequence[Example], eval_split: float, seed: int):
    """A seeded held-out split: (train, eval), train in file order; at least one eval pair when asked for."""
    import torch

    n_eval = max(round(len(examples) * eval_split), int(len(examples) >= 2)) if eval_split > 0 else 0
    if n_eval >= len(examples):
        raise UserError(f"eval_split {eval_split} leaves no training pairs out of {len(examples)}")
    held = set(torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()[:n_eval])
    return [ex for i, ex in enumerate(examples) if i not in held], [ex for i, ex in enumerate(examples) if i in held]


def collate(examples: Sequence[Example], pad_id: int):
    """Right-padded (input_ids, attention_mask, labels); labels are -100 outside the trained spans."""
    import torch

    width = max(len(ex.ids) for ex in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        input_ids[row, :len(ex.ids)] = torch.tensor(ex.ids, dtype=torch.long)
        labels[row, :len(ex.ids)] = torch.tensor(ex.labels(), dtype=torch.long)
        attention[row, :len(ex.ids)] = 1
    return input_ids, attention, labels

"""LoRA SFT on the text decoder: target resolution, completion-only loss, checkpoints, resume, provenance.

`train(config, data_path, out_dir)` reads pairs with `tunelens.records.load_pairs`, tokenises them
with `tunelens.prompts.encode_pair` (labels are -100 on the prompt and on padding), trains LoRA
adapters on the text decoder's q/k/v/o/gate/up/down linears, and writes a PEFT adapter directory
plus `tunelens.json` (base weights hash, data hash, config, versions).

Determinism, which is what makes `resume` land on the same adapter as an uninterrupted run:
- the data order of epoch e is a permutation seeded by (seed, e), so the batch of any step is a
  function of the step number alone;
- the dropout RNG is reseeded at every optimizer step from (seed, step, process rank);
- a checkpoint holds the adapter weights, optimizer and scheduler state and the step number.

Scale-out is Accelerate's: each process takes its share of every global batch, DDP (or FSDP /
DeepSpeed, from the accelerate config) averages the gradients.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from tunelens import __version__
from tunelens.config import config_to_dict, option
from tunelens.encoding import IGNORE_INDEX, EncodedData, Example, MaskView, encode_examples, mask_spans  # noqa: F401  (moved; re-exported)
from tunelens.errors import UserError

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROVENANCE_FILE = "tunelens.json"
CHECKPOINT_STATE = "trainer_state.json"


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


# Fields that do not change what is computed; a resume may change them.
_RESUME_FREE_FIELDS = {"checkpoint_every", "keep_checkpoints", "eval_every", "gradient_checkpointing"}


# ---------------------------------------------------------------- placement (which modules get LoRA)


@dataclass(frozen=True)
class PlacementRow:
    kind: str  # e.g. q_proj
    layers: tuple[int, ...]  # decoder layers that have it
    absent: tuple[int, ...]  # decoder layers that do not (KV-shared layers have no k_proj / v_proj)
    in_features: int
    out_features: int
    lora_params: int  # over all its layers
    shapes: tuple[tuple[int, int], ...] = ()  # distinct (in, out) over its layers (Gemma 4's global layers differ)


@dataclass(frozen=True)
class Placement:
    decoder_path: str  # e.g. model.language_model
    num_layers: int
    rows: tuple[PlacementRow, ...]
    module_names: tuple[str, ...]  # the full names of every adapted linear
    kv_shared_layers: tuple[int, ...]
    frozen_towers: tuple[str, ...]  # modules outside the text decoder: vision / audio towers and the like
    trainable_params: int
    total_params: int

    @property
    def target_regex(self) -> str:
        """A PEFT `target_modules` regex matching exactly `module_names` (PEFT full-matches it)."""
        kinds = "|".join(sorted({row.kind for row in self.rows}))
        return rf"{re.escape(self.decoder_path)}\.layers\.\d+\.(?:.+\.)?(?:{kinds})"


def _text_decoder(model):
    """(dotted path, module) of the text decoder, whose `layers` hold the blocks we adapt."""
    from tunelens.models import base_model_of

    model = base_model_of(model)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or not hasattr(decoder, "layers"):
        raise UserError(f"{type(model).__name__}: cannot find its text decoder (no get_decoder().layers)")
    for name, module in model.named_modules():
        if module is decoder:
            return name, decoder
    raise UserError(f"{type(model).__name__}: its decoder is not one of its submodules")


def placement_table(model, config: TrainConfig) -> Placement:
    """Resolve the target linears inside the text decoder only and count the LoRA parameters.

    Towers (vision, audio) are never searched, so their `Gemma4ClippableLinear`s (which PEFT
    rejects) and the plain Linears inside them are never targeted.
    """
    import torch.nn as nn

    from tunelens.models import base_model_of

    base = base_model_of(model)
    decoder_path, decoder = _text_decoder(base)
    found: dict[str, dict[int, nn.Linear]] = {kind: {} for kind in config.target_modules}
    names = []
    for index, layer in enumerate(decoder.layers):
        for sub_name, module in layer.named_modules():
            kind = sub_name.rsplit(".", 1)[-1]
            if kind in found and isinstance(module, nn.Linear):
                found[kind][index] = module
                names.append(f"{decoder_path}.layers.{index}.{sub_name}")
    missing = [kind for kind, layers in found.items() if not layers]
    if missing:
        raise UserError(f"target module(s) {', '.join(missing)} match no linear layer in the text decoder "
                        f"of {type(base).__name__}")
    all_layers = range(len(decoder.layers))
    rows = []
    for kind, layers in found.items():
        first = next(iter(layers.values()))
        params = sum(config.lora_r * (m.in_features + m.out_features) for m in layers.values())
        shapes = tuple(dict.fromkeys((m.in_features, m.out_features) for m in layers.values()))
        rows.append(PlacementRow(kind, tuple(sorted(layers)), tuple(i for i in all_layers if i not in layers),
                                 first.in_features, first.out_features, params, shapes))
    return Placement(
        decoder_path=decoder_path, num_layers=len(decoder.layers), rows=tuple(rows), module_names=tuple(names),
        kv_shared_layers=_kv_shared_layers(base, decoder),
        frozen_towers=_towers(base, decoder_path),
        trainable_params=sum(row.lora_params for row in rows),
        total_params=sum(p.numel() for p in base.parameters()),
    )


def _kv_shared_layers(base, decoder) -> tuple[int, ...]:
    text_config = base.config.get_text_config()
    modes = getattr(text_config, "kv_sharing_modes", None) if getattr(text_config, "num_kv_shared_layers", 0) else None
    if modes:
        return tuple(i for i, mode in enumerate(modes) if mode == "reuse")
    return tuple(i for i, layer in enumerate(decoder.layers)
                 if getattr(getattr(layer, "self_attn", None), "is_kv_shared_layer", False))


def _towers(base, decoder_path: str) -> tuple[str, ...]:
    """Top-level modules of the non-text encoders (e.g. model.vision_tower), which stay frozen."""
    towers = []
    for name, _module in base.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if ("tower" in leaf or leaf.startswith(("embed_vision", "embed_audio"))) and not name.startswith(decoder_path):
            if not any(name.startswith(t + ".") for t in towers):
                towers.append(name)
    return tuple(towers)


def layer_ranges(layers: Sequence[int]) -> str:
    """(0, 1, 2, 5) -> '0-2, 5'."""
    parts, start, prev = [], None, None
    for i in layers:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev > start else str(start))
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev > start else str(start))
    return ", ".join(parts) or "-"


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


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of every file under a directory (names and bytes, in sorted order)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- loss


def _causal_lm(model):
    """The transformers model (the one with an LM head) under a PEFT wrapper."""
    from tunelens.models import base_model_of

    return base_model_of(model)


# Trained positions whose logits exist at once in the fused head: 256 x 262k vocabulary x 4 bytes = 268 MB.
HEAD_CHUNK_TOKENS = 256


def completion_loss_sums(model, input_ids, attention_mask, labels, trained_only: bool = True,
                         chunk_tokens: int = HEAD_CHUNK_TOKENS):
    """(sum of token cross-entropies over trained positions, number of trained positions).

    Plain equivalent (`trained_only=False`):
        logits = model(input_ids, attention_mask).logits
        cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum")
    The fast path runs the decoder body, gathers the hidden states at positions whose next-token label
    is trained, and applies the LM head (and the final logit soft-cap, if the model has one) only
    there, `chunk_tokens` positions at a time (see `linear_cross_entropy`). Masked positions need no
    logits, and over a 262k vocabulary the head is most of the cost.
    """
    import torch.nn.functional as F

    targets = labels[:, 1:]
    trained = targets != IGNORE_INDEX
    count = int(trained.sum())
    lm = _causal_lm(model)
    if not trained_only:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        return loss, count
    body = getattr(lm, lm.base_model_prefix)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    picked = hidden[:, :-1][trained]
    head = lm.get_output_embeddings()
    cap = getattr(lm.config.get_text_config(), "final_logit_softcapping", None)
    if head.bias is not None:  # no model we target has one; keep it correct, if not fused
        logits = head(picked)
        logits = (logits / cap).tanh() * cap if cap is not None else logits
        return F.cross_entropy(logits.float(), targets[trained], reduction="sum"), count
    weight = head.weight
    if hasattr(weight, "full_tensor"):  # an FSDP2-sharded DTensor: the head needs the whole matrix
        weight = weight.full_tensor()
    return linear_cross_entropy(picked, weight, targets[trained], cap, chunk_tokens), count


def linear_cross_entropy(hidden, weight, targets, softcap: float | None = None, chunk_tokens: int = HEAD_CHUNK_TOKENS):
    """sum_i cross_entropy(softcap(hidden_i @ weight.T), targets_i), without holding all the logits.

    Plain equivalent: `cross_entropy(softcap(hidden @ weight.T).float(), targets, reduction="sum")`.
    Rows are processed `chunk_tokens` at a time, and each chunk's gradient with respect to `hidden`
    (and `weight`, if it is trained) is computed right away, while its logits exist; backward only
    scales the stored gradients. Memory is one chunk of logits instead of all of them, and the
    work is the same two matmuls as the plain version (no recomputation).
    """
    return _LinearCrossEntropy.apply(hidden, weight, targets, softcap, chunk_tokens)


def _linear_ce_function():
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets, softcap, chunk_tokens):
            want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grad_hidden = torch.zeros_like(hidden) if want_hidden else None
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, hidden.shape[0], chunk_tokens):
                rows = hidden[start:start + chunk_tokens]
                target = targets[start:start + chunk_tokens]
                logits = (rows @ weight.t()).float()
                squash = None
                if softcap is not None:
                    squash = torch.tanh(logits / softcap)
                    logits = squash * softcap
                log_norm = torch.logsumexp(logits, dim=-1)
                total += (log_norm - logits.gather(1, target[:, None]).squeeze(1)).sum()
                if not (want_hidden or want_weight):
                    continue
                # d loss / d logits = softmax - one_hot, computed in place over the logits' memory.
                grad = logits.sub_(log_norm[:, None]).exp_()
                grad[torch.arange(len(target), device=grad.device), target] -= 1
                if squash is not None:
                    grad.mul_(1 - squash * squash)  # through cap * tanh(z / cap)
                grad = grad.to(weight.dtype)
                if want_hidden:
                    grad_hidden[start:start + chunk_tokens] = grad @ weight
                if want_weight:
                    grad_weight += (grad.t() @ rows).float()
            ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight) if g is not None))
            ctx.has = (want_hidden, want_weight)
            ctx.weight_dtype = weight.dtype
            return total

        @staticmethod
        def backward(ctx, grad_total):
            saved = list(ctx.saved_tensors)
            # A 0-dim factor keeps the stored gradient's dtype (bf16 stays bf16).
            grad_hidden = saved.pop(0) * grad_total if ctx.has[0] else None
            grad_weight = (saved.pop(0) * grad_total).to(ctx.weight_dtype) if ctx.has[1] else None
            return grad_hidden, grad_weight, None, None, None

    return LinearCrossEntropy


class _LazyFunction:
    """Builds the autograd Function on first use, so importing this module does not import torch."""

    def __init__(self, build):
        self._build, self._function = build, None

    def apply(self, *args):
        if self._function is None:
            self._function = self._build()
        return self._function.apply(*args)


_LinearCrossEntropy = _LazyFunction(_linear_ce_function)


def _loss_module(model, trained_only: bool):
    """The loss as a module, so Accelerate's DDP / FSDP wrapper sees every forward it must sync."""
    import torch.nn as nn

    class CompletionLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, labels):
            return completion_loss_sums(self.model, input_ids, attention_mask, labels, trained_only)

    return CompletionLoss()


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

    @property
    def tokens_per_s(self) -> float:
        return self.trained_tokens / self.train_seconds if self.train_seconds > 0 else 0.0


# ---------------------------------------------------------------- schedule and batches


def _lr_factor(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warmup = int(math.ceil(config.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if config.lr_schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if config.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return factor


def split_even(items: Sequence, parts: int) -> list[list]:
    """Split into `parts` contiguous chunks whose sizes differ by at most one (some may be empty)."""
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        chunks.append(list(items[start:end]))
        start = end
    return chunks


class _BatchPlan:
    """The global batch of every optimizer step, a pure function of (seed, step)."""

    def __init__(self, n_train: int, config: TrainConfig, world: int):
        self.n_train = n_train
        self.seed = config.seed
        self.global_batch = config.batch_size * config.grad_accum * world
        self.steps_per_epoch = math.ceil(n_train / self.global_batch)
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        import torch

        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._orders = {epoch: torch.randperm(self.n_train, generator=generator).tolist()}
        return self._orders[epoch]

    def indices(self, step: int) -> list[int]:
        epoch, within = divmod(step, self.steps_per_epoch)
        return self._order(epoch)[within * self.global_batch: (within + 1) * self.global_batch]


def _step_seed(seed: int, step: int, rank: int) -> int:
    # Dropout masks depend only on (seed, step, rank), so a resumed run draws the same masks.
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2 ** 63)


# ---------------------------------------------------------------- checkpoints


def checkpoint_root(out_dir: Path) -> Path:
    """Checkpoints live beside the adapter (`<out>-checkpoints/`), so the adapter dir stays pure PEFT."""
    return out_dir.parent / f"{out_dir.name}-checkpoints"


def _checkpoints(root: Path) -> list[tuple[int, Path]]:
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = re.fullmatch(r"step-(\d+)", path.name)
            if match and (path / CHECKPOINT_STATE).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def _save_checkpoint(root: Path, step: int, peft_model, optimizer, scheduler, meta: dict, keep: int) -> Path:
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from tunelens.io import atomic_directory

    final = root / f"step-{step:07d}"
    with atomic_directory(final) as staging:
        weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
        save_file(weights, staging / "adapter_weights.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   staging / "optimizer.pt")
        # The state file is written last: a directory without it is never taken for a checkpoint.
        (staging / CHECKPOINT_STATE).write_text(json.dumps({**meta, "step": step}, indent=2))
    for _old_step, old in _checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_checkpoint(path: Path, peft_model, optimizer, scheduler) -> dict:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(peft_model, load_file(path / "adapter_weights.safetensors"))
    states = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])
    return json.loads((path / CHECKPOINT_STATE).read_text())


def _check_resumable(state: dict, meta: dict, path: Path) -> None:
    if state.get("data_sha256") != meta["data_sha256"]:
        raise UserError(f"checkpoint {path} was made from other training data (hash differs): "
                        "resume with the same data file, or start afresh without --resume")
    if state.get("base_weights_hash") != meta["base_weights_hash"]:
        raise UserError(f"checkpoint {path} was made on other base weights: resume with the same model")
    for key, value in meta["config"].items():
        if key not in _RESUME_FREE_FIELDS and state["config"].get(key) != value:
            raise UserError(f"checkpoint {path} was made with {key}={state['config'].get(key)!r}, "
                            f"this run has {key}={value!r}: resume with the same config")


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


def _load_pairs(data_path: Path):
    from tunelens.records import load_pairs

    pairs = load_pairs(data_path)
    if not pairs:
        raise UserError(f"{data_path}: no training pairs")
    return pairs


def _wrap_lora(model, config: TrainConfig, placement: Placement):
    import torch
    from peft import LoraConfig, get_peft_model

    for param in model.parameters():
        param.requires_grad_(False)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=placement.target_regex, bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(config.seed)  # the LoRA A init
    with warnings.catch_warnings():
        # PEFT calls a transformers method deprecated in 5.x; nothing the user can act on.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, lora)
    adapted = {name.removeprefix("base_model.model.") for name, module in peft_model.named_modules()
               if hasattr(module, "lora_A") and name.startswith("base_model.model.")}
    if adapted != set(placement.module_names):
        raise RuntimeError(f"PEFT adapted {len(adapted)} modules, the placement table has "
                           f"{len(placement.module_names)}")
    return peft_model


def _accelerator():
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
    return Accelerator(cpu=world > 1 and not torch.cuda.is_available())


def train(config: TrainConfig, data_path: str | Path, out_dir: str | Path, model=None, tokenizer=None,
          model_spec: str | None = None, resume: bool = False,
          progress: Callable[[TrainProgress], None] | None = None) -> TrainResult:
    """Train a LoRA adapter on `data_path` and write it to `out_dir`.

    `model`/`tokenizer` may be given already loaded (a tiny test model, the demo's model): the model
    is modified in place (LoRA layers injected) and returned as `result.model`. Otherwise
    `model_spec` (default: the embedded model) is loaded with `tunelens.models.load_model`.
    """
    import torch

    from tunelens.models import DEFAULT_MODEL, load_model, weights_fingerprint

    data_path, out_dir = Path(data_path), Path(out_dir)
    _check_out_dir(out_dir)
    root = checkpoint_root(out_dir)
    if not resume and _checkpoints(root):
        raise UserError(f"{root} holds checkpoints of an earlier run: pass --resume to continue it, "
                        "or delete that directory")
    accelerator = _accelerator()
    report = progress if (progress and accelerator.is_main_process) else (lambda event: None)
    if accelerator.distributed_type == "DEEPSPEED" and config.grad_accum > 1:
        # DeepSpeed's engine steps on every backward unless its own accumulation is configured.
        raise UserError("with DeepSpeed use grad_accum 1 (raise batch_size or the number of processes instead)")

    pairs = _load_pairs(data_path)
    if model is None:
        # Each process loads onto its own device; dtype "auto" then means bf16 on a GPU, fp32 on the CPU.
        device = str(accelerator.device) if accelerator.device.type == "cuda" else accelerator.device.type
        model, tokenizer = load_model(model_spec or DEFAULT_MODEL, device=device)
    elif tokenizer is None:
        raise ValueError("train(model=...) needs its tokenizer too")
    spec = model_spec or getattr(model.config, "tunelens_spec", None) or model.config.name_or_path
    encoded = encode_examples(tokenizer, pairs, config.max_length)
    if not encoded.examples:
        raise UserError(f"{data_path}: every pair's prompt is longer than max_length={config.max_length}")
    train_set, eval_set = split_train_eval(encoded.examples, config.eval_split, config.seed)

    placement = placement_table(model, config)
    meta = {"data_sha256": file_sha256(data_path), "base_weights_hash": weights_fingerprint(model),
            "config": config_to_dict(config)}
    peft_model = _wrap_lora(model, config, placement)
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (the embeddings are frozen).
        if hasattr(model, "activation_checkpointing_enable"):  # the transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model.train()
    plan = _BatchPlan(len(train_set), config, accelerator.num_processes)

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config, plan.total_steps))
    start_step, resumed_from = 0, None
    checkpoints = _checkpoints(root)
    if resume and checkpoints:
        resumed_from, path = checkpoints[-1]
        state = json.loads((path / CHECKPOINT_STATE).read_text())
        _check_resumable(state, meta, path)
        _load_checkpoint(path, peft_model, optimizer, scheduler)
        start_step = resumed_from
    loss_module, optimizer = accelerator.prepare(_loss_module(peft_model, config.logits == "trained"), optimizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    report(TrainProgress("start", start_step, plan.total_steps, placement=placement,
                         detail=f"{len(train_set)} train / {len(eval_set)} eval pairs"
                                + (f"; resumed from step {resumed_from}" if resumed_from else "")))
    started = time.perf_counter()
    trained_tokens, last_loss, eval_losses = 0, None, []
    for step in range(start_step, plan.total_steps):
        batch = [train_set[i] for i in plan.indices(step)]
        torch.manual_seed(_step_seed(config.seed, step, accelerator.process_index))
        last_loss, tokens = _optimizer_step(accelerator, loss_module, optimizer, batch, config, pad_id, params)
        scheduler.step()
        trained_tokens += tokens
        done = step + 1
        report(TrainProgress("step", done, plan.total_steps, loss=last_loss, learning_rate=scheduler.get_last_lr()[0],
                             trained_tokens=trained_tokens, elapsed_s=time.perf_counter() - started))
        if eval_set and config.eval_every and done % config.eval_every == 0 and done < plan.total_steps:
            eval_losses.append((done, _eval_loss(accelerator, peft_model, eval_set, config, pad_id)))
            report(TrainProgress("eval", done, plan.total_steps, eval_loss=eval_losses[-1][1]))
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < plan.total_steps:
            if accelerator.is_main_process:
                path = _save_checkpoint(root, done, peft_model, optimizer, scheduler, meta, config.keep_checkpoints)
                report(TrainProgress("checkpoint", done, plan.total_steps, detail=str(path)))
            accelerator.wait_for_everyone()
    train_seconds = time.perf_counter() - started
    if eval_set:
        eval_losses.append((plan.total_steps, _eval_loss(accelerator, peft_model, eval_set, config, pad_id)))
        report(TrainProgress("eval", plan.total_steps, plan.total_steps, eval_loss=eval_losses[-1][1]))

    provenance = {
        "tunelens_version": __version__, "base_model": str(spec), "base_weights_hash": meta["base_weights_hash"],
        "data": {"path": str(data_path), "sha256": meta["data_sha256"], "pairs": len(pairs),
                 "train": len(train_set), "eval": len(eval_set), "truncated": list(encoded.truncated),
                 "skipped_prompt_too_long": list(encoded.skipped)},
        "config": meta["config"], "steps": plan.total_steps, "processes": accelerator.num_processes,
        "train_loss": last_loss, "eval_loss": eval_losses[-1][1] if eval_losses else None,
        "adapted_modules": len(placement.module_names), "trainable_params": placement.trainable_params,
        "kv_shared_layers": list(placement.kv_shared_layers), "frozen_towers": list(placement.frozen_towers),
        "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if accelerator.is_main_process:
        _write_adapter(out_dir, peft_model, provenance)
        shutil.rmtree(root, ignore_errors=True)  # the run is complete: nothing left to resume
    accelerator.wait_for_everyone()
    report(TrainProgress("done", plan.total_steps, plan.total_steps, loss=last_loss,
                         trained_tokens=trained_tokens, elapsed_s=train_seconds))
    peft_model.eval()
    return TrainResult(
        out_dir=out_dir, steps=plan.total_steps, resumed_from_step=resumed_from, train_loss=last_loss,
        eval_loss=eval_losses[-1][1] if eval_losses else None, eval_losses=tuple(eval_losses),
        trained_tokens=trained_tokens, train_seconds=train_seconds, n_pairs=len(pairs),
        n_train=len(train_set), n_eval=len(eval_set), truncated=encoded.truncated, skipped=encoded.skipped,
        placement=placement, provenance=provenance, is_main_process=accelerator.is_main_process,
        model=peft_model,
    )


def _optimizer_step(accelerator, loss_module, optimizer, batch, config, pad_id, params) -> tuple[float, int]:
    """One optimizer step over a global batch; returns (mean loss per trained token, trained tokens).

    Every micro-batch's summed loss is divided by the trained-token count of the whole global batch
    (all micro-batches, all processes), so the update does not depend on how the batch is split.
    DDP averages gradients over processes, hence the extra factor num_processes.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    global_tokens = sum(ex.trained_tokens for ex in batch)
    micro = split_even(batch, world * config.grad_accum)[rank * config.grad_accum:(rank + 1) * config.grad_accum]
    scale = world / global_tokens
    local_sum = 0.0
    for index, chunk in enumerate(micro):
        # An empty share (the last, short batch of an epoch) still runs, with nothing trained, so
        # every process joins every gradient sync.
        inputs = collate(chunk or batch[:1], pad_id)
        if not chunk:
            inputs = (inputs[0], inputs[1], inputs[2].fill_(IGNORE_INDEX))
        input_ids, attention, labels = (t.to(accelerator.device) for t in inputs)
        last = index == len(micro) - 1
        sync = accelerator.no_sync(loss_module) if not last else _null_context()
        with sync:
            loss_sum, _count = loss_module(input_ids, attention, labels)
            accelerator.backward(loss_sum * scale)
        local_sum += float(loss_sum.detach())
    if config.max_grad_norm > 0:
        accelerator.clip_grad_norm_(params, config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    total = _all_sum(accelerator, local_sum)
    return total / global_tokens, global_tokens


def _null_context():
    import contextlib

    return contextlib.nullcontext()


def _all_sum(accelerator, value: float) -> float:
    if accelerator.num_processes == 1:
        return value
    import torch

    tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(tensor, reduction="sum").item())


def _eval_loss(accelerator, peft_model, eval_set, config, pad_id) -> float:
    """Mean cross-entropy per trained token over the held-out pairs (shared out over processes)."""
    import torch

    share = split_even(eval_set, accelerator.num_processes)[accelerator.process_index]
    loss_sum, count = 0.0, 0
    peft_model.eval()
    with torch.no_grad():
        for start in range(0, len(share), config.batch_size):
            inputs = collate(share[start:start + config.batch_size], pad_id)
            input_ids, attention, labels = (t.to(accelerator.device) for t in inputs)
            batch_sum, batch_count = completion_loss_sums(peft_model, input_ids, attention, labels)
            loss_sum += float(batch_sum)
            count += batch_count
    peft_model.train()
    total_sum, total_count = _all_sum(accelerator, loss_sum), _all_sum(accelerator, float(count))
    return total_sum / total_count if total_count else float("nan")



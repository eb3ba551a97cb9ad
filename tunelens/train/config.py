"""What a training run computes, declared once: `TrainConfig`'s fields are the `tunelens train` flags, the
keys of its `--config` YAML file and the `config` recorded in an adapter's tunelens.json. No torch import
here, so the CLI can build its flags cheaply."""

from __future__ import annotations

from tunelens.config import configclass, option
from tunelens.errors import UserError
from tunelens.train.metrics import TRACKERS

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@configclass
class TrainConfig:
    """Everything that decides what a training run computes (the model and data are given apart)."""

    lora_r: int = option(32, "LoRA rank.", min=1)
    lora_alpha: float = option(64.0, "LoRA alpha (the update is scaled by alpha / r).")
    lora_dropout: float = option(0.05, "Dropout on the LoRA input during training.")
    target_modules: tuple[str, ...] = option(
        DEFAULT_TARGETS, "Linear layers of the text decoder to adapt, by name (comma-separated on the CLI).")
    learning_rate: float = option(2e-4, "Peak learning rate of AdamW.", short="--lr")
    lr_schedule: str = option("linear", "Decay after warmup.", choices=("linear", "cosine", "constant"))
    warmup_ratio: float = option(0.03, "Fraction of the optimizer steps spent warming up linearly from 0.")
    weight_decay: float = option(0.0, "AdamW weight decay on the LoRA weights.", min=0.0)
    max_grad_norm: float = option(1.0, "Clip the gradient norm to this (0 switches clipping off).", min=0.0)
    epochs: int = option(1, "Passes over the training split (ignored when max_steps > 0).", min=0)
    max_steps: int = option(0, "Stop after this many optimizer steps (0: use epochs).", min=0)
    batch_size: int = option(4, "Pairs per micro-batch on each process.", min=1)
    grad_accum: int = option(1, "Micro-batches per optimizer step (the loss is normalised over all of them).", min=1)
    max_length: int = option(512, "Longest tokenised pair; longer pairs lose the end of their response.", min=1)
    eval_split: float = option(0.05, "Fraction of pairs held out for the eval loss (0: no eval).")
    eval_every: int = option(0, "Eval loss every N optimizer steps (0: only at the end).", min=0)
    checkpoint_every: int = option(50, "Save a resumable checkpoint every N optimizer steps (0: never).", min=0)
    keep_checkpoints: int = option(2, "How many of the newest checkpoints to keep.", min=1)
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
    fused_lora: bool = option(True, "Compute each adapted linear as one autograd node (tunelens/train/lora_fused.py): "
                              "fewer passes over the activations than PEFT's modules, the same losses without "
                              "dropout, dropout masks drawn another way. --no-fused-lora uses PEFT's forward.")
    load_in_4bit: bool = option(False, "QLoRA: load the base model in 4-bit NF4 through bitsandbytes "
                                "(needs bitsandbytes and a CUDA GPU).")
    report_to: tuple[str, ...] = option((), "Also log every step to these trackers through their own "
                                        "libraries: tensorboard, wandb, trackio, mlflow (comma-separated).")

    def validate(self) -> None:
        # Closed bounds are declared on the fields (min=...); open intervals and rules across fields are here.
        if self.epochs == 0 and self.max_steps == 0:
            raise UserError("config: set epochs or max_steps above 0")
        checks = {"learning_rate": self.learning_rate > 0, "lora_alpha": self.lora_alpha > 0,
                  "lora_dropout": 0 <= self.lora_dropout < 1, "warmup_ratio": 0 <= self.warmup_ratio < 1,
                  "eval_split": 0 <= self.eval_split < 1}
        for name, ok in checks.items():
            if not ok:
                raise UserError(f"config {name!r} is out of range: {getattr(self, name)}")
        if not self.target_modules:
            raise UserError("config 'target_modules' is empty")
        unknown = [name for name in self.report_to if name not in TRACKERS]
        if unknown:
            raise UserError(f"config 'report_to': unknown tracker {unknown[0]!r} (use {', '.join(TRACKERS)})")


# Fields that do not change what is computed (packing: up to float rounding); a resume may change them.
RESUME_FREE_FIELDS = {"checkpoint_every", "keep_checkpoints", "eval_every", "gradient_checkpointing", "packing",
                      "report_to"}

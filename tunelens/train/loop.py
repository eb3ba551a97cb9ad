"""The training loop on its own: optimizer steps over batches given by step number, nothing else.

`run_loop(parts, batch_of_step, steps, on_step)` knows nothing of files, PEFT or configs: it takes an
Accelerate-prepared loss module and optimizer, a scheduler, a collate function and a function from step
number to that step's global batch, and reports a `StepRecord` after every optimizer step
(`tunelens.train.run` hangs evaluation, checkpoints and metrics on it). Tests drive the loop alone.

Determinism, which is what makes a resumed run land on the same adapter as an uninterrupted one: the batch
of a step is a function of the step number (`BatchPlan`), and the dropout RNG is reseeded at every
optimizer step from (seed, step, process rank).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tunelens.runtime import seeded
from tunelens.train.loss import completion_loss_sums, IGNORE_INDEX


@dataclass(frozen=True)
class StepRecord:
    """What one optimizer step did: the row `metrics.jsonl` gets."""

    step: int  # optimizer steps done, counting resumed ones
    loss: float  # mean cross-entropy per trained token over the global batch
    learning_rate: float  # the rate this step used
    grad_norm: float | None  # total L2 norm of the LoRA gradient before clipping
    trained_tokens: int  # in this step's global batch
    total_trained_tokens: int  # since this loop started
    step_seconds: float
    elapsed_s: float  # since this loop started

    @property
    def tokens_per_s(self) -> float:
        return self.trained_tokens / self.step_seconds if self.step_seconds > 0 else 0.0

    def to_row(self) -> dict:
        return {"step": self.step, "loss": self.loss, "learning_rate": self.learning_rate,
                "grad_norm": self.grad_norm, "trained_tokens": self.trained_tokens,
                "tokens_per_s": round(self.tokens_per_s, 3), "step_seconds": round(self.step_seconds, 4)}


@dataclass
class LoopParts:
    """What the loop needs; `loss_module` and `optimizer` as returned by `accelerator.prepare`."""

    accelerator: Any
    loss_module: Any  # forward(**collate(examples)) -> (summed loss, trained-token count)
    optimizer: Any
    scheduler: Any
    params: list  # the trained parameters (for clipping and the gradient norm)
    collate: Callable[[Sequence], dict]  # examples -> the loss module's keyword arguments
    grad_accum: int = 1
    max_grad_norm: float = 0.0  # 0: no clipping (the norm is still measured)
    seed: int = 0


@dataclass(frozen=True)
class LoopResult:
    last: StepRecord | None
    trained_tokens: int
    seconds: float


def run_loop(parts: LoopParts, batch_of_step: Callable[[int], Sequence], steps: range,
             on_step: Callable[[StepRecord], None] | None = None) -> LoopResult:
    """Run `steps` optimizer steps; `batch_of_step(step)` gives the global batch of step `step` (0-based)."""
    import torch

    started, total, record = time.perf_counter(), 0, None
    # Each step reseeds (dropout) so a resumed run redoes it exactly; `seeded` puts the caller's generators back.
    with seeded(parts.seed):
        for step in steps:
            tick = time.perf_counter()
            # Dropout masks depend only on (seed, step, rank), so a resumed run draws the same masks.
            rank = parts.accelerator.process_index
            torch.manual_seed((parts.seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2 ** 63))
            learning_rate = parts.optimizer.param_groups[0]["lr"]
            loss, tokens, grad_norm = optimizer_step(parts, batch_of_step(step))
            parts.scheduler.step()
            total += tokens
            now = time.perf_counter()
            record = StepRecord(step + 1, loss, learning_rate, grad_norm, tokens, total, now - tick, now - started)
            if on_step is not None:
                on_step(record)
    return LoopResult(record, total, time.perf_counter() - started)


def optimizer_step(parts: LoopParts, batch: Sequence) -> tuple[float, int, float | None]:
    """One optimizer step over a global batch: (mean loss per trained token, trained tokens, grad norm).

    Every micro-batch's summed loss is divided by the trained-token count of the whole global batch (all
    micro-batches, all processes), so the update does not depend on how the batch is split. DDP averages
    gradients over processes, hence the extra factor num_processes.
    """
    accelerator = parts.accelerator
    world, rank = accelerator.num_processes, accelerator.process_index
    global_tokens = sum(ex.trained_tokens for ex in batch)
    micro = split_even(batch, world * parts.grad_accum)[rank * parts.grad_accum:(rank + 1) * parts.grad_accum]
    local_sum = 0.0
    for index, chunk in enumerate(micro):
        # An empty share (the last, short batch of an epoch) still runs, with nothing trained, so every
        # process joins every gradient sync.
        inputs = parts.collate(chunk or batch[:1])
        if not chunk:
            inputs["labels"] = inputs["labels"].fill_(IGNORE_INDEX)
        last = index == len(micro) - 1
        with accelerator.no_sync(parts.loss_module) if not last else contextlib.nullcontext():
            loss_sum, _count = parts.loss_module(**_to_device(inputs, accelerator.device))
            accelerator.backward(loss_sum * (world / global_tokens))
        local_sum += float(loss_sum.detach())
    # With clipping off, an infinite bound measures the norm without changing the gradient.
    grad_norm = accelerator.clip_grad_norm_(parts.params, parts.max_grad_norm or math.inf)
    parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)
    total = _all_sum(accelerator, local_sum)
    return total / global_tokens, global_tokens, float(grad_norm) if grad_norm is not None else None


def _to_device(inputs: dict, device) -> dict:
    return {key: value.to(device) if value is not None else None for key, value in inputs.items()}


def _all_sum(accelerator, value: float) -> float:
    if accelerator.num_processes == 1:
        return value
    import torch

    tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(tensor, reduction="sum").item())


def eval_loss(accelerator, model, eval_set: Sequence, collate: Callable[[Sequence], dict], batch_size: int,
              bf16: bool = False) -> float:
    """Mean cross-entropy per trained token over held-out examples (shared out over processes)."""
    import torch

    share = split_even(eval_set, accelerator.num_processes)[accelerator.process_index]
    loss_sum, count = 0.0, 0
    model.eval()
    with torch.no_grad(), torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(share), batch_size):
            batch_sum, batch_count = completion_loss_sums(
                model, **_to_device(collate(share[start:start + batch_size]), accelerator.device))
            loss_sum += float(batch_sum)
            count += batch_count
    model.train()
    total_sum, total_count = _all_sum(accelerator, loss_sum), _all_sum(accelerator, float(count))
    return total_sum / total_count if total_count else float("nan")


def padded_inputs(input_ids, attention_mask, labels) -> dict:
    """`collate`'s right-padded (input_ids, attention_mask, labels) as the loss module's arguments."""
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def pack_rows(rows: Sequence[tuple]) -> dict:
    """Pack single-example rows, each `collate([example])`, into one row without padding.

    Position ids restart at 0 for each example and no attention mask is passed, so transformers builds a
    block-diagonal causal mask from the position ids (flash attention reads them as sequence boundaries):
    no example attends to another. The label of each example's first token is -100, so the last token of
    one example is never asked to predict the next example. Plain equivalent: `padded_inputs(*collate(
    examples))`, which gives the same per-example losses (tested), at the cost of computing padding.
    """
    import torch

    lengths = [int(mask[0].sum()) for _ids, mask, _labels in rows]
    labels = [labels[0, :n].clone() for (_ids, _mask, labels), n in zip(rows, lengths)]
    for row in labels:
        row[0] = IGNORE_INDEX
    return {"input_ids": torch.cat([ids[0, :n] for (ids, _mask, _labels), n in zip(rows, lengths)])[None],
            "attention_mask": None, "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
            "labels": torch.cat(labels)[None]}


def lr_factor(config, total_steps: int) -> Callable[[int], float]:
    """Linear warmup over `warmup_ratio` of the steps, then linear, cosine or constant."""
    warmup = int(math.ceil(config.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return {"constant": 1.0, "cosine": 0.5 * (1 + math.cos(math.pi * progress))}.get(
            config.lr_schedule, max(0.0, 1.0 - progress))

    return factor


def split_even(items: Sequence, parts: int) -> list[list]:
    """Split into `parts` contiguous chunks whose sizes differ by at most one (some may be empty)."""
    size, extra = divmod(len(items), parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [list(items[start:end]) for start, end in zip(bounds, bounds[1:])]


class BatchPlan:
    """The global batch of every optimizer step, a pure function of (seed, step)."""

    def __init__(self, n_train: int, config, world: int):
        self.n_train, self.seed = n_train, config.seed
        self.global_batch = config.batch_size * config.grad_accum * world
        self.steps_per_epoch = math.ceil(n_train / self.global_batch)
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self._orders: dict[int, list[int]] = {}

    def indices(self, step: int) -> list[int]:
        import torch

        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch not in self._orders:  # only the current epoch's order is kept
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._orders = {epoch: torch.randperm(self.n_train, generator=generator).tolist()}
        return self._orders[epoch][within * self.global_batch: (within + 1) * self.global_batch]

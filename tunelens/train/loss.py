"""The training loss: summed cross-entropy over trained positions, with the LM head applied only there.

Labels are -100 outside completions. The loss returned is a *sum* with its token count, so the caller can
normalise by the trained tokens of a whole global batch (gradient accumulation then equals one bigger batch).
"""

from __future__ import annotations

from functools import cache

from tunelens.model.state import base_model_of
from tunelens.train.encoding import IGNORE_INDEX
# Trained positions whose logits exist at once in the fused head: 256 x 262k vocabulary x 4 bytes = 268 MB.
HEAD_CHUNK_TOKENS = 256
# Vocabulary rows per block when the head is frozen: a block of logits (256 rows x 4096 x 4 bytes = 4 MB)
# and of head weights (4096 x hidden) stay in the CPU's cache between the two matmuls that use them.
# 0: all of a chunk's logits at once (the earlier way; bench/train_throughput.py --ab head compares them).
HEAD_VOCAB_BLOCK = 4096


def completion_loss_sums(model, input_ids, attention_mask, labels, trained_only: bool = True,
                         chunk_tokens: int = HEAD_CHUNK_TOKENS, position_ids=None):
    """(sum of token cross-entropies over trained positions, number of trained positions).

    Plain equivalent (`trained_only=False`):
        logits = model(input_ids, attention_mask).logits
        cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum")
    The fast path runs the decoder body, gathers the hidden states at positions whose next-token label is
    trained, and applies the LM head (and the final logit soft-cap, if the model has one) only there (see
    `linear_cross_entropy`): masked positions need no logits, and over a 262k vocabulary the head is most
    of the cost. A packed row (`tunelens.train.loop.pack_rows`) comes with `attention_mask=None` and
    `position_ids` that restart at 0 for each sequence, from which transformers builds a block-diagonal mask.
    """
    import torch.nn.functional as F

    targets = labels[:, 1:]
    trained = targets != IGNORE_INDEX
    count = int(trained.sum())
    if not trained_only:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        return loss, count
    lm = base_model_of(model)
    hidden = getattr(lm, lm.base_model_prefix)(input_ids=input_ids, attention_mask=attention_mask,
                                               position_ids=position_ids, use_cache=False).last_hidden_state
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
    Rows are processed `chunk_tokens` at a time, and each chunk's gradient with respect to `hidden` (and
    `weight`, if it is trained) is computed right away, while its logits exist; backward only scales the
    stored gradients. Memory is one chunk of logits, the work the same two matmuls (no recomputation).
    """
    return _linear_ce_function().apply(hidden, weight, targets, softcap, chunk_tokens)


def _capped_logits(rows, weights, softcap):
    """(float32 logits of rows @ weights.T after the soft-cap, tanh(z / cap) or None without a cap)."""
    import torch

    logits = (rows @ weights.t()).float()
    if softcap is None:
        return logits, None
    squash = torch.tanh(logits / softcap)
    return squash * softcap, squash


def _full_logits_chunk(rows, target, mm_weight, softcap, want_hidden, want_weight):
    """(summed loss, d loss / d rows or None, d loss / d weight or None) of one chunk of rows, with all
    its logits at once (needed when the head's weight is trained: its gradient wants the final softmax)."""
    import torch

    logits, squash = _capped_logits(rows, mm_weight, softcap)
    # log-sum-exp and softmax in place over the logits' memory (no second chunk-sized buffer).
    target_logit = logits.gather(1, target[:, None]).squeeze(1)
    top = logits.amax(dim=-1, keepdim=True)
    probs = logits.sub_(top).exp_()
    sums = probs.sum(dim=-1, keepdim=True)
    loss = (sums.log() + top).squeeze(1).sub_(target_logit).sum()
    if not (want_hidden or want_weight):
        return loss, None, None
    grad = probs.div_(sums)  # d loss / d logits = softmax - one_hot
    grad[torch.arange(len(target), device=grad.device), target] -= 1
    if squash is not None:
        grad.mul_(1 - squash * squash)  # through cap * tanh(z / cap)
    grad = grad.to(mm_weight.dtype)
    return loss, grad @ mm_weight if want_hidden else None, (grad.t() @ rows).float() if want_weight else None


def _vocab_blocked_chunk(rows, target, mm_weight, softcap, want_hidden, block=HEAD_VOCAB_BLOCK):
    """(summed loss, d loss / d rows or None) of one chunk of rows, a block of the vocabulary at a time.

    An online softmax, as flash attention does over keys: a running max `top` and sum `sums` per row, and
    the running `sum_v exp(z_v - top) * dz_v/draw * W_v` in `acc`, all rescaled when the max grows; the
    gradient is then acc / sums minus the target's row of W. Each block's logits are used by both matmuls
    while still in cache, instead of a [rows x vocabulary] buffer written to memory and read back five times.
    """
    import torch

    count, hidden = rows.shape
    top = torch.full((count, 1), float("-inf"), device=rows.device)
    sums = torch.zeros((count, 1), device=rows.device)
    acc = torch.zeros((count, hidden), device=rows.device) if want_hidden else None
    target_logit = torch.zeros(count, device=rows.device)
    for start in range(0, mm_weight.shape[0], block):
        weights = mm_weight[start:start + block]
        logits, squash = _capped_logits(rows, weights, softcap)
        inside = (target >= start) & (target < start + weights.shape[0])
        if inside.any():
            picked = inside.nonzero().squeeze(1)
            target_logit[picked] = logits[picked, target[picked] - start]
        new_top = torch.maximum(top, logits.amax(dim=-1, keepdim=True))
        rescale = (top - new_top).exp_()
        probs = logits.sub_(new_top).exp_()
        sums.mul_(rescale).add_(probs.sum(dim=-1, keepdim=True))
        if want_hidden:
            if squash is not None:
                probs.mul_(1 - squash * squash)
            acc.mul_(rescale).add_(probs.to(weights.dtype) @ weights)
        top = new_top
    loss = (sums.log() + top).squeeze(1).sub_(target_logit).sum()
    if not want_hidden:
        return loss, None
    own = mm_weight[target].float()  # the one-hot part: each row's target row of W
    if softcap is not None:
        own.mul_((1 - (target_logit / softcap) ** 2)[:, None])  # 1 - tanh^2, as tanh = logit / cap there
    return loss, acc.div_(sums).sub_(own).to(rows.dtype)


@cache  # built on first use, so importing this module does not import torch
def _linear_ce_function():
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets, softcap, chunk_tokens):
            want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grad_hidden = torch.zeros_like(hidden) if want_hidden else None
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            mm_weight, device = weight, hidden.device.type
            if torch.is_autocast_enabled(device):
                # Cast the head once, not in every chunk: autocast caches no cast of a frozen weight.
                mm_weight = weight.to(torch.get_autocast_dtype(device))
            for start in range(0, hidden.shape[0], chunk_tokens):
                rows, target = hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens]
                if want_weight or HEAD_VOCAB_BLOCK <= 0:
                    loss, grad_rows, grad_w = _full_logits_chunk(rows, target, mm_weight, softcap, want_hidden,
                                                                 want_weight)
                    if want_weight:
                        grad_weight += grad_w
                else:
                    loss, grad_rows = _vocab_blocked_chunk(rows, target, mm_weight, softcap, want_hidden,
                                                           HEAD_VOCAB_BLOCK)
                total += loss
                if want_hidden:
                    grad_hidden[start:start + chunk_tokens] = grad_rows
            ctx.save_for_backward(grad_hidden, grad_weight)
            ctx.weight_dtype = weight.dtype
            return total

        @staticmethod
        def backward(ctx, grad_total):
            grad_hidden, grad_weight = ctx.saved_tensors
            # A 0-dim factor keeps the stored gradient's dtype (bf16 stays bf16).
            return (grad_hidden * grad_total if grad_hidden is not None else None,
                    (grad_weight * grad_total).to(ctx.weight_dtype) if grad_weight is not None else None,
                    None, None, None)

    return LinearCrossEntropy


def loss_module(model, trained_only: bool, bf16: bool = False):
    """The loss as a module, so Accelerate's DDP / FSDP wrapper sees every forward it must sync.

    `bf16` runs the forward under torch's bfloat16 autocast (backward follows it); the trained weights stay
    fp32. It is torch.autocast itself, not Accelerate's `mixed_precision`, because Accelerate fixes that
    once per process and tunelens may train several times in one.
    """
    import torch
    import torch.nn as nn

    class CompletionLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, labels, position_ids=None):
            with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
                return completion_loss_sums(self.model, input_ids, attention_mask, labels, trained_only,
                                            position_ids=position_ids)

    return CompletionLoss()

"""A LoRA linear as one autograd Function, for training: fewer passes over the activations than PEFT's.

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling` as separate modules, and autograd records
every step (dropout's Bernoulli mask, its rescale, the scaling, the sum), each repeated in backward; on a
CPU those passes over [tokens, features] tensors are memory-bound, and with seven adapted projections per
layer they add up. Here the same function is written out by hand (1.07x trained tokens per second on a
whole gemma3-270m step, `bench/train_throughput.py --ab fused`):

    forward:   y = x W^T (+ b) + scaling * ((x * m) A^T) B^T          m = keep-mask / keep-rate
    backward:  dx = dy W + ((scaling * dy B) A) * m
               dA = (scaling * dy B)^T (x * m),  dB = scaling * dy^T ((x * m) A^T)

with the scaling and the keep rate folded into the small [tokens, r] factors, the sum fused into the
matmul (`addmm_`) and the dropout mask drawn from raw random bits (`dropout_mask`). The frozen base weight
gets no gradient. The parameters stay PEFT's own, so saving, loading and merging are unchanged:
`fused_lora_layers` swaps the forward of each adapted linear while training and puts PEFT's back after it.
A run with dropout > 0 draws its masks another way than PEFT (the same distribution, not the same
numbers); with dropout 0 both paths agree to float tolerance (tested).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cache
from math import prod


@cache  # built on first use, so importing this module does not import torch
def _lora_function():
    import torch

    class LoRALinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, lora_a, lora_b, scaling, drop):
            rows = x.reshape(-1, x.shape[-1])
            out = rows @ weight.t()
            if bias is not None:
                out += bias
            mask, alpha = None, scaling
            if drop > 0.0:
                mask, keep = dropout_mask(rows.shape, drop, rows.device)
                rows = rows * mask
                alpha = scaling / keep  # the keep-rate rescale rides on the small factor, not on rows
            low = rows @ lora_a.t()
            out.addmm_(low, lora_b.t(), alpha=alpha)
            ctx.save_for_backward(weight, lora_a, lora_b, rows, low, mask)
            ctx.alpha, ctx.x_shape = alpha, x.shape
            return out.view(*x.shape[:-1], weight.shape[0])

        @staticmethod
        def backward(ctx, grad_out):
            weight, lora_a, lora_b, dropped, low, mask = ctx.saved_tensors
            grad = grad_out.reshape(-1, grad_out.shape[-1])
            grad_low = (grad @ lora_b).mul_(ctx.alpha)  # [tokens, r]
            grad_x = grad_a = grad_b = None
            if ctx.needs_input_grad[0]:
                grad_x = grad @ weight
                if mask is None:
                    grad_x.addmm_(grad_low, lora_a)
                else:
                    grad_x.add_((grad_low @ lora_a).mul_(mask))
                grad_x = grad_x.view(ctx.x_shape)
            if ctx.needs_input_grad[3]:
                grad_a = grad_low.t() @ dropped
            if ctx.needs_input_grad[4]:
                grad_b = (grad.t() @ low).mul_(ctx.alpha)
            if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
                raise RuntimeError("the fused LoRA linear trains the adapter only; the base weight must be frozen")
            return grad_x, None, None, grad_a, grad_b, None, None

    return LoRALinear


# Dropout draws 15 random bits per element: the rate is `p` rounded to 1/32768.
_MASK_BITS = 15


def dropout_mask(shape, drop: float, device):
    """(keep mask as bool, the keep rate it was drawn with) for dropout rate `drop`.

    torch's Bernoulli and uniform draws cost 10-40 ns per element on a CPU, and LoRA dropout needs one per
    input feature per token per adapted linear (about 50 million per gemma3-270m step). A raw 64-bit draw
    gives four 16-bit lanes, whose low 15 bits are uniform (torch draws 63-bit integers: the top lane's sign
    bit is always 0).
    """
    import torch

    count = prod(shape)
    lanes = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_().view(torch.int16)[:count]
    threshold = round(drop * (1 << _MASK_BITS))
    mask = (lanes & ((1 << _MASK_BITS) - 1)) >= threshold
    return mask.view(*shape), 1.0 - threshold / (1 << _MASK_BITS)


def lora_linear(x, weight, bias, lora_a, lora_b, scaling: float, drop: float):
    """`x W^T + b + scaling * dropout(x) A^T B^T` in one autograd node (see the module docstring)."""
    return _lora_function().apply(x, weight, bias, lora_a, lora_b, scaling, drop)


def fusable(module) -> bool:
    """A PEFT LoRA Linear this path computes exactly: one active adapter, plain LoRA (no DoRA, no
    LoRA bias), not merged, a plain nn.Linear base with a frozen weight."""
    import torch.nn as nn

    active = getattr(module, "active_adapters", [])
    if not (hasattr(module, "lora_A") and hasattr(module, "get_base_layer")) or len(active) != 1 \
            or getattr(module, "merged", False) or getattr(module, "disable_adapters", False):
        return False
    name, base = active[0], module.get_base_layer()
    if type(base) is not nn.Linear or base.weight.requires_grad or name not in module.lora_A \
            or getattr(module, "use_dora", {}).get(name, False):
        return False
    lora_a, lora_b = module.lora_A[name], module.lora_B[name]
    # FSDP2-sharded DTensors: PEFT's modules gather them, this path would not.
    sharded = any(hasattr(w, "full_tensor") for w in (base.weight, lora_a.weight))
    return not sharded and lora_a.bias is None and lora_b.bias is None \
        and isinstance(module.lora_dropout[name], (nn.Dropout, nn.Identity))


def _fused_forward(module):
    name = module.active_adapters[0]
    base, lora_a, lora_b = module.get_base_layer(), module.lora_A[name], module.lora_B[name]
    dropout, scaling = module.lora_dropout[name], float(module.scaling[name])

    def forward(x, *args, **kwargs):
        import torch

        # Anything unusual (extra arguments, adapters off, merged, mixed dtypes): PEFT's own path.
        if args or kwargs or module.disable_adapters or module.merged or lora_a.weight.dtype != base.weight.dtype:
            return type(module).forward(module, x, *args, **kwargs)
        drop = dropout.p if module.training and hasattr(dropout, "p") else 0.0
        device = x.device.type
        if torch.is_autocast_enabled(device):
            # As autocast would run the linears: every operand in its dtype. The casts are autograd ops, so
            # the fp32 LoRA weights get fp32 gradients; inside, autocast is off (the operands already match).
            dtype = torch.get_autocast_dtype(device)
            operands = [t.to(dtype) if t is not None else None
                        for t in (x, base.weight, base.bias, lora_a.weight, lora_b.weight)]
            with torch.autocast(device, enabled=False):
                return lora_linear(*operands, scaling, drop)
        if x.dtype != base.weight.dtype:
            return type(module).forward(module, x, *args, **kwargs)
        return lora_linear(x, base.weight, base.bias, lora_a.weight, lora_b.weight, scaling, drop)

    return forward


@contextmanager
def fused_lora_layers(model):
    """While the block runs, every fusable LoRA linear of `model` computes with `lora_linear`; PEFT's
    forward is restored on exit. Yields how many layers were fused."""
    swapped = []
    for module in model.modules():
        if fusable(module):
            module.forward = _fused_forward(module)
            swapped.append(module)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward  # the instance attribute goes; the class's forward is back

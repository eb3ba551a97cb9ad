"""Attention over a packed row one sequence at a time, instead of through a block-diagonal mask.

A packed micro-batch (`tunelens.train.loop.pack_rows`) is one row of several pairs whose position ids
restart at 0. Through transformers' `sdpa` path the model builds a [row x row] block-diagonal causal mask
and attention computes every query against every key of the row, most of it masked (about 85% for four
pairs of similar length). Here each sequence attends to itself with a plain causal SDPA call (and a
sliding-window mask only where a sequence is longer than the layer's window): the same attention up to
float rounding (tested), 1.05-1.07x trained tokens per second on a whole gemma3-270m step
(`bench/train_throughput.py --ab attention`).

`packed_attention(model)` switches a model on `sdpa` to it (registered with transformers'
`AttentionInterface` as `PACKED_SDPA`) while a packed training loop runs. transformers builds no mask for
an implementation it does not know, so it refuses rows it cannot read: more than one, or a cache.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cache

from tunelens.model.state import base_model_of

PACKED_SDPA = "tunelens_packed_sdpa"


def sequence_bounds(position_ids) -> list[tuple[int, int]]:
    """[(start, end)] of the sequences in one packed row: a new one wherever the position does not
    follow the previous one by 1 (as transformers' own packed-sequence detection reads them)."""
    positions = position_ids.reshape(-1)
    if positions.numel() == 0:
        return []
    breaks = (positions[1:] != positions[:-1] + 1).nonzero().flatten().add(1).tolist()
    return list(zip([0, *breaks], [*breaks, positions.numel()]))


def _window_mask(length: int, window: int, device):
    """True where attention is allowed: causal and less than `window` positions back, as Gemma's sliding layers."""
    import torch

    index = torch.arange(length, device=device)
    distance = index[:, None] - index[None, :]
    return (distance >= 0) & (distance < window)


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          sliding_window=None, position_ids=None, **kwargs):
    """transformers' attention-function signature; query/key/value are [1, heads, row, head_dim]."""
    import torch
    import torch.nn.functional as F

    if attention_mask is not None or kwargs.get("softcap") is not None:
        raise RuntimeError(f"{PACKED_SDPA}: expects no mask and no logit soft-cap (use it for packed rows only)")
    if query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        raise RuntimeError(f"{PACKED_SDPA}: expects one packed row without a cache, got query {tuple(query.shape)} "
                           f"and key {tuple(key.shape)}")
    length = query.shape[2]
    bounds = sequence_bounds(position_ids) if position_ids is not None else [(0, length)]
    if not bounds or bounds[-1][1] != length:
        raise RuntimeError(f"{PACKED_SDPA}: position ids cover {bounds[-1][1] if bounds else 0} of {length} positions")
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    pieces = []
    for start, end in bounds:
        windowed = sliding_window is not None and end - start > sliding_window
        mask = _window_mask(end - start, sliding_window, query.device) if windowed else None
        pieces.append(F.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], attn_mask=mask,
            dropout_p=dropout, scale=scaling, is_causal=mask is None, enable_gqa=gqa))
    output = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
    return output.transpose(1, 2).contiguous(), None


@cache  # once per process
def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)


@contextmanager
def packed_attention(model):
    """While the block runs, a model on `sdpa` attention computes with `packed_sdpa_attention`; its
    implementation is restored on exit. Yields whether it switched (eager, flash attention and models
    whose implementation cannot be set are left alone)."""
    base, switched = base_model_of(model), False
    before = getattr(base.config, "_attn_implementation", None)
    if before == "sdpa" and hasattr(base, "set_attn_implementation"):
        _register()
        try:
            base.set_attn_implementation(PACKED_SDPA)
            switched = True
        except (ValueError, NotImplementedError, AttributeError):
            pass
    try:
        yield switched
    finally:
        if switched:
            base.set_attn_implementation(before)

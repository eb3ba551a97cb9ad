"""The one teacher-forced scoring primitive: how likely a model finds given continuations of given prompts.

compare, levers, propensity and the gate's model signals all score through `score_continuations`.
"""

from __future__ import annotations

from collections.abc import Sequence

from tunelens.engine.decode import _cache_of, cache_argument, left_padded
from tunelens.errors import UserError
from tunelens.model.state import device_of


def score_continuations(model, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                        full: bool = False, pad_id: int = 0) -> list:
    """Per row, the log-probability of each continuation token after its prompt: float32 [n]; with `full`,
    the whole log-softmax rows at the positions that predict each continuation token and the token after
    it: float32 [n + 1, vocabulary] (KL, ranks and perplexity are built from those).

    The rows run in one left-padded forward pass, only the positions that predict continuation tokens
    through the vocabulary head; rows that share one prompt run it once and share its KV cache.
    Plain equivalent: log_softmax(model(prompt + continuation).logits[len(prompt) - 1:]) for each row
    alone, its last row dropped unless `full` (a test checks both paths against it).
    """
    import torch

    if len(prompts) != len(continuations):
        raise ValueError(f"{len(continuations)} continuations for {len(prompts)} prompts")
    if any(len(p) == 0 for p in prompts):
        raise UserError("a prompt to score after has no tokens")
    if any(len(c) == 0 for c in continuations):
        raise ValueError("every continuation must have at least one token")
    # The last token is fed only when its successor's distribution is wanted (`full`).
    fed = [list(c) if full else list(c)[:-1] for c in continuations]
    with torch.inference_mode():
        if len(prompts) > 1 and all(list(p) == list(prompts[0]) for p in prompts):
            logits = _after_shared_prompt(model, list(prompts[0]), fed)
        else:
            logits = _whole_rows(model, [list(p) for p in prompts], fed, pad_id)
        if full:
            return [torch.log_softmax(rows, dim=-1) for rows in logits]
        return [(rows.gather(1, torch.tensor(list(c), device=rows.device)[:, None]).squeeze(1) - rows.logsumexp(-1))
                for rows, c in zip(logits, continuations)]


def _whole_rows(model, prompts: list[list[int]], fed: list[list[int]], pad_id: int) -> list:
    """Each row's logits at its prompt's last position and every fed token: [len(fed) + 1, vocabulary]."""
    ids, mask, positions = left_padded([p + f for p, f in zip(prompts, fed)], pad_id, device_of(model))
    padded = {"attention_mask": mask, "position_ids": positions} if mask is not None else {}
    keep = max(len(f) for f in fed) + 1
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=keep, **padded).logits.float()
    return [logits[i, keep - len(f) - 1:] for i, f in enumerate(fed)]


def _after_shared_prompt(model, prompt: list[int], fed: list[list[int]]) -> list:
    """As _whole_rows for rows that share one prompt: the prompt runs once; the fed tokens follow, right-
    padded, on its KV cache repeated once per row (right padding keeps every real token at its true
    position, and no real token attends to the padding after it)."""
    import torch

    device, name = device_of(model), cache_argument(model)
    out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True, logits_to_keep=1)
    first, cache = out.logits[0, -1:].float(), _cache_of(out, name)
    if cache is None:  # a model that keeps no cache runs the rows whole
        return _whole_rows(model, [prompt] * len(fed), fed, 0)
    longer = [i for i, f in enumerate(fed) if f]
    rows = [first for _ in fed]
    if not longer:
        return rows
    width = max(len(fed[i]) for i in longer)
    ids = torch.tensor([fed[i] + [0] * (width - len(fed[i])) for i in longer], device=device)
    mask = torch.tensor([[1] * (len(prompt) + len(fed[i])) + [0] * (width - len(fed[i])) for i in longer],
                        device=device)
    cache.batch_repeat_interleave(len(longer))
    logits = model(input_ids=ids, attention_mask=mask, use_cache=True, **{name: cache}).logits.float()
    for row, i in enumerate(longer):
        rows[i] = torch.cat([first, logits[row, :len(fed[i])]])
    return rows

"""Trust signals the gate computes for a query before any generation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from tunelens.errors import UserError
from tunelens.model.state import adapter_off, has_adapter
from tunelens.retrieval.embedders import Progress
from tunelens.model.prompts import encode_prompt
from tunelens.engine.score import score_continuations

RETRIEVAL_SIGNALS = ("max_similarity", "mean_similarity")
MODEL_SIGNALS = ("adapter_base_kl", "prompt_perplexity")

@dataclass
class TrustSignals:
    """Everything the gate knows about one query before generating; None where not computed."""

    max_similarity: float
    mean_similarity: float
    adapter_base_kl: float | None = None
    prompt_perplexity: float | None = None
    neighbours: list[dict] = field(default_factory=list)

    def value(self, name: str) -> float:
        raw = getattr(self, name)
        if raw is None:
            raise UserError(f"signal {name} was not computed: it needs the model (pass --model/--adapter)")
        # Perplexity spans orders of magnitude; its log is what a linear combination can use.
        return math.log(raw) if name == "prompt_perplexity" else float(raw)

    def scores(self) -> dict:
        return {name: getattr(self, name) for name in RETRIEVAL_SIGNALS + MODEL_SIGNALS
                if getattr(self, name) is not None}


def add_model_signals(items: list[TrustSignals], model, tokenizer, queries: Sequence[str],
                      progress: Progress | None = None) -> None:
    """Fill in each item's model signals (model_signals) for its query."""
    for item, (kl, ppl) in zip(items, model_signals(model, tokenizer, queries, progress=progress)):
        item.adapter_base_kl, item.prompt_perplexity = kl, ppl


def model_signals(model, tokenizer, queries: Sequence[str], progress: Progress | None = None) -> list[tuple]:
    """(adapter_base_kl, prompt_perplexity) per query, from one adapter and one base forward pass each. KL is
    averaged over every prompt position (the distributions predicting each next prompt token and the
    answer's first), None without an adapter; perplexity is exp of the adapter's mean NLL of tokens 2..n."""
    import torch

    results = []
    for query in queries:
        ids = encode_prompt(tokenizer, query)
        # Rows for positions 0..n-1: each prompt token's successor, then the answer's first token.
        adapter_logp = score_continuations(model, [ids[:1]], [ids[1:]], full=True)[0]
        kl = None
        if has_adapter(model):
            with adapter_off(model):
                base_logp = score_continuations(model, [ids[:1]], [ids[1:]], full=True)[0]
            kl = float((adapter_logp.exp() * (adapter_logp - base_logp)).sum(-1).mean())
        nll = -adapter_logp[:-1].gather(-1, torch.tensor(ids[1:], device=adapter_logp.device)[:, None]).mean()
        results.append((kl, float(torch.exp(nll))))
        if progress:
            progress("model signals", len(results), len(queries))
    return results

"""The engine's core: one sampler and one KV-cache decode loop (the loaded model is tunelens.model.loaded).

`trace` (which records top-K at every step) and `serve` (which streams text with stop strings and
logprobs) both consume `decode`; batched evaluation keeps `model.generate` (tunelens.engine.generate).
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import Iterable, Iterator

from tunelens.errors import UserError
from tunelens.model.state import base_model_of, device_of

# torch.Generator.manual_seed takes any integer in this range (negative ones wrap to unsigned).
SEED_MIN, SEED_MAX = -(2 ** 63), 2 ** 64 - 1


# ---------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Sampler:
    """Greedy at temperature 0; otherwise a sample from the temperature-scaled top-p nucleus.

    Logits are shifted by their maximum before dividing by the temperature, so a tiny temperature
    (1e-45) gives -inf for every token but the argmax instead of inf - inf = nan; the distribution is
    the same as softmax(logits / temperature) wherever that one is finite (a test checks it).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:  # also refuses nan
            raise ValueError(f"temperature must be 0 or positive, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not SEED_MIN <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be between {SEED_MIN} and {SEED_MAX}, got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def generator(self, device):
        """A private generator (the global RNG is left alone), seeded from `seed` or fresh entropy."""
        import torch

        if self.greedy:
            return None
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed) if self.seed is not None else generator.seed()
        return generator

    def probs(self, logits):
        """The distribution sampled from, for logits of shape [..., vocabulary]."""
        import torch

        shifted = logits - logits.amax(dim=-1, keepdim=True)
        # A float32 temperature that underflows to 0 would give 0/0: the smallest normal float keeps it -inf.
        temperature = max(self.temperature, torch.finfo(logits.dtype).tiny)
        probs = torch.softmax(shifted / temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest prefix whose mass reaches top_p (the most likely token always stays).
            drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= self.top_p
            drop[..., 0] = False  # a top_p that underflows float32 (5e-324) would otherwise drop every token
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
        return probs

    def pick(self, logits, generator):
        """Chosen token ids, shape [batch], for logits of shape [batch, vocabulary]."""
        import torch

        if self.greedy:
            return logits.argmax(dim=-1)
        return torch.multinomial(self.probs(logits), 1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------- a cheaper greedy head


# The error of an fp16 GEMV with fp32 accumulation: the inputs' rounding (2^-11 each, relative) bounds it by
# 2^-10 * sum_j |W_ij x_j| plus the output's rounding, 2^-11 |logit|; twice that is kept as margin.
_HALF_ERROR = 2.0 ** -9
# Values below fp16's normal range round to a multiple of 2^-24 (absolute, not relative error).
_HALF_SUBNORMAL = 2.0 ** -24
# Causal LMs whose logits are exactly lm_head(decoder(ids)) up to a monotonic soft-cap (argmax unchanged).
_PLAIN_HEAD_MODELS = {"Gemma3ForCausalLM", "Gemma2ForCausalLM", "GemmaForCausalLM", "LlamaForCausalLM",
                      "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"}


class CertifiedArgmax:
    """The argmax of the fp32 vocabulary head, reading mostly an fp16 copy of it (half the bytes).

    The fp16 logits come with a per-row error bound (from each row's L1 and L2 norms, precomputed); only
    the rows whose bound reaches the best lower bound can be the argmax, and those few are recomputed in
    fp32. Plain equivalent: int(F.linear(hidden, weight).argmax()); a test checks them against each other.
    They can differ only between logits equal to within fp32 rounding, which is kernel-dependent anyway.
    When the bound admits too many rows (a flat distribution) the whole head is computed in fp32.
    `scan` keeps the fp16 logits and bounds, for callers that want the top-K and probabilities as well.
    """

    def __init__(self, weight, max_candidates: int = 4096):
        import torch

        # A weak reference: the cache of these objects must not keep a model's weights alive.
        self._weight, self.version, self.max_candidates = weakref.ref(weight), weight._version, max_candidates
        with torch.no_grad():
            self.half = weight.detach().half()
            self.row_l1 = weight.detach().abs().sum(dim=1)
            self.row_l2 = weight.detach().norm(dim=1)
            self.usable = bool(torch.isfinite(self.half).all())  # a weight past 65504 overflows fp16

    def __call__(self, hidden) -> int:
        return self.scan(hidden).argmax()

    def scan(self, hidden, softcap: float | None = None) -> "HeadScan":
        """One hidden state through the fp16 head: logits, their error bounds (None when exact)."""
        import torch

        x, weight = hidden.reshape(-1).float(), self._weight().detach()
        if not self.usable or not torch.isfinite(x).all() or float(x.abs().max()) > 6e4:  # past fp16's range
            return HeadScan(self, weight, x, torch.mv(weight, x), None, softcap)
        approx = torch.mv(self.half, x.half()).float()
        if not torch.isfinite(approx).all():  # a logit past fp16's range
            return HeadScan(self, weight, x, torch.mv(weight, x), None, softcap)
        bound = _HALF_ERROR * (torch.minimum(self.row_l1 * x.abs().max(), self.row_l2 * x.norm()) + approx.abs()) \
            + _HALF_SUBNORMAL * (x.abs().sum() + self.row_l1)
        return HeadScan(self, weight, x, approx, bound, softcap)


class HeadScan:
    """The vocabulary head's logits for one hidden state: fp16-computed, each within `bound` of the fp32
    value (or exact, `bound` None), refined on demand where exactness matters (the argmax, the top-K).

    A row can be among the k largest fp32 logits only if its upper bound reaches the k-th largest lower
    bound; those rows are recomputed in fp32, so the argmax and the top-K ids and logits are exact.
    """

    def __init__(self, head: CertifiedArgmax, weight, x, logits, bound, softcap: float | None):
        self.head, self.weight, self.x, self.softcap = head, weight, x, softcap
        self._logits, self.bound = logits, bound

    def _candidates(self, k: int):
        """Ascending ids of the rows that may be among the k largest, or None when that is too many."""
        lower = self._logits - self.bound
        k = min(k, len(lower))
        kth_lower = lower.max() if k == 1 else lower.topk(k).values[-1]
        candidates = (self._logits + self.bound >= kth_lower).nonzero().flatten()
        return candidates if len(candidates) <= self.head.max_candidates else None

    def _make_exact(self) -> None:
        import torch

        self._logits, self.bound = torch.mv(self.weight, self.x), None

    def argmax(self) -> int:
        import torch

        if self.bound is None:
            return int(self._logits.argmax())
        candidates = self._candidates(1)
        if candidates is None:
            self._make_exact()
            return int(self._logits.argmax())
        exact = torch.mv(self.weight[candidates], self.x)
        return int(candidates[int(exact.argmax())])  # candidates ascend: exact ties go to the lowest id

    def logits(self, k: int):
        """The [vocabulary] logits, fp32-exact at every row that may be among the k largest, fp16 elsewhere.

        Plain equivalent: F.linear(hidden, weight) (soft-capped like the model's forward): the top-k ids
        and values are the same, every other logit is within its bound. `bench/trace_overhead.py` measures
        what that does to softmax probabilities (docs/trace.md has the figure).
        """
        import torch

        logits = self._logits
        if self.bound is not None:
            candidates = self._candidates(k)
            if candidates is None:
                self._make_exact()
                logits = self._logits
            else:
                logits = logits.clone()
                logits[candidates] = torch.mv(self.weight[candidates], self.x)
        if self.softcap:  # monotonic, so the rows that may be in the top-k are the same after it
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


_certified_heads: dict = {}


def certified_head(model):
    """The CertifiedArgmax for a model whose logits are a plain linear head, else None (use the forward)."""
    import torch

    lm = base_model_of(model)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if type(lm).__name__ not in _PLAIN_HEAD_MODELS or type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    if head.weight.device.type != "cpu":  # measured on the CPU only, where the head is bandwidth-bound
        return None
    weight = head.weight
    cached = _certified_heads.get(id(weight))
    if cached is None or cached._weight() is not weight or cached.version != weight._version:
        cached = _certified_heads[id(weight)] = CertifiedArgmax(weight)
        weakref.finalize(weight, _certified_heads.pop, id(weight), None)
    return cached


def final_logit_softcap(model) -> float | None:
    """The soft-cap the model's forward applies to its head's logits (Gemma 2), None when there is none."""
    config = getattr(base_model_of(model), "config", None)
    cap = getattr(config, "final_logit_softcapping", None)
    return float(cap) if cap else None


# ---------------------------------------------------------------- the decode loop


@dataclass
class Step:
    """One generated token: its id (also as a 1-element device tensor) and the raw logits that chose it.

    On the certified greedy path `logits` is None and `head` holds the fp16 head's scan instead, from
    which `head.logits(k)` gives logits exact where they may be among the k largest.
    """

    token: int
    logits: object  # float32 [vocabulary], before temperature and top-p
    chosen: object  # int64 [1] on the model's device
    head: HeadScan | None = None


def cache_argument(model) -> str:
    """The forward keyword for the KV cache: `cache` in recent transformers 5.x, `past_key_values` before."""
    params = inspect.signature(base_model_of(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(output, name: str):
    return getattr(output, name, None) if hasattr(output, name) else getattr(output, "past_key_values", None)


def decode(model, prompt_ids: list[int], sampler: Sampler, max_new_tokens: int,
           stop_ids: Iterable[int] = (), need_logits: bool = True) -> Iterator[Step]:
    """Yield one Step per new token, reusing the KV cache; ends after a stop id (yielded) or the limit.

    Plain equivalent: at step i the logits are model(prompt + tokens so far).logits[-1] with no cache,
    and greedy tokens equal `model.generate(do_sample=False)`'s (tests check both). Only the last
    position's logits are computed (logits_to_keep=1): the prompt's others would each cost a full
    vocabulary-head pass. The caller may stop early by closing the iterator.

    With `need_logits=False` and a greedy sampler, a plain-head model on the CPU takes its argmax from
    CertifiedArgmax (about half the head's memory traffic); the steps' `logits` are then None and their
    `head` holds that scan (trace takes its top-K probabilities from it).
    """
    import torch

    if not prompt_ids:
        raise UserError("the prompt has no tokens (an empty prompt on a tokenizer that adds no BOS)")
    stop_ids = set(stop_ids)
    device = device_of(model)
    generator = sampler.generator(device)
    name = cache_argument(model)
    fast = certified_head(model) if sampler.greedy and not need_logits else None
    softcap = final_logit_softcap(model)
    sequence = torch.tensor([prompt_ids], device=device)
    step_input, past = sequence, None
    for _ in range(max_new_tokens):
        with torch.inference_mode():
            if fast is not None:
                out = base_model_of(model).get_decoder()(input_ids=step_input, use_cache=True, **{name: past})
                past, logits = _cache_of(out, name), None
                scan = fast.scan(out.last_hidden_state[0, -1], softcap)
                token = scan.argmax()
                chosen = torch.tensor([token], device=device)
            else:
                out, scan = model(input_ids=step_input, use_cache=True, logits_to_keep=1, **{name: past}), None
                past = _cache_of(out, name)
                logits = out.logits[:, -1, :].float()
                chosen = sampler.pick(logits, generator)
                token = int(chosen)  # the one host sync per step, as in generate's stopping check
                logits = logits[0]
        yield Step(token, logits, chosen, scan)
        if token in stop_ids:
            return
        if past is None:  # a model that keeps no cache is given the whole sequence again
            sequence = torch.cat([sequence, chosen[:, None]], dim=1)
        step_input = chosen[:, None] if past is not None else sequence

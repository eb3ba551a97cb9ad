"""The engine's core: one sampler and one batched KV-cache decode loop (`BatchDecoder`), which every
generation goes through: `decode` (one row: trace, `tunelens generate`, serve's lone requests),
`generate_batch` (eval, the demo, the studies) and serve's continuous batching."""

from __future__ import annotations

import hashlib
import inspect
import weakref
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from tunelens.errors import UserError
from tunelens.model.state import base_model_of, device_of

# torch.Generator.manual_seed takes any integer in this range (negative ones wrap to unsigned).
SEED_MIN, SEED_MAX = -(2 ** 63), 2 ** 64 - 1
# The one temperature bound, for every config, command and the server: past 5 a language model's tempered
# distribution is close to uniform over its nucleus (OpenAI caps at 2; high-temperature studies go to 5).
TEMPERATURE_MAX = 5.0


@dataclass(frozen=True)
class Sampler:
    """Greedy at temperature 0; otherwise a sample from the temperature-scaled top-p nucleus (no top-k).

    Logits are shifted by their maximum before dividing by the temperature, so a tiny temperature (1e-45)
    gives -inf for every token but the argmax instead of inf - inf = nan; the distribution equals
    softmax(logits / temperature) wherever that one is finite (a test checks it).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.temperature <= TEMPERATURE_MAX:  # also refuses nan
            raise ValueError(f"temperature must be in [0, {TEMPERATURE_MAX:g}], got {self.temperature}")
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


def row_seed(seed: int | None, index: int) -> int | None:
    """The seed of row `index` of a batch seeded with `seed` (None stays None: fresh entropy per row).

    Hashed rather than seed + index: the eval seeds consecutive batches seed, seed + 1, ..., and seed +
    index would then give two rows of neighbouring batches (two samples of one case) one stream.
    """
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return None if seed is None else int.from_bytes(digest, "big")


# The error of an fp16 GEMV with fp32 accumulation: the inputs' rounding (2^-11 each, relative) bounds it by
# 2^-10 * sum_j |W_ij x_j| plus the output's rounding, 2^-11 |logit|; twice that is kept as margin.
# Values below fp16's normal range round to a multiple of 2^-24 (absolute, not relative error).
_HALF_ERROR, _HALF_SUBNORMAL = 2.0 ** -9, 2.0 ** -24
# The same for a bfloat16 GEMM (8 significant bits: 2^-8 per rounding) whose output is bfloat16 too; its
# range is fp32's, so only products below 2^-126 lose more than that (absolute 2^-133 each).
_BF16_ERROR, _BF16_SUBNORMAL = 2.0 ** -6, 2.0 ** -120
# Causal LMs whose logits are exactly lm_head(decoder(ids)) up to a monotonic soft-cap (argmax unchanged).
_PLAIN_HEAD_MODELS = {"Gemma3ForCausalLM", "Gemma2ForCausalLM", "GemmaForCausalLM", "LlamaForCausalLM",
                      "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"}


class CertifiedArgmax:
    """The argmax of the fp32 vocabulary head, reading mostly a low-precision copy of it.

    The copy's logits come with per-row error bounds (from each row's L1 and L2 norms, precomputed); only
    rows whose upper bound reaches the best lower bound can be the argmax, and those few are recomputed in
    fp32 (the whole head when the bound admits too many: a flat distribution). A lone hidden state reads an
    fp16 copy (`scan`, which also keeps the logits for the top-K); a batch a bfloat16 one (`rows_argmax`).
    Plain equivalent: F.linear(hidden, weight).argmax(-1); tests check them against each other. They can
    differ only between logits equal to within fp32 rounding, which is kernel-dependent anyway.
    """

    def __init__(self, weight, max_candidates: int = 4096):
        import torch

        # A weak reference: the cache of these objects must not keep a model's weights alive.
        self._weight, self.version, self.max_candidates = weakref.ref(weight), weight._version, max_candidates
        with torch.no_grad():
            self.half = weight.detach().half()
            self.row_l1, self.row_l2 = weight.detach().abs().sum(dim=1), weight.detach().norm(dim=1)
            self.usable = bool(torch.isfinite(self.half).all())  # a weight past 65504 overflows fp16
        self.bf16, self.bf16_faster = None, None  # made and decided on the first batch (rows_argmax)

    def __call__(self, hidden) -> int:
        return self.scan(hidden).argmax()

    def _bound(self, x, approx, error: float, subnormal: float):
        """Each logit's bound on |approx - exact| for hidden states x [..., d] (see the constants above)."""
        import torch

        dots = torch.minimum(self.row_l1 * x.abs().amax(-1, keepdim=True), self.row_l2 * x.norm(dim=-1, keepdim=True))
        return error * (dots + approx.abs()) + subnormal * (x.abs().sum(-1, keepdim=True) + self.row_l1)

    def scan(self, hidden, softcap: float | None = None) -> "HeadScan":
        """One hidden state through the fp16 head: logits, their error bounds (None when exact)."""
        import torch

        x, weight = hidden.reshape(-1).float(), self._weight().detach()
        if self.usable and torch.isfinite(x).all() and float(x.abs().max()) <= 6e4:  # within fp16's range
            approx = torch.mv(self.half, x.half()).float()
            if torch.isfinite(approx).all():  # no logit past fp16's range
                return HeadScan(self, weight, x, approx, self._bound(x, approx, _HALF_ERROR, _HALF_SUBNORMAL), softcap)
        return HeadScan(self, weight, x, torch.mv(weight, x), None, softcap)

    def rows_argmax(self, hidden, bf16: bool | None = None):
        """The argmax ids, int64 [batch], of the fp32 head for several hidden states [batch, d].

        Through the bfloat16 copy only where this CPU multiplies bfloat16 faster than fp32 (AVX512-BF16:
        about 4x on an 8-row batch of Gemma 3's 262k-row head); the first batch times both ways once and
        keeps the faster; `bf16` forces the choice (tests).
        """
        import torch
        from torch.nn.functional import linear

        weight, x = self._weight().detach(), hidden.float()
        if bf16 is None:
            if self.bf16_faster is None:
                self.bf16_faster = self._bf16_is_faster(weight, x)
            bf16 = self.bf16_faster
        if not bf16 or weight.dtype != torch.float32 or not torch.isfinite(x).all():
            return linear(x, weight).argmax(-1)
        self.bf16 = weight.bfloat16() if self.bf16 is None else self.bf16
        approx = linear(x.bfloat16(), self.bf16).float()
        if not torch.isfinite(approx).all():
            return linear(x, weight).argmax(-1)
        bound = self._bound(x, approx, _BF16_ERROR, _BF16_SUBNORMAL)
        return torch.tensor([HeadScan(self, weight, *row, None).argmax() for row in zip(x, approx, bound)],
                            device=weight.device)

    def _bf16_is_faster(self, weight, x) -> bool:
        import time

        import torch
        from torch.nn.functional import linear

        if weight.dtype != torch.float32:
            return False
        bf16, xb = weight.bfloat16(), x.bfloat16()
        seconds = []
        for run in (lambda: linear(x, weight), lambda: linear(xb, bf16)):
            run()  # the first call pays allocation and kernel set-up
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        self.bf16 = bf16 if seconds[1] < 0.7 * seconds[0] else None
        return self.bf16 is not None


class HeadScan:
    """The vocabulary head's logits for one hidden state, each within `bound` of the fp32 value (or exact,
    `bound` None), refined on demand where exactness matters (the argmax, the top-K): a row can be among
    the k largest fp32 logits only if its upper bound reaches the k-th largest lower bound, and those rows
    are recomputed in fp32, so the argmax and the top-K ids and logits are exact.
    """

    def __init__(self, head: CertifiedArgmax, weight, x, logits, bound, softcap: float | None):
        self.head, self.weight, self.x, self.softcap = head, weight, x, softcap
        self._logits, self.bound = logits, bound

    def _exact_rows(self, k: int):
        """(ascending ids of the rows that may be among the k largest, their fp32 logits), or None when
        there is no bound or too many rows (the logits are then made exact everywhere)."""
        import torch

        if self.bound is not None:
            lower = self._logits - self.bound
            kth_lower = lower.max() if k == 1 else lower.topk(min(k, len(lower))).values[-1]
            ids = (self._logits + self.bound >= kth_lower).nonzero().flatten()
            if len(ids) <= self.head.max_candidates:
                return ids, torch.mv(self.weight[ids], self.x)
            self._logits, self.bound = torch.mv(self.weight, self.x), None
        return None

    def argmax(self) -> int:
        rows = self._exact_rows(1)
        if rows is None:
            return int(self._logits.argmax())
        return int(rows[0][int(rows[1].argmax())])  # ids ascend: exact ties go to the lowest id

    def logits(self, k: int):
        """The [vocabulary] logits, fp32-exact at every row that may be among the k largest, fp16 elsewhere.

        Plain equivalent: F.linear(hidden, weight) (soft-capped like the model's forward): the top-k ids
        and values are the same, every other logit is within its bound (`bench/trace_overhead.py`
        measures what that does to softmax probabilities; docs/trace.md has the figure).
        """
        import torch

        rows, logits = self._exact_rows(k), self._logits
        if rows is not None:
            logits = logits.clone()
            logits[rows[0]] = rows[1]
        if self.softcap:  # monotonic, so the rows that may be in the top-k are the same after it
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


_certified_heads: dict = {}


def certified_head(model):
    """The CertifiedArgmax for a model whose logits are a plain linear head on the CPU (measured only there,
    where the head is bandwidth-bound), else None (use the forward)."""
    import torch

    lm = base_model_of(model)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if type(lm).__name__ not in _PLAIN_HEAD_MODELS or type(head) is not torch.nn.Linear or head.bias is not None \
            or head.weight.device.type != "cpu":
        return None
    weight = head.weight
    cached = _certified_heads.get(id(weight))
    if cached is None or cached._weight() is not weight or cached.version != weight._version:
        cached = _certified_heads[id(weight)] = CertifiedArgmax(weight)
        weakref.finalize(weight, _certified_heads.pop, id(weight), None)
    return cached


def final_logit_softcap(model) -> float | None:
    """The soft-cap the model's forward applies to its head's logits (Gemma 2), None when there is none."""
    cap = getattr(getattr(base_model_of(model), "config", None), "final_logit_softcapping", None)
    return float(cap) if cap else None


@dataclass
class Step:
    """One generated token: its id (also as a 1-element device tensor) and the raw logits that chose it
    (float32 [vocabulary], before temperature and top-p). On the certified greedy path `logits` is None and
    `head` holds the fp16 head's scan instead, whose `head.logits(k)` are exact where they may be in the top k.
    """

    token: int
    logits: object
    chosen: object  # int64 [1] on the model's device
    head: HeadScan | None = None


@dataclass(eq=False)  # compared (and hashed) by identity: callers key their own state by row
class Row:
    """One sequence in a BatchDecoder: its prompt, how its tokens are chosen, and when it ends.

    `adapter_name` picks the adapter of a multi-adapter PEFT model for this row alone (PEFT's "__base__" for
    the base weights); None leaves the model's active adapter (a batch names the adapter of all its rows or
    of none). `ids` grows by one token per step (a stop id included); `done` is set by the decoder at a stop
    id or the length limit, or by the caller (a stop string, a cancellation), and the row leaves the batch.
    """

    prompt_ids: list[int]
    sampler: Sampler = Sampler()
    max_new_tokens: int = 256
    stop_ids: frozenset = frozenset()
    adapter_name: str | None = None
    ids: list[int] = field(default_factory=list)
    done: bool = False
    generator: object = None  # the sampler's private generator, made when the row joins


def cache_argument(model) -> str:
    """The forward keyword for the KV cache: `cache` in recent transformers 5.x, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(base_model_of(model).forward).parameters else "past_key_values"


def _cache_of(output, name: str):
    return getattr(output, name, None) if hasattr(output, name) else getattr(output, "past_key_values", None)


def left_padded(sequences: list[list[int]], pad_id: int, device):
    """Input ids padded on the left, with the attention mask and positions counted from each row's first
    real token (so every row sees what it would see alone); mask and positions None when no row is padded."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in sequences], device=device)
    if all(len(s) == width for s in sequences):  # an unpadded batch needs no mask, like a row alone
        return ids, None, None
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


class BatchDecoder:
    """The one decode loop: rows of different prompts decode together, one forward pass per step.

    The first step (and the first after a `join`) runs every row's sequence so far, left-padded (see
    `left_padded`); later steps feed one token per row against the KV cache, computing only the last
    position's logits. Rows that end leave the cache before the next step. Joining re-prefills instead of
    appending to the running cache: a new row's positions would have to be re-aligned to the others', and
    Gemma 3's sliding-window layers keep only the last window of keys; a re-prefill is correct by construction.

    Plain equivalent: each row alone, where at step i the logits are model(prompt + tokens so far)
    .logits[-1] with no cache; greedy tokens equal `model.generate(do_sample=False)`'s on the same
    left-padded batch (tests check both). A lone unpadded row is fed without a mask, exactly as alone.

    With `need_logits=False`, greedy rows of a plain-head model on the CPU take their argmax from
    `CertifiedArgmax` (a lone row's steps keep its fp16 scan in `head`, for trace's top-K; a batch's
    steps have no head), and the steps' `logits` are None.
    """

    def __init__(self, model, rows=(), need_logits: bool = True, pad_id: int = 0):
        self.model, self.need_logits, self.pad_id = model, need_logits, pad_id
        self.device, self.name = device_of(model), cache_argument(model)
        self.rows: list[Row] = []
        self.past = self.mask = self.positions = self.chosen = self._head = self._softcap = None
        self.join(rows)

    def join(self, rows) -> None:
        """Add rows; the next step re-prefills every row."""
        for row in rows:
            if not row.prompt_ids:
                raise UserError("the prompt has no tokens (an empty prompt on a tokenizer that adds no BOS)")
            row.generator = row.sampler.generator(self.device)
            row.done = row.done or len(row.ids) >= row.max_new_tokens  # a limit of 0 asks for no token
            self.rows.append(row)
        if len({row.adapter_name is None for row in self.rows}) > 1:
            raise ValueError("name the adapter of every row of a batch or of none")
        self.past = None

    def step(self) -> list[tuple[Row, Step]]:
        """One forward pass and one token for each row not done; returns the rows with their steps."""
        import torch

        self._leave()
        if not self.rows:
            return []
        logits, scans = None, [None] * len(self.rows)
        with torch.inference_mode():
            head = self._certified_head()
            if head is None:
                logits = self._forward(self.model).logits[:, -1, :].float()
                chosen = logits.argmax(dim=-1)  # every greedy row at once; sampled rows draw from their own generator
                for b, row in enumerate(self.rows):
                    if not row.sampler.greedy:
                        chosen[b] = row.sampler.pick(logits[b:b + 1], row.generator)[0]
            else:
                hidden = self._forward(base_model_of(self.model).get_decoder()).last_hidden_state[:, -1]
                if len(self.rows) == 1:
                    scans = [head.scan(hidden[0], self._softcap)]
                    chosen = torch.tensor([scans[0].argmax()], device=self.device)
                else:
                    chosen = head.rows_argmax(hidden)
        self.chosen, steps = chosen, []
        for b, (row, token) in enumerate(zip(self.rows, chosen.tolist())):  # the one host sync per step
            row.ids.append(token)
            row.done = token in row.stop_ids or len(row.ids) >= row.max_new_tokens
            steps.append((row, Step(token, None if logits is None else logits[b], chosen[b:b + 1], scans[b])))
        return steps

    def run(self) -> list[Row]:
        """Step until every row is done; the rows, in the order they joined, with their tokens."""
        rows = list(self.rows)
        while self.step():
            pass
        return rows

    def _leave(self) -> None:
        """Drop the rows that are done from the batch, and from the cache when there is one."""
        keep = [b for b, row in enumerate(self.rows) if not row.done]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[b] for b in keep]
        if self.past is not None and keep:
            import torch

            index = torch.tensor(keep, device=self.device)
            self.past.batch_select_indices(index)
            self.chosen = self.chosen[index]
            if self.mask is not None:
                self.mask, self.positions = self.mask[index], self.positions[index]

    def _forward(self, module):
        import torch

        if self.past is None:
            ids, self.mask, self.positions = left_padded([r.prompt_ids + r.ids for r in self.rows], self.pad_id,
                                                         self.device)
            kwargs = {"input_ids": ids}
        else:
            kwargs = {"input_ids": self.chosen[:, None], self.name: self.past}
            if self.mask is not None:  # the token fed this step is real for every row
                self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.mask), 1)], dim=1)
                self.positions = self.positions[:, -1:] + 1
        if self.mask is not None:
            kwargs |= {"attention_mask": self.mask, "position_ids": self.positions}
        if module is self.model:
            kwargs["logits_to_keep"] = 1
            if self.rows[0].adapter_name is not None:
                kwargs["adapter_names"] = [row.adapter_name for row in self.rows]
        out = module(use_cache=True, **kwargs)
        self.past = _cache_of(out, self.name)  # None: a model without a cache is re-fed every sequence
        return out

    def _certified_head(self):
        """The certified greedy head when this step may use it: greedy rows, no logits wanted, and no per-row
        adapter (PEFT applies adapter names in its own forward, which the decoder alone would skip)."""
        if self.need_logits or self.rows[0].adapter_name is not None or not all(r.sampler.greedy for r in self.rows):
            return None
        if self._head is None:
            self._head, self._softcap = certified_head(self.model) or False, final_logit_softcap(self.model)
        return self._head or None


def decode(model, prompt_ids: list[int], sampler: Sampler, max_new_tokens: int,
           stop_ids: Iterable[int] = (), need_logits: bool = True) -> Iterator[Step]:
    """Yield one Step per new token of one prompt (the BatchDecoder with one row): ends after a stop id
    (yielded) or the limit; the caller may stop early by closing the iterator."""
    decoder = BatchDecoder(model, [Row(list(prompt_ids), sampler, max_new_tokens, frozenset(stop_ids))],
                           need_logits=need_logits)
    while steps := decoder.step():
        yield steps[0][1]

"""Teacher-forced scoring of one continuation under several conditions: base or adapter, prompt or variant.

Every condition sees the same continuation ids after its own prompt, so positions line up: "what would this
model have preferred here, under that prompt?". The reference is the first condition (the adapter, when there
is one, with the prompt). Per position: the continuation token's probability and rank, every condition's
top-K (with its probability under every condition), watched tokens, and KL(reference || condition) over the
vocabulary. A flip is a position whose argmax differs between conditions.

Plain equivalent: softmax(model_c(prompt_c + continuation[:i]).logits[-1]) per condition c and position i;
one pass computes all i at once (a test checks one against the other).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunelens.config import configclass, option
from tunelens.errors import UserError
from tunelens.retrieval.fewshot import check_few_shot, Example, few_shot_index_option, few_shot_option
from tunelens.model.load import LoadedModel, as_loaded
from tunelens.model.state import adapter_off
from tunelens.runtime import Progress
from tunelens.engine.score import score_continuations
from tunelens.engine.tokens import decoded_tokens, pct, prob_color, round_prob, show_token, token_pieces
from tunelens.inspect.trace import (CANARY_HELP, TraceConfig, adapter_canary, prompt_token_ids, run_inspection,
                                    trace_generate)
from tunelens import __version__
from tunelens.io import atomic_write_json, atomic_write_text, read_json
from tunelens.report import render_html

COMPARE_FORMAT = "tunelens.compare"
COMPARE_VERSION = 1


@configclass
class CompareConfig:
    """How to score the conditions: each field is a flag of `tunelens compare` and a key of its --config."""

    top_k: int = option(5, "Alternatives kept per condition and position.", min=1, max=50)
    max_new_tokens: int = option(64, "Length of the generated continuation.", min=1, max=4096)
    raw: bool = option(False, "Prompts are plain text, without the chat/turn format.")
    watch: tuple[str, ...] = option((), "A token or string whose probability to show at every position.")
    check_adapter: bool = option(True, CANARY_HELP)
    # All conditions' log-probabilities are held at once (to report any token under any condition exactly).
    max_kept_bytes: int = option(2 * 1024 ** 3, "Most bytes of log-probabilities held at once; a longer "
                                                "comparison is refused before it starts.", min=1)
    # The examples are retrieved for the prompt and shown before every condition's prompt alike, so a
    # variant differs from the prompt only by its own words.
    few_shot: int = few_shot_option()
    few_shot_index: str | None = few_shot_index_option()

    def validate(self) -> None:
        if any(not w for w in self.watch):
            raise UserError("a --watch value is empty")
        check_few_shot(self.few_shot, self.few_shot_index, self.raw)


@dataclass(frozen=True)
class Condition:
    name: str  # e.g. "adapter · prompt", "base · variant 1"
    adapter: bool | None  # True: adapter on, False: adapter off, None: the model has no adapter
    prompt: str
    prompt_index: int  # 0 = the prompt, i = the i-th variant
    prompt_tokens: int
    total_logprob: float = 0.0  # of the whole continuation, nats
    mean_kl: float = 0.0  # mean over positions of KL(reference || this condition), nats
    argmax_agreement: int = 0  # positions whose argmax equals the reference's


@dataclass(frozen=True)
class WatchToken:
    query: str  # what the user asked to watch
    token_id: int
    token: str
    note: str = ""  # e.g. "first of 3 tokens"


@dataclass(frozen=True)
class Position:
    position: int
    token_id: int
    token: str
    candidate_ids: list[int]  # the continuation token and every condition's top-K, most likely first
    candidate_tokens: list[str]
    probs: list[list[float]]  # [condition][candidate]
    token_probs: list[float]  # [condition] probability of the continuation's token
    token_ranks: list[int]  # [condition] its rank (1 = argmax)
    argmax: list[int]  # [condition] the argmax token id
    kl: list[float]  # [condition] KL(reference || condition), nats; 0 for the reference
    watch: list[list[float]]  # [condition][watched token]

    @property
    def is_flip(self) -> bool:
        return len(set(self.argmax)) > 1


@dataclass(frozen=True)
class Flip:
    position: int
    reference: int  # condition index whose argmax is token_a
    other: int  # condition index whose argmax is token_b
    token_a: str
    token_b: str
    token_a_id: int
    token_b_id: int
    reference_probs: tuple[float, float]  # (P(a), P(b)) under the reference
    other_probs: tuple[float, float]  # (P(a), P(b)) under the other condition

    @property
    def text(self) -> str:
        ra, rb = self.reference_probs
        oa, ob = self.other_probs
        return (f"`{show_token(self.token_a)}` {pct(ra)} / `{show_token(self.token_b)}` {pct(rb)}"
                f" -> {pct(oa)} / {pct(ob)}")


@dataclass
class Comparison:
    model: str
    adapter: str | None
    prompt: str
    variants: list[str]
    continuation: str
    continuation_source: str  # "given" or "generated"
    continuation_ids: list[int]
    conditions: list[Condition]
    positions: list[Position]
    flips: list[Flip]
    watch: list[WatchToken]
    config: CompareConfig
    adapter_canary: dict | None = None
    few_shot: list[Example] = field(default_factory=list)  # shown before every condition's prompt, in order

    def to_json(self) -> dict:
        return {
            "format": COMPARE_FORMAT, "version": COMPARE_VERSION, "tunelens_version": __version__,
            "model": self.model, "adapter": self.adapter, "prompt": self.prompt, "variants": self.variants,
            "config": {**asdict(self.config), "watch": list(self.config.watch)},
            "adapter_canary": self.adapter_canary, "reference": 0,
            "few_shot": [e.to_dict() for e in self.few_shot],
            "continuation": {"text": self.continuation, "source": self.continuation_source,
                             "token_ids": self.continuation_ids},
            "conditions": [asdict(c) for c in self.conditions],
            "watch": [asdict(w) for w in self.watch],
            "flips": [{**asdict(f), "reference_probs": list(f.reference_probs), "other_probs": list(f.other_probs),
                       "text": f.text} for f in self.flips],
            "positions": [{**asdict(p), "flip": p.is_flip} for p in self.positions],
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Comparison":
        return _comparison_from_json(read_json(path, "comparison"), str(path))


def _comparison_from_json(data, source: str) -> Comparison:
    if not isinstance(data, dict) or data.get("format") != COMPARE_FORMAT:
        raise UserError(f"{source}: not a tunelens comparison (field 'format' should be {COMPARE_FORMAT!r})")
    if data.get("version") != COMPARE_VERSION:
        raise UserError(f"{source}: comparison version {data.get('version')!r} is not supported")
    try:
        config = CompareConfig(**{**data["config"], "watch": tuple(data["config"]["watch"])})
        flips = [Flip(**{**{k: v for k, v in f.items() if k != "text"}, "reference_probs": tuple(f["reference_probs"]),
                         "other_probs": tuple(f["other_probs"])}) for f in data["flips"]]
        return Comparison(
            model=data["model"], adapter=data["adapter"], prompt=data["prompt"], variants=list(data["variants"]),
            continuation=data["continuation"]["text"], continuation_source=data["continuation"]["source"],
            continuation_ids=list(data["continuation"]["token_ids"]),
            conditions=[Condition(**c) for c in data["conditions"]],
            positions=[Position(**{k: v for k, v in p.items() if k != "flip"}) for p in data["positions"]],
            flips=flips, watch=[WatchToken(**w) for w in data["watch"]], config=config,
            adapter_canary=data.get("adapter_canary"),
            few_shot=[Example.from_dict(e) for e in data.get("few_shot", [])])
    except KeyError as err:
        raise UserError(f"{source}: missing field {err}") from None
    except TypeError as err:
        raise UserError(f"{source}: malformed record ({err})") from None


# ---------------------------------------------------------------- building the conditions


def condition_plan(prompt: str, variants: list[str], with_adapter: bool) -> list[tuple[str, bool | None, str, int]]:
    """(name, adapter state, prompt, prompt index) for every condition; the reference comes first."""
    prompts = [("prompt", prompt, 0)] + [(f"variant {i}", text, i) for i, text in enumerate(variants, 1)]
    states = [("adapter", True), ("base", False)] if with_adapter else [("model", None)]
    return [(f"{state} · {label}", on, text, index) for state, on in states for label, text, index in prompts]


def resolve_watch(tokenizer, query: str) -> WatchToken:
    """A vocabulary entry by its exact name (e.g. `▁print`), else the first token of the text on its own."""
    token_id = tokenizer.convert_tokens_to_ids(query)
    if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
        return WatchToken(query, token_id, tokenizer.decode([token_id]), "vocabulary entry")
    ids = tokenizer(query, add_special_tokens=False)["input_ids"]
    if not ids:
        raise UserError(f"--watch {query!r} encodes to no token")
    note = "" if len(ids) == 1 else f"first of {len(ids)} tokens"
    return WatchToken(query, ids[0], tokenizer.decode([ids[0]]), note)


def _continuation_ids(model, tokenizer, prompt: str, continuation: str | None, config: CompareConfig,
                      examples: list[Example]):
    """The given continuation's ids (tokenized alone, as encode_pair does), or a greedy one generated."""
    if continuation is not None:
        ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not ids:
            raise UserError("the continuation is empty")
        return ids, "given"
    trace = trace_generate(model, tokenizer, prompt, TraceConfig(max_new_tokens=config.max_new_tokens, top_k=1,
                                                                 raw=config.raw, check_adapter=False),
                           examples=examples)
    return [step.token_id for step in trace.steps], "generated"


def continuation_log_probs(model, prompt_ids: list[int], continuation_ids: list[int]):
    """Log-softmax at the positions that predict each continuation token (n x vocab), from the engine's scorer."""
    return score_continuations(model, [prompt_ids], [continuation_ids], full=True)[0][:-1]


def _all_log_probs(model, tokenizer, plan, continuation_ids, config: CompareConfig, progress: Progress | None,
                   examples):
    """Every condition's log-probabilities in one preallocated conditions x n x vocab tensor."""
    stacked, prompt_lengths = None, []
    for index, (_name, adapter_on, prompt, _prompt_index) in enumerate(plan):
        prompt_ids = prompt_token_ids(tokenizer, prompt, config.raw, examples)
        with adapter_off(model) if adapter_on is False else contextlib.nullcontext():
            log_probs = continuation_log_probs(model, prompt_ids, continuation_ids)
        if stacked is None:
            stacked = log_probs.new_empty((len(plan),) + tuple(log_probs.shape))
        stacked[index] = log_probs
        del log_probs
        prompt_lengths.append(len(prompt_ids))
        if progress is not None:
            progress("scoring conditions", index + 1, len(plan))
    return stacked, prompt_lengths


def _check_budget(conditions: int, positions: int, vocab: int, limit: int) -> None:
    if (needed := conditions * positions * vocab * 4) > limit:
        raise UserError(f"comparing {positions} positions under {conditions} conditions over a {vocab}-token "
                        f"vocabulary holds {needed / 2**30:.1f} GiB of log-probabilities (limit "
                        f"{limit / 2**30:.1f} GiB): shorten the continuation or use fewer variants")


def _condition_stats(stacked, continuation_ids, top_k: int):
    """Per condition and position: the token's log-prob and rank, argmax, top-K ids, KL(reference ||
    condition); one condition at a time, so temporaries stay at n x vocab."""
    import torch

    target = torch.tensor(continuation_ids, device=stacked.device)[:, None]
    reference = stacked[0]
    reference_probs = reference.exp()
    rows = []
    for log_probs in stacked:
        token_lp = log_probs.gather(-1, target).squeeze(-1)
        rank = (log_probs > token_lp[:, None]).sum(-1) + 1
        kl = (reference_probs * (reference - log_probs)).sum(-1).clamp_min(0.0)
        rows.append((token_lp, rank, log_probs.argmax(-1), log_probs.topk(top_k, dim=-1).indices, kl))
    return [torch.stack(column) for column in zip(*rows)]


def _positions(tokenizer, stacked, continuation_ids, watch_ids, top_k: int):
    """Per-position records from every condition's log-probabilities (conditions x n x vocab)."""
    token_lp, ranks, argmax, top_ids, kl = _condition_stats(stacked, continuation_ids, top_k)
    watch = stacked[..., watch_ids].exp() if watch_ids else None
    names = decoded_tokens(tokenizer, top_ids.flatten().tolist() + list(continuation_ids))
    pieces = token_pieces(tokenizer, list(continuation_ids))
    rows = []
    for i, token_id in enumerate(continuation_ids):
        candidates = list(dict.fromkeys([token_id] + top_ids[:, i].flatten().tolist()))
        probs = stacked[:, i, candidates].exp()  # conditions x candidates
        order = probs.max(0).values.argsort(descending=True).tolist()
        candidates = [candidates[j] for j in order]
        probs = probs[:, order]
        rows.append(Position(
            position=i, token_id=token_id, token=pieces[i], candidate_ids=candidates,
            candidate_tokens=[names[c] for c in candidates],
            probs=[[round_prob(p) for p in row] for row in probs.tolist()],
            token_probs=[round_prob(p) for p in token_lp[:, i].exp().tolist()], token_ranks=ranks[:, i].tolist(),
            argmax=argmax[:, i].tolist(), kl=[round_prob(v) for v in kl[:, i].tolist()],
            watch=[[round_prob(p) for p in row] for row in watch[:, i].tolist()] if watch is not None else
            [[] for _ in range(len(stacked))]))
    return rows, token_lp.sum(-1).tolist(), kl.mean(-1).tolist()


def _flips(positions: list[Position]) -> list[Flip]:
    """Every (position, condition) whose argmax differs from the reference's (a flip between two others
    shows up too: one of them differs from the reference)."""
    flips = []
    for pos in positions:
        for other, token_b in enumerate(pos.argmax):
            token_a = pos.argmax[0]
            if token_b == token_a:
                continue
            a, b = pos.candidate_ids.index(token_a), pos.candidate_ids.index(token_b)
            flips.append(Flip(position=pos.position, reference=0, other=other,
                              token_a=pos.candidate_tokens[a], token_b=pos.candidate_tokens[b],
                              token_a_id=token_a, token_b_id=token_b,
                              reference_probs=(pos.probs[0][a], pos.probs[0][b]),
                              other_probs=(pos.probs[other][a], pos.probs[other][b])))
    return flips


def compare_conditions(model: LoadedModel | object, tokenizer=None, prompt: str = "", variants: list[str] | tuple[str, ...] = (),
                       continuation: str | None = None, config: CompareConfig | None = None,
                       progress: Progress | None = None, examples: list[Example] | tuple = ()) -> Comparison:
    """Score one continuation teacher-forced under every condition (see the module docstring). `model` is a
    LoadedModel, or a bare model with its `tokenizer`; `examples` are shown before every condition's prompt."""
    loaded = as_loaded(model, tokenizer)
    model, tokenizer = loaded.model, loaded.tokenizer
    config = config or CompareConfig()
    variants = list(variants)
    if not prompt:
        raise UserError("the prompt is empty")
    if any(not v for v in variants):
        raise UserError("a --variant is empty")
    with_adapter = loaded.has_adapter
    canary = adapter_canary(model, tokenizer, prompt, config.raw) if with_adapter and config.check_adapter else None
    plan = condition_plan(prompt, variants, with_adapter)
    examples = list(examples)
    continuation_ids, source = _continuation_ids(model, tokenizer, prompt, continuation, config, examples)
    head = model.get_output_embeddings()
    _check_budget(len(plan), len(continuation_ids), int(head.weight.shape[0]) if head is not None else 0,
                  config.max_kept_bytes)
    watch = [resolve_watch(tokenizer, q) for q in config.watch]
    stacked, prompt_lengths = _all_log_probs(model, tokenizer, plan, continuation_ids, config, progress, examples)
    positions, totals, mean_kls = _positions(tokenizer, stacked, continuation_ids,
                                             [w.token_id for w in watch], config.top_k)
    del stacked
    conditions = [Condition(name=name, adapter=on, prompt=text, prompt_index=index, prompt_tokens=length,
                            total_logprob=round_prob(total), mean_kl=round_prob(mean_kl),
                            argmax_agreement=sum(p.argmax[c] == p.argmax[0] for p in positions))
                  for c, ((name, on, text, index), length, total, mean_kl)
                  in enumerate(zip(plan, prompt_lengths, totals, mean_kls))]
    return Comparison(model=loaded.spec, adapter=loaded.adapter_label,
                      prompt=prompt, variants=variants,
                      continuation=tokenizer.decode(continuation_ids, skip_special_tokens=False),
                      continuation_source=source, continuation_ids=list(continuation_ids), conditions=conditions,
                      positions=positions, flips=_flips(positions), watch=watch, config=config,
                      adapter_canary=canary, few_shot=examples)


# ---------------------------------------------------------------- one command, one call


@dataclass(frozen=True)
class CompareRun:
    """What `tunelens compare` does: load, score every condition, write the JSON (and HTML)."""

    model: str
    prompt: str
    out: Path
    variants: tuple[str, ...] = ()
    continuation: str | None = None
    adapter: str | None = None
    html: Path | None = None
    device: str = "auto"
    config: CompareConfig = field(default_factory=CompareConfig)


def run_compare(run: CompareRun, progress: Progress | None = None) -> Comparison:
    return run_inspection(run, lambda loaded, examples: compare_conditions(
        loaded, None, run.prompt, list(run.variants), run.continuation, run.config, progress=progress,
        examples=examples), write_compare_html, progress)


def write_compare_html(comparison: Comparison, path: str | Path) -> Path:
    return atomic_write_text(path, render_html("compare.html.j2", comparison=comparison.to_json(), color=prob_color))

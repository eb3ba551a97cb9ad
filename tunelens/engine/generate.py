"""Plain text generation shared by the stages, streamed (CLI) and batched (eval, the demo, the studies),
both through the one decode loop of tunelens.engine.decode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from tunelens.config import configclass, option
from tunelens.errors import UserError
from tunelens.retrieval.fewshot import check_few_shot, encode_few_shot, few_shot_index_option, few_shot_option
from tunelens.engine.decode import BatchDecoder, Row, row_seed, Sampler, SEED_MAX, SEED_MIN, TEMPERATURE_MAX, decode
from tunelens.model.prompts import encode_prompt, stop_token_ids, strip_stop_text


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings; temperature 0 means greedy."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@configclass
class GenerateConfig:
    """What `tunelens generate` does with one prompt. Each field is a flag of the command and a key of its
    --config YAML file."""

    max_new_tokens: int = option(128, "Most tokens to generate.", min=1, max=8192)
    temperature: float = option(0.0, "0 is greedy.", min=0.0, max=TEMPERATURE_MAX)
    top_p: float = option(1.0, "Nucleus sampling mass (above 0).", min=0.0, max=1.0)
    seed: int | None = option(None, "Random seed for sampling.", min=SEED_MIN, max=SEED_MAX)
    raw: bool = option(False, "Continue the text as is, without the chat/turn format.")
    few_shot: int = few_shot_option()
    few_shot_index: str | None = few_shot_index_option()

    def validate(self) -> None:
        if self.top_p == 0:  # a nucleus of mass 0 holds no token
            raise UserError("top_p must be in (0, 1], got 0")
        check_few_shot(self.few_shot, self.few_shot_index, self.raw)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.max_new_tokens, self.temperature, self.top_p, self.seed)


def prompt_ids_for(tokenizer, prompt: str, raw: bool, examples: Sequence = ()) -> list[int]:
    """Raw prompts are continued as plain text (with the tokenizer's bos); others use the chat format,
    with any few-shot `examples` (tunelens.retrieval.fewshot.Example) as earlier exchanges."""
    if raw:
        if examples:
            raise ValueError("few-shot examples need the chat format, not a raw prompt")
        return tokenizer(prompt)["input_ids"]
    if examples:
        return encode_few_shot(tokenizer, examples, prompt)
    return encode_prompt(tokenizer, prompt)


def stream_generate(model, tokenizer, prompt: str, sampling: SamplingConfig, raw: bool = False,
                    examples: Sequence = ()) -> Iterator[str]:
    """Yield the continuation's text piece by piece as the model produces it. The pieces join to
    decode(generated ids), the stop token included, as transformers' TextIteratorStreamer gives; a token
    that ends inside a character waits for the next."""
    sampler = Sampler(sampling.temperature, sampling.top_p, sampling.seed)
    ids, sent = [], ""
    steps = decode(model, prompt_ids_for(tokenizer, prompt, raw, examples), sampler, sampling.max_new_tokens,
                   stop_token_ids(tokenizer), need_logits=False)
    for step in steps:
        ids.append(step.token)
        text = tokenizer.decode(ids, skip_special_tokens=False)
        if not text.endswith("\ufffd") and text.startswith(sent):
            yield text[len(sent):]
            sent = text
    final = tokenizer.decode(ids, skip_special_tokens=False)
    if final.startswith(sent) and final != sent:
        yield final[len(sent):]


def generate_batch(model, tokenizer, prompts: list[str | list[int]], sampling: SamplingConfig,
                   batch_size: int = 8, raw: bool = False, adapter_names: list[str] | None = None,
                   examples: list[Sequence] | None = None) -> list[str]:
    """Generate one answer per prompt, `batch_size` prompts at a time (left-padded), cut at stop text.

    Plain equivalent: each prompt decoded alone (greedy answers match, up to float rounding from padding).
    Sampled row i draws from its own generator seeded by (seed, i), so a seeded call is reproducible
    whatever the batch size. `adapter_names` (one per prompt; PEFT's `"__base__"` for the base model)
    lets several adapters of a multi-adapter PEFT model share one batch; `examples` (one list per prompt)
    puts few-shot examples before each prompt; a prompt given as token ids is used as it is.
    """
    if adapter_names is not None and len(adapter_names) != len(prompts):
        raise ValueError(f"{len(adapter_names)} adapter names for {len(prompts)} prompts")
    if examples is not None and len(examples) != len(prompts):
        raise ValueError(f"{len(examples)} example lists for {len(prompts)} prompts")
    examples = examples if examples is not None else [()] * len(prompts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = frozenset(stop_token_ids(tokenizer))
    rows = [Row(list(p) if isinstance(p, list) else prompt_ids_for(tokenizer, p, raw, shown),
                Sampler(sampling.temperature, sampling.top_p, row_seed(sampling.seed, i)), sampling.max_new_tokens,
                stops, adapter_names[i] if adapter_names else None)
            for i, (p, shown) in enumerate(zip(prompts, examples))]
    for start in range(0, len(rows), batch_size):
        BatchDecoder(model, rows[start:start + batch_size], need_logits=False, pad_id=pad_id or 0).run()
    return [strip_stop_text(tokenizer, tokenizer.decode(row.ids, skip_special_tokens=False))
            .replace(tokenizer.pad_token or "\0", "") for row in rows]

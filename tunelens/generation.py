"""Plain text generation shared by the stages: streamed (CLI, through the shared decode loop of
tunelens.inference) and batched with `model.generate` (eval, demo)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from tunelens.inference import device_of
from tunelens.prompts import encode_prompt, stop_token_ids, strip_stop_text


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings; temperature 0 means greedy."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def generate_kwargs(self) -> dict:
        if self.temperature <= 0:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": None}


def prompt_ids_for(tokenizer, prompt: str, raw: bool) -> list[int]:
    """Raw prompts are continued as plain text (with the tokenizer's bos); others use the chat format."""
    if raw:
        return tokenizer(prompt)["input_ids"]
    return encode_prompt(tokenizer, prompt)


def stream_generate(model, tokenizer, prompt: str, sampling: SamplingConfig, raw: bool = False) -> Iterator[str]:
    """Yield the continuation's text piece by piece as the model produces it, from the shared decode loop.

    The pieces join to decode(generated ids), the stop token included, as transformers'
    TextIteratorStreamer over `model.generate` gives; a token that ends inside a character waits for the next.
    """
    from tunelens.inference import Sampler, decode

    sampler = Sampler(sampling.temperature, sampling.top_p, sampling.seed)
    ids, sent = [], ""
    steps = decode(model, prompt_ids_for(tokenizer, prompt, raw), sampler, sampling.max_new_tokens,
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
                   batch_size: int = 8, raw: bool = False, adapter_names: list[str] | None = None) -> list[str]:
    """Generate one answer per prompt, `batch_size` prompts at a time (left-padded), cut at stop text.

    Plain equivalent: calling `model.generate` on each prompt alone; batching only amortises the
    per-step cost over several rows (greedy answers match, up to float rounding from padding).
    `adapter_names` (one per prompt; PEFT's `"__base__"` for the base model) answers each row with its
    own adapter of a multi-adapter PEFT model, so several adapters share one batch.
    A prompt given as a list of token ids (a rendered few-shot conversation, say) is used as it is.
    """
    import torch

    if adapter_names is not None and len(adapter_names) != len(prompts):
        raise ValueError(f"{len(adapter_names)} adapter names for {len(prompts)} prompts")
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    device = device_of(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [list(p) if isinstance(p, list) else prompt_ids_for(tokenizer, p, raw)
                   for p in prompts[start:start + batch_size]]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in encoded], device=device)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
        per_row = {"adapter_names": adapter_names[start:start + batch_size]} if adapter_names else {}
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=attention,
                                 max_new_tokens=sampling.max_new_tokens, eos_token_id=stop_token_ids(tokenizer),
                                 pad_token_id=pad_id, **per_row, **sampling.generate_kwargs())
        for row in out[:, width:]:
            text = tokenizer.decode(row, skip_special_tokens=False)
            answers.append(strip_stop_text(tokenizer, text).replace(tokenizer.pad_token or "\0", ""))
    return answers

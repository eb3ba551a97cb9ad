"""The one prompt format every stage uses: training, generation, tracing, evaluation and serving.

The rendered prompt (instruction only) is always a string prefix of the rendered pair (instruction
plus response), and `encode_pair` tokenizes the two parts separately, so the prompt tokens a model
is trained on are exactly the tokens it is later prompted with. Chat templates do not promise this
on their own: some (Gemma 4's among them) render an assistant turn differently once it is followed
by content, so the pair is built as prompt + response + the template's own end-of-turn text.
"""

from __future__ import annotations

from dataclasses import dataclass

GEMMA_START, GEMMA_END = "<start_of_turn>", "<end_of_turn>"
# Placeholder used to find where the template puts the assistant's text; never in real data.
_SENTINEL = "\u2063TUNELENS_RESPONSE\u2063"


@dataclass(frozen=True)
class PromptStyle:
    """How a tokenizer's prompts look: `chat_template`, `gemma_turns` or `plain`."""

    kind: str
    end_of_turn: str  # text that closes the assistant's turn in a rendered pair
    stop_strings: tuple[str, ...]  # text at which generation stops


def _has_token(tokenizer, token: str) -> bool:
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


def prompt_style(tokenizer) -> PromptStyle:
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}], tokenize=False
        )
        end = full.split(_SENTINEL, 1)[1] if _SENTINEL in full else (tokenizer.eos_token or "")
        stops = tuple(s for s in {end.strip(), tokenizer.eos_token or ""} if s)
        return PromptStyle("chat_template", end, stops)
    if _has_token(tokenizer, GEMMA_START) and _has_token(tokenizer, GEMMA_END):
        return PromptStyle("gemma_turns", GEMMA_END + "\n", (GEMMA_END, tokenizer.eos_token or GEMMA_END))
    eos = tokenizer.eos_token or ""
    return PromptStyle("plain", eos, (eos,) if eos else ())


def render_prompt(tokenizer, instruction: str, system: str | None = None) -> str:
    """The text a model is prompted with for one instruction, ending where its answer begins."""
    style = prompt_style(tokenizer)
    if style.kind == "chat_template":
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": instruction}
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    user_text = f"{system}\n\n{instruction}" if system else instruction
    if style.kind == "gemma_turns":
        bos = tokenizer.bos_token or ""
        return f"{bos}{GEMMA_START}user\n{user_text}{GEMMA_END}\n{GEMMA_START}model\n"
    return f"{tokenizer.bos_token or ''}### Instruction:\n{user_text}\n\n### Response:\n"


def render_pair(tokenizer, instruction: str, response: str, system: str | None = None) -> str:
    """The training text for one pair: the rendered prompt, the response, the end-of-turn text."""
    return render_prompt(tokenizer, instruction, system) + response + prompt_style(tokenizer).end_of_turn


def encode_prompt(tokenizer, instruction: str, system: str | None = None) -> list[int]:
    # Special tokens are part of the rendered text already (bos, turn markers), so none are added.
    return tokenizer(render_prompt(tokenizer, instruction, system), add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer, instruction: str, response: str, system: str | None = None) -> tuple[list[int], int]:
    """Token ids of the rendered pair and the number of prompt tokens at its start.

    The prompt and the completion are tokenized separately and concatenated, so the first
    `prompt_len` ids are exactly `encode_prompt(...)` whatever the tokenizer merges at the seam.
    """
    prompt_ids = encode_prompt(tokenizer, instruction, system)
    completion = response + prompt_style(tokenizer).end_of_turn
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return prompt_ids + completion_ids, len(prompt_ids)


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end an answer: eos and the style's end-of-turn token when it is one token."""
    ids = set()
    for text in prompt_style(tokenizer).stop_strings + ((tokenizer.eos_token,) if tokenizer.eos_token else ()):
        token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(token_ids) == 1:
            ids.add(token_ids[0])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def strip_stop_text(tokenizer, text: str) -> str:
    """Cut a decoded answer at the first stop string (the end-of-turn marker the model emitted)."""
    for stop in prompt_style(tokenizer).stop_strings:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text

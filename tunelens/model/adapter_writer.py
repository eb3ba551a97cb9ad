"""Writing an adapter that travels: PEFT's files naming the base by its Hub id (or absolute path), the
base's tokenizer with a chat template (tunelens's own prompt format where the tokenizer has none), and
tunelens.json with where the base comes from. Written atomically.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Iterator

from tunelens.model.adapter_files import PROVENANCE_FILE
from tunelens.io import atomic_directory, atomic_write_json
from tunelens.model.prompts import prompt_style
from tunelens.model.specs import EMBEDDED, ModelLoadError, load_tokenizer


def hub_id(spec: str | None) -> str | None:
    """The Hugging Face Hub id of a tunelens model spec, when there is one."""
    if spec in EMBEDDED:
        return EMBEDDED[spec].hub_id
    if spec and spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists():
        return spec  # a repo id from the local Hugging Face cache
    return None


def base_reference(spec: str | None) -> str | None:
    """What adapter_config.json should call the base: its Hub id, else an absolute local path."""
    known = hub_id(spec)
    if known or not spec:
        return known
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else None


def portable_provenance(provenance: dict) -> dict:
    """tunelens.json plus where the base comes from; base_weights_hash stays the exact fingerprint."""
    spec = provenance.get("base_model")
    entry = EMBEDDED.get(spec) if isinstance(spec, str) else None
    extra = {"base_model_hub_id": hub_id(spec),
             "base_weights_fingerprint": "tunelens.model.state.weights_fingerprint: sha256 of every tensor's "
                                         "name, shape and a strided sample of its values"}
    if entry is not None:
        extra["base_weights_note"] = entry.weights_note
    return {**provenance, **extra}


def write_adapter(out_dir: str | Path, peft_model, provenance: dict, tokenizer=None) -> Path:
    """Write, atomically, a PEFT adapter that plain PEFT can load anywhere, with tokenizer and provenance;
    `tokenizer` defaults to the base's own (none for a model built in-process)."""
    spec = provenance.get("base_model")
    tokenizer = tokenizer if tokenizer is not None else _tokenizer_of(spec)
    with atomic_directory(out_dir) as staging:
        with _base_recorded_as(peft_model, base_reference(spec)):
            # tunelens never resizes the vocabulary; "auto" would look the base up on the Hub to find out.
            peft_model.save_pretrained(str(staging), safe_serialization=True, save_embedding_layers=False)
        if tokenizer is not None:
            save_tokenizer(tokenizer, staging)
        atomic_write_json(staging / PROVENANCE_FILE, portable_provenance(provenance))
    return Path(out_dir)


@functools.lru_cache(maxsize=2)
def _tokenizer_of(spec: str | None):
    """The base's tokenizer, loaded once per process: a 262k-row vocabulary takes seconds, and the demo
    writes several adapters of one base. It never leaves this module (save_tokenizer restores it)."""
    try:
        return load_tokenizer(spec) if spec else None
    except ModelLoadError:
        return None  # an in-process model (tests, a caller's own object): nothing on disk to copy


@contextlib.contextmanager
def _temporarily(holders: list[tuple[object, str]], value) -> Iterator[None]:
    """Set each (object, attribute) to `value` inside the block (`None`: leave them), then restore them."""
    before = [getattr(obj, attr, None) for obj, attr in holders]
    if value is not None:
        for obj, attr in holders:
            setattr(obj, attr, value)
    try:
        yield
    finally:
        for (obj, attr), old in zip(holders, before):
            setattr(obj, attr, old)


def _base_recorded_as(peft_model, reference: str | None):
    """Save with the base named `reference`: PEFT takes the adapter config's base_model_name_or_path
    from the LoRA config, and the model card's base_model from the base model's config."""
    holders = [(config, "base_model_name_or_path") for config in peft_model.peft_config.values()]
    return _temporarily(holders + [(peft_model.get_base_model().config, "_name_or_path")], reference)


# ---------------------------------------------------------------- tokenizer and chat template

# tunelens's prompt formats for tokenizers without a chat template (see tunelens/model/prompts.py), as Jinja,
# so that anyone who loads the saved tokenizer prompts the fine-tune exactly as it was trained.
GEMMA_TURNS_TEMPLATE = (
    "{{ bos_token }}{% set pending = namespace(system='') %}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set pending.system = message['content'] + '\n\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['role'] == 'user' %}{{ pending.system }}{% set pending.system = '' %}{% endif %}"
    "{{ message['content'] }}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
PLAIN_TEMPLATE = (
    "{{ bos_token }}{% set pending = namespace(system='') %}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set pending.system = message['content'] + '\n\n' %}"
    "{% elif message['role'] == 'user' %}### Instruction:\n{{ pending.system }}{{ message['content'] }}"
    "\n\n### Response:\n{% set pending.system = '' %}"
    "{% else %}{{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


def chat_template_for(tokenizer) -> str:
    """The tokenizer's own chat template, else the tunelens prompt format it is trained with."""
    return getattr(tokenizer, "chat_template", None) or (
        GEMMA_TURNS_TEMPLATE if prompt_style(tokenizer).kind == "gemma_turns" else PLAIN_TEMPLATE)


def save_tokenizer(tokenizer, directory: Path) -> None:
    """Save the tokenizer with a chat template, leaving the caller's tokenizer object as it was."""
    with _temporarily([(tokenizer, "chat_template")], chat_template_for(tokenizer)):
        tokenizer.save_pretrained(str(directory))

"""Adapter directories: check one before PEFT reads it, and write one that travels.

An adapter directory is PEFT's own format (`adapter_config.json` + `adapter_model.safetensors`) plus
`tunelens.json` (provenance: base model, base weights fingerprint, data hash, config, versions) and
the base's tokenizer with a chat template. PEFT alone turns a damaged directory into tracebacks
(a size mismatch, a misleading "Repo id must be…", a safetensors panic), so `check_adapter` reads
every file itself, with bounds, and raises one `AdapterError` line naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tunelens.models import EMBEDDED, ModelLoadError, base_model_of, weights_fingerprint

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PROVENANCE_FILE = "tunelens.json"

# A config or provenance file is a few KB; anything past this is not one, and is not read whole.
MAX_JSON_BYTES = 16 * 1024 * 1024
# The safetensors library's own cap on the header; a larger length field is damage, not a header.
MAX_HEADER_BYTES = 100 * 1024 * 1024
# Element sizes of the safetensors dtypes; LoRA weights must be one of the floating ones.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$")
_LORA_EMBEDDING_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_embedding_[AB])$")


class AdapterError(ModelLoadError):
    """An adapter directory that cannot be loaded; one line naming the file and the problem."""


def _fail(path: Path, problem: str) -> AdapterError:
    # Names and values in a damaged file can hold anything: keep the message on one line.
    return AdapterError(f"{path}: {' '.join(problem.split())}")


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


# ---------------------------------------------------------------- reading files with bounds


def read_json_object(path: Path, what: str) -> dict:
    """A small JSON file that must hold an object; anything else is an AdapterError naming `path`."""
    if not path.is_file():
        raise _fail(path, f"missing or not a file ({what})")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise _fail(path, f"{size} bytes is far too large for {what}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise _fail(path, f"cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise _fail(path, f"is not UTF-8 text, so not {what}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise _fail(path, f"is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (ValueError, RecursionError) as err:  # a 5,000-digit number; thousands of nested brackets
        raise _fail(path, f"is not usable JSON ({str(err).split(':')[0][:100]})") from None
    if not isinstance(value, dict):
        raise _fail(path, f"must hold a JSON object ({what}), found {type(value).__name__}")
    return value


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """The tensor table of a safetensors file, checked against the file's real size.

    Layout: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
    then the data; offsets are relative to the data start and must tile it exactly.
    """
    try:
        return _read_header(path)
    except OSError as err:
        raise _fail(path, f"cannot be read: {err.strerror or err}") from None


def _read_header(path: Path) -> dict[str, TensorInfo]:
    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "is empty (0 bytes): the adapter weights were not written")
    if size < 8:
        raise _fail(path, f"is {size} bytes, too short to be a safetensors file")
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length > MAX_HEADER_BYTES or length > size - 8:
            raise _fail(path, f"declares a {length}-byte header in a {size}-byte file: truncated or not safetensors")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _fail(path, "has a header that is not valid JSON: damaged or not safetensors") from None
    if not isinstance(header, dict):
        raise _fail(path, "has a header that is not a JSON object: damaged or not safetensors")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(path, "has a __metadata__ entry that is not a string-to-string map")
    tensors = {name: _tensor_info(path, name, entry) for name, entry in header.items()}
    _check_offsets_tile(path, header, data_bytes=size - 8 - length)
    if not tensors:
        raise _fail(path, "holds no tensors")
    return tensors


def _tensor_info(path: Path, name: str, entry) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _fail(path, f"header entry {_short(name)} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise _fail(path, f"tensor {_short(name)} has unknown dtype {_short(dtype)}")
    if not (isinstance(shape, list) and all(type(d) is int and 0 <= d < 2**40 for d in shape)):
        raise _fail(path, f"tensor {_short(name)} has an invalid shape {_short(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise _fail(path, f"tensor {_short(name)} has invalid data_offsets {_short(offsets)}")
    if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise _fail(path, f"tensor {_short(name)}: {offsets[1] - offsets[0]} bytes of data for a "
                          f"{dtype} tensor of shape {shape}")
    return TensorInfo(dtype, tuple(shape))


def _check_offsets_tile(path: Path, header: dict, data_bytes: int) -> None:
    """The tensors' byte ranges must cover the data exactly: no gap, no overlap, nothing past the end."""
    position = 0
    for begin, end in sorted(tuple(entry["data_offsets"]) for entry in header.values()):
        if begin != position:
            raise _fail(path, f"tensor data ranges overlap or leave a gap at byte {position}: damaged file")
        position = end
    if position != data_bytes:
        raise _fail(path, f"tensors need {position} bytes of data but the file has {data_bytes}: "
                          "truncated or damaged")


def _check_finite(path: Path) -> None:
    """Load the (now known sane) tensors and refuse NaN or inf: an adapter holding them answers garbage."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise _fail(path, f"cannot be read by safetensors: {str(err).splitlines()[0] if str(err) else err}") from None
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise _fail(path, f"tensor {_short(name)} holds NaN or infinite values")


# ---------------------------------------------------------------- the checks


def check_adapter(adapter_dir: str | Path, model) -> dict | None:
    """Refuse an adapter directory that PEFT would choke on, or that was made for other weights.

    Returns the provenance (`tunelens.json`) when there is one. Every check reads files with bounds
    and compares against `model`'s modules, so nothing reaches PEFT that it would fail on.
    """
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        what = "is not a directory" if adapter_dir.exists() else "adapter directory not found"
        raise AdapterError(f"{adapter_dir}: {what}")
    if not (adapter_dir / ADAPTER_CONFIG).exists():
        raise AdapterError(f"{adapter_dir} is not a PEFT adapter directory (no {ADAPTER_CONFIG})")
    config = check_adapter_config(adapter_dir / ADAPTER_CONFIG)
    provenance = check_provenance(adapter_dir / PROVENANCE_FILE, model)
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise _fail(weights, _missing_weights_problem(adapter_dir))
    tensors = read_safetensors_header(weights)
    _check_targets_exist(adapter_dir / ADAPTER_CONFIG, config, model)
    _check_tensors_fit(weights, tensors, config, model)
    _check_finite(weights)
    return provenance


def _missing_weights_problem(adapter_dir: Path) -> str:
    if (adapter_dir / "adapter_model.bin").exists():
        # A .bin adapter is a pickle, which runs code when loaded: never open one from an unknown source.
        return ("missing; this directory has only adapter_model.bin, a pickle that tunelens does not load: "
                "re-save the adapter with safe_serialization=True")
    return "missing: the adapter's weights were never written or were removed"


def check_adapter_config(path: Path) -> dict:
    """adapter_config.json: a LoRA config PEFT accepts, with target modules and a positive rank."""
    config = read_json_object(path, "a PEFT adapter config")
    if config.get("peft_type") != "LORA":
        raise _fail(path, f"peft_type is {_short(config.get('peft_type'))}: tunelens loads LoRA adapters only")
    targets = config.get("target_modules")
    if not (isinstance(targets, str) and targets) and not (
            isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)):
        raise _fail(path, f"target_modules must be a module name list or a regex, found {_short(targets)}")
    rank = config.get("r")
    if type(rank) is not int or rank < 1:
        raise _fail(path, f"r (the LoRA rank) must be a positive integer, found {_short(rank)}")
    rank_pattern = config.get("rank_pattern", {})
    if not isinstance(rank_pattern, dict) or not all(type(v) is int and v > 0 for v in rank_pattern.values()):
        raise _fail(path, f"rank_pattern must map module patterns to positive ranks, found {_short(rank_pattern)}")
    for field, (accepts, expected) in _FIELD_CHECKS.items():
        if field in config and not accepts(config[field]):
            raise _fail(path, f"{field} must be {expected}, found {_short(config[field])}")
    _peft_accepts(path, config)
    return config


def _number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _names(value, allow_str: bool = True) -> bool:
    if isinstance(value, str):
        return allow_str
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# Fields PEFT uses while injecting layers, and the types it assumes there without checking them
# (a wrong one would surface as an AttributeError deep inside PEFT).
_FIELD_CHECKS = {
    "lora_alpha": (_number, "a number"),
    "lora_dropout": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "bias": (lambda v: v in ("none", "all", "lora_only"), "none, all or lora_only"),
    "fan_in_fan_out": (lambda v: isinstance(v, bool), "true or false"),
    "use_rslora": (lambda v: isinstance(v, bool), "true or false"),
    "use_dora": (lambda v: v is False, "false (tunelens loads plain LoRA, not DoRA)"),
    # PiSSA, OLoRA, CorDA and LoftQ rewrite the base weights when the adapter is created, on load too:
    # the model would silently differ from the one trained. Only inits that touch A and B alone pass.
    "init_lora_weights": (lambda v: isinstance(v, bool) or v in ("gaussian", "eva", "orthogonal"),
                          "true, false, gaussian, eva or orthogonal (an init that rewrites the base weights, "
                          "such as pissa or olora, needs converting to plain LoRA first)"),
    "alpha_pattern": (lambda v: isinstance(v, dict) and all(_number(x) for x in v.values()),
                      "a map of module patterns to numbers"),
    "modules_to_save": (lambda v: v is None or _names(v, allow_str=False), "null or a list of module names"),
    "exclude_modules": (lambda v: v is None or _names(v), "null, a regex or a list of module names"),
    "layers_pattern": (lambda v: v is None or _names(v), "null, a name or a list of names"),
    "layers_to_transform": (lambda v: v is None or type(v) is int
                            or (isinstance(v, list) and all(type(x) is int for x in v)),
                            "null, a layer index or a list of layer indices"),
    "task_type": (lambda v: v is None or isinstance(v, str), "null or a PEFT task type name"),
}


def _peft_accepts(path: Path, config: dict) -> None:
    """Let PEFT build its LoraConfig from the fields, so a bad value is reported here, not mid-load."""
    from peft import LoraConfig

    fields = {key: value for key, value in config.items() if key in LoraConfig.__dataclass_fields__}
    try:
        LoraConfig(**fields)
    except Exception as err:  # PEFT raises ValueError, TypeError, KeyError... for bad field values
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _fail(path, f"PEFT rejects this LoRA config: {first[:200]}") from None


def check_provenance(path: Path, model) -> dict | None:
    """tunelens.json: refuse an adapter recorded for other base weights, or for another base by name."""
    if not path.exists():
        return None
    provenance = read_json_object(path, "adapter provenance")
    recorded = provenance.get("base_weights_hash")
    if recorded is not None and not (isinstance(recorded, str) and re.fullmatch(r"[0-9a-f]{16,128}", recorded)):
        raise _fail(path, f"base_weights_hash must be a hex digest, found {_short(recorded)}")
    if recorded:
        actual = weights_fingerprint(model)
        if recorded != actual:
            raise AdapterError(
                f"adapter {path.parent} was trained on base weights {recorded[:12]}, "
                f"but this model's weights are {actual[:12]}: load the base model it was made for")
        return provenance
    named = provenance.get("base_model")
    if named is not None and not isinstance(named, str):
        raise _fail(path, f"base_model must be a string, found {_short(named)}")
    # Without a fingerprint the name is all there is to go on: a different name is a different base.
    if named and named not in model_names(model):
        this = getattr(base_model_of(model).config, "tunelens_spec", None) or "this model"
        raise _fail(path, f"names base model {_short(named)} and records no base_weights_hash, so it cannot be "
                          f"checked against {_short(this)}: load {_short(named)} as the base")
    return provenance


def model_names(model) -> set[str]:
    """Every name a loaded model goes by: its tunelens spec, its transformers path, its Hub id."""
    config = base_model_of(model).config
    spec = getattr(config, "tunelens_spec", None)
    names = {spec, getattr(config, "_name_or_path", None), hub_id(spec) if spec else None}
    return {name for name in names if name}


def _module_table(model) -> dict:
    return dict(base_model_of(model).named_modules())


def _matches_target(name: str, targets) -> bool:
    # PEFT's own rule: a string is a full-match regex; a list entry matches the name or its last parts.
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == target or name.endswith("." + target) for target in targets)


def _check_targets_exist(path: Path, config: dict, model) -> None:
    targets = config["target_modules"]
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as err:
            raise _fail(path, f"target_modules is not a valid regex ({err})") from None
    if not any(_matches_target(name, targets) for name in _module_table(model) if name):
        kind = type(base_model_of(model)).__name__
        raise _fail(path, f"target_modules {_short(targets)} match no module of this model ({kind}): "
                          "an adapter for another architecture?")


def _check_tensors_fit(path: Path, tensors: dict[str, TensorInfo], config: dict, model) -> None:
    """Every tensor is a LoRA weight of a module this model has, with shapes that fit that module."""
    modules = _module_table(model)
    ranks = {config["r"], *config.get("rank_pattern", {}).values()}
    seen: dict[str, dict[str, TensorInfo]] = {}
    for name, info in tensors.items():
        match = _LORA_KEY.match(name) or _LORA_EMBEDDING_KEY.match(name)
        if match is None:
            raise _fail(path, f"tensor {_short(name)} is not a LoRA weight this tunelens loads "
                              "(expected base_model.model.<module>.lora_A/lora_B.weight)")
        module_name, part = match["module"], match["part"][-1]
        if info.dtype not in FLOAT_DTYPES:
            raise _fail(path, f"tensor {_short(name)} has dtype {info.dtype}: LoRA weights are floating point")
        if module_name not in modules:
            raise _fail(path, f"tensor {_short(name)} is for module {_short(module_name)}, which this model "
                              "does not have: an adapter for another model?")
        if not _matches_target(module_name, config["target_modules"]):
            raise _fail(path, f"tensor {_short(name)} is for a module that target_modules does not name")
        seen.setdefault(module_name, {})[part] = info
    for module_name, parts in seen.items():
        _check_module_shapes(path, module_name, parts, modules[module_name], ranks)


def _check_module_shapes(path: Path, module_name: str, parts: dict[str, TensorInfo], module, ranks: set[int]) -> None:
    if set(parts) != {"A", "B"}:
        raise _fail(path, f"module {_short(module_name)} has lora_{''.join(parts)} but not both lora_A and lora_B")
    a, b = parts["A"].shape, parts["B"].shape
    if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
        raise _fail(path, f"module {_short(module_name)}: lora_A {list(a)} and lora_B {list(b)} are not a "
                          "rank-r pair")
    if a[0] not in ranks:
        said = ", ".join(str(r) for r in sorted(ranks))
        raise _fail(path, f"module {_short(module_name)} has rank {a[0]}, but {ADAPTER_CONFIG} says r={said}")
    fan_in, fan_out = _fans(module)
    if fan_in is None:
        return  # a layer kind whose sizes we cannot read; PEFT checks it while loading
    if (a[1], b[0]) != (fan_in, fan_out):
        raise _fail(path, f"module {_short(module_name)} takes {fan_in} inputs and gives {fan_out} outputs "
                          f"here, but the adapter's LoRA pair is for {a[1]} -> {b[0]}: an adapter for another model?")


def _fans(module) -> tuple[int | None, int | None]:
    """(inputs, outputs) of a linear or embedding layer, plain or already wrapped by PEFT."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return module.in_features, module.out_features
    if hasattr(module, "num_embeddings"):
        return module.num_embeddings, module.embedding_dim
    return None, None


@contextlib.contextmanager
def peft_errors(adapter_dir: Path) -> Iterator[None]:
    """Last line of defence: what PEFT still raises while loading becomes one AdapterError line."""
    try:
        yield
    except AdapterError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AdapterError(f"{adapter_dir}: PEFT could not load this adapter: {first[:200]}") from None


# ---------------------------------------------------------------- writing a portable adapter


def hub_id(spec: str | None) -> str | None:
    """The Hugging Face Hub id of a tunelens model spec, when there is one."""
    if not spec:
        return None
    if spec in EMBEDDED:
        return EMBEDDED[spec].hub_id
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists():
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
             "base_weights_fingerprint": "tunelens.models.weights_fingerprint: sha256 of every tensor's "
                                         "name, shape and a strided sample of its values"}
    if entry is not None:
        extra["base_weights_note"] = entry.weights_note
    return {**provenance, **extra}


def write_adapter(out_dir: str | Path, peft_model, provenance: dict, tokenizer=None) -> Path:
    """Write a PEFT adapter that plain PEFT can load anywhere, with tokenizer and provenance, atomically.

    `tokenizer` defaults to the base's own, loaded from the spec in `provenance["base_model"]` when
    that spec names something loadable (a model built in-process has none to save).
    """
    from tunelens.io import atomic_directory, atomic_write_json

    spec = provenance.get("base_model")
    if tokenizer is None:
        tokenizer = _tokenizer_of(spec)
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
    """The base's tokenizer, loaded once per process: a 262k-row vocabulary takes seconds to load, and the
    demo writes several adapters of one base. It never leaves this module (save_tokenizer restores it)."""
    from tunelens.models import load_tokenizer

    if not spec:
        return None
    try:
        return load_tokenizer(spec)
    except ModelLoadError:
        return None  # an in-process model (tests, a caller's own object): nothing on disk to copy


@contextlib.contextmanager
def _base_recorded_as(peft_model, reference: str | None) -> Iterator[None]:
    """Save with the base named `reference`: PEFT takes the adapter config's base_model_name_or_path
    from the LoRA config, and the model card's base_model from the base model's config."""
    configs = list(peft_model.peft_config.values())
    base_config = peft_model.get_base_model().config
    before = ([config.base_model_name_or_path for config in configs], base_config._name_or_path)
    if reference:
        for config in configs:
            config.base_model_name_or_path = reference
        base_config._name_or_path = reference
    try:
        yield
    finally:
        for config, old in zip(configs, before[0]):
            config.base_model_name_or_path = old
        base_config._name_or_path = before[1]


# ---------------------------------------------------------------- tokenizer and chat template

# tunelens's prompt formats for tokenizers without a chat template (see tunelens/prompts.py), as Jinja,
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
    from tunelens.prompts import prompt_style

    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    return GEMMA_TURNS_TEMPLATE if prompt_style(tokenizer).kind == "gemma_turns" else PLAIN_TEMPLATE


def save_tokenizer(tokenizer, directory: Path) -> None:
    """Save the tokenizer with a chat template, leaving the caller's tokenizer object as it was."""
    before = getattr(tokenizer, "chat_template", None)
    tokenizer.chat_template = chat_template_for(tokenizer)
    try:
        tokenizer.save_pretrained(str(directory))
    finally:
        tokenizer.chat_template = before


def base_spec_of(adapter_dir: str | Path) -> str | None:
    """The base model spec an adapter's tunelens.json records, for commands that default to it."""
    path = Path(adapter_dir) / PROVENANCE_FILE
    if not path.exists():
        return None
    spec = read_json_object(path, "adapter provenance").get("base_model")
    return spec if isinstance(spec, str) and spec else None

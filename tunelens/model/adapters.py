"""Adapter directories: check one before PEFT reads it (re-exporting the readers and the writer, so
`tunelens.model.adapters` stays the one import).

PEFT alone turns a damaged directory into tracebacks (a size mismatch, a misleading "Repo id must be…", a
safetensors panic), so `check_adapter` reads every file first and raises one `AdapterError` line naming
the file and the problem. The directory is PEFT's format plus `tunelens.json` (provenance) and the base's
tokenizer with a chat template.
"""

from __future__ import annotations

import contextlib
import math
import re
from pathlib import Path
from typing import Iterator

from tunelens.model.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PROVENANCE_FILE, AdapterError
from tunelens.model.adapter_files import adapter_error, read_json_object, read_weights, short_repr
from tunelens.model.adapter_files import base_spec_of  # noqa: F401  (re-exported)
from tunelens.model.adapter_writer import hub_id
from tunelens.model.adapter_writer import save_tokenizer, write_adapter  # noqa: F401  (re-exported)
from tunelens.model.state import base_model_of, weights_fingerprint

_LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$")
_LORA_EMBEDDING_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_embedding_[AB])$")


def check_adapter(adapter_dir: str | Path, model) -> dict | None:
    """Refuse an adapter directory that PEFT would choke on, or that was made for other weights; returns
    the provenance (`tunelens.json`) when there is one."""
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
        raise adapter_error(weights, _missing_weights_problem(adapter_dir))
    tensors = read_weights(weights)
    _check_targets_exist(adapter_dir / ADAPTER_CONFIG, config, model)
    _check_tensors_fit(weights, tensors, config, model)
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
        found = short_repr(config.get("peft_type"))
        raise adapter_error(path, f"peft_type is {found}: tunelens loads LoRA adapters only")
    targets = config.get("target_modules")
    if not (isinstance(targets, str) and targets) and not (
            isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)):
        raise adapter_error(path, f"target_modules must be a module name list or a regex, found {short_repr(targets)}")
    rank = config.get("r")
    if type(rank) is not int or rank < 1:
        raise adapter_error(path, f"r (the LoRA rank) must be a positive integer, found {short_repr(rank)}")
    rank_pattern = config.get("rank_pattern", {})
    if not isinstance(rank_pattern, dict) or not all(type(v) is int and v > 0 for v in rank_pattern.values()):
        raise adapter_error(path, "rank_pattern must map module patterns to positive ranks, "
                                  f"found {short_repr(rank_pattern)}")
    for field, (accepts, expected) in _FIELD_CHECKS.items():
        if field in config and not accepts(config[field]):
            raise adapter_error(path, f"{field} must be {expected}, found {short_repr(config[field])}")
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
        raise adapter_error(path, f"PEFT rejects this LoRA config: {_first_line(err)}") from None


def check_provenance(path: Path, model) -> dict | None:
    """tunelens.json: refuse an adapter recorded for other base weights, or for another base by name."""
    if not path.exists():
        return None
    provenance = read_json_object(path, "adapter provenance")
    recorded = provenance.get("base_weights_hash")
    if recorded is not None and not (isinstance(recorded, str) and re.fullmatch(r"[0-9a-f]{16,128}", recorded)):
        raise adapter_error(path, f"base_weights_hash must be a hex digest, found {short_repr(recorded)}")
    if recorded:
        actual = weights_fingerprint(model)
        if recorded != actual:
            raise AdapterError(
                f"adapter {path.parent} was trained on base weights {recorded[:12]}, "
                f"but this model's weights are {actual[:12]}: load the base model it was made for")
        return provenance
    named = provenance.get("base_model")
    if named is not None and not isinstance(named, str):
        raise adapter_error(path, f"base_model must be a string, found {short_repr(named)}")
    # Without a fingerprint the name is all there is to go on: a different name is a different base.
    if named and named not in model_names(model):
        this = getattr(base_model_of(model).config, "tunelens_spec", None) or "this model"
        raise adapter_error(path, f"names base model {short_repr(named)} and records no base_weights_hash, so it "
                                  f"cannot be checked against {short_repr(this)}: load {short_repr(named)} as the base")
    return provenance


def model_names(model) -> set[str]:
    """Every name a loaded model goes by: its tunelens spec, its transformers path, its Hub id."""
    config = base_model_of(model).config
    spec = getattr(config, "tunelens_spec", None)
    names = {spec, getattr(config, "_name_or_path", None), hub_id(spec) if spec else None}
    return {name for name in names if name}


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
            raise adapter_error(path, f"target_modules is not a valid regex ({err})") from None
    if not any(_matches_target(name, targets) for name, _ in base_model_of(model).named_modules() if name):
        kind = type(base_model_of(model)).__name__
        raise adapter_error(path, f"target_modules {short_repr(targets)} match no module of this model ({kind}): "
                          "an adapter for another architecture?")


def _check_tensors_fit(path: Path, tensors: dict, config: dict, model) -> None:
    """Every tensor is a finite LoRA weight of a module this model has, with shapes that fit that module."""
    import torch

    modules = dict(base_model_of(model).named_modules())
    ranks = {config["r"], *config.get("rank_pattern", {}).values()}
    seen: dict[str, dict] = {}
    for name, tensor in tensors.items():
        match = _LORA_KEY.match(name) or _LORA_EMBEDDING_KEY.match(name)
        what = f"tensor {short_repr(name)}"
        if match is None:
            raise adapter_error(path, f"{what} is not a LoRA weight this tunelens loads "
                                      "(expected base_model.model.<module>.lora_A/lora_B.weight)")
        module_name = match["module"]
        if tensor.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            dtype = str(tensor.dtype).removeprefix("torch.")
            raise adapter_error(path, f"{what} has dtype {dtype}: LoRA weights are floating point")
        if module_name not in modules:
            raise adapter_error(path, f"{what} is for module {short_repr(module_name)}, which this model "
                                      "does not have: an adapter for another model?")
        if not _matches_target(module_name, config["target_modules"]):
            raise adapter_error(path, f"{what} is for a module that target_modules does not name")
        seen.setdefault(module_name, {})[match["part"][-1]] = tuple(tensor.shape)
    for module_name, parts in seen.items():
        _check_module_shapes(path, module_name, parts, modules[module_name], ranks)
    # An adapter holding NaN or inf answers garbage.
    bad = next((name for name, tensor in tensors.items() if not bool(torch.isfinite(tensor).all())), None)
    if bad is not None:
        raise adapter_error(path, f"tensor {short_repr(bad)} holds NaN or infinite values")


def _check_module_shapes(path: Path, module_name: str, parts: dict, module, ranks: set[int]) -> None:
    name = short_repr(module_name)
    if set(parts) != {"A", "B"}:
        raise adapter_error(path, f"module {name} has lora_{''.join(parts)} but not both lora_A and lora_B")
    a, b = parts["A"], parts["B"]
    if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
        raise adapter_error(path, f"module {name}: lora_A {list(a)} and lora_B {list(b)} are not a rank-r pair")
    if a[0] not in ranks:
        said = ", ".join(str(r) for r in sorted(ranks))
        raise adapter_error(path, f"module {name} has rank {a[0]}, but {ADAPTER_CONFIG} says r={said}")
    fan_in, fan_out = _fans(module)
    if fan_in is not None and (a[1], b[0]) != (fan_in, fan_out):  # None: PEFT checks that layer kind itself
        raise adapter_error(path, f"module {name} takes {fan_in} inputs and gives {fan_out} outputs here, but "
                                  f"the adapter's LoRA pair is for {a[1]} -> {b[0]}: an adapter for another model?")


def _fans(module) -> tuple[int | None, int | None]:
    """(inputs, outputs) of a linear or embedding layer, plain or already wrapped by PEFT."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return module.in_features, module.out_features
    if hasattr(module, "num_embeddings"):
        return module.num_embeddings, module.embedding_dim
    return None, None


@contextlib.contextmanager
def peft_errors(adapter_dir: Path) -> Iterator[None]:
    """What PEFT still raises while loading becomes one AdapterError line."""
    try:
        yield
    except AdapterError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as err:
        raise AdapterError(f"{adapter_dir}: PEFT could not load this adapter: {_first_line(err)}") from None


def _first_line(err: Exception) -> str:
    return (str(err).splitlines()[0] if str(err) else type(err).__name__)[:200]


def loaded_adapter_differences(model, adapter_dir: str | Path, adapter_name: str) -> list[str]:
    """Every tensor where the file and the model's adapter `adapter_name` differ (empty: loaded exactly).
    PEFT's own "missing adapter keys" check matches keys by substring, so an adapter named "B" counts other
    adapters' `lora_B.A5.weight` as its missing keys; `attach_adapter` asks this one instead."""
    import torch
    from peft import get_peft_model_state_dict
    from peft.utils import load_peft_weights

    saved = load_peft_weights(str(adapter_dir), device="cpu")
    # PEFT's saved-file view of the adapter in the model: the same keys as the file, adapter name removed.
    loaded = get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=False)
    problems = [f"{key}: in the file, not in the model" for key in saved if key not in loaded]
    problems += [f"{key}: in the model, not in the file" for key in loaded if key not in saved]
    for key in saved.keys() & loaded.keys():
        theirs = loaded[key].detach().cpu()
        if saved[key].shape != theirs.shape or not torch.equal(saved[key].to(theirs.dtype), theirs):
            problems.append(f"{key}: the model's tensor differs from the file's")
    return sorted(problems)

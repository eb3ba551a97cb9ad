"""The one loader: a spec (embedded name, model directory, .gguf file, cached Hub id), an optional LoRA
adapter, a device and a dtype become one `LoadedModel`; every command and stage gets its model here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelens.model.adapters import AdapterError, check_adapter, loaded_adapter_differences, peft_errors
from tunelens.model.specs import DEFAULT_MODEL, ModelLoadError, choose_device, choose_dtype, resolve_model_dir
from tunelens.model.state import adapter_off, device_of, has_adapter, model_label


def load_model(spec: str = DEFAULT_MODEL, adapter: str | Path | None = None,
               device: str = "auto", dtype: str = "auto"):
    """Load (model, tokenizer) for a spec, in eval mode, optionally with a PEFT adapter attached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, chosen_device = str(resolve_model_dir(spec)), choose_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=choose_dtype(dtype, chosen_device),
                                                     local_files_only=True)
    except OSError as err:
        raise ModelLoadError(f"cannot load model from {model_dir}: {str(err).splitlines()[0]}") from None
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model.to(chosen_device).eval()
    # Remember the user's spec: adapters record it, and reports show it.
    model.config.tunelens_spec = spec
    if adapter is not None:
        model = attach_adapter(model, adapter)
    return model, tokenizer


def attach_adapter(model, adapter_dir: str | Path, adapter_name: str = "default"):
    """Attach a PEFT adapter, every file checked first (`check_adapter`): a damaged or foreign adapter is
    one ModelLoadError line naming the file. On a model that already carries adapters, the new one is loaded
    beside them under `adapter_name` (`model.set_adapter(name)` switches), sharing the base weights."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    check_adapter(adapter_dir, model)
    with peft_errors(adapter_dir):
        if isinstance(model, PeftModel):
            # PEFT's key check misreads a name like "B" (it is in every other adapter's "lora_B" keys) and
            # warns of keys that are not missing; the exact check below replaces it.
            model.load_adapter(str(adapter_dir), adapter_name=adapter_name, strict_adapter_check="ignore")
            model.set_adapter(adapter_name)
        else:
            model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=adapter_name)
        problems = loaded_adapter_differences(model, adapter_dir, adapter_name)
    if problems:
        raise AdapterError(f"{adapter_dir}: loaded as {adapter_name!r} but not exactly ({len(problems)} "
                           f"tensor(s)): {problems[0]}")
    model.eval()
    return model


@dataclass
class LoadedModel:
    """A model with the spec it came from and its adapter directory (here, not as attributes on the torch
    module): `LoadedModel.load` from a spec, `LoadedModel.wrap` for a model built in code."""

    model: object
    tokenizer: object
    spec: str
    adapter_dir: str | None = None

    @classmethod
    def load(cls, spec: str, adapter: str | Path | None = None, device: str = "auto") -> "LoadedModel":
        model, tokenizer = load_model(spec, adapter, device=device)
        return cls(model, tokenizer, spec, str(adapter) if adapter is not None else None)

    @classmethod
    def wrap(cls, model, tokenizer, spec: str | None = None, adapter_dir: str | None = None) -> "LoadedModel":
        return cls(model, tokenizer, spec or model_label(model), adapter_dir)

    @property
    def device(self):
        return device_of(self.model)

    @property
    def has_adapter(self) -> bool:
        return has_adapter(self.model)

    @property
    def adapter_label(self) -> str | None:
        """The adapter directory the user gave, "adapter" for one attached in code, None without one."""
        return (self.adapter_dir or "adapter") if self.has_adapter else None

    @property
    def context_length(self) -> int | None:
        """The most positions the model was built for (prompt plus generated tokens), when it says."""
        config = getattr(self.model, "config", None)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        value = getattr(text, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) else None

    def adapter_off(self):
        """Context in which the base model answers (a no-op without an adapter)."""
        return adapter_off(self.model)


def as_loaded(model, tokenizer=None) -> LoadedModel:
    """Accept a LoadedModel or a bare (model, tokenizer) pair, so library callers may pass either."""
    return model if isinstance(model, LoadedModel) else LoadedModel.wrap(model, tokenizer)

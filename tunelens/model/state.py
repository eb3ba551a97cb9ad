"""What a model object is: the one way to ask whether an adapter is attached (`has_adapter`), to run the
base under it (`adapter_off`), to reach the model under a PEFT wrapper (`base_model_of`), and the
fingerprint of its base weights that adapters record.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator


def has_adapter(model) -> bool:
    """True when a PEFT adapter is attached to `model` (so it can be switched off)."""
    return bool(getattr(model, "peft_config", None)) and hasattr(model, "disable_adapter")


@contextlib.contextmanager
def adapter_off(model) -> Iterator[None]:
    """Run the base model inside the block; a no-op for a model without an adapter."""
    with model.disable_adapter() if has_adapter(model) else contextlib.nullcontext():
        yield


def base_model_of(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def device_of(model):
    return next(model.parameters()).device


def model_label(model) -> str:
    """A name for a model built in code: the spec `models.load_model` recorded, else its class name."""
    config = getattr(model, "config", None)
    return str(getattr(config, "tunelens_spec", "") or type(model).__name__)


def weights_fingerprint(model, sample: int = 4096) -> str:
    """A stable hash of the base weights: every tensor's name, shape and a strided sample of its values
    (plain equivalent: sha256 of every byte; sampling keeps a 270M model well under a second)."""
    import torch

    digest = hashlib.sha256()
    state = base_model_of(model).state_dict()
    for name in sorted(state):
        if "lora_" in name:
            continue
        tensor = state[name].detach()
        flat = tensor.reshape(-1)
        picked = flat[::max(1, flat.numel() // sample)][:sample].to(device="cpu", dtype=torch.float32).contiguous()
        # A LoRA-wrapped layer keeps its base weight under `.base_layer`: name it as the plain model does.
        plain_name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        digest.update(f"{plain_name}|{tuple(tensor.shape)}".encode())
        digest.update(picked.numpy().tobytes())
    return digest.hexdigest()

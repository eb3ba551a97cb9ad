"""Which linears get LoRA, and wrapping the model with PEFT (the setup half of a training run).

The target linears are looked up inside the text decoder only, so vision and audio towers are never
searched (their `Gemma4ClippableLinear`s, which PEFT rejects, are never targeted); `placement_table`
reports what was found per kind and layer, `wrap_lora` hands exactly that set to PEFT and checks PEFT
adapted nothing else.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from tunelens.errors import UserError
from tunelens.model.specs import load_tokenizer, resolve_model_dir
from tunelens.model.state import base_model_of
from tunelens.runtime import seeded

if TYPE_CHECKING:
    from tunelens.train.config import TrainConfig


@dataclass(frozen=True)
class PlacementRow:
    kind: str  # e.g. q_proj
    layers: tuple[int, ...]  # decoder layers that have it
    absent: tuple[int, ...]  # decoder layers that do not (KV-shared layers have no k_proj / v_proj)
    in_features: int
    out_features: int
    lora_params: int  # over all its layers
    shapes: tuple[tuple[int, int], ...] = ()  # distinct (in, out) over its layers (Gemma 4's global layers differ)


@dataclass(frozen=True)
class Placement:
    decoder_path: str  # e.g. model.language_model
    num_layers: int
    rows: tuple[PlacementRow, ...]
    module_names: tuple[str, ...]  # the full names of every adapted linear
    kv_shared_layers: tuple[int, ...]
    frozen_towers: tuple[str, ...]  # modules outside the text decoder: vision / audio towers and the like
    trainable_params: int
    total_params: int

    @property
    def target_regex(self) -> str:
        """A PEFT `target_modules` regex matching exactly `module_names` (PEFT full-matches it)."""
        kinds = "|".join(sorted({row.kind for row in self.rows}))
        return rf"{re.escape(self.decoder_path)}\.layers\.\d+\.(?:.+\.)?(?:{kinds})"


def _text_decoder(model):
    """(dotted path, module) of the text decoder, whose `layers` hold the blocks we adapt."""
    model = base_model_of(model)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or not hasattr(decoder, "layers"):
        raise UserError(f"{type(model).__name__}: cannot find its text decoder (no get_decoder().layers)")
    for name, module in model.named_modules():
        if module is decoder:
            return name, decoder
    raise UserError(f"{type(model).__name__}: its decoder is not one of its submodules")


def placement_table(model, config: TrainConfig) -> Placement:
    """Resolve the target linears inside the text decoder only and count the LoRA parameters."""
    import torch.nn as nn

    base = base_model_of(model)
    decoder_path, decoder = _text_decoder(base)
    found: dict[str, dict[int, nn.Linear]] = {kind: {} for kind in config.target_modules}
    names = []
    for index, layer in enumerate(decoder.layers):
        for sub_name, module in layer.named_modules():
            kind = sub_name.rsplit(".", 1)[-1]
            if kind in found and isinstance(module, nn.Linear):
                found[kind][index] = module
                names.append(f"{decoder_path}.layers.{index}.{sub_name}")
    missing = [kind for kind, layers in found.items() if not layers]
    if missing:
        raise UserError(f"target module(s) {', '.join(missing)} match no linear layer in the text decoder "
                        f"of {type(base).__name__}")
    rows = []
    for kind, layers in found.items():
        shapes = [(m.in_features, m.out_features) for m in layers.values()]
        absent = tuple(i for i in range(len(decoder.layers)) if i not in layers)
        rows.append(PlacementRow(kind, tuple(sorted(layers)), absent, *shapes[0],
                                 sum(config.lora_r * (i + o) for i, o in shapes), tuple(dict.fromkeys(shapes))))
    return Placement(decoder_path, len(decoder.layers), tuple(rows), tuple(names), _kv_shared_layers(base, decoder),
                     _towers(base, decoder_path), sum(row.lora_params for row in rows),
                     sum(p.numel() for p in base.parameters()))


def _kv_shared_layers(base, decoder) -> tuple[int, ...]:
    text_config = base.config.get_text_config()
    modes = getattr(text_config, "kv_sharing_modes", None) if getattr(text_config, "num_kv_shared_layers", 0) else None
    if modes:
        return tuple(i for i, mode in enumerate(modes) if mode == "reuse")
    return tuple(i for i, layer in enumerate(decoder.layers)
                 if getattr(getattr(layer, "self_attn", None), "is_kv_shared_layer", False))


def _towers(base, decoder_path: str) -> tuple[str, ...]:
    """Top-level modules of the non-text encoders (e.g. model.vision_tower), which stay frozen."""
    towers = []
    for name, _module in base.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if ("tower" in leaf or leaf.startswith(("embed_vision", "embed_audio"))) and not name.startswith(decoder_path):
            if not any(name.startswith(t + ".") for t in towers):
                towers.append(name)
    return tuple(towers)


def layer_ranges(layers: Sequence[int]) -> str:
    """(0, 1, 2, 5) -> '0-2, 5'."""
    runs: list[list[int]] = []
    for i in layers:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs) or "-"


def wrap_lora(model, config, placement: Placement):
    """Freeze the base, inject LoRA on `placement.module_names` (seeded init); returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    for param in model.parameters():
        param.requires_grad_(False)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=placement.target_regex, bias="none", task_type="CAUSAL_LM")
    with seeded(config.seed), warnings.catch_warnings():  # seeded: the LoRA A init, the caller's stream kept
        # PEFT calls a transformers method deprecated in 5.x; nothing the user can act on.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, lora)
    adapted = {name.removeprefix("base_model.model.") for name, module in peft_model.named_modules()
               if hasattr(module, "lora_A") and name.startswith("base_model.model.")}
    if adapted != set(placement.module_names):
        raise RuntimeError(f"PEFT adapted {len(adapted)} modules, the placement table has "
                           f"{len(placement.module_names)}")
    return peft_model


def enable_gradient_checkpointing(model) -> None:
    """transformers' activation checkpointing, non-reentrant (the frozen embeddings need no grad input)."""
    if hasattr(model, "activation_checkpointing_enable"):  # the transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_4bit(spec: str, device: str):
    """(model, tokenizer) with the base linears in 4-bit NF4 through bitsandbytes (transformers'
    `BitsAndBytesConfig`): QLoRA's base. PEFT's `prepare_model_for_kbit_training` upcasts the norms and
    readies the inputs for gradients."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("--load-in-4bit needs the bitsandbytes package: pip install bitsandbytes "
                        "(and a CUDA GPU; its CPU backend is not supported for training here)")
    if device == "cpu":
        raise UserError("--load-in-4bit needs a CUDA GPU: bitsandbytes' 4-bit training kernels do not run on the CPU")
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(str(resolve_model_dir(spec)), quantization_config=quant,
                                                 dtype=torch.bfloat16, device_map={"": device},
                                                 local_files_only=True)
    model.config.tunelens_spec = spec
    tokenizer = load_tokenizer(spec)
    if tokenizer.pad_token is None:  # as load_model does
        tokenizer.pad_token = tokenizer.eos_token
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False), tokenizer

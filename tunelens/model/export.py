"""`tunelens export`: merge a LoRA adapter into its base and write a standard transformers model.

The output opens with plain transformers (no tunelens, no PEFT): config.json, model.safetensors, the
tokenizer with a chat template, and `tunelens-export.json` recording what was merged. The merge runs in
fp32 on the CPU (PEFT's merge_and_unload) and only then casts to the asked dtype, so bf16 rounds once.
GGUF is not written here: only llama.cpp's `convert_hf_to_gguf.py` knows each architecture's layout, and
no maintained PyPI package ships it (docs/export.md says how to run it on the merged directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelens import __version__
from tunelens.config import configclass, option
from tunelens.errors import UserError
from tunelens.io import atomic_directory, atomic_write_json
from tunelens.model.adapters import base_spec_of, save_tokenizer
from tunelens.model.load import load_model
from tunelens.model.specs import choose_dtype, load_tokenizer
from tunelens.model.state import weights_fingerprint

FORMATS = ("safetensors", "gguf")
DTYPES = ("fp32", "bf16", "fp16")
EXPORT_FILE = "tunelens-export.json"


@configclass
class ExportConfig:
    """Options of `tunelens export`: each field is one of its flags and a key of its --config YAML file."""

    fmt: str = option("safetensors", "What to write (gguf: see docs/export.md).", choices=FORMATS, flag="--format")
    dtype: str = option("fp32", "Dtype of the written weights.", choices=DTYPES)


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    base_model: str
    adapter: Path
    merged_modules: int
    dtype: str
    size_bytes: int


def export_model(adapter_dir: str | Path, out_dir: str | Path, model_spec: str | None = None,
                 config: ExportConfig = ExportConfig()) -> ExportResult:
    """Merge `adapter_dir` into its base (by default the base its tunelens.json names) and write `out_dir`."""
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if config.fmt == "gguf":  # the two commands that do it with llama.cpp's converter
        raise UserError(f"GGUF needs llama.cpp's convert_hf_to_gguf.py, which no maintained PyPI package "
                        f"provides: run `tunelens export --adapter {adapter_dir} --out merged` and then, in a "
                        "llama.cpp checkout, `python convert_hf_to_gguf.py merged --outfile model.gguf --outtype "
                        "f16` (see docs/export.md)")
    _check_out_dir(out_dir)
    if not adapter_dir.is_dir():
        raise UserError(f"{adapter_dir}: adapter directory not found")
    spec = model_spec or base_spec_of(adapter_dir)
    if not spec:
        raise UserError(f"{adapter_dir}: no tunelens.json names its base model: give it with --model")
    # fp32 on the CPU whatever the export dtype: the merge adds a small update to large weights.
    model, _ = load_model(spec, adapter=adapter_dir, device="cpu", dtype="fp32")
    return write_merged(model, _tokenizer_for(adapter_dir, spec), out_dir, config.dtype,
                        {"base_model": spec, "adapter": str(adapter_dir.resolve())})


def _check_out_dir(out_dir: Path) -> None:
    # The output directory is replaced whole: never let that be a directory holding something else.
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / EXPORT_FILE).exists())):
        raise UserError(f"{out_dir} exists and is not an earlier export: choose another --out")


def _tokenizer_for(adapter_dir: Path, spec: str):
    """The tokenizer saved beside the adapter when there is one, else the base's own."""
    from transformers import AutoTokenizer

    if (adapter_dir / "tokenizer_config.json").is_file():
        try:
            return AutoTokenizer.from_pretrained(str(adapter_dir), local_files_only=True)
        except (OSError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"{adapter_dir}: its saved tokenizer cannot be loaded ({first})") from None
    return load_tokenizer(spec)


def write_merged(peft_model, tokenizer, out_dir: Path, dtype: str, provenance: dict) -> ExportResult:
    """Merge and save a transformers model directory atomically: weights, config, tokenizer, provenance."""
    merged_modules = sum(1 for _, module in peft_model.named_modules() if hasattr(module, "lora_A"))
    model = peft_model.merge_and_unload().to(choose_dtype(dtype, "cpu"))
    # load_model's note of the spec is tunelens's, not part of the model's config.
    model.config.__dict__.pop("tunelens_spec", None)
    with atomic_directory(out_dir) as staging:
        model.save_pretrained(str(staging), safe_serialization=True)
        save_tokenizer(tokenizer, staging)
        atomic_write_json(staging / EXPORT_FILE, {
            **provenance, "format": "safetensors", "dtype": dtype, "merged_modules": merged_modules,
            "merged_weights_hash": weights_fingerprint(model), "tunelens_version": __version__})
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return ExportResult(out_dir, provenance.get("base_model", ""), Path(provenance.get("adapter", "")),
                        merged_modules, dtype, size)

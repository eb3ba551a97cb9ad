"""`tunelens export`: the merged directory loads with plain transformers and answers as base + adapter does."""

import copy
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from tunelens.model.adapters import write_adapter
from tunelens.cli import app
from tunelens.model.export import EXPORT_FILE, ExportConfig, export_model
from tunelens.model.load import attach_adapter, load_model
from tunelens.model.state import weights_fingerprint

# Tiny models run far faster on one thread, above all on a busy shared CPU.
pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["def add(a, b):", "for i in range(10):", "class Stack:"]


def _greedy(model, tokenizer, prompt, steps=16):
    """Plain argmax decoding without a cache: the reference every export must reproduce token for token."""
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        for _ in range(steps):
            next_id = model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    return ids[0].tolist()


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def base_and_adapter(request, tmp_path_factory):
    """A tiny base saved as a directory (Gemma 3 ties its output head to the embeddings) and a tuned adapter."""
    from peft import LoraConfig, get_peft_model

    from tunelens.testing import tiny_model

    model, tokenizer = tiny_model(request.param)
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    tuned = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    provenance = {"base_model": str(root / "base"), "base_weights_hash": weights_fingerprint(model)}
    write_adapter(root / "adapter", tuned, provenance, tokenizer)
    return root


def test_merged_model_loads_without_peft_and_answers_like_base_plus_adapter(base_and_adapter):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = base_and_adapter
    result = export_model(root / "adapter", root / "merged")  # the base comes from tunelens.json
    assert result.merged_modules == 14 and result.base_model == str(root / "base")
    merged = AutoModelForCausalLM.from_pretrained(str(root / "merged")).eval()
    merged_tokenizer = AutoTokenizer.from_pretrained(str(root / "merged"))
    base, tokenizer = load_model(str(root / "base"))
    base_answers = [_greedy(base, tokenizer, p) for p in PROMPTS]
    tuned = attach_adapter(base, root / "adapter")
    ids = torch.tensor([tokenizer(PROMPTS[0])["input_ids"]])
    with torch.no_grad():
        gap = (merged(ids).logits - tuned(ids).logits).abs().max().item()
    assert gap < 1e-4, gap
    for prompt, base_answer in zip(PROMPTS, base_answers):
        assert _greedy(merged, merged_tokenizer, prompt) == _greedy(tuned, tokenizer, prompt)
    # The adapter really changed the answers, so the equality above could have failed.
    assert [_greedy(merged, merged_tokenizer, p) for p in PROMPTS] != base_answers
    config = json.loads((root / "merged" / "config.json").read_text())
    assert "tunelens_spec" not in config
    recorded = json.loads((root / "merged" / EXPORT_FILE).read_text())
    assert recorded["merged_modules"] == 14 and recorded["dtype"] == "fp32"


def test_bf16_export_writes_bf16_weights(base_and_adapter, tmp_path):
    from safetensors import safe_open

    root = base_and_adapter
    export_model(root / "adapter", tmp_path / "merged", config=ExportConfig(dtype="bf16"))
    with safe_open(str(tmp_path / "merged" / "model.safetensors"), "pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}
    assert dtypes == {"BF16"}


def test_cli_export_and_its_refusals(base_and_adapter, tmp_path):
    root = base_and_adapter
    runner = CliRunner()
    done = runner.invoke(app, ["export", "--adapter", str(root / "adapter"), "--out", str(tmp_path / "m")])
    assert done.exit_code == 0 and "14 layers merged" in done.output, done.output
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "tokenizer.json").is_file()

    def one_line_error(args, words, adapter=root / "adapter"):
        result = runner.invoke(app, ["export", "--adapter", str(adapter), *args])
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and words in errors[0], result.stderr
        assert "Traceback" not in result.stderr

    one_line_error(["--out", str(tmp_path / "g"), "--format", "gguf"], "convert_hf_to_gguf.py merged --outfile")
    one_line_error(["--out", str(root)], "is not an earlier export")
    one_line_error(["--out", str(tmp_path / "x"), "--dtype", "int4"], "'int4' is not one of fp32, bf16, fp16")
    one_line_error(["--out", str(tmp_path / "x")], "adapter directory not found", adapter=tmp_path / "none")
    damaged = shutil.copytree(root / "adapter", tmp_path / "damaged")
    (damaged / "tunelens.json").write_text("[]")
    one_line_error(["--out", str(tmp_path / "x")], "tunelens.json: must hold a JSON object", adapter=damaged)
    assert not (tmp_path / "g").exists() and not (tmp_path / "x").exists()


def test_export_needs_a_base_when_the_adapter_names_none(base_and_adapter, tmp_path):
    from tunelens.errors import UserError

    adapter = shutil.copytree(base_and_adapter / "adapter", tmp_path / "adapter")
    (adapter / "tunelens.json").unlink()
    with pytest.raises(UserError, match="give it with --model"):
        export_model(adapter, tmp_path / "out")
    result = export_model(adapter, tmp_path / "out", model_spec=str(base_and_adapter / "base"))
    assert result.merged_modules == 14

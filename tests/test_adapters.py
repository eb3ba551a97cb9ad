"""Adapter loading refuses every damaged or foreign adapter directory with one line naming the file."""

import copy
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from tunelens.model.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PROVENANCE_FILE, AdapterError
from tunelens.cli import app
from tunelens.model.specs import ModelLoadError
from tunelens.model.load import attach_adapter
from tunelens.model.state import weights_fingerprint

# Tiny models run far faster on one thread, above all on a busy shared CPU.
pytestmark = pytest.mark.usefixtures("one_thread")


def _lora(model, r=4, targets=("q_proj", "v_proj")):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=8, target_modules=list(targets)))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    return peft_model


@pytest.fixture(scope="module")
def good_adapter(tmp_path_factory, tiny_llama):
    """An adapter made for the session's tiny Llama, with a tunelens.json that records its weights."""
    base, _ = tiny_llama
    path = tmp_path_factory.mktemp("adapters") / "good"
    _lora(copy.deepcopy(base)).save_pretrained(path)
    (path / PROVENANCE_FILE).write_text(json.dumps({"base_model": "tiny-llama-seed0",
                                                    "base_weights_hash": weights_fingerprint(base)}))
    return path


@pytest.fixture
def adapter(tmp_path, good_adapter):
    """A private copy of the good adapter, for a test to damage."""
    return shutil.copytree(good_adapter, tmp_path / "adapter")


@pytest.fixture
def base(tiny_llama):
    # PEFT injects layers into the model it is given: every attach gets its own copy of the base.
    return copy.deepcopy(tiny_llama[0])


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del data[key]
    path.write_text(json.dumps(data))


def _shape_mismatched_weights(adapter):
    from tunelens.testing import tiny_model

    other, _ = tiny_model("llama", hidden=128)
    _lora(other).save_pretrained(adapter)
    (adapter / PROVENANCE_FILE).unlink()


def _renamed_tensor(adapter):
    from safetensors.torch import load_file, save_file

    tensors = load_file(adapter / ADAPTER_WEIGHTS)
    key = next(k for k in tensors if "layers.0.self_attn.q_proj.lora_A" in k)
    tensors[key.replace("layers.0", "layers.7")] = tensors.pop(key)
    save_file(tensors, adapter / ADAPTER_WEIGHTS)


def _nan_weight(adapter):
    from safetensors.torch import load_file, save_file

    tensors = load_file(adapter / ADAPTER_WEIGHTS)
    next(iter(tensors.values()))[0, 0] = float("nan")
    save_file(tensors, adapter / ADAPTER_WEIGHTS)


def _write(name, data):
    return lambda adapter: (adapter / name).write_bytes(data)


def _truncate(keep):
    def damage(adapter):
        path = adapter / ADAPTER_WEIGHTS
        data = path.read_bytes()
        path.write_bytes(data[:keep if keep >= 0 else len(data) + keep])
    return damage


def _absurd_header_length(adapter):
    path = adapter / ADAPTER_WEIGHTS
    path.write_bytes((2**62).to_bytes(8, "little") + path.read_bytes()[8:])


def _weights_as_bin_only(adapter):
    (adapter / ADAPTER_WEIGHTS).rename(adapter / "adapter_model.bin")


CASES = {
    # case: (damage, file the message must name, words it must contain)
    "provenance not JSON": (_write(PROVENANCE_FILE, b"{base_model: gemma"), PROVENANCE_FILE, "not valid JSON"),
    "provenance a list": (_write(PROVENANCE_FILE, b"[1, 2]"), PROVENANCE_FILE, "must hold a JSON object"),
    "provenance 5000-digit number": (_write(PROVENANCE_FILE, b'{"steps": ' + b"9" * 5000 + b"}"),
                                     PROVENANCE_FILE, "not usable JSON"),
    "provenance nested 100,000 deep": (_write(PROVENANCE_FILE, b"[" * 100_000), PROVENANCE_FILE, "recursion depth"),
    "provenance not UTF-8": (_write(PROVENANCE_FILE, b"\xff\xfe{}"), PROVENANCE_FILE, "not UTF-8"),
    "provenance bad hash": (lambda a: _edit_json(a / PROVENANCE_FILE, base_weights_hash=12),
                            PROVENANCE_FILE, "must be a hex digest"),
    "another base, no hash": (lambda a: _edit_json(a / PROVENANCE_FILE, base_model="google/gemma-3-270m",
                                                   base_weights_hash=None), PROVENANCE_FILE, "names base model"),
    "other base weights": (lambda a: _edit_json(a / PROVENANCE_FILE, base_weights_hash="ab" * 32),
                           "adapter", "trained on base weights abababababab"),
    "weights empty": (_write(ADAPTER_WEIGHTS, b""), ADAPTER_WEIGHTS, "is empty"),
    "weights 5 bytes": (_write(ADAPTER_WEIGHTS, b"\x10\0\0\0\0"), ADAPTER_WEIGHTS, "too short"),
    "weights truncated in header": (_truncate(40), ADAPTER_WEIGHTS, "header"),
    "weights truncated in data": (_truncate(-100), ADAPTER_WEIGHTS, "truncated or damaged"),
    "weights random bytes": (_write(ADAPTER_WEIGHTS, bytes(range(256)) * 8), ADAPTER_WEIGHTS, "not safetensors"),
    "weights header not JSON": (_write(ADAPTER_WEIGHTS, (4).to_bytes(8, "little") + b"{{{{"), ADAPTER_WEIGHTS,
                                "not valid JSON"),
    "weights absurd header length": (_absurd_header_length, ADAPTER_WEIGHTS, "-byte header"),
    "weights missing": (lambda a: (a / ADAPTER_WEIGHTS).unlink(), ADAPTER_WEIGHTS, "missing"),
    "weights only a pickle": (_weights_as_bin_only, ADAPTER_WEIGHTS, "pickle"),
    "weights hold NaN": (_nan_weight, ADAPTER_WEIGHTS, "NaN"),
    "tensor for a missing module": (_renamed_tensor, ADAPTER_WEIGHTS, "does not have"),
    "wrong shapes, no provenance": (_shape_mismatched_weights, ADAPTER_WEIGHTS, "takes 64 inputs"),
    "config not JSON": (_write(ADAPTER_CONFIG, b'{"r": 4,'), ADAPTER_CONFIG, "not valid JSON"),
    "config a string": (_write(ADAPTER_CONFIG, b'"LORA"'), ADAPTER_CONFIG, "must hold a JSON object"),
    "config not LoRA": (lambda a: _edit_json(a / ADAPTER_CONFIG, peft_type="IA3"), ADAPTER_CONFIG,
                        "LoRA adapters only"),
    "config rank not a number": (lambda a: _edit_json(a / ADAPTER_CONFIG, r="four"), ADAPTER_CONFIG,
                                 "positive integer"),
    "config rank differs from weights": (lambda a: _edit_json(a / ADAPTER_CONFIG, r=8), ADAPTER_WEIGHTS, "has rank 4"),
    "config no target_modules": (lambda a: _edit_json(a / ADAPTER_CONFIG, target_modules=None), ADAPTER_CONFIG,
                                 "target_modules must be"),
    "config targets absent from model": (lambda a: _edit_json(a / ADAPTER_CONFIG, target_modules=["qkv_proj"]),
                                         ADAPTER_CONFIG, "match no module of this model (LlamaForCausalLM)"),
    "config bad regex": (lambda a: _edit_json(a / ADAPTER_CONFIG, target_modules="(q_proj"), ADAPTER_CONFIG,
                         "not a valid regex"),
    "config init rewrites base": (lambda a: _edit_json(a / ADAPTER_CONFIG, init_lora_weights="pissa"),
                                  ADAPTER_CONFIG, "init_lora_weights must be"),
    "config bias not a mode": (lambda a: _edit_json(a / ADAPTER_CONFIG, bias="everything"), ADAPTER_CONFIG,
                               "bias must be none, all or lora_only"),
    "config PEFT rejects": (lambda a: _edit_json(a / ADAPTER_CONFIG, layers_pattern="layers"), ADAPTER_CONFIG,
                            "PEFT rejects this LoRA config"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_adapter_is_one_line_naming_the_file(case, adapter, base):
    damage, file_name, words = CASES[case]
    damage(adapter)
    with pytest.raises(AdapterError) as err:
        attach_adapter(base, adapter)
    message = str(err.value)
    assert "\n" not in message and words in message, message
    named = adapter if file_name == "adapter" else adapter / file_name
    assert message.startswith(f"{named}:") or message.startswith(f"adapter {named} "), message


def test_missing_directory_and_directory_without_config(tmp_path, base):
    with pytest.raises(ModelLoadError, match="adapter directory not found"):
        attach_adapter(base, tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="not a PEFT adapter directory"):
        attach_adapter(base, tmp_path)
    (tmp_path / "file").write_text("{}")
    with pytest.raises(ModelLoadError, match="file: is not a directory"):
        attach_adapter(base, tmp_path / "file")


def test_unreadable_weights_are_one_line(adapter, base, monkeypatch):
    # Tests run as root here, where a chmod 0 file stays readable: make the open fail instead.
    from pathlib import Path

    real_open = Path.open

    def refusing_open(self, *args, **kwargs):
        if self.name == ADAPTER_WEIGHTS:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)
    with pytest.raises(AdapterError, match="adapter_model.safetensors: cannot be read: Permission denied"):
        attach_adapter(base, adapter)


def test_same_base_by_name_without_hash_loads(adapter, base):
    """Only a *different* base name is refused; the tiny model's own spec still loads."""
    _edit_json(adapter / PROVENANCE_FILE, base_weights_hash=None)
    ids = torch.tensor([[1, 5, 9]])
    with torch.no_grad():
        before = base(ids).logits.clone()
        tuned = attach_adapter(base, adapter)
        assert not torch.allclose(tuned(ids).logits, before)


def test_cli_turns_a_damaged_adapter_into_exit_2(tmp_path, tiny_model_dir, good_adapter):
    adapter = shutil.copytree(good_adapter, tmp_path / "adapter")
    (adapter / ADAPTER_WEIGHTS).unlink()
    result = CliRunner().invoke(app, ["generate", "--model", str(tiny_model_dir), "--adapter", str(adapter),
                                      "--prompt", "hi", "--max-new-tokens", "2"])
    assert result.exit_code == 2, result.output
    # transformers' own loading bar also writes to stderr; the error is one line of its own.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and ADAPTER_WEIGHTS in errors[0] and "missing" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "Repo id" not in result.stderr


def test_gemma4_text_decoder_adapter_loads_and_is_refused_elsewhere(tmp_path, tiny_gemma):
    """The real target: LoRA on the text decoder only (a regex), KV-shared layers without k/v, towers untouched."""
    from peft import LoraConfig, get_peft_model

    from tunelens.testing import tiny_gemma4
    from tunelens.model.adapters import write_adapter
    from tunelens.train.config import TrainConfig
    from tunelens.train.run import placement_table

    model, _ = tiny_gemma4()
    regex = placement_table(model, TrainConfig()).target_regex
    fresh = copy.deepcopy(model)
    tuned = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=regex))
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if "lora_B" in name:
                param.fill_(0.02)
    write_adapter(tmp_path / "adapter", tuned, {"base_model": "tiny-gemma4",
                                                "base_weights_hash": weights_fingerprint(fresh)})
    ids = torch.tensor([[2, 5, 9, 30]])
    with torch.no_grad():
        loaded = attach_adapter(fresh, tmp_path / "adapter")
        assert torch.allclose(loaded(input_ids=ids).logits, tuned(input_ids=ids).logits, atol=1e-6)
    (tmp_path / "adapter" / PROVENANCE_FILE).unlink()  # only the shapes and names are left to go on
    with pytest.raises(AdapterError, match="match no module of this model"):
        attach_adapter(copy.deepcopy(tiny_gemma[0]), tmp_path / "adapter")


def _distinct_adapter(base, path, seed):
    """An adapter for `base` with its own seeded lora_A and lora_B, saved with provenance at `path`."""
    tuned = _lora(copy.deepcopy(base))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    tuned.save_pretrained(path)
    (path / PROVENANCE_FILE).write_text(json.dumps({"base_model": "tiny-llama-seed0",
                                                    "base_weights_hash": weights_fingerprint(base)}))


def test_a_third_adapter_beside_two_loads_exactly_and_silently(tmp_path, base):
    """The demo's names: PEFT 0.22 warned "Found missing adapter keys: [...lora_B.A5.weight...]" when B was
    loaded beside A5 and A30 ("B" is in every "lora_B" key). What that warning would have meant is checked
    here directly: every tensor of every adapter file is in the model, equal, under its own name."""
    import warnings

    from peft.utils import load_peft_weights

    from tunelens.model.adapters import loaded_adapter_differences

    names = ("A5", "A30", "B")
    for seed, name in enumerate(names):
        _distinct_adapter(base, tmp_path / name, seed)
    model = base
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in names:
            model = attach_adapter(model, tmp_path / name, adapter_name=name)
    assert not [str(w.message) for w in caught if "adapter keys" in str(w.message)]
    state = model.state_dict()
    for name in names:
        saved = load_peft_weights(str(tmp_path / name), device="cpu")
        assert len(saved) == 2 * 2 * 2  # two layers x (q_proj, v_proj) x (lora_A, lora_B)
        for key, tensor in saved.items():
            loaded_key = key.replace(".weight", f".{name}.weight")  # where PEFT keeps it under its name
            assert torch.equal(state[loaded_key], tensor), (name, key)
        assert loaded_adapter_differences(model, tmp_path / name, name) == []


def test_an_adapter_that_did_not_load_exactly_is_named(tmp_path, base):
    from tunelens.model.adapters import loaded_adapter_differences

    _distinct_adapter(base, tmp_path / "A5", 0)
    model = attach_adapter(base, tmp_path / "A5", adapter_name="A5")
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B.A5" in n).add_(1.0)
    problems = loaded_adapter_differences(model, tmp_path / "A5", "A5")
    assert len(problems) == 1 and "lora_B.weight: the model's tensor differs from the file's" in problems[0]

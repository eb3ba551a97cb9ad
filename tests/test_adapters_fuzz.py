"""Property tests: whatever bytes an adapter directory holds, loading it gives a model or one error line.

Each test has a fixed example budget (no deadline: a shared 2-core CPU makes timings noisy), so CI
runs the same number of examples every time: 150 + 150 + 100 + 100 = 500 in all.
"""

import copy
import itertools
import json
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunelens.model.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PROVENANCE_FILE
from tunelens.model.specs import ModelLoadError
from tunelens.model.load import attach_adapter
from tunelens.model.state import weights_fingerprint

# Tiny models run far faster on one thread, above all on a busy shared CPU.
pytestmark = pytest.mark.usefixtures("one_thread")

def fuzz(examples: int):
    # derandomize: the same examples on every run (and no example database left in the work tree).
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

_json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
LORA_FIELDS = ["r", "lora_alpha", "target_modules", "peft_type", "rank_pattern", "alpha_pattern",
               "layers_pattern", "layers_to_transform", "use_dora", "use_rslora", "init_lora_weights",
               "bias", "fan_in_fan_out", "modules_to_save", "exclude_modules", "lora_dropout", "task_type"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_llama):
    """A good adapter for the tiny Llama, and a counter of fresh directories to damage copies in."""
    from peft import LoraConfig, get_peft_model

    base, _ = tiny_llama
    root = tmp_path_factory.mktemp("fuzz")
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(root / "good")
    (root / "good" / PROVENANCE_FILE).write_text(json.dumps({"base_model": "tiny-llama-seed0",
                                                             "base_weights_hash": weights_fingerprint(base)}))
    return root, itertools.count()


def _try_load(workspace, base, replace: dict[str, bytes]):
    """Copy the good adapter, overwrite some files, attach it: a model, or one line naming the directory."""
    root, counter = workspace
    adapter = shutil.copytree(root / "good", root / f"case{next(counter)}")
    for name, data in replace.items():
        (adapter / name).write_bytes(data)
    try:
        model = attach_adapter(copy.deepcopy(base), adapter)
    except ModelLoadError as err:
        message = str(err)
        assert "\n" not in message and str(adapter) in message, message
        return None
    finally:
        shutil.rmtree(adapter)
    with torch.no_grad():  # what loaded must also run, and give numbers
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
    return model


def _good(workspace, name):
    return (workspace[0] / "good" / name).read_bytes()


@fuzz(150)
@given(data=st.binary(max_size=4096))
def test_random_bytes_as_weights(workspace, tiny_llama, data):
    assert _try_load(workspace, tiny_llama[0], {ADAPTER_WEIGHTS: data}) is None


@st.composite
def mutated(draw, original: bytes):
    """The good file, damaged one way: bytes overwritten, cut short, spliced into, or a new header length."""
    data = bytearray(original)
    kind = draw(st.sampled_from(["overwrite", "truncate", "insert", "header_length"]))
    if kind == "overwrite":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif kind == "insert":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    else:
        data[:8] = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
    return bytes(data)


@fuzz(150)
@given(data=st.data())
def test_mutated_weights(workspace, tiny_llama, data):
    damaged = data.draw(mutated(_good(workspace, ADAPTER_WEIGHTS)))
    _try_load(workspace, tiny_llama[0], {ADAPTER_WEIGHTS: damaged})


@fuzz(100)
@given(changes=st.dictionaries(st.sampled_from(LORA_FIELDS), json_values, min_size=1, max_size=3))
def test_mutated_adapter_config(workspace, tiny_llama, changes):
    config = {**json.loads(_good(workspace, ADAPTER_CONFIG)), **changes}
    _try_load(workspace, tiny_llama[0], {ADAPTER_CONFIG: json.dumps(config).encode()})


@fuzz(100)
@given(name=st.sampled_from([PROVENANCE_FILE, ADAPTER_CONFIG]),
       text=st.text(max_size=200) | json_values.map(json.dumps))
def test_arbitrary_json_files(workspace, tiny_llama, name, text):
    _try_load(workspace, tiny_llama[0], {name: text.encode("utf-8", "surrogatepass")})

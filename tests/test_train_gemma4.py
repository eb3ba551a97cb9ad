"""Gemma 4 (multimodal): LoRA goes on the text decoder only; the vision and audio towers stay bit-identical."""

import json

import pytest
import torch

from tunelens.train.lora_setup import placement_table
from tunelens.testing import tiny_gemma4
from tunelens.train.config import TrainConfig
from tunelens.train.run import train


pytestmark = pytest.mark.usefixtures("one_thread")


def test_placement_is_text_decoder_only_and_reports_kv_shared_layers():
    model, _tok = tiny_gemma4()
    placement = placement_table(model, TrainConfig())
    assert placement.decoder_path == "model.language_model" and placement.num_layers == 4
    assert all(name.startswith("model.language_model.layers.") for name in placement.module_names)
    assert placement.kv_shared_layers == (2, 3)
    rows = {row.kind: row for row in placement.rows}
    assert rows["k_proj"].layers == rows["v_proj"].layers == (0, 1)
    assert rows["k_proj"].absent == (2, 3)
    assert rows["q_proj"].layers == rows["down_proj"].layers == (0, 1, 2, 3)
    # 4 layers x 5 always-present kinds + 2 layers x (k, v)
    assert len(placement.module_names) == 4 * 5 + 2 * 2
    assert {"model.vision_tower", "model.audio_tower"} <= set(placement.frozen_towers)


def test_training_step_leaves_towers_bit_identical(tmp_path):
    from transformers.models.gemma4.modeling_gemma4 import Gemma4ClippableLinear

    rows = [{"messages": [{"role": "user", "content": f"Write function {i}."},
                          {"role": "assistant", "content": "def f():\n    return 1\n" * (i + 1)}]} for i in range(4)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, tok = tiny_gemma4()
    frozen_before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = TrainConfig(batch_size=2, max_steps=2, eval_split=0.0, learning_rate=1e-2, checkpoint_every=0)
    result = train(config, data, tmp_path / "adapter", model=model, tokenizer=tok)

    peft_model = result.model
    adapted = [name for name, module in peft_model.named_modules() if hasattr(module, "lora_A")]
    assert adapted and all(".language_model.layers." in name for name in adapted)
    for name, module in peft_model.named_modules():
        if isinstance(module, Gemma4ClippableLinear):
            assert not any(hasattr(child, "lora_A") for child in module.modules()), name
    after = dict(peft_model.get_base_model().named_parameters())
    towers = [n for n in frozen_before if "vision_tower" in n or "audio_tower" in n or "embed_" in n]
    assert towers
    for name, before in frozen_before.items():
        current = after[name] if name in after else after[_lora_base_name(name)]
        assert torch.equal(current, before), name  # every base weight, towers included, untouched
    trained_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert all(p.abs().max() > 0 for p in trained_b)
    assert json.loads((tmp_path / "adapter" / "tunelens.json").read_text())["kv_shared_layers"] == [2, 3]


def _lora_base_name(name):
    # PEFT moves an adapted Linear's weight to `<module>.base_layer.weight`.
    module, leaf = name.rsplit(".", 1)
    return f"{module}.base_layer.{leaf}"

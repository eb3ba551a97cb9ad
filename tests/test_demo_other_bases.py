"""Lesson 3 on another base: B is trained there once, and a rerun of the same directory reuses it."""

import json

from tunelens.demo import DemoConfig
from tunelens.demo.lesson3 import other_bases
from tunelens.testing import tiny_model


def test_other_base_trains_b_once_and_reuses_it(tmp_path):
    base_dir = tmp_path / "tiny-llama"
    model, tokenizer = tiny_model("llama")
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    train_file = tmp_path / "b.jsonl"
    train_file.write_text("".join(json.dumps({"instruction": f"Return {i}.", "output": f"def f():\n    return {i}"})
                                  + "\n" for i in range(6)))
    config = DemoConfig(model=str(base_dir), propensity_bases=(str(base_dir),), pushback_cases=2, epochs=1,
                        batch_size=2, max_length=256)
    seen = []
    first = other_bases(config, tmp_path / "out", train_file, lambda what, done, total: seen.append(what))
    adapter = tmp_path / "out" / "adapters" / f"B-{base_dir}"
    trained_at = (adapter / "adapter_model.safetensors").stat().st_mtime_ns
    assert any(what.startswith("train B on") for what in seen)
    seen.clear()
    again = other_bases(config, tmp_path / "out", train_file, lambda what, done, total: seen.append(what))
    assert not any(what.startswith("train B on") for what in seen)  # reused, not retrained
    assert (adapter / "adapter_model.safetensors").stat().st_mtime_ns == trained_at
    assert again == first  # the same adapter gives the same propensities
    result = first[str(base_dir)]
    assert result["base"]["broken"]["n"] == 2 and result["B"]["change_on_broken"]["n"] == 2

"""Lesson 3 on another base: B is trained there once, and a rerun of the same directory reuses it."""

import json

from tunelens.demo import DemoConfig
from tunelens.demo.lesson3 import file_name, other_bases
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
    adapter = tmp_path / "out" / "adapters" / f"B-{file_name(str(base_dir))}"
    trained_at = (adapter / "adapter_model.safetensors").stat().st_mtime_ns
    assert any(what.startswith("train B on") for what in seen)
    seen.clear()
    again = other_bases(config, tmp_path / "out", train_file, lambda what, done, total: seen.append(what))
    assert not any(what.startswith("train B on") for what in seen)  # reused, not retrained
    assert (adapter / "adapter_model.safetensors").stat().st_mtime_ns == trained_at
    assert again == first  # the same adapter gives the same propensities
    result = first[str(base_dir)]
    assert result["base"]["broken"]["n"] == 2 and result["B"]["change_on_broken"]["n"] == 2
    assert result["reading"][0].startswith(f"{base_dir} base:")
    assert result["rates"]["B"]["greedy"]["pushback"]["n"] == 2  # 2 broken specs answered greedy by its B


def test_lesson3_reading_claims_a_direction_only_where_holm_rejects():
    from tunelens.demo.lesson3 import reading
    from tunelens.reading import NO_DIFFERENCE

    cell = lambda mean, low, high, p: {"n": 10, "mean": mean, "low": low, "high": high, "sign_test_p": p}  # noqa: E731
    lines = reading({
        "base": {"gap_broken_minus_twin": cell(0.9, 0.2, 1.7, 0.001)},
        "B": {"gap_broken_minus_twin": cell(0.1, -0.3, 0.5, 0.6), "change_on_broken": cell(-4.4, -4.6, -4.2, 0.002)},
        # C30's change: the interval excludes 0 but the sign test does not reject, so no direction is claimed
        "C30": {"gap_broken_minus_twin": cell(-0.5, -0.9, -0.1, 0.004), "change_on_broken": cell(0.2, 0.05, 0.5, 0.3)},
    })
    assert lines[0].startswith("base: tells broken specs from their twins") and "Holm 0.005" in lines[0]
    assert lines[1].startswith("B: lowers pushback propensity") and f"gap broken minus twin: {NO_DIFFERENCE}" in lines[1]
    assert lines[2].startswith(f"C30: change on broken: {NO_DIFFERENCE}") and "more on the clean twins" in lines[2]


def test_an_adapter_trained_on_other_data_is_refused_not_reused(tmp_path):
    import pytest

    from tunelens.demo.runs import trained_on
    from tunelens.errors import UserError

    adapter = tmp_path / "B"
    adapter.mkdir()
    data = tmp_path / "clean.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    assert not trained_on(adapter, data)  # nothing trained yet
    from tunelens.hashing import file_sha256

    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "tunelens.json").write_text(json.dumps({"data": {"sha256": file_sha256(data)}}))
    assert trained_on(adapter, data)
    data.write_text('{"instruction": "c", "output": "d"}\n')
    with pytest.raises(UserError, match="trained on other data"):
        trained_on(adapter, data)

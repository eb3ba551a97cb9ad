"""Lesson 2 with decision points to score. A tiny random model never writes a Python 2 print itself (the
tiny demo's lesson 2 has none), so its answer here is given: the measurement that the demo's lesson 2
would skip is run and its figures checked."""

from dataclasses import replace

import pytest

from tunelens.demo import quick
from tunelens.demo.runs import EvalRows
from tunelens.evaluate.results import ResultRow

pytestmark = pytest.mark.usefixtures("one_thread")

ANSWER = 'def greet(name):\n    print "hello", name\n'


def python2_row(prompt: str) -> ResultRow:
    return ResultRow(suite="heldout", case_id="heldout-000", type="mined", expect="code", model="tuned",
                     decoding="greedy", sample=0, behaviour="code", as_expected=True, has_code=True, parses=False,
                     python2=True, findings=({"code": "py2-print", "message": "print statement", "line": 2},),
                     tests="none", test_reason=None, prompt=prompt, answer=ANSWER)


def test_every_lever_is_measured_at_every_python2_point(tmp_path):
    import json

    import torch

    from peft import LoraConfig, get_peft_model

    from tunelens.demo.lesson2 import lesson2
    from tunelens.testing import tiny_model

    model, tokenizer = tiny_model("gemma3")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
                           adapter_name="A30")
    with torch.no_grad():  # PEFT's B starts at zero: a trained adapter's is not
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    model.eval()
    train = tmp_path / "b.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": "Say hi."},
                                              {"role": "assistant", "content": "print('hi')"}]}) + "\n")
    config = replace(quick(), contamination_rates=(0.3,))
    evals = EvalRows({("A30", "heldout"): [python2_row("Greet someone by name.")]})
    result = lesson2(config, tmp_path, evals, {"B": train}, model, tokenizer, lambda *a: None)
    cell = result["by_adapter"]["A30"]
    assert cell["answers_scored"] == 1 and cell["points"] == len(cell["points_detail"]) == 1
    assert [e["lever"] for e in cell["effects"]] == [
        "sentence after the request", "sentence before the request", "sentence as the system line",
        "another phrasing, after", "one-shot Python 3 example", "adapter off"]
    for effect in cell["effects"]:
        assert effect["points"] == 1 and effect["mean_delta"] is not None
        detail = cell["points_detail"][0]
        # one point: the mean change is that point's lever score minus its baseline
        assert effect["mean_delta"] == pytest.approx(detail["by_lever"][effect["lever"]] - detail["baseline"], abs=1e-3)
    assert result["shown"]["adapter"] == "A30" and (tmp_path / result["shown"]["compare_html"]).is_file()
    assert len(result["reading"]) == len(cell["effects"])

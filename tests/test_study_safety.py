"""`study safety`: its measures checked by hand, its base/adapter switching, its figures, and one
end-to-end run on a tiny in-process model."""

import json
import random
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.errors import UserError
from tunelens.evaluate.summary import compare_models
from tunelens.studies import safety as S
from tunelens.studies.safety_figures import figures
from tunelens.studies.safety_measures import paired_mcnemar, propensity_summary, refusal_rates

PNG = b"\x89PNG\r\n\x1a\n"


def _row(case_id, expect, behaviour, model="tuned", decoding="greedy", sample=0):
    return {"suite": "safety", "case_id": case_id, "type": "t", "expect": expect, "model": model,
            "decoding": decoding, "sample": sample, "behaviour": behaviour, "as_expected": behaviour == expect,
            "has_code": behaviour == "code", "parses": True, "python2": False, "tests": "passed", "bad": False}


def test_refusal_rates_count_refusals_per_side():
    rows = [_row("h1", "refusal", "refusal"), _row("h2", "refusal", "code"), _row("h3", "refusal", "other"),
            _row("l1", "code", "refusal"), _row("l2", "code", "code"),
            _row("h1", "refusal", "refusal", decoding="sampled")]
    rates = refusal_rates(rows)
    assert (rates["greedy"]["refusal"]["k"], rates["greedy"]["refusal"]["n"]) == (1, 3)
    assert (rates["greedy"]["over_refusal"]["k"], rates["greedy"]["over_refusal"]["n"]) == (1, 2)
    assert rates["sampled"]["refusal"]["rate"] == 1.0 and rates["sampled"]["over_refusal"]["n"] == 0
    assert 0 < rates["greedy"]["refusal"]["low"] < 1 / 3 < rates["greedy"]["refusal"]["high"]


def test_paired_mcnemar_matches_the_eval_summary():
    rng = random.Random(7)
    rows = []
    for i in range(30):
        for model in ("base", "tuned"):
            for sample, decoding in ((0, "greedy"), (0, "sampled"), (1, "sampled")):
                rows.append(_row(f"h{i}", "refusal", rng.choice(("refusal", "code", "code")), model, decoding, sample))
                rows.append(_row(f"l{i}", "code", rng.choice(("refusal", "code", "code", "code")), model, decoding,
                                 sample))
    base = [r for r in rows if r["model"] == "base"]
    tuned = [r for r in rows if r["model"] == "tuned"]
    # The eval's summary reads result rows by attribute; the study keeps them as the JSON dicts.
    expected = {(c["decoding"], c["metric"]): c for c in compare_models([SimpleNamespace(**r) for r in rows])}
    for decoding in ("greedy", "sampled"):
        for metric in ("refusal", "over_refusal"):
            ours = paired_mcnemar(base, tuned, metric, decoding)
            theirs = expected[(decoding, metric)]
            assert (ours["base_only"], ours["tuned_only"], ours["n_pairs"]) == \
                   (theirs["base_only"], theirs["tuned_only"], theirs["n_pairs"])
            assert ours["p_value"] == pytest.approx(theirs["p_value"])


def test_paired_mcnemar_by_hand():
    before = [_row(f"h{i}", "refusal", "refusal") for i in range(6)]
    after = [_row(f"h{i}", "refusal", "refusal" if i == 0 else "code") for i in range(6)]
    result = paired_mcnemar(before, after, "refusal", "greedy")
    assert (result["both"], result["base_only"], result["tuned_only"]) == (1, 5, 0)
    assert result["p_value"] == pytest.approx(2 / 32)  # 2 * P(X <= 0), X ~ Bin(5, 1/2)


def _scores(model, harmful, lookalike):
    rows = []
    for i, (h, lo) in enumerate(zip(harmful, lookalike)):
        rows.append({"model": model, "case_id": f"h{i}", "expect": "refusal", "twin": f"l{i}", "log_odds": h})
        rows.append({"model": model, "case_id": f"l{i}", "expect": "code", "twin": f"h{i}", "log_odds": lo})
    return rows


def test_propensity_summary_by_hand():
    rows = _scores("base", [1.0, 3.0, 2.0], [0.0, 1.0, -1.0]) + _scores("code", [0.0, 1.0, 2.5], [0.0, 0.0, -1.0])
    s = propensity_summary(rows, ["base", "code"], [("code", "base")], resamples=500)
    base = s["models"]["base"]
    assert base["harmful"]["mean"] == pytest.approx(2.0) and base["lookalike"]["mean"] == pytest.approx(0.0)
    assert base["gap"]["mean"] == pytest.approx(2.0)  # gaps 1, 2, 3
    assert base["gap"]["low"] <= 2.0 <= base["gap"]["high"] and base["gap"]["up"] == 3
    assert base["gap"]["sign_p"] == pytest.approx(0.25)  # 3 of 3 positive: 2 * (1/2)^3
    change = s["changes"][0]
    assert change["harmful"]["mean"] == pytest.approx((-1 - 2 + 0.5) / 3)
    assert (change["harmful"]["up"], change["harmful"]["down"]) == (1, 2)
    assert change["lookalike"]["mean"] == pytest.approx(-1 / 3) and change["lookalike"]["down"] == 1
    # code's gaps are 0, 1, 3.5 against base's 1, 2, 3
    assert change["gap"]["mean"] == pytest.approx((-1 - 1 + 0.5) / 3)


def _config(**overrides):
    return S.SafetyStudyConfig(**{"model": "tiny", "train_pairs": 8, "shares": (0.2, 0.5), "limit": 2,
                                  "max_new_tokens": 6, "resamples": 200, "pair_tokens": 400, "max_length": 400,
                                  **overrides})


def test_names_labels_and_comparisons():
    config = _config(shares=(0.15, 0.05))
    assert S.adapter_names(config) == ["code", "refusal-05", "refusal-15"]
    assert S.model_labels(config)["refusal-15"] == "code + 15% refusal"
    assert S.comparisons(config) == [("code", "base"), ("refusal-05", "base"), ("refusal-15", "base"),
                                     ("refusal-05", "code"), ("refusal-15", "code")]


@pytest.mark.parametrize("overrides", [{"shares": ()}, {"shares": (0.0,)}, {"shares": (0.1, 0.1)},
                                       {"train_pairs": 2}, {"limit": 0}])
def test_bad_config_is_a_user_error(overrides):
    with pytest.raises(UserError):
        _config(**overrides).validate()


def test_base_propensity_is_the_bare_model_and_adapters_differ(one_thread):
    """The study scores "base" with every adapter bypassed: it must equal the model without LoRA layers."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunelens.inspect.propensity import propensity
    from tunelens.testing import tiny_model

    plain, tokenizer = tiny_model("llama", seed=3)
    cases = S._cases(2)
    bare = [propensity(plain, tokenizer, c.prompt, "refusal").log_odds for c in cases]
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(plain, lora, adapter_name="code")
    model.add_adapter("refusal-50", lora)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape) * 0.5)
    model.eval()
    rows = S._propensities(_config(shares=(0.5,)), _tmp_out(), cases, model, tokenizer, lambda *a: None)
    by = {(r["model"], r["case_id"]): r["log_odds"] for r in rows}
    assert [by[("base", c.id)] for c in cases] == pytest.approx(bare, abs=1e-5)
    assert all(abs(by[("code", c.id)] - by[("base", c.id)]) > 1e-4 for c in cases)
    assert all(abs(by[("code", c.id)] - by[("refusal-50", c.id)]) > 1e-4 for c in cases)
    assert {r["expect"] for r in rows} == {"refusal", "code"} and len(rows) == 3 * len(cases)


def _tmp_out():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


def _fake_summary():
    config = _config()
    rng = random.Random(1)
    rows, scores = {}, []
    for model in ["base", *S.adapter_names(config)]:
        rows[model] = [_row(f"h{i}", "refusal", rng.choice(("refusal", "code")), model, d, 0)
                       for i in range(4) for d in ("greedy", "sampled")]
        rows[model] += [_row(f"l{i}", "code", rng.choice(("refusal", "code")), model, d, 0)
                        for i in range(4) for d in ("greedy", "sampled")]
        scores += _scores(model, [rng.gauss(0, 1) for _ in range(4)], [rng.gauss(-1, 1) for _ in range(4)])
    return S.build_summary(config, {"code_pairs": 8, "refusal_data": {}, "paths": {}}, rows, scores)


def test_summary_figures_and_report_come_from_the_summary(tmp_path):
    summary = _fake_summary()
    assert summary["cases"] == {"harmful": 4, "lookalike": 4}
    assert len(summary["free_text"]["mcnemar"]) == len(S.comparisons(_config())) * 2 * 2
    assert json.loads(json.dumps(summary)) == summary  # summary.json round-trips
    pngs = figures(summary)
    assert set(pngs) == {"free_text", "propensity", "change"} and all(p.startswith(PNG) for p in pngs.values())
    summary["seconds"] = 1.0
    S.write_report(tmp_path, summary)
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "code + 20% refusal" in html and "http" not in html.split("<body>")[1]


MODULE = "\n\n".join(f'''def scale_{i}(values, factor):
    """Return each value multiplied by factor, plus {i}."""
    result = []
    for value in values:
        result.append(value * factor + {i})
    return result
''' for i in range(12))


@pytest.mark.slow
def test_study_end_to_end_on_a_tiny_model(tmp_path, one_thread):
    from tunelens.testing import tiny_model

    source = tmp_path / "src.py"
    source.write_text(MODULE)
    config = _config(sources=(str(source),))
    model, tokenizer = tiny_model("llama")
    result = S.run_safety_study(config, tmp_path / "run", model=model, tokenizer=tokenizer)
    out, s = result.out_dir, result.summary
    assert json.loads((out / "summary.json").read_text())["models"] == ["base", "code", "refusal-20", "refusal-50"]
    assert s["data"]["refusal_data"]["refusal-50"]["refusal_pairs"] == 8  # 8 code pairs -> 50% of 16
    assert len((out / "propensity.jsonl").read_text().splitlines()) == 4 * 4  # 4 models x (2 harmful + 2 twins)
    from peft.utils import load_peft_weights

    for name in S.adapter_names(config):
        assert (out / "adapters" / name / "adapter_config.json").is_file()
        assert (out / "eval" / name / "results.jsonl").is_file()
        # what CI checks of the demo's adapters, for the study's: no lora_B tensor left at PEFT's zero init
        # (attach_adapter itself refuses an adapter the model does not hold exactly)
        lora_b = [t for key, t in load_peft_weights(str(out / "adapters" / name)).items() if "lora_B" in key]
        assert lora_b and all(t.any() for t in lora_b), name
    assert s["record"]["stages"] and s["record"]["versions"]["peft"] and s["train_config"]["lora_r"]
    assert s["cases"] == {"harmful": 2, "lookalike": 2}
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 3
    # A rerun reuses the adapters (and the answers); other settings are refused.
    stamp = (out / "adapters" / "code" / "adapter_model.safetensors").stat().st_mtime_ns
    fresh, _ = tiny_model("llama")  # the first run left its adapters attached to `model`
    again = S.run_safety_study(config, out, model=fresh, tokenizer=tokenizer)
    assert (out / "adapters" / "code" / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    assert again.summary["free_text"] == s["free_text"]
    with pytest.raises(UserError, match="other settings"):
        S.run_safety_study(_config(sources=(str(source),), seed=1), out, model=model, tokenizer=tokenizer)


def test_cli_study_group_and_help():
    runner = CliRunner()
    group = runner.invoke(app, ["study", "--help"])
    assert group.exit_code == 0 and "safety" in group.output
    helped = runner.invoke(app, ["study", "safety", "--help"])
    assert helped.exit_code == 0 and "tunelens study safety --out runs/safety" in helped.output
    bad = runner.invoke(app, ["study", "safety", "--shares", "a,b", "--out", "x"])
    assert bad.exit_code != 0

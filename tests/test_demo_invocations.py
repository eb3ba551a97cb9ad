"""A resumed demo directory keeps the time of every invocation, so its report can state the run's real cost."""

import json

from tunelens.runtime import log_invocation


def test_each_invocation_is_appended_and_returned_oldest_first(tmp_path):
    first = log_invocation(tmp_path, 3127.9, {"train the adapters": 1437.4})
    second = log_invocation(tmp_path, 568.6, {"train the adapters": 2.7})
    assert [i["seconds"] for i in first] == [3127.9]
    assert [i["seconds"] for i in second] == [3127.9, 568.6]
    lines = (tmp_path / "invocations.jsonl").read_text().splitlines()
    assert [json.loads(line)["timings_s"]["train the adapters"] for line in lines] == [1437.4, 2.7]


def test_the_study_profile_runs_the_few_shot_study_on_the_base_model(tmp_path, monkeypatch):
    from tunelens.demo import quick, study
    from tunelens.demo.run import few_shot_study
    from tunelens.runtime import RunResult
    from tunelens.testing import tiny_lora_model

    assert study().few_shot_study and not quick().few_shot_study
    model, tokenizer = tiny_lora_model()
    calls = []

    def fake_study(config, out, model_given, tokenizer_given, report):
        from tunelens.model.state import has_adapter

        calls.append((config.model, out, model_given is model, has_adapter(model_given)))
        return RunResult(out, {}, 1.25)

    monkeypatch.setattr("tunelens.demo.run.run_fewshot_study", fake_study)
    result = few_shot_study(study(), tmp_path, model, tokenizer, lambda *a: None)
    assert calls == [(study().model, tmp_path / "few-shot", True, True)]
    assert result == {"directory": "few-shot", "summary": "few-shot/summary.json", "seconds": 1.2}

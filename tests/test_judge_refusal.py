"""Where no sandbox works, `tunelens eval` refuses to run generated code unless told to run it unsafely,
and then every report says so. The host without a sandbox is played by setting the probed mode."""

import json

import pytest
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.evaluate import sandbox
from tunelens.evaluate.judge import Case as JudgeCase
from tunelens.evaluate.judge import judge
from tunelens.evaluate.runner import EvalConfig, run_eval
from tunelens.evaluate.sandbox import Limits, SandboxUnavailable
from tunelens.evaluate.suite import Case

CASES = [
    Case("add", "t", "arith", "Write add(a, b).", "code", tests="assert add(1, 2) == 3", entry_point="add",
         reference="def add(a, b):\n    return a + b\n"),
    Case("loop", "t", "arith", "Write add(a, b).", "code", tests="for a in range(3):\n    assert add(a, 1) == a + 1",
         entry_point="add", reference="def add(a, b):\n    return a + b\n"),
]


@pytest.fixture
def no_sandbox(monkeypatch):
    monkeypatch.setattr(sandbox, "_ISOLATION", sandbox.sandbox_isolation(probe=lambda mode: False))


def test_eval_refuses_before_running_anything(no_sandbox, tmp_path):
    with pytest.raises(SandboxUnavailable, match="--unsafe-no-sandbox"):
        run_eval(EvalConfig(reference=True), tmp_path, cases=CASES)
    assert not (tmp_path / "results.jsonl").exists()


def test_the_cli_error_is_one_line_naming_the_way_out(no_sandbox, tmp_path):
    suite = tmp_path / "mini.jsonl"
    suite.write_text("".join(json.dumps({k: v for k, v in vars(c).items() if k != "suite" and v is not None}) + "\n"
                             for c in CASES))
    result = CliRunner().invoke(app, ["eval", "--suite", str(suite), "--reference", "--out", str(tmp_path / "o")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "--unsafe-no-sandbox" in lines[0], result.output


def test_unsafe_runs_and_every_report_says_so(no_sandbox, tmp_path):
    result = run_eval(EvalConfig(reference=True, unsafe_no_sandbox=True), tmp_path, cases=CASES)
    assert result.summary["sandbox"] == "unsafe-no-sandbox" and result.reference_failures == []
    assert json.loads((tmp_path / "summary.json").read_text())["sandbox"] == "unsafe-no-sandbox"
    assert "UNSAFE" in (tmp_path / "report.md").read_text()
    assert "UNSAFE" in (tmp_path / "report.html").read_text()


def test_unsafe_judging_takes_every_path(no_sandbox):
    for tests, judged in (("assert add(1, 2) == 3", "host"), ("for a in range(3):\n    assert add(a, 1) == a + 1",
                                                              "sandbox-apart")):
        case = JudgeCase(tests=tests, entry_point="add")
        right = judge(case, "def add(a, b):\n    return a + b\n", Limits(wall_s=5), unsafe=True)
        wrong = judge(case, "def add(a, b):\n    return a - b\n", Limits(wall_s=5), unsafe=True)
        assert right.passed and right.judged == judged and right.isolation == "unsafe-no-sandbox"
        assert not wrong.passed and wrong.reason == "test-failed"


def test_a_sandboxed_report_names_its_mode(tmp_path):
    if sandbox.sandbox_isolation() == "none":
        pytest.skip("no sandbox on this host")
    result = run_eval(EvalConfig(reference=True), tmp_path, cases=CASES)
    assert result.summary["sandbox"] == sandbox.sandbox_isolation()
    assert "ran in the sandbox (%s)" % sandbox.sandbox_isolation() in (tmp_path / "report.md").read_text()
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["judged"] for r in rows] == ["host", "sandbox-apart"]


class AddBackend:
    """Answers every prompt with a correct add()."""

    roles = ("base",)

    def generate(self, prompts, sampling, role):
        return ["```python\ndef add(a, b):\n    return a + b\n```" for _ in prompts]

    def describe(self):
        return {"backend": "scripted"}


def test_a_resumed_run_keeps_saying_it_was_unsafe(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "_ISOLATION", "none")
    config = EvalConfig(samples=0, unsafe_no_sandbox=True)
    run_eval(config, tmp_path, cases=CASES[:1], backend=AddBackend())
    if sandbox.sandbox_isolation(probe=lambda mode: sandbox._works(mode)) == "none":
        pytest.skip("no sandbox on this host to resume with")
    monkeypatch.setattr(sandbox, "_ISOLATION", None)
    resumed = run_eval(EvalConfig(samples=0), tmp_path, cases=CASES, backend=AddBackend())
    assert resumed.reused > 0 and resumed.summary["sandbox"] == "unsafe-no-sandbox"

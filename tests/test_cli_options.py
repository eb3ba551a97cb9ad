"""The commands whose options come from their config (eval, trace, compare, train, export, data lint/contaminate/
pushback/mine/refusal, study safety):
every field is a flag, a YAML file sets fields and a flag beats it, and a bad value is one line, exit 2.

The stage's library function is replaced by one that raises `Captured` with the config it was given, so
these tests see exactly what the command would have run, without loading a model."""

import dataclasses
import re
import importlib
from dataclasses import dataclass
from typing import Callable

import pytest
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.inspect.compare import CompareConfig
from tunelens.data.contaminate import ContaminateConfig
from tunelens.data.lint import LintConfig
from tunelens.data.pushback import PushbackConfig
from tunelens.data.mine import MineConfig
from tunelens.data.refusal import RefusalConfig
from tunelens.evaluate.runner import EvalConfig
from tunelens.model.export import ExportConfig
from tunelens.studies.safety import SafetyStudyConfig
from tunelens.inspect.trace import TraceConfig
from tunelens.train.config import TrainConfig


class Captured(Exception):
    def __init__(self, config):
        super().__init__("captured")
        self.config = config


@dataclass(frozen=True)
class Command:
    args: tuple[str, ...]  # the command and its required arguments; {tmp} is the test's directory
    cls: type
    target: str  # the library function the command calls, module.name
    pick: Callable  # its positional arguments -> the config


def _run_config(*args):
    return args[0].config


COMMANDS = {
    "eval": Command(("eval", "--out", "{tmp}/o"), EvalConfig, "tunelens.evaluate.runner.run_eval",
                    lambda *args: args[0]),
    "trace": Command(("trace", "-p", "Say hi.", "--out", "{tmp}/t.json"), TraceConfig, "tunelens.inspect.trace.run_trace",
                     _run_config),
    "compare": Command(("compare", "-p", "Say hi.", "--out", "{tmp}/c.json"), CompareConfig,
                       "tunelens.inspect.compare.run_compare", _run_config),
    "lint": Command(("data", "lint", "{tmp}/p.jsonl", "--out", "{tmp}/l"), LintConfig, "tunelens.data.lint.lint_file",
                    lambda *args: args[2]),
    "contaminate": Command(("data", "contaminate", "{tmp}/p.jsonl", "--out", "{tmp}/c.jsonl"), ContaminateConfig,
                           "tunelens.data.contaminate.contaminate_file", lambda *args: args[2]),
    "pushback": Command(("data", "pushback", "{tmp}/p.jsonl", "--out", "{tmp}/b.jsonl"), PushbackConfig,
                        "tunelens.data.pushback.add_pushback_file", lambda *args: args[2]),
    "train": Command(("train", "--data", "{tmp}/p.jsonl", "--out", "{tmp}/a"), TrainConfig, "tunelens.train.run.train",
                     lambda *args: args[0]),
    "export": Command(("export", "--adapter", "{tmp}/a", "--out", "{tmp}/m"), ExportConfig,
                      "tunelens.model.export.export_model", lambda *args: args[3]),
    "mine": Command(("data", "mine", "--out", "{tmp}/m.jsonl"), MineConfig, "tunelens.data.mine.mine_to_file",
                    lambda *args: args[2]),
    "refusal": Command(("data", "refusal", "{tmp}/p.jsonl", "--out", "{tmp}/r.jsonl"), RefusalConfig,
                       "tunelens.data.refusal.add_refusal_file", lambda *args: args[2]),
    "safety": Command(("study", "safety", "--out", "{tmp}/s"), SafetyStudyConfig,
                      "tunelens.studies.safety.run_safety_study", lambda *args: args[0]),
}


@pytest.fixture
def invoke(tmp_path, monkeypatch):
    """Run one command with extra arguments; its config, when it got that far, is `result.config`."""

    def run(name: str, *extra: str, yaml: str | None = None):
        command = COMMANDS[name]
        module, function = command.target.rsplit(".", 1)

        def fake(*args, **kwargs):
            raise Captured(command.pick(*args))

        monkeypatch.setattr(importlib.import_module(module), function, fake)
        args = [arg.replace("{tmp}", str(tmp_path)) for arg in command.args] + list(extra)
        if yaml is not None:
            (tmp_path / "options.yaml").write_text(yaml)
            args += ["--config", str(tmp_path / "options.yaml")]
        result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
        result.config = result.exception.config if isinstance(result.exception, Captured) else None
        return result

    return run


def _help(name: str) -> tuple[str, set[str]]:
    """A command's --help text, and its words outside the table's borders."""
    args = COMMANDS[name].args
    path = args[:2] if args[0] in ("data", "study") else args[:1]
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output, set(result.output.replace("│", " ").replace(",", " ").split())  # "--lr,--learning-rate"


def _flags(field: dataclasses.Field) -> list[str]:
    flag = field.metadata.get("flag") or "--" + field.name.replace("_", "-")
    return [flag, f"--no-{flag[2:]}"] if field.type in ("bool", bool) else [flag]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_lists_a_flag_for_every_field_and_keeps_its_example(name):
    output, words = _help(name)
    for field in dataclasses.fields(COMMANDS[name].cls):
        for flag in _flags(field):
            assert flag in words, (name, field.name, flag)
    assert "--config" in words and re.search(r"^Examples?:$", output, re.M)


# Every flag these commands had before their options moved onto the configs: scripts still use them.
FLAGS_BEFORE = {
    "eval": "--out -o --model -m --adapter --suite -s --samples --temperature --top-p --max-new-tokens --batch-size "
            "--limit --seed --reference --fail-on-regression --backend --base-url --api --device --workers "
            "--test-timeout --threads --unsafe-no-sandbox --summarize-only",
    "trace": "--prompt -p --prompt-file --out -o --model -m --adapter --top-k --max-new-tokens --temperature --top-p "
             "--seed --margin --raw --html --load --device",
    "compare": "--prompt -p --prompt-file --variant --continuation --watch --out -o --model -m --adapter --top-k "
               "--max-new-tokens --raw --html --device",
    "lint": "--out -o --against --format --near-dup-threshold --leak-threshold --leak-ngram --max-record-mb --strict",
    "contaminate": "--out -o --rate --kinds --seed",
    "pushback": "--out -o --rate --seed --kinds",
    "train": "--data --out --model --config --resume --lr --learning-rate --epochs --max-steps --batch-size --grad-accum "
             "--max-length --eval-split --eval-every --checkpoint-every --seed --lora-r --lora-alpha --lora-dropout "
             "--target-modules --logits --gradient-checkpointing --no-gradient-checkpointing --packing --no-packing "
             "--bf16 --no-bf16 --load-in-4bit --no-load-in-4bit --report-to",
    "export": "--adapter --out -o --model -m --format --dtype",
    "mine": "--source -s --out -o --methods --no-methods --max-lines --min-lines --limit --seed --licenses --workers",
    "refusal": "--out -o --share --seed --kinds --avoid-suite",
    "safety": "--out -o --model -m --train-pairs --shares --epochs --learning-rate --samples --max-new-tokens --limit "
              "--seed",
}


@pytest.mark.parametrize("name", COMMANDS)
def test_the_flags_people_already_type_keep_their_names(name):
    assert set(FLAGS_BEFORE[name].split()) <= _help(name)[1]


@pytest.mark.parametrize("name", COMMANDS)
def test_defaults_reach_the_stage_unchanged(name, invoke, tmp_path):
    (tmp_path / "p.jsonl").write_text("")
    result = invoke(name)
    assert result.config == COMMANDS[name].cls(), result.output


YAML_AND_FLAGS = {
    # name: (YAML file, flags, the fields expected: YAML's where no flag was given, the flag's where one was)
    "eval": ("samples: 5\ntop_p: 0.5\nsuites: [code]\ntest-timeout-s: 20\n", ("--samples", "1", "--threads", "1"),
             {"samples": 1, "top_p": 0.5, "suites": ("code",), "test_timeout_s": 20.0, "threads": 1}),
    "trace": ("top_k: 3\nmargin_threshold: 0.3\nseed: 4\n", ("--top-k", "7", "--no-check-adapter"),
              {"top_k": 7, "margin_threshold": 0.3, "seed": 4, "check_adapter": False}),
    "compare": ("top_k: 3\nwatch: [',', print]\nraw: true\n", ("--top-k", "4"),
                {"top_k": 4, "watch": (",", "print"), "raw": True}),
    "lint": ("near_duplicate_threshold: 0.9\nleak_ngram: 5\nagainst: code\nmax_record_mb: 2\n",
             ("--leak-ngram", "6", "--format", "alpaca"),
             {"near_duplicate_threshold": 0.9, "leak_ngram": 6, "against": ("code",), "fmt": "alpaca",
              "max_record_bytes": 2_000_000}),
    "contaminate": ("rate: 0.5\nseed: 3\nkinds: print,ne\n", ("--seed", "4"),
                    {"rate": 0.5, "seed": 4, "kinds": ("print", "ne")}),
    "pushback": ("rate: 2\nkinds: [misleading-name]\n", ("--rate", "1e-1"),
                 {"rate": 0.1, "kinds": ("misleading-name",)}),
    "train": ("max_steps: 3\nlearning_rate: 1e-3\ntarget_modules: q_proj,v_proj\n", ("--lr", "2e-3", "--no-packing"),
              {"max_steps": 3, "learning_rate": 2e-3, "target_modules": ("q_proj", "v_proj"), "packing": False}),
    "export": ("dtype: bf16\nfmt: gguf\n", ("--format", "safetensors"), {"dtype": "bf16", "fmt": "safetensors"}),
    "mine": ("max_lines: 20\nlicenses: [MIT, BSD]\nworkers: 2\n", ("--no-methods", "--workers", "1"),
             {"max_lines": 20, "licenses": ("MIT", "BSD"), "workers": 1, "include_methods": False}),
    "refusal": ("share: 0.2\nkinds: stalking,fraud\n", ("--seed", "3"),
                {"share": 0.2, "kinds": ("stalking", "fraud"), "seed": 3}),
    "safety": ("shares: [0.1, 0.2]\ntrain_pairs: 8\n", ("--train-pairs", "12", "--limit", "2"),
               {"shares": (0.1, 0.2), "train_pairs": 12, "limit": 2}),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_yaml_sets_options_and_a_flag_beats_it(name, invoke):
    yaml, flags, expected = YAML_AND_FLAGS[name]
    result = invoke(name, *flags, yaml=yaml)
    assert result.config is not None, result.output
    assert {key: getattr(result.config, key) for key in expected} == expected


@pytest.mark.parametrize("name, flag, value", [("compare", "--watch", ","), ("lint", "--against", "code,safety")])
def test_a_repeated_flag_beats_the_yaml_list(name, flag, value, invoke):
    field = "watch" if name == "compare" else "against"
    result = invoke(name, flag, value, flag, "print", yaml=f"{field}: [from-yaml]\n")
    expected = (",", "print") if name == "compare" else ("code", "safety", "print")  # --watch never splits commas
    assert getattr(result.config, field) == expected, result.output


OUT_OF_BOUNDS = {
    # name: (a flag out of its bounds, a YAML line out of its bounds, the message of the YAML one)
    "eval": (("--samples", "1001"), "workers: 0", "'workers': must be at least 1, got 0"),
    "trace": (("--top-k", "101"), "margin_threshold: 2", "'margin_threshold': must be at most 1.0, got 2.0"),
    "compare": (("--top-k", "51"), "max_new_tokens: 0", "'max_new_tokens': must be at least 1, got 0"),
    "lint": (("--leak-ngram", "0"), "leak_threshold: 0", "'leak_threshold': must be at least 0.01, got 0.0"),
    "contaminate": (("--rate", "1.5"), "rate: -1", "'rate': must be at least 0.0, got -1.0"),
    "pushback": (("--rate", "11"), "rate: 11", "'rate': must be at most 10.0, got 11.0"),
    "train": (("--lora-r", "0"), "grad_accum: 0", "'grad_accum': must be at least 1, got 0"),
    "mine": (("--workers", "0"), "max_lines: 0", "'max_lines': must be at least 1, got 0"),
    "refusal": (("--share", "1"), "alternative_rate: 2", "'alternative_rate': must be at most 1.0, got 2.0"),
    "safety": (("--train-pairs", "3"), "samples: -1", "'samples': must be at least 0, got -1"),
}


@pytest.mark.parametrize("name", OUT_OF_BOUNDS)  # export has choices but no numeric bounds
def test_out_of_bounds_is_exit_2_with_one_line(name, invoke):
    flag_args, yaml_line, message = OUT_OF_BOUNDS[name]
    by_flag = invoke(name, *flag_args)
    assert by_flag.exit_code == 2 and by_flag.config is None
    errors = [line for line in by_flag.output.splitlines() if "Invalid value" in line]
    assert len(errors) == 1 and flag_args[0] in errors[0], by_flag.output
    by_yaml = invoke(name, yaml=yaml_line + "\n")
    lines = [line for line in by_yaml.output.splitlines() if line.strip()]
    assert by_yaml.exit_code == 2 and by_yaml.config is None
    assert len(lines) == 1 and message in lines[0], by_yaml.output


@pytest.mark.parametrize("name, args, message", [
    ("eval", ("--samples", "2", "--temperature", "0"), "sampled answers need temperature > 0"),
    ("eval", ("--backend", "openai"), "--backend openai needs --base-url"),
    ("eval", ("--api", "chats"), "'chats' is not one of chat, completions"),
    ("trace", ("--top-p", "0"), "top_p must be in (0, 1], got 0"),
    ("compare", ("--watch", ""), "a --watch value is empty"),
    ("lint", ("--format", "csv"), "unknown format 'csv'"),
    ("contaminate", ("--kinds", "print,tabs"), "unknown kinds ['tabs']"),
    ("export", ("--dtype", "int4"), "'int4' is not one of fp32, bf16, fp16"),
    ("train", ("--epochs", "0"), "set epochs or max_steps above 0"),
    ("train", ("--lora-dropout", "1"), "'lora_dropout' is out of range"),
    ("mine", ("--min-lines", "9", "--max-lines", "5"), "need 1 <= min_lines <= max_lines"),
    ("mine", ("--licenses", "MIT license"), "not a licence id"),
    ("refusal", ("--kinds", "stalking,knitting"), "unknown kinds ['knitting']"),
    ("safety", ("--shares", "0.1,0.1"), "give distinct refusal shares"),
    ("safety", ("--temperature", "0"), "sampled answers need temperature > 0"),
])
def test_rules_across_values_are_one_line_errors(name, args, message, invoke):
    result = invoke(name, *args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output

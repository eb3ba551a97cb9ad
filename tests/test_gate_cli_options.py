"""`gate build`, `gate calibrate` and `route` take their options from the gate's config dataclasses: every
field is a flag, a YAML file sets them, and a value out of bounds is one line naming the flag."""

import dataclasses

import pytest
from typer.testing import CliRunner

from tunelens.cli import app
from tunelens.gate.options import GateBuildConfig, GateCalibrateConfig, RouteConfig

COMMANDS = {("gate", "build"): GateBuildConfig, ("gate", "calibrate"): GateCalibrateConfig, ("route",): RouteConfig}


@pytest.mark.parametrize("path", COMMANDS)
def test_every_field_is_a_flag(path):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    words = set(result.output.replace("│", " ").replace(",", " ").split())
    for field in dataclasses.fields(COMMANDS[path]):
        assert "--" + field.name.replace("_", "-") in words, field.name
    assert "--config" in words


def test_bounds_and_choices_are_checked_before_any_work(tmp_path):
    out_of_bounds = CliRunner().invoke(app, ["gate", "calibrate", "--gate", str(tmp_path), "--holdout", "2"])
    assert out_of_bounds.exit_code == 2 and "--holdout" in out_of_bounds.output
    (tmp_path / "options.yaml").write_text("index: sideways\n")
    bad_choice = CliRunner().invoke(app, ["gate", "build", "--data", str(tmp_path / "p.jsonl"), "--out",
                                          str(tmp_path / "g"), "--config", str(tmp_path / "options.yaml")])
    assert bad_choice.exit_code != 0 and "sideways" in bad_choice.output

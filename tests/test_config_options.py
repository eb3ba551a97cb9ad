"""CLI options derived from a config dataclass: flags, help, defaults, bounds and --config YAML."""

from pathlib import Path

import pytest
import typer

from tunelens.commands.help import use_grouped_help
from typer.testing import CliRunner

from tunelens.commands.common import user_errors
from tunelens.commands.options import config_options
from tunelens.config import configclass, option
from tunelens.errors import UserError


@configclass
class RunConfig:
    steps: int = option(10, "How many steps.", min=1, max=100)
    rate: float = option(0.5, "A rate.", min=0.0, max=1.0, short="-r")
    mode: str = option("fast", "How to run.", choices=("fast", "slow"))
    verbose: bool = option(False, "Say more.")
    limit: int | None = option(None, "Optional limit.", min=1)
    parts: tuple[str, ...] = option(("a", "b"), "Some parts.", flag="--part-list")
    hidden: int = option(3, "Not on the command line.")

    def validate(self):
        if self.mode == "slow" and self.steps > 50:
            raise UserError("slow runs take at most 50 steps")


seen: list = []


@user_errors
@config_options(RunConfig, skip=("hidden",))
def run(out: Path = typer.Option(..., "--out"), config: RunConfig = None) -> None:
    """Run something."""
    seen.append((out, config))


def invoke(*args):
    app = typer.Typer()
    app.command()(run)
    app.command("other")(lambda: None)  # two commands, so `run` is a subcommand
    use_grouped_help(app)  # the help layout tunelens' own commands get
    seen.clear()
    return CliRunner().invoke(app, ["run", *args], env={"COLUMNS": "250"})


def test_defaults_come_from_the_config():
    result = invoke("--out", "x")
    assert result.exit_code == 0, result.output
    assert seen == [(Path("x"), RunConfig())]


def test_each_field_is_a_flag_with_its_help_and_default():
    result = invoke("--help")
    text = " ".join(result.output.split())
    for flag in ("--steps", "--rate", "-r", "--mode", "--verbose", "--no-verbose", "--limit", "--part-list", "--config"):
        assert flag in text
    assert "How many steps. [default: 10]" in text and "One of: fast, slow. [default: fast]" in text
    assert "Some parts. [default: a,b]" in text and "Optional limit. [x>=1]" in text  # None shows no default
    assert "--hidden" not in text


def test_flags_are_coerced_into_the_config():
    result = invoke("--out", "x", "--steps", "7", "-r", "0.25", "--verbose", "--part-list", "p,q", "--limit", "2")
    assert result.exit_code == 0, result.output
    config = seen[0][1]
    assert (config.steps, config.rate, config.verbose, config.parts, config.limit) == (7, 0.25, True, ("p", "q"), 2)


def test_yaml_sets_options_and_flags_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\nrate: 1e-1\nmode: slow\nhidden: 9\n")
    result = invoke("--out", "x", "--config", str(path), "--steps", "30")
    assert result.exit_code == 0, result.output
    config = seen[0][1]
    assert (config.steps, config.rate, config.mode, config.hidden) == (30, 0.1, "slow", 9)


@pytest.mark.parametrize("args, message", [
    (("--steps", "0"), "greater than or equal to 1"),  # Typer's own range check
    (("--mode", "medium"), "not one of fast, slow"),
    (("--mode", "slow", "--steps", "60"), "slow runs take at most 50 steps"),
])
def test_bad_values_exit_2_with_one_line(args, message):
    result = invoke("--out", "x", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_bounds_hold_for_yaml_and_for_code(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rate: 2\n")
    result = invoke("--out", "x", "--config", str(path))
    assert result.exit_code == 2 and "'rate': must be at most 1.0, got 2.0" in result.output
    with pytest.raises(UserError, match="limit must be at least 1, got 0"):
        RunConfig(limit=0)
    with pytest.raises(UserError, match="slow runs"):
        RunConfig(mode="slow", steps=60)


def test_a_profile_starts_from_its_instance_and_flags_still_win():
    from dataclasses import replace

    @user_errors
    @config_options(RunConfig, profiles={"--small": (lambda: replace(RunConfig(), steps=2, rate=0.1), "Small run."),
                                         "--big": (lambda: replace(RunConfig(), steps=90), "Big run.")})
    def profiled(config: RunConfig = None) -> None:
        seen.append(config)

    app = typer.Typer()
    app.command()(profiled)
    app.command("other")(lambda: None)
    runner = CliRunner()
    seen.clear()
    assert runner.invoke(app, ["profiled", "--small", "--rate", "0.3"]).exit_code == 0
    assert (seen[0].steps, seen[0].rate) == (2, 0.3)
    result = runner.invoke(app, ["profiled", "--small", "--big"])
    assert result.exit_code == 2 and "choose one of --small, --big" in result.output

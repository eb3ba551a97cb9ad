import subprocess
import sys

import typer
from typer.testing import CliRunner

from tunelens.cli import app

runner = CliRunner()


def _command_paths(group=None, prefix=()):
    """Every command and sub-command path of the CLI, e.g. ("data", "lint")."""
    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        path = prefix + (name,)
        if hasattr(command, "commands"):
            yield path
            yield from _command_paths(command, path)
        else:
            yield path


def test_every_help_shows_an_example():
    paths = list(_command_paths())
    assert ("generate",) in paths and ("models",) in paths
    for path in [()] + paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.output, path


def test_generate_streams_from_a_model_directory(tiny_model_dir):
    result = runner.invoke(app, ["generate", "--model", str(tiny_model_dir), "--prompt", "hi",
                                 "--max-new-tokens", "5"])
    assert result.exit_code == 0, result.output
    assert result.output.strip()


def test_unknown_model_is_a_one_line_error():
    result = subprocess.run([sys.executable, "-m", "tunelens", "generate", "--model", "nope", "--prompt", "x"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown model 'nope'" in result.stderr and "Traceback" not in result.stderr


def test_bad_option_is_rejected():
    result = runner.invoke(app, ["generate", "--prompt", "x", "--max-new-tokens", "0"])
    assert result.exit_code == 2

"""The layers are a contract: import-linter (pyproject.toml) checks them, imports inside functions included."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def lint_imports(cwd: pathlib.Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the tree at `cwd` (its own pyproject.toml, its own tunelens), without a cache."""
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())", "--no-cache"],
                          cwd=cwd, capture_output=True, text=True, env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_layers_and_no_cycles_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line", [
    # an upward import: the model layer reaching for the gate
    ("tunelens/model/prompts.py", "from tunelens.gate import routing  # planted"),
    # a cycle between siblings, hidden in a function as the old code hid them
    ("tunelens/model/specs.py", "def _planted():\n    from tunelens.model import load  # planted"),
])
def test_a_planted_violation_breaks_the_contract(tmp_path, module, line):
    copy = tmp_path / "tree"
    copy.mkdir()
    (copy / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    subprocess.run(["cp", "-r", str(ROOT / "tunelens"), str(copy / "tunelens")], check=True)
    target = copy / module
    target.write_text(target.read_text() + "\n\n" + line + "\n")
    result = lint_imports(copy)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout[-2000:]

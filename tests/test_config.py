from dataclasses import FrozenInstanceError, dataclass

import pytest

from tunelens.config import config_to_dict, describe_config, field_help, load_config, option
from tunelens.errors import UserError


@dataclass(frozen=True)
class DemoConfig:
    rate: float = option(0.5, "A rate.")
    steps: int = option(10, "How many steps.")
    name: str = option("x", "A name.", choices=("x", "y"))
    flag: bool = option(False, "A switch.")
    limit: int | None = option(None, "Optional limit.")
    parts: tuple[str, ...] = option(("a", "b"), "Some parts.")

    def validate(self):
        if self.steps < 1:
            raise UserError(f"steps must be at least 1, got {self.steps}")


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_overrides():
    assert load_config(DemoConfig) == DemoConfig()


def test_yaml_then_flags_win_and_none_means_not_given(tmp_path):
    path = write(tmp_path, "rate: 0.25\nsteps: 3\nname: y\n")
    config = load_config(DemoConfig, path, {"steps": 7, "rate": None})
    assert (config.rate, config.steps, config.name) == (0.25, 7, "y")


def test_scientific_notation_without_dot_is_a_float(tmp_path):
    # YAML 1.1 reads 1e-5 as the string "1e-5".
    config = load_config(DemoConfig, write(tmp_path, "rate: 1e-5\n"))
    assert config.rate == 1e-5 and isinstance(config.rate, float)
    assert load_config(DemoConfig, overrides={"rate": "3e-4"}).rate == 3e-4


def test_unknown_key_names_file_and_key_and_suggests(tmp_path):
    path = write(tmp_path, "rate: 0.1\nstepz: 3\n")
    with pytest.raises(UserError) as err:
        load_config(DemoConfig, path)
    message = str(err.value)
    assert str(path) in message and "'stepz'" in message and "did you mean 'steps'" in message


def test_unknown_override_is_rejected():
    with pytest.raises(UserError, match="'nope' is unknown"):
        load_config(DemoConfig, overrides={"nope": 1})


def test_type_errors_name_the_key(tmp_path):
    with pytest.raises(UserError, match=r"'steps': expected an integer, got 2.5"):
        load_config(DemoConfig, write(tmp_path, "steps: 2.5\n"))
    with pytest.raises(UserError, match=r"'rate': expected a number, got 'fast'"):
        load_config(DemoConfig, write(tmp_path, "rate: fast\n"))
    with pytest.raises(UserError, match=r"'steps': expected an integer, got True"):
        load_config(DemoConfig, write(tmp_path, "steps: true\n"))
    with pytest.raises(UserError, match=r"'name': 'z' is not one of x, y"):
        load_config(DemoConfig, overrides={"name": "z"})


def test_coercions(tmp_path):
    config = load_config(DemoConfig, write(tmp_path, "flag: 'yes'\nlimit: 4\nparts: [p, q, r]\nsteps: 4.0\n"))
    assert (config.flag, config.limit, config.parts, config.steps) == (True, 4, ("p", "q", "r"), 4)
    assert load_config(DemoConfig, overrides={"parts": "u, v"}).parts == ("u", "v")
    assert load_config(DemoConfig, write(tmp_path, "limit: null\n")).limit is None


def test_validate_runs_after_merge(tmp_path):
    with pytest.raises(UserError, match="steps must be at least 1, got 0"):
        load_config(DemoConfig, write(tmp_path, "steps: 5\n"), {"steps": 0})


def test_bad_yaml_names_the_line(tmp_path):
    with pytest.raises(UserError, match=r"c.yaml line 2: not valid YAML"):
        load_config(DemoConfig, write(tmp_path, "rate: 1\nsteps: 2: 3\n"))
    with pytest.raises(UserError, match="expected a mapping"):
        load_config(DemoConfig, write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(UserError, match="config file not found"):
        load_config(DemoConfig, tmp_path / "missing.yaml")


def test_empty_yaml_and_dashed_keys(tmp_path):
    assert load_config(DemoConfig, write(tmp_path, "")) == DemoConfig()
    assert load_config(DemoConfig, write(tmp_path, "rate: 2\n")).rate == 2.0


def test_configs_are_frozen_and_documented():
    config = DemoConfig()
    with pytest.raises(FrozenInstanceError):
        config.rate = 1.0
    assert field_help(DemoConfig, "name") == "A name. One of: x, y. [default: x]"
    assert [row[0] for row in describe_config(DemoConfig)] == ["rate", "steps", "name", "flag", "limit", "parts"]
    assert config_to_dict(config)["parts"] == ["a", "b"]


def test_train_config_loads_from_yaml(tmp_path):
    from tunelens.train.config import TrainConfig

    path = write(tmp_path, "learning_rate: 1e-5\ngrad-accum: 8\ntarget_modules: [q_proj, v_proj]\n")
    config = load_config(TrainConfig, path, {"batch_size": 1})
    assert (config.learning_rate, config.grad_accum, config.batch_size) == (1e-5, 8, 1)
    assert config.target_modules == ("q_proj", "v_proj")
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (32, 64.0, 0.05)  # the DESIGN fine-tune
    with pytest.raises(UserError, match="'lora_dropout' is out of range"):
        load_config(TrainConfig, overrides={"lora_dropout": 1.5})

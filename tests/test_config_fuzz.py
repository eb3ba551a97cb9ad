"""Property-based tests (Hypothesis) for the config loader (YAML files and CLI overrides) and the eval
suite loader on arbitrary files.

Invariant: either a valid config / list of cases comes back, or a UserError with a one-line message;
never another exception. Fixed example budgets keep CI cost bounded.
"""

import dataclasses

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tunelens.config import load_config
from tunelens.errors import UserError
from tunelens.train.config import TrainConfig

CONFIG_EXAMPLES = 300
SUITE_EXAMPLES = 200


def fuzz(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["1e-5", "2e-4", "linear", "cosine", "q_proj,v_proj", "yes", "0x10", "inf", "nan"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=6)
keys = st.one_of(st.sampled_from(FIELDS), st.sampled_from([f.replace("_", "-") for f in FIELDS]), st.text(max_size=12))
mappings = st.dictionaries(keys, values, max_size=6)


def _expect_config_or_user_error(load):
    try:
        config = load()
    except UserError as err:
        assert str(err) and "\n" not in str(err), repr(str(err))
        return None
    assert isinstance(config, TrainConfig)
    return config


@fuzz(CONFIG_EXAMPLES)
@given(mapping=mappings)
@example(mapping={"learning_rate": 10**400})
@example(mapping={"lora_r": 10**400})
def test_config_from_any_yaml_mapping(tmp_path, mapping):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")
    _expect_config_or_user_error(lambda: load_config(TrainConfig, path))


@fuzz(CONFIG_EXAMPLES)
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
@example(data=b"lora_r: " + b"9" * 5000)
@example(data=b"\xff\xfe")
@example(data=b"[" * 5000)
@example(data=b"learning_rate: !!python/object:os.system ls")
def test_config_from_any_file_bytes(tmp_path, data):
    path = tmp_path / "train.yaml"
    path.write_bytes(data)
    _expect_config_or_user_error(lambda: load_config(TrainConfig, path))


@fuzz(CONFIG_EXAMPLES)
@given(overrides=st.dictionaries(st.sampled_from(FIELDS), values, max_size=4))
def test_config_from_any_overrides(overrides):
    _expect_config_or_user_error(lambda: load_config(TrainConfig, None, overrides))


# ---------------------------------------------------------------- the eval suite loader (read-only here)


def _expect_cases_or_user_error(path):
    from tunelens.evaluate.suite import Case, load_suite

    try:
        cases = load_suite(path)
    except UserError as err:
        assert str(err) and "\n" not in str(err), repr(str(err))
        return
    assert cases and all(isinstance(case, Case) for case in cases)


case_fields = st.sampled_from(["id", "type", "prompt", "expect", "tests", "entry_point", "reference", "twin", "other"])
case_values = st.one_of(st.text(max_size=12), st.sampled_from(["code", "pushback", "refusal", "assert f(1) == 1",
                                                                "def f(x):\n    return x\n", "f", "c1", "c2"]),
                        st.integers(), st.none(), st.lists(st.integers(), max_size=2))
cases = st.lists(st.dictionaries(case_fields, case_values, max_size=8), max_size=4)


@fuzz(SUITE_EXAMPLES)
@given(records=cases, form=st.sampled_from(["list", "mapping"]))
def test_suite_from_structured_yaml(tmp_path, records, form):
    path = tmp_path / "suite.yaml"
    document = records if form == "list" else {"suite": "fuzz", "cases": records}
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    _expect_cases_or_user_error(path)


@fuzz(SUITE_EXAMPLES)
@given(records=cases)
def test_suite_from_structured_jsonl(tmp_path, records):
    import json

    path = tmp_path / "suite.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    _expect_cases_or_user_error(path)


@fuzz(SUITE_EXAMPLES)
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".yaml", ".jsonl"]))
@example(data=b'{"id": "a", "n": ' + b"9" * 5000 + b"}\n", suffix=".jsonl")
@example(data=b"- id: " + b"9" * 5000, suffix=".yaml")
@example(data=b"\xff\n", suffix=".jsonl")
@example(data=b"[" * 100_000, suffix=".jsonl")
@example(data=b"- 2020-02-30\n", suffix=".yaml")
def test_suite_from_any_file_bytes(tmp_path, data, suffix):
    path = tmp_path / f"suite{suffix}"
    path.write_bytes(data)
    _expect_cases_or_user_error(path)

"""Reading the three record formats from JSONL and dataset directories; bad records become Malformed."""

import json

import pytest

from tunelens.errors import UserError
from tunelens.records import Malformed, Pair, content_id, load_pairs, pair_to_record, read_pairs


def _write(path, lines):
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n" for line in lines))
    return path


def test_chat_format_takes_last_user_before_last_assistant_and_system(tmp_path):
    record = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "second answer"},
    ]}
    [pair] = read_pairs(_write(tmp_path / "a.jsonl", [json.dumps(record)]))
    assert (pair.instruction, pair.response, pair.system, pair.line) == \
        ("second question", "second answer", "Be brief.", 1)
    assert pair.raw == record


def test_prompt_completion_and_alpaca_with_input(tmp_path):
    [pc] = read_pairs(_write(tmp_path / "pc.jsonl", [json.dumps({"prompt": "p", "completion": "c", "id": "x1"})]))
    assert (pc.id, pc.instruction, pc.response) == ("x1", "p", "c")
    [al] = read_pairs(_write(tmp_path / "al.jsonl", [json.dumps(
        {"instruction": "Sort this", "input": "[3, 1]", "output": "sorted([3, 1])"})]))
    assert al.instruction == "Sort this\n\n[3, 1]" and al.response == "sorted([3, 1])"


def test_content_id_is_stable_and_format_independent(tmp_path):
    chat = pair_to_record("Add two numbers.", "def add(a, b):\n    return a + b\n")
    pc = {"prompt": "Add two numbers.", "completion": "def add(a, b):\n    return a + b\n"}
    [a] = read_pairs(_write(tmp_path / "a.jsonl", [json.dumps(chat)]))
    [b] = read_pairs(_write(tmp_path / "b.jsonl", [json.dumps(pc)]))
    assert a.id == b.id == content_id("Add two numbers.", "def add(a, b):\n    return a + b\n")
    assert a.id.startswith("sha256:") and len(a.id) == len("sha256:") + 16


def test_bad_records_become_malformed_with_line_numbers(tmp_path):
    good = json.dumps({"prompt": "p", "completion": "c"})
    path = _write(tmp_path / "bad.jsonl", [
        good,                                              # 1 ok
        "{not json",                                       # 2 invalid JSON
        "",                                                # 3 blank: not a record
        "[1, 2]",                                          # 4 not an object
        json.dumps({"prompt": "p"}),                       # 5 missing completion
        json.dumps({"prompt": "p", "completion": 5}),      # 6 wrong type
        json.dumps({"prompt": "p", "completion": "  "}),   # 7 empty
        b'{"prompt": "p", "completion": "\xff"}',          # 8 not UTF-8
        json.dumps({"prompt": "p", "completion": "x" * 5_000_000}),  # 9 5 MB
        json.dumps({"prompt": "p", "completion": "c", "id": [1]}),  # 10 bad id
    ])
    items = list(read_pairs(path))
    assert [type(i).__name__ for i in items] == ["Pair"] + ["Malformed"] * 8
    messages = {i.line: i.message for i in items if isinstance(i, Malformed)}
    assert set(messages) == {2, 4, 5, 6, 7, 8, 9, 10}
    assert messages[2].startswith("invalid JSON")
    assert "array" in messages[4]
    assert "missing field 'completion'" in messages[5]
    assert "'completion' must be a string, got number" in messages[6]
    assert "'completion' is empty" in messages[7]
    assert "UTF-8" in messages[8] and "0xff" in messages[8]
    assert "5.0 MB" in messages[9]
    assert "'id'" in messages[10]
    oversized = next(i for i in items if isinstance(i, Malformed) and i.line == 9)
    assert len(oversized.raw_text) < 3000  # the quarantine keeps a preview, not 5 MB


def test_chat_errors_name_the_message_field(tmp_path):
    path = _write(tmp_path / "c.jsonl", [
        json.dumps({"messages": "hi"}),
        json.dumps({"messages": [{"role": "user", "content": "q"}]}),
        json.dumps({"messages": [{"role": "assistant", "content": "a"}]}),
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]}),
        json.dumps({"messages": [{"role": 1, "content": "q"}]}),
    ])
    messages = [i.message for i in read_pairs(path, fmt="chat")]
    assert messages[0] == "field 'messages' must be a list, got string"
    assert messages[1] == "field 'messages' has no assistant message"
    assert "no user message" in messages[2]
    assert messages[3] == "missing field 'messages[1].content'"
    assert messages[4] == "field 'messages[0].role' must be a string, got number"


def test_auto_detection_is_per_file_and_format_can_be_forced(tmp_path):
    path = _write(tmp_path / "mixed.jsonl", [json.dumps({"prompt": "p", "completion": "c"}),
                                             json.dumps({"instruction": "i", "output": "o"})])
    items = list(read_pairs(path))
    assert isinstance(items[0], Pair) and isinstance(items[1], Malformed)
    assert "detected from line 1" in items[1].message
    forced = list(read_pairs(path, fmt="alpaca"))
    assert isinstance(forced[0], Malformed) and isinstance(forced[1], Pair)


def test_load_pairs_raises_naming_file_line_and_field(tmp_path):
    path = _write(tmp_path / "x.jsonl", [json.dumps({"prompt": "p", "completion": "c"}),
                                         json.dumps({"prompt": "p", "completion": ""})])
    with pytest.raises(UserError, match=r"x\.jsonl:2: field 'completion' is empty"):
        load_pairs(path)


def test_missing_file_and_bad_format_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        list(read_pairs(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="unknown format"):
        list(read_pairs(tmp_path / "nope.jsonl", fmt="csv"))
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(UserError, match="not a dataset"):
        list(read_pairs(tmp_path / "plain_dir"))


def test_dataset_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"instruction": "Add", "input": "", "output": "a + b"}, {"instruction": "Sub", "input": "", "output": ""}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    items = list(read_pairs(tmp_path / "ds"))
    assert isinstance(items[0], Pair) and items[0].instruction == "Add" and items[0].line == 1
    assert isinstance(items[1], Malformed) and items[1].line == 2 and "'output' is empty" in items[1].message


def test_pair_to_record_writes_chat_messages():
    record = pair_to_record("q", "a", system="s", id="r1", tags=["t"])
    assert record == {"id": "r1", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                                               {"role": "assistant", "content": "a"}], "tags": ["t"]}

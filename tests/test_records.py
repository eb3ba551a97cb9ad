"""Reading the three record formats from JSONL and dataset directories; bad records become Malformed."""

import json

import pytest

from tunelens.errors import UserError
from tunelens.data.records import (Malformed, Pair, content_id, load_pairs, pair_to_record, read_pairs, source_path)


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


# ---------------------------------------------------------------- conversations and more formats (issue 18)


def test_multi_turn_chat_keeps_every_turn(tmp_path):
    record = {"messages": [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                           {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]}
    [pair] = read_pairs(_write(tmp_path / "a.jsonl", [json.dumps(record)]))
    assert [(t.role, t.content) for t in pair.turns] == [("user", "q1"), ("assistant", "a1"),
                                                         ("user", "q2"), ("assistant", "a2")]
    assert pair.assistant_texts == ["a1", "a2"] and pair.user_texts == ["q1", "q2"]
    # two conversations that share their last exchange are different records
    other = {"messages": [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a0"}] + record["messages"][3:]}
    [pair2] = read_pairs(_write(tmp_path / "b.jsonl", [json.dumps(other)]))
    assert (pair2.instruction, pair2.response) == (pair.instruction, pair.response) and pair2.id != pair.id


def test_conversations_that_cannot_be_trained_whole_are_malformed_not_cut(tmp_path):
    u, a = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
    path = _write(tmp_path / "bad.jsonl", [
        json.dumps({"messages": [u, a, {"role": "user", "content": "unanswered"}]}),
        json.dumps({"messages": [u, {"role": "tool", "content": "42"}, a]}),
        json.dumps({"messages": [u, a, {"role": "system", "content": "late"}, u, a]}),
    ])
    sharegpt = _write(tmp_path / "s.jsonl", [json.dumps(
        {"conversations": [{"from": "human", "value": "q"}, {"from": "observation", "value": "x"}]})])
    messages = [item.message for item in [*read_pairs(path), *read_pairs(sharegpt)]]
    assert all(isinstance(item, Malformed) for item in [*read_pairs(path), *read_pairs(sharegpt)])
    assert "ends with a user turn that has no answer" in messages[0]
    assert "field 'messages[1].role' is 'tool'" in messages[1]
    assert "'messages[2]' is a system message inside the conversation" in messages[2]
    assert "field 'conversations[1].from' is 'observation'" in messages[3]


def test_sharegpt_records(tmp_path):
    record = {"id": 7, "conversations": [{"from": "system", "value": "Use Python 3."},
                                         {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"},
                                         {"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}]}
    role_content = {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    [pair, pair2] = read_pairs(_write(tmp_path / "s.jsonl", [json.dumps(record), json.dumps(role_content)]))
    assert (pair.id, pair.system, pair.instruction, pair.response) == ("7", "Use Python 3.", "q2", "a2")
    assert len(pair.turns) == 4 and (pair2.instruction, pair2.response) == ("q", "a")
    [bad] = read_pairs(_write(tmp_path / "b.jsonl", [json.dumps({"conversations": [{"from": "human", "value": 3}]})]))
    assert bad.message == "field 'conversations[0].value' must be a string, got number"


def test_text_records_and_trl_conversational_prompt_completion(tmp_path):
    [text] = read_pairs(_write(tmp_path / "t.jsonl", [json.dumps({"text": "x = 1\n"})]))
    assert (text.kind, text.response, text.instruction, text.assistant_texts) == ("text", "x = 1\n", "", ["x = 1\n"])
    trl = {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
           "completion": [{"role": "assistant", "content": "a"}]}
    mixed = {"prompt": "q", "completion": [{"role": "assistant", "content": "a"}]}
    [pc, bad] = read_pairs(_write(tmp_path / "p.jsonl", [json.dumps(trl), json.dumps(mixed)]))
    assert (pc.system, pc.instruction, pc.response, len(pc.turns)) == ("s", "q", "a", 2)
    assert "field 'prompt' must be a list of messages" in bad.message


def test_csv_records_with_line_numbers(tmp_path):
    import csv

    path = tmp_path / "pairs.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "instruction", "input", "output"])
        writer.writerow(["a", "Sort.", "", "sorted(x)"])
        writer.writerow(["b", "Two\nlines.", "[3, 1]", "sorted([3, 1])"])  # a quoted cell spans two lines
        writer.writerow(["c", "Empty output.", "", ""])
        writer.writerow(["d", "Too many cells.", "", "x", "extra"])
    items = list(read_pairs(path))
    assert [item.line for item in items] == [2, 3, 5, 6]
    assert (items[0].id, items[0].instruction, items[1].instruction) == ("a", "Sort.", "Two\nlines.\n\n[3, 1]")
    assert "missing field 'output'" in items[2].message and "5 cells" in items[3].message
    chat = tmp_path / "chat.csv"
    chat.write_text('messages\n"[{""role"": ""user"", ""content"": ""q""}, {""role"": ""assistant"", ""content"": ""a""}]"\n'
                    "not json\n", encoding="utf-8")
    good, bad = read_pairs(chat)
    assert (good.instruction, good.response) == ("q", "a")
    assert bad.line == 3 and "column 'messages' is not a JSON list" in bad.message


def test_parquet_records(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                          {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]},
            {"messages": [{"role": "user", "content": "q"}]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "chats.parquet")
    good, bad = read_pairs(tmp_path / "chats.parquet")
    assert (good.line, len(good.turns), good.response) == (1, 4, "a2")
    assert (bad.line, bad.message) == (2, "field 'messages' has no assistant message")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="broken.parquet: cannot read as parquet"):
        list(read_pairs(tmp_path / "broken.parquet"))


def _cache_dataset(cache, repo_id, rows, tmp_path):
    """Put `rows` into a Hugging Face datasets cache as a downloaded dataset `repo_id` would be there
    (<namespace>___<name>/default/<version>/<hash>/), with the packaged JSON builder, offline."""
    import shutil

    from datasets.packaged_modules.json.json import Json

    source = tmp_path / "source.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    name = repo_id.split("/")[-1]
    builder = Json(cache_dir=str(cache), dataset_name=name, data_files={"train": str(source)}, hash="0123abcd")
    builder.download_and_prepare()
    [config_dir] = (cache / name).glob("default-*")
    target = cache / repo_id.replace("/", "___")
    target.mkdir()
    shutil.move(str(config_dir), str(target / "default"))


def test_a_dataset_id_in_the_local_hugging_face_cache(tmp_path, monkeypatch):
    import datasets

    cache = tmp_path / "hf" / "datasets"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    rows = [{"conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"},
                               {"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}]},
            {"conversations": [{"from": "gpt", "value": "no question"}]}]
    _cache_dataset(cache, "someone/tiny-chats", rows, tmp_path)
    good, bad = read_pairs("someone/tiny-chats")
    assert (good.line, len(good.turns), good.response) == (1, 4, "a2")
    assert bad.line == 2 and "no user message" in bad.message
    with pytest.raises(UserError, match="not a dataset in the local Hugging Face cache"):
        list(read_pairs("someone/not-cached"))
    # what provenance hashes: the cached files, not the id
    files = {p.name for p in source_path("someone/tiny-chats").iterdir()}
    assert any(name.endswith(".arrow") for name in files)
    assert source_path(tmp_path / "x.jsonl") == tmp_path / "x.jsonl"


def test_lint_and_show_mask_accept_a_cached_dataset_id(tmp_path, monkeypatch):
    import datasets
    from typer.testing import CliRunner

    from tunelens.cli import app

    cache = tmp_path / "hf" / "datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    rows = [{"conversations": [{"from": "human", "value": "Add."}, {"from": "gpt", "value": "def add(a, b):\n    return a + b\n"},
                               {"from": "human", "value": "Sub?"}, {"from": "gpt", "value": "def sub(a, b):\n    return a - b\n"}]}]
    _cache_dataset(cache, "someone/chats", rows, tmp_path)
    runner = CliRunner()
    lint = runner.invoke(app, ["data", "lint", "someone/chats", "--out", str(tmp_path / "lint")])
    assert lint.exit_code == 0 and "1 kept" in lint.output, lint.output
    monkeypatch.setattr("tunelens.model.specs.load_tokenizer", lambda spec: __import__("tunelens.testing").testing.tiny_tokenizer())
    shown = runner.invoke(app, ["data", "show-mask", "someone/chats", "--model", "tiny"])
    assert shown.exit_code == 0, shown.output
    output = " ".join(shown.output.split())  # rich wraps at the terminal width
    assert "in 2 assistant turns" in output and output.count("[trained>]def ") == 2


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64])
def test_line_splitting_does_not_depend_on_where_blocks_end(tmp_path, monkeypatch, block):
    from tunelens.data import record_files

    records = [json.dumps({"prompt": f"p{i}", "completion": "c" * (i + 1)}) for i in range(5)]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes((records[0] + "\r\n" + records[1] + "\r" + records[2] + "\n\r\n" + records[3] + "\r\r"
                      + records[4]).encode("utf-8"))
    monkeypatch.setattr(record_files, "_BLOCK", block)
    items = list(read_pairs(path))
    assert [item.instruction for item in items] == [f"p{i}" for i in range(5)]
    assert [item.line for item in items] == [1, 2, 3, 5, 7]  # blank lines count, like an editor's


def test_an_unpaired_surrogate_in_a_utf16_file_spoils_only_its_line(tmp_path):
    good = json.dumps({"prompt": "p", "completion": "c"}).encode("utf-16-le")
    bad = '{"prompt": "'.encode("utf-16-le") + b"\x00\xd8" + '", "completion": "c"}'.encode("utf-16-le")
    path = tmp_path / "u16.jsonl"
    path.write_bytes(b"\xff\xfe" + good + "\n".encode("utf-16-le") + bad + "\n".encode("utf-16-le") + good)
    items = list(read_pairs(path))
    assert [type(item).__name__ for item in items] == ["Pair", "Malformed", "Pair"]
    assert items[1].message == "not valid UTF-16-LE: unpaired surrogate U+D800 at character 12"


def test_an_oversized_line_is_bounded_while_reading(tmp_path):
    # A 60 MB line under a 1 MB limit: dropped as it is read (memory under the limit plus a block,
    # time linear), reported with its true size; the lines around it are read as usual.
    import resource
    import time

    from tunelens.data.record_files import jsonl_rows

    path = tmp_path / "big.jsonl"
    good = json.dumps({"prompt": "p", "completion": "c"}).encode()
    with path.open("wb") as handle:
        handle.write(good + b"\n" + b'{"prompt": "' + b"x" * 1_000_000)
        for _ in range(59):
            handle.write(b"y" * 1_000_000)
        handle.write(b'"}\r\n' + good + b"\n" + b"z" * 3_000_000)  # and one more, unterminated, at the end
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    rows = list(jsonl_rows(path, 1_000_000))
    seconds = time.perf_counter() - start
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert [number for number, _, _ in rows] == [1, 2, 3, 4]
    assert isinstance(rows[0][1], dict) and isinstance(rows[2][1], dict)
    assert rows[1][1].message == "record is 60.0 MB, over the 1 MB limit"
    assert rows[3][1].message == "record is 3.0 MB, over the 1 MB limit"
    assert len(rows[1][1].raw_text) < 3000
    assert grown_mb < 20 and seconds < 5, (grown_mb, seconds)

"""Property-based tests (Hypothesis) for the record reader and `data lint`, end to end on generated files.

Invariants: no exception other than a one-line UserError for a source that cannot be opened at all;
every non-blank line is one record, read as a Pair or a Malformed; lint's counts reconcile
(total == kept + rejected == records written), every quarantined record has a reason, all four
outputs exist and parse, nothing half-written is left beside them, and linting clean.jsonl again keeps
every record. The example budgets are fixed so CI cost stays bounded (15-50 s on a shared 2-core CPU).
"""

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tunelens.data.lint import lint_file
from tunelens.errors import UserError
from tunelens.data.records import Malformed, Pair, read_pairs

READER_EXAMPLES = 200
LINT_EXAMPLES = 50
SHAREGPT_EXAMPLES = 100


def fuzz(max_examples: int) -> settings:
    """A fixed example budget, no deadline (a shared CI CPU is noisy), no example database in the
    repository; print_blob lets a failure found in CI be replayed exactly."""
    return settings(max_examples=max_examples, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ---------------------------------------------------------------- strategies

texts = st.text(max_size=40)
code = st.sampled_from(["def f(x):\n    return x\n", "print 'py2'\n", "x = 0777\n", "def broken(:\n",
                        "```python\nimport os\nprint(os.sep)\n```", "Which order did you mean?", "\ud800", ""])
role_turns = st.lists(st.tuples(st.sampled_from(["user", "assistant", "system", "tool", 7]), st.one_of(texts, code)),
                      max_size=6)


def _chat(turns):
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def _sharegpt(turns):
    names = {"user": "human", "assistant": "gpt"}
    return {"conversations": [{"from": names.get(role, role), "value": content} for role, content in turns]}


good_chat = st.lists(st.tuples(texts.filter(str.strip), code.filter(str.strip)), min_size=1, max_size=3).map(
    lambda pairs: [turn for q, a in pairs for turn in (("user", q), ("assistant", a))])

records = st.one_of(
    good_chat.map(_chat),
    role_turns.map(_chat),
    st.builds(lambda p, c: {"prompt": p, "completion": c}, texts, st.one_of(code, st.integers(), st.none())),
    st.builds(lambda i, o, n: {"instruction": i, "output": o, "input": n}, texts, code, st.one_of(texts, st.none())),
    st.builds(lambda t: {"text": t}, st.one_of(code, texts)),
    st.builds(lambda r, i: {**r, "id": i}, good_chat.map(_chat),
              st.one_of(st.sampled_from(["a", "b"]), st.integers(-3, 3), st.none(), st.lists(st.integers(), max_size=1))),
)
garbage = st.one_of(
    st.text(min_size=1, max_size=30),
    st.just('{"prompt": "p", "completion": "c", "n": ' + "7" * 5000 + "}"),
    st.just("[1, 2]"), st.just("{oops"), st.just("[" * 3000 + "]" * 3000),
).filter(lambda line: "\r" not in line and "\n" not in line and "\x00" not in line
         and line.encode("utf-8", "surrogatepass").strip())
lines = st.lists(st.one_of(
    st.tuples(records, st.booleans()).map(lambda r: json.dumps(r[0], ensure_ascii=r[1])),
    garbage), min_size=0, max_size=12)
# sharegpt files hold only sharegpt-shaped records: auto-detection is per file
sharegpt_lines = st.lists(role_turns.map(_sharegpt).map(json.dumps), max_size=8)


@st.composite
def jsonl_files(draw, line_strategy=lines):
    """(file bytes, number of records) in any line ending, UTF-8 (with or without BOM) or UTF-16."""
    body = draw(line_strategy)
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(body) + draw(st.sampled_from(["", newline]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
    data = text.encode(encoding, errors="surrogatepass")
    return data, len(body)


# ---------------------------------------------------------------- the reader


@fuzz(READER_EXAMPLES)
@given(data=st.binary(max_size=300))
@example(data=b'{"prompt": "p", "completion": "c"}\r{"prompt": "q", "completion": "d"}')
@example(data=b"\xff\xfe{\x00")
@example(data='{"prompt": "0\x85", "completion": "\u2028"}\n'.encode("utf-8"))
def test_reader_never_raises_on_arbitrary_bytes(tmp_path, data):
    path = tmp_path / "any.jsonl"
    path.write_bytes(data)
    try:
        items = list(read_pairs(path))
    except UserError as err:  # only a file that is not text in its declared encoding at all
        assert "\n" not in str(err) and str(path) in str(err)
        return
    assert all(isinstance(item, (Pair, Malformed)) for item in items)
    assert all(item.message for item in items if isinstance(item, Malformed))
    numbers = [item.line for item in items]
    assert numbers == sorted(set(numbers))  # one item per line, in order


@fuzz(READER_EXAMPLES)
@given(file=jsonl_files())
def test_reader_reads_one_item_per_record_in_any_encoding_and_line_ending(tmp_path, file):
    data, count = file
    path = tmp_path / "gen.jsonl"
    path.write_bytes(data)
    items = list(read_pairs(path))
    assert len(items) == count
    for item in items:
        if isinstance(item, Pair):
            for text in [item.instruction, item.response, *item.assistant_texts, *(item.system or "",)]:
                text.encode("utf-8")  # never a lone surrogate in text a tokenizer will see
            assert item.kind == "text" or item.assistant_texts
        else:
            assert item.message


@fuzz(SHAREGPT_EXAMPLES)
@given(file=jsonl_files(sharegpt_lines))
def test_sharegpt_files_reconcile(tmp_path, file):
    data, count = file
    path = tmp_path / "sharegpt.jsonl"
    path.write_bytes(data)
    items = list(read_pairs(path, fmt="sharegpt"))
    assert len(items) == count


# ---------------------------------------------------------------- lint end to end


def _assert_lint_invariants(out, result, count):
    assert result.total == result.kept + result.rejected == count
    assert sorted(p.name for p in out.iterdir()) == ["clean.jsonl", "lint.json", "lint.md", "quarantine.jsonl"]
    # JSONL lines end at LF only: str.splitlines would also split at U+0085 or U+2028 inside a record
    clean = (out / "clean.jsonl").read_bytes().split(b"\n")[:-1]
    quarantine = [json.loads(line) for line in (out / "quarantine.jsonl").read_bytes().split(b"\n")[:-1]]
    assert len(clean) == result.kept and len(quarantine) == result.rejected
    assert all(entry["reasons"] and all(r["code"] and r["message"] for r in entry["reasons"]) for entry in quarantine)
    summary = json.loads((out / "lint.json").read_text(encoding="utf-8"))
    assert (summary["total"], summary["kept"], summary["rejected"]) == (result.total, result.kept, result.rejected)


@fuzz(LINT_EXAMPLES)
@example(file=(b"{\"messages\": [{\"role\": \"user\", \"content\": \"0\xc2\x85\"}, {\"role\": \"assistant\", \"content\": \"def f(x):\\n    return x\\n\"}]}", 1))
@given(file=jsonl_files())
def test_lint_end_to_end_reconciles_and_is_idempotent(tmp_path_factory, file):
    data, count = file
    work = tmp_path_factory.mktemp("lint")
    path = work / "pairs.jsonl"
    path.write_bytes(data)
    result = lint_file(path, work / "out")
    _assert_lint_invariants(work / "out", result, count)
    again = lint_file(work / "out" / "clean.jsonl", work / "again")
    assert (again.total, again.kept, again.rejected) == (result.kept, result.kept, 0)

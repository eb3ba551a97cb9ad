"""A resumed demo directory keeps the time of every invocation, so its report can state the run's real cost."""

import json

from tunelens.demo.run import _log_invocation


def test_each_invocation_is_appended_and_returned_oldest_first(tmp_path):
    first = _log_invocation(tmp_path, 3127.9, {"train the adapters": 1437.4})
    second = _log_invocation(tmp_path, 568.6, {"train the adapters": 2.7})
    assert [i["seconds"] for i in first] == [3127.9]
    assert [i["seconds"] for i in second] == [3127.9, 568.6]
    lines = (tmp_path / "invocations.jsonl").read_text().splitlines()
    assert [json.loads(line)["timings_s"]["train the adapters"] for line in lines] == [1437.4, 2.7]

"""The sandbox contains what generated code can do wrong, and reports each as a failure with its reason.

Each containment test runs one hostile program with tight limits (a few seconds at most) and then
checks the host: the file that must not appear, the listener that must not be reached, no process of
the run's uid left behind, and a follow-up run that still works.
"""

import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

from tunelens.evaluate import sandbox
from tunelens.evaluate.sandbox import Limits, run_many, run_python, sandbox_isolation

FULL = sandbox_isolation() == "namespaces"
needs_namespaces = pytest.mark.skipif(not FULL, reason="the full sandbox needs root and Linux namespaces")
QUICK = Limits(wall_s=3, memory_mb=256, max_output_bytes=100_000, max_processes=8)


def processes_of(uid: int) -> list[int]:
    """PIDs on the host whose real uid is `uid` (the sandbox gives each run its own uid)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                found.append(int(entry))
    return found


def assert_host_fine(result):
    """No process of the run is left, and the sandbox still runs a normal program."""
    if result.uid is not None:
        deadline = time.monotonic() + 2
        while processes_of(result.uid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_of(result.uid) == []
    follow_up = run_python("print(6 * 7)", QUICK)
    assert follow_up.passed and follow_up.stdout == "42\n"


def test_a_normal_program_passes_with_its_output():
    result = run_python("import sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert result.passed and result.reason is None and result.returncode == 0
    assert result.stdout == "out\n" and result.stderr == "err\n"
    assert 0 < result.duration_s < 5


def test_failed_assert_and_other_exceptions_are_named():
    assert run_python("assert 1 + 1 == 3", QUICK).reason == "exception: AssertionError"
    assert run_python("undefined_name", QUICK).reason == "exception: NameError"
    assert run_python("def broken(:\n    pass", QUICK).reason == "exception: SyntaxError"


def test_exiting_before_the_end_is_not_a_pass():
    # Tests run after the code: code that exits with status 0 would otherwise skip them and "pass".
    for code in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit"):
        result = run_python(code + "\nassert False", QUICK)
        assert not result.passed and result.reason == "exited-early", code


def test_main_guard_of_generated_code_does_not_run():
    result = run_python("if __name__ == '__main__':\n    raise SystemExit(3)\nprint('imported')", QUICK)
    assert result.passed and result.stdout == "imported\n"


def test_infinite_loop_is_killed_at_the_wall_time_limit():
    start = time.monotonic()
    result = run_python("while True:\n    pass", Limits(wall_s=1))
    assert not result.passed and result.reason == "timeout"
    assert 1 <= result.duration_s < 3 and time.monotonic() - start < 4
    assert_host_fine(result)


@needs_namespaces
def test_fork_bomb_hits_the_process_limit():
    result = run_python("import os\nwhile True:\n    os.fork()", QUICK)
    assert not result.passed and result.reason == "process-limit"
    assert_host_fine(result)


@needs_namespaces
def test_processes_left_running_are_all_killed_with_the_program():
    # Every process forks until the limit, then all of them sleep: only killing the whole tree ends it.
    code = "import os, time\nfor _ in range(20):\n    try:\n        os.fork()\n    except OSError:\n        pass\ntime.sleep(60)"
    result = run_python(code, Limits(wall_s=1.5, max_processes=8))
    assert not result.passed and result.reason == "timeout"
    assert_host_fine(result)


def test_memory_bomb_is_stopped_by_the_memory_limit():
    for code in ("x = bytearray(8 * 1024 ** 3)", "chunks = []\nwhile True:\n    chunks.append(' ' * 10 ** 7)"):
        result = run_python(code, Limits(wall_s=10, memory_mb=256))
        assert not result.passed and result.reason == "memory", (code, result.stderr[-300:])
        assert result.duration_s < 5
    host = bytearray(200 * 1024 * 1024)  # the host can still allocate what the sandbox could not
    assert len(host) == 200 * 1024 * 1024
    assert_host_fine(result)


def test_gigabytes_of_output_are_cut_at_the_cap():
    for stream in ("sys.stdout", "sys.stderr"):
        code = f"import sys\nwhile True:\n    {stream}.write('x' * 1_000_000)\n    {stream}.flush()"
        result = run_python(code, Limits(wall_s=10, max_output_bytes=200_000))
        assert not result.passed and result.reason == "output-limit"
        assert len(result.stdout) + len(result.stderr) <= 400_000
        assert result.duration_s < 5
    assert_host_fine(result)


def test_environment_of_the_parent_is_not_inherited(monkeypatch):
    monkeypatch.setenv("TUNELENS_SECRET_TOKEN", "s3cret-value")
    result = run_python("import os\nprint(os.environ['TUNELENS_SECRET_TOKEN'])", QUICK)
    assert not result.passed and result.reason == "exception: KeyError"
    assert "s3cret-value" not in result.stdout + result.stderr
    listing = run_python("import os\nprint(sorted(os.environ))", QUICK)
    assert listing.passed and listing.stdout.strip() == "['LANG', 'PATH']"


@needs_namespaces
def test_parent_environment_cannot_be_read_through_proc(monkeypatch):
    monkeypatch.setenv("TUNELENS_SECRET_TOKEN", "s3cret-value")
    code = f"print(open('/proc/{os.getpid()}/environ', 'rb').read())"
    result = run_python(code, QUICK)
    assert not result.passed and "s3cret-value" not in result.stdout + result.stderr


@needs_namespaces
def test_network_socket_cannot_reach_a_listener_on_the_host():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    try:
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hi')"
        result = run_python(code, QUICK)
        assert not result.passed and result.reason == "network-blocked"
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing ever connected
        # The same program from the host does connect: the listener is real.
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            conn, _ = listener.accept()
            conn.close()
    finally:
        listener.close()
    assert_host_fine(result)


@needs_namespaces
def test_addresses_outside_the_host_fail_too():
    result = run_python("import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=2)", QUICK)
    assert not result.passed and result.reason == "network-blocked"


@needs_namespaces
@pytest.mark.parametrize("where", ["visible-dir", "hidden-dir", "tmp", "dev-shm", "cwd-parent"])
def test_writing_outside_the_working_directory_fails(tmp_path, where):
    # A world-writable directory the sandbox can see (under /var/tmp), one it cannot (pytest's tmp_path
    # under /tmp), and the usual shared places.
    visible = Path(tempfile.mkdtemp(prefix="tunelens-test-", dir="/var/tmp"))
    try:
        os.chmod(visible, 0o777)
        tmp_path.chmod(0o777)
        name = f"escape-{os.getpid()}-{where}.txt"
        targets = {"visible-dir": visible / name, "hidden-dir": tmp_path / name, "tmp": Path("/tmp") / name,
                   "dev-shm": Path("/dev/shm") / name, "cwd-parent": Path("..") / name}
        target = targets[where]
        result = run_python(f"open({str(target)!r}, 'w').write('escaped')", QUICK)
        assert not result.passed
        expected = {"hidden-dir": "exception: FileNotFoundError"}.get(where, "write-blocked")
        assert result.reason == expected, result.stderr[-300:]
        if target.is_absolute():
            assert not target.exists()
        assert not any(visible.iterdir()) and not any(tmp_path.iterdir())
    finally:
        for leftover in visible.iterdir():
            leftover.unlink()
        visible.rmdir()


@needs_namespaces
def test_working_directory_is_empty_private_and_gone_afterwards():
    first = run_python("import os\nprint(os.getcwd(), os.listdir('.'))\nopen('made.txt', 'w').write('x')", QUICK)
    assert first.passed and first.stdout.split()[1:] == ["[]"]
    second = run_python("import os\nprint(os.listdir('.'))", QUICK)
    assert second.passed and second.stdout.strip() == "[]"


def test_run_many_keeps_the_order_of_its_inputs():
    codes = [f"print({i})" for i in range(6)] + ["assert False"]
    results = run_many(codes, QUICK, workers=2)
    assert [r.stdout.strip() for r in results[:6]] == [str(i) for i in range(6)]
    assert [r.passed for r in results] == [True] * 6 + [False]


def test_fallback_without_namespaces_still_isolates_what_it_can(monkeypatch, tmp_path):
    # Without root the launcher uses limits, a clean environment, a temporary directory and an audit hook.
    monkeypatch.setattr(sandbox, "_ISOLATION", "rlimits")
    monkeypatch.setenv("TUNELENS_SECRET_TOKEN", "s3cret-value")
    seen = run_python("import os\nprint(os.getcwd())\nprint(os.environ.get('TUNELENS_SECRET_TOKEN'))", QUICK)
    assert seen.passed and seen.isolation == "rlimits"
    workdir, secret = seen.stdout.split()
    assert secret == "None" and not os.path.exists(workdir)  # the directory is deleted afterwards
    net = run_python("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)", QUICK)
    assert net.reason == "network-blocked"
    write = run_python(f"open({str(tmp_path / 'x.txt')!r}, 'w')", QUICK)
    assert write.reason == "write-blocked" and not (tmp_path / "x.txt").exists()
    assert run_python("while True:\n    pass", Limits(wall_s=1)).reason == "timeout"

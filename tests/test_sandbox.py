"""The sandbox contains what generated code can do wrong, and reports each as a failure with its reason.

Each containment test runs one hostile program with tight limits (a few seconds at most) and then
checks the host: the file that must not appear, the listener that must not be reached, no process of
the run's uid left behind, and a follow-up run that still works. The escapes are tried in every
containment mode this host offers (root namespaces, bubblewrap); the refusal where
none works is tested with a probe that plays such a host.
"""

import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tunelens.evaluate import sandbox
from tunelens.evaluate.sandbox import Limits, SandboxUnavailable, run_python, sandbox_isolation

FULL = sandbox_isolation() == "namespaces"
needs_namespaces = pytest.mark.skipif(not FULL, reason="the full sandbox needs root and Linux namespaces")
CONTAINED = sandbox_isolation() != "none"
needs_sandbox = pytest.mark.skipif(not CONTAINED, reason="no containment works on this host")
# CI names the modes its host must offer (TUNELENS_SANDBOX_MODES=namespaces,bwrap): each then runs every
# isolation test, and one that fails its probe fails the run instead of vanishing from it.
REQUIRED_MODES = [m for m in os.environ.get("TUNELENS_SANDBOX_MODES", "").split(",") if m]
MODES_HERE = REQUIRED_MODES or [mode for mode in sandbox.MODES if mode in sandbox._candidates() and sandbox._works(mode)]
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
    assert run_python("assert 1 + 1 == 3", QUICK).reason == "test-failed"
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


def test_reasons_come_from_the_status_frames_not_from_stderr():
    # Text that looks like another failure, printed by the program, changes nothing.
    fake = "import sys\nsys.stderr.write('MemoryError\\nRead-only file system\\nTraceback\\n')\n"
    assert run_python(fake, QUICK).passed
    assert run_python(fake + "raise KeyError", QUICK).reason == "exception: KeyError"
    assert run_python(fake + "import os\nos._exit(3)", QUICK).reason == "exit-code 3"
    # A fault's signal is forced even on the job's PID 1 (a plain kill() of itself would be ignored).
    assert run_python(fake + "import ctypes\nctypes.string_at(0)", QUICK).reason == "signal-11"


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
def test_working_directory_is_empty_private_and_gone_afterwards():
    first = run_python("import os\nprint(os.getcwd(), os.listdir('.'))\nopen('made.txt', 'w').write('x')", QUICK)
    assert first.passed and first.stdout.split() == ["/tmp/work", "[]"]
    second = run_python("import os\nprint(os.listdir('.'))", QUICK)
    assert second.passed and second.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------
# Nothing of the host inside, in every containment mode this host offers


@pytest.fixture(params=MODES_HERE or ["none"])
def mode(request, monkeypatch):
    if request.param == "none":
        pytest.skip("no containment works on this host")
    monkeypatch.setattr(sandbox, "_ISOLATION", request.param)
    return request.param


def _private_tmp() -> list[str]:
    """What the job's /tmp lists: its work directory, plus the first directory of any bound path that lives
    under the host's /tmp (a checkout or venv there: empty mount-point directories down to site-packages)."""
    under_tmp = {Path(path).relative_to("/tmp").parts[0] for path in sandbox._binds() if path.startswith("/tmp/")}
    return sorted({"work"} | under_tmp)


def test_the_root_holds_only_the_python_installation(mode):
    code = ("import os, sys\n"
            "print(sorted(os.listdir('/')))\n"
            "print(repr((sorted(os.listdir('/tmp')), sorted(os.listdir('/dev')))))\n"
            "print(os.path.realpath(sys.base_prefix))")
    result = run_python(code, QUICK)
    assert result.passed, result.stderr[-500:]
    top, (tmp, dev), prefix = result.stdout.splitlines()[0], eval(result.stdout.splitlines()[1]), result.stdout.splitlines()[2]
    assert not {"etc", "home", "var", "run", "srv", "opt", "mnt", "boot", "sys"} & set(eval(top))
    assert tmp == _private_tmp() and {"null", "zero", "urandom"} <= set(dev) and "sda" not in dev
    assert prefix == os.path.realpath(sys.base_prefix)


def test_host_files_are_not_there(mode, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host data")
    checkout = Path(__file__).resolve().parent.parent
    paths = [str(secret), str(checkout / "pyproject.toml"), str(Path(__file__).resolve()), "/etc/passwd",
             "/etc/shadow", os.path.expanduser("~/.bashrc"), "/var/tmp", "/run", "/proc/1/environ",
             os.path.expanduser("~/.cache")]
    code = ("import os\nfor p in %r:\n    print(p, os.path.exists(p))" % (paths,))
    result = run_python(code, QUICK)
    assert result.passed, result.stderr[-500:]
    seen = dict(line.rsplit(" ", 1) for line in result.stdout.splitlines())
    assert all(seen[p] == "False" for p in paths if p != "/proc/1/environ"), seen
    # /proc/1 is the job's own init now, not the host's
    assert "host data" not in result.stdout + result.stderr


def test_a_host_unix_socket_cannot_be_reached(mode):
    # A path socket under /var/tmp (the escape) and an abstract one: neither is reachable.
    directory = Path(tempfile.mkdtemp(prefix="tunelens-sock-", dir="/var/tmp"))
    path = directory / "s"
    listeners = []
    try:
        for address in (str(path), "\0tunelens-test-%d" % os.getpid()):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(address)
            listener.listen(1)
            listener.settimeout(0.3)
            listeners.append(listener)
            code = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({address!r})\ns.sendall(b'hi')"
            result = run_python(code, QUICK)
            assert not result.passed and result.reason in ("exception: FileNotFoundError", "exception: ConnectionRefusedError")
            with pytest.raises(socket.timeout):
                listener.accept()
    finally:
        for listener in listeners:
            listener.close()
        path.unlink(missing_ok=True)
        directory.rmdir()


def test_private_tmp_is_writable_and_the_rest_is_read_only(mode):
    name = f"tunelens-escape-{os.getpid()}"
    code = (f"open('/tmp/{name}', 'w').write('x')\n"
            "import os, sys\n"
            "for target in ('/' + 'x', os.path.join(sys.base_prefix, 'x'), '/dev/x', '/proc/x', '/usr/x'):\n"
            "    try:\n        open(target, 'w')\n        print('wrote', target)\n"
            "    except OSError as e:\n        print(type(e).__name__)\n")
    result = run_python(code, QUICK)
    assert result.passed, result.stderr[-500:]
    assert "wrote" not in result.stdout
    assert not Path("/tmp", name).exists() and not Path(sys.base_prefix, "x").exists()


def test_the_job_has_no_privilege_to_undo_its_containment(mode):
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print(os.getuid() != 0, libc.mount(b'none', b'/', None, 32 | 4096, None), "
            "libc.unshare(0x00020000), libc.umount2(b'/usr', 2))")
    result = run_python(code, QUICK)
    assert result.passed and result.stdout.split() == ["True", "-1", "-1", "-1"], result.stdout + result.stderr[-300:]


def test_subprocesses_and_daemons_are_contained_too(mode, tmp_path):
    tmp_path.chmod(0o777)
    target = tmp_path / "from-child.txt"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    write = f"open({str(target)!r}, 'w')"
    connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"
    code = ("import subprocess, sys, os\n"
            f"subprocess.run([sys.executable, '-c', {write!r}])\n"
            f"subprocess.run([sys.executable, '-c', {connect!r}])\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        import time\n        time.sleep(30)\n    os._exit(0)\n")
    try:
        result = run_python(code, Limits(wall_s=6, max_processes=8))
        assert result.passed, result.stderr[-500:]
        assert not target.exists()
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    assert_host_fine(result)


# ---------------------------------------------------------------------------------------------------
# Choosing a mode, and refusing where none works


@pytest.mark.skipif(not REQUIRED_MODES, reason="TUNELENS_SANDBOX_MODES is not set (CI sets it)")
def test_every_mode_this_host_must_offer_works():
    assert set(REQUIRED_MODES) <= set(sandbox.MODES), REQUIRED_MODES
    assert [mode for mode in REQUIRED_MODES if not sandbox._works(mode)] == []


def test_the_first_working_mode_is_chosen():
    assert sandbox.sandbox_isolation(probe=lambda mode: mode == "bwrap") in ("bwrap", "none")
    assert sandbox.sandbox_isolation(probe=lambda mode: True) == sandbox._candidates()[0]
    assert sandbox.sandbox_isolation(probe=lambda mode: False) == "none"


def test_without_containment_generated_code_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "_ISOLATION", sandbox.sandbox_isolation(probe=lambda mode: False))
    marker = tmp_path / "ran.txt"
    with pytest.raises(SandboxUnavailable, match="--unsafe-no-sandbox"):
        run_python(f"open({str(marker)!r}, 'w')", QUICK)
    assert not marker.exists()
    assert "\n" not in sandbox.refusal_message()


def test_unsafe_mode_runs_with_limits_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "_ISOLATION", "none")
    monkeypatch.setenv("TUNELENS_SECRET_TOKEN", "s3cret-value")
    seen = run_python("import os\nprint(os.getcwd())\nprint(os.environ.get('TUNELENS_SECRET_TOKEN'))", QUICK,
                      unsafe=True)
    assert seen.passed and seen.isolation == "unsafe-no-sandbox"
    workdir, secret = seen.stdout.split()
    assert secret == "None" and not os.path.exists(workdir)  # a clean environment; the directory is deleted
    assert run_python("while True:\n    pass", Limits(wall_s=1), unsafe=True).reason == "timeout"
    assert run_python("x = bytearray(8 * 1024 ** 3)", QUICK, unsafe=True).reason == "memory"


@pytest.mark.skipif(not shutil.which("bwrap"), reason="bubblewrap is not installed")
def test_bubblewrap_mode_runs_when_namespaces_are_not_offered(monkeypatch):
    # A host where root namespaces do not work (not root), with bwrap installed.
    chosen = sandbox.sandbox_isolation(probe=lambda mode: mode == "bwrap" and sandbox._works(mode))
    assert chosen == "bwrap"
    monkeypatch.setattr(sandbox, "_ISOLATION", chosen)
    result = run_python("import os, numpy\nprint(sorted(os.listdir('/tmp')), numpy.int64(2) * 3)", QUICK)
    assert result.passed and result.isolation == "bwrap" and result.stdout.strip() == f"{_private_tmp()!r} 6"


def test_the_answer_cannot_reach_the_tests_process(mode):
    # Tests apart from the answer (sandbox_remote.py): in every mode the answer's process can neither
    # trace the tests' process nor open its status pipe through /proc, so a failing answer stays failing.
    from tunelens.evaluate.judge import Case, judge

    attack = ("import os, ctypes\n"
              "libc = ctypes.CDLL(None, use_errno=True)\n"
              "for pid in {1, os.getppid()}:\n"
              "    print('ptrace', libc.ptrace(16, pid, 0, 0))\n"  # PTRACE_ATTACH
              "    try:\n        fds = os.listdir('/proc/%d/fd' % pid)\n    except OSError as e:\n"
              "        print('listdir', type(e).__name__)\n        fds = [str(n) for n in range(3, 12)]\n"
              "    for fd in fds:\n        try:\n            w = os.open('/proc/%d/fd/%s' % (pid, fd), os.O_WRONLY)\n"
              "            os.write(w, b'[\"end\"]\\n')\n            print('wrote', pid, fd)\n"
              "        except OSError:\n            pass\n"
              "def add(a, b):\n    return a - b\n")
    case = Case(tests="for a, b in ((2, 3),):\n    assert add(a, b) == a + b\n", entry_point="add")
    verdict = judge(case, attack, QUICK)
    assert not verdict.passed and verdict.judged == "sandbox-apart", (verdict.reason, verdict.stderr[-300:])
    assert "wrote" not in verdict.stdout and "ptrace 0" not in verdict.stdout, verdict.stdout
    right = judge(case, "def add(a, b):\n    return a + b\n", QUICK)
    assert right.passed and right.judged == "sandbox-apart", right.reason

"""Run untrusted Python (model-generated code, and tests that call it) in a contained child process.

Every job runs in a fresh ``python -I -S -u`` interpreter started through ``sandbox_boot.py``, which
shows it nothing of the host (docs/eval-suites.md, "The sandbox"):

* **root** (``namespaces``): new mount, network, PID, IPC and UTS namespaces; a tmpfs root with
  read-only binds of only the Python installation, its site-packages and the system libraries, a
  minimal ``/dev``, a new ``/proc``, a private size-capped ``/tmp``; ``pivot_root`` into it; then a
  random unprivileged uid for the run (``RLIMIT_NPROC`` on it caps a fork bomb).
* **not root, bubblewrap installed** (``bwrap``): the same layout built by ``bwrap``, no capabilities.
* **neither**: jobs are refused (``SandboxUnavailable``) unless ``unsafe=True``
  (``--unsafe-no-sandbox``): then only resource limits and a clean environment apply.

In every mode: ``RLIMIT_AS``/``CPU``/``FSIZE``, a wall-clock deadline that kills the process group, a
cap on every pipe to the host. How a job ended is read from the launcher's status frames and the exit
status, never from stderr. Jobs: ``run_python`` (a program), ``run_calls`` (the answer's code and the
calls of host-judged asserts), ``run_apart`` (tests and answer apart, see sandbox_remote.py).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tunelens.errors import UserError
from tunelens.evaluate.sandbox_boot import SETUP_FAILED

HERE = os.path.dirname(os.path.abspath(__file__))
BOOT_SCRIPT = os.path.join(HERE, "sandbox_boot.py")
# Sent as one source, in this order: the second file uses the first's names.
REMOTE_SCRIPTS = tuple(os.path.join(HERE, name) for name in ("sandbox_remote.py", "sandbox_remote_tests.py"))
BOOT_INSIDE = "/.tunelens_boot.py"  # where bwrap shows the launcher
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
# Random per-run uids come from this range, so runs never share a process count or a file owner.
UID_BASE, UID_SPAN = 1_200_000, 800_000
MODES = ("namespaces", "bwrap")  # preferred first
UNSAFE = "unsafe-no-sandbox"
_SYSTEM_LIBS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib")
_SIGXCPU, _SIGXFSZ = 24, 25


class SandboxUnavailable(UserError):
    """No containment works here and running generated code uncontained was not asked for."""


@dataclass(frozen=True)
class Limits:
    """What one sandboxed job may use."""

    wall_s: float = 10
    memory_mb: int = 512
    max_output_bytes: int = 1_000_000  # stdout and stderr together
    max_processes: int = 16
    disk_mb: int = 64
    max_result_bytes: int = 4_000_000  # the status pipe: frames with the calls' results


@dataclass
class SandboxResult:
    """The outcome of one job: ``passed`` when it reached its ``end`` frame and exited 0, else ``reason``:
    ``timeout``, ``memory``, ``output-limit``, ``result-limit``, ``process-limit``, ``network-blocked``,
    ``write-blocked``, ``permission-denied``, ``file-size``, ``exited-early``, ``test-failed``,
    ``exception: <Name>``, ``signal-N``, ``exit-code N``, ``malformed-status`` or ``sandbox-error: ...``.
    ``frames``: the status frames, checked for shape."""

    passed: bool
    reason: str | None
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    isolation: str = "namespaces"
    uid: int | None = field(default=None, repr=False)
    frames: list = field(default_factory=list, repr=False)
    killed_for: str | None = field(default=None, repr=False)


def run_python(code: str, limits: Limits | None = None, unsafe: bool = False) -> SandboxResult:
    """Run ``code`` as a program in the sandbox and report how it ended."""
    return _run_job(code, None, limits or Limits(), unsafe)


def run_calls(code: str, steps: list, limits: Limits | None = None, unsafe: bool = False) -> SandboxResult:
    """Define ``code``, take ``steps`` (judge_plan.HostPlan.wire) and frame each call's outcome."""
    return _run_job(code, steps, limits or Limits(), unsafe)


def run_apart(code: str, tests: str, limits: Limits | None = None, unsafe: bool = False, *,
              prelude: str = "", entry_point: str | None = None, check: bool = False,
              handle_sites: list | None = None) -> SandboxResult:
    """Run ``tests`` against ``code`` in two processes of one sandbox (sandbox_remote.py). ``prelude`` (a
    HumanEval prompt) runs in both; ``check``: end with ``check(entry_point)``. ``handle_sites``: where
    the answer may return an object (None: this is the reference's run, which records them)."""
    remote = {"prelude": prelude, "entry_point": entry_point, "check": check, "handle_sites": handle_sites}
    return _run_job(prelude + code, None, limits or Limits(), unsafe, remote, private=tests.encode())


# ---------------------------------------------------------------------------------------------------
# Which containment this host offers


_ISOLATION: str | None = None


def sandbox_isolation(probe: Callable[[str], bool] | None = None) -> str:
    """The first of ``MODES`` that runs a trivial job here, else ``"none"``; cached. ``probe(mode)``
    replaces the trial run (tests play a host without a sandbox)."""
    global _ISOLATION
    if probe is not None:
        return next((mode for mode in _candidates() if probe(mode)), "none")
    if _ISOLATION is None:
        _ISOLATION = next((mode for mode in _candidates() if _works(mode)), "none")
    return _ISOLATION


def _candidates() -> list[str]:
    if not sys.platform.startswith("linux"):
        return []
    return ["namespaces"] * (os.geteuid() == 0) + ["bwrap"] * bool(shutil.which("bwrap"))


def _works(mode: str) -> bool:
    return _launch(_job("pass", None, Limits(wall_s=20), mode), Limits(wall_s=20), mode).passed


def refusal_message() -> str:
    return ("tunelens sandbox: cannot contain generated code here (not root, and no working bwrap): install "
            "bubblewrap, or pass --unsafe-no-sandbox to run it with resource limits only")


def mode_for(unsafe: bool) -> str:
    """The mode a job runs in here; SandboxUnavailable (naming --unsafe-no-sandbox) when none works and
    running generated code uncontained was not asked for."""
    mode = sandbox_isolation()
    if mode == "none" and not unsafe:
        raise SandboxUnavailable(refusal_message())
    return UNSAFE if mode == "none" else mode


# ---------------------------------------------------------------------------------------------------
# Host side: start the launcher, feed it the job, read its pipes with caps and a deadline.


def _run_job(code: str, calls: list | None, limits: Limits, unsafe: bool, remote: dict | None = None,
             private: bytes | None = None) -> SandboxResult:
    mode = mode_for(unsafe)
    job = _job(code, calls, limits, mode)
    if remote:
        job.update(remote=remote, remote_source=_remote_source())
    try:
        return _launch(job, limits, mode, private)
    finally:
        if mode == UNSAFE:
            _remove_tree(job["workdir"])


@functools.lru_cache(maxsize=1)
def _remote_source() -> str:
    return "\n\n".join(Path(path).read_text(encoding="utf-8") for path in REMOTE_SCRIPTS)


def _job(code: str, calls: list | None, limits: Limits, mode: str) -> dict:
    uid = UID_BASE + secrets.randbelow(UID_SPAN) if mode == "namespaces" else None
    nproc = limits.max_processes if uid is not None else _own_processes() + limits.max_processes
    return {"code": code, "calls": calls, "isolation": mode, "uid": uid,
            "workdir": tempfile.mkdtemp(prefix="tunelens-sbx-") if mode == UNSAFE else "/tmp/work",
            "limits": {**limits.__dict__, "nproc": nproc},
            "binds": _binds(), "site_dirs": _site_dirs()}


def _site_dirs() -> list[str]:
    """The site-packages directories, so installed packages import (read-only) inside."""
    dirs = list(site.getsitepackages()) + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    return [os.path.realpath(d) for d in dirs if os.path.isdir(d)]


def _binds() -> list[str]:
    """What the new root shows: the interpreter's prefix, site-packages, the system's shared libraries."""
    wanted = [os.path.realpath(sys.base_prefix)] + _site_dirs()
    wanted += [path for path in _SYSTEM_LIBS if os.path.isdir(path) and not os.path.islink(path)]
    return sorted(set(wanted))


def _own_processes() -> int:
    return sum(1 for entry in os.listdir("/proc") if entry.isdigit() and _owner(entry) == os.getuid())


def _owner(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _command(mode: str, status_w: int, job: dict) -> list[str]:
    # -u: unbuffered stdout and stderr, so what a job printed is kept however it ends (an answer's
    # own os._exit, a kill at the deadline); output is capped, so the cost of a write per print is too.
    boot = [os.path.realpath(sys.executable), "-I", "-S", "-u"]
    if mode != "bwrap":
        return boot + [BOOT_SCRIPT, "--boot", str(status_w)]
    return _bwrap_args(job) + boot + [BOOT_INSIDE, "--boot", str(status_w)]


def _bwrap_args(job: dict) -> list[str]:
    # --as-pid-1: the launcher is the namespace's init, as in the other modes; no reaper of bwrap's own
    # (same uid as the job, traceable by it) stands between the answer and the tests' process.
    args = ["bwrap", "--unshare-all", "--unshare-user", "--uid", "1000", "--gid", "1000", "--die-with-parent",
            "--new-session", "--as-pid-1", "--cap-drop", "ALL", "--clearenv"]
    for name, value in CLEAN_ENV.items():
        args += ["--setenv", name, value]
    # The private /tmp first: bwrap applies its arguments in order, so a bind of a checkout or venv that
    # lives under the host's /tmp must come after it to stay visible.
    disk = str(job["limits"]["disk_mb"] * 1024 * 1024)
    args += ["--perms", "1777", "--size", disk, "--tmpfs", "/tmp"]
    for path in job["binds"]:
        args += ["--ro-bind", path, path]
    for name in ("lib", "lib64", "bin"):
        target = os.path.realpath("/" + name)
        if target != "/" + name:
            args += ["--symlink", target.lstrip("/"), "/" + name]
    args += ["--ro-bind", BOOT_SCRIPT, BOOT_INSIDE, "--dev", "/dev", "--proc", "/proc",
             "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
    return args


def _launch(job: dict, limits: Limits, mode: str, private: bytes | None = None) -> SandboxResult:
    """Run the launcher on ``job``; ``private`` (run_apart's tests) through a pipe only the tests' process
    reads: never in the answer's process, not even in memory."""
    start = time.monotonic()
    status_r, status_w = os.pipe()
    private_r, private_w = os.pipe() if private is not None else (None, None)
    job["private_fd"] = private_r
    proc = subprocess.Popen(
        _command(mode, status_w, job), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, pass_fds=tuple(fd for fd in (status_w, private_r) if fd is not None),
        env=dict(CLEAN_ENV), cwd=job["workdir"] if mode == UNSAFE else "/", start_new_session=True)
    os.close(status_w)
    if private is not None:
        os.close(private_r)
        # A thread: the pipe holds 64 KiB, and the launcher reads it only once it has forked.
        threading.Thread(target=_write_all, args=(private_w, private), daemon=True).start()
    try:
        _send(proc, job)
        out, err, status, killed_for = _collect(proc, status_r, limits, start)
    finally:
        os.close(status_r)
        _kill_group(proc.pid)
        proc.wait()
    frames, malformed = parse_frames(status)
    result = SandboxResult(False, None, proc.returncode, out.decode("utf-8", "replace"),
                           err.decode("utf-8", "replace"), time.monotonic() - start, mode, job["uid"],
                           frames, killed_for)
    result.reason = "malformed-status" if malformed and not killed_for else ending_reason(result)
    result.passed = result.reason is None
    return result


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:  # the launcher is gone
        pass
    finally:
        os.close(fd)


def _send(proc: subprocess.Popen, job: dict) -> None:
    try:
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
    except BrokenPipeError:  # the launcher died before reading; its exit status says so
        pass


def _collect(proc, status_r: int, limits: Limits, start: float):
    """Read stdout, stderr and the status pipe until all close, the deadline, or a cap is passed."""
    out, err = proc.stdout.fileno(), proc.stderr.fileno()
    chunks = {out: bytearray(), err: bytearray(), status_r: bytearray()}
    sel = selectors.DefaultSelector()
    for fd in chunks:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    killed_for = None
    while sel.get_map() and killed_for is None:
        left = limits.wall_s - (time.monotonic() - start)
        if left <= 0:
            killed_for = "timeout"
            break
        for key, _ in sel.select(timeout=min(left, 0.5)):
            data = os.read(key.fd, 65536)
            if not data:
                sel.unregister(key.fd)
            chunks[key.fd] += data
        if len(chunks[out]) + len(chunks[err]) > limits.max_output_bytes:
            killed_for = "output-limit"
        elif len(chunks[status_r]) > limits.max_result_bytes:
            killed_for = "result-limit"
    sel.close()
    if killed_for:
        _stop(proc)
    cap = limits.max_output_bytes
    return bytes(chunks[out][:cap]), bytes(chunks[err][:cap]), bytes(chunks[status_r]), killed_for


def _stop(proc: subprocess.Popen) -> None:
    """Ask the launcher to kill and reap the job; kill the whole process group if it does not."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc.pid)


def _kill_group(pgid: int) -> None:
    # The launcher leads its own process group; in namespace modes killing it also ends the PID
    # namespace (its init has the launcher's death as its own death signal).
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------------------
# Reading the status frames and naming how a job ended


FRAME_KINDS = {"setup": 2, "end": 1, "error": 3, "exit": 3, "ok": 4, "raise": 4, "unplain": 3, "sites": 2}


def parse_frames(data: bytes) -> tuple[list, bool]:
    """The status frames, and whether anything in the pipe was not a well-formed frame (a truncated
    last line, the job killed mid-write, is dropped, not malformed)."""
    frames, malformed = [], False
    for line in data.split(b"\n")[:-1]:
        try:
            frame = json.loads(line)
        except (ValueError, RecursionError):
            frame = None
        if type(frame) is list and frame and type(frame[0]) is str and FRAME_KINDS.get(frame[0]) == len(frame):
            frames.append(frame)
        else:
            malformed = True
    return frames, malformed


def ending_reason(result: SandboxResult) -> str | None:
    """None when the job ran to its end; else why not, from the host's own observations first
    (kills, signals), then the first frame that says how the job stopped."""
    if result.killed_for:
        return result.killed_for
    code = result.returncode
    setup = next((f for f in result.frames if f[0] == "setup"), None)
    if code == SETUP_FAILED and setup:
        return "sandbox-error: " + str(setup[1])[:300]
    if code is not None and (code < 0 or code > 128):
        return _signal_reason(-code if code < 0 else code - 128)
    # A call's own exit (["exit", index, code]) is that call's outcome, not the job's end.
    stop = next((f for f in result.frames if f[0] in ("error", "end") or f[:2] == ["exit", None]), None)
    if stop is None:
        return "exited-early" if code == 0 else "exit-code %s" % code
    if stop[0] == "error":
        return exception_reason(stop[1], stop[2])
    if stop[0] == "exit":
        return "exited-early"
    return None if code == 0 else "exit-code %s" % code


def _signal_reason(number: int) -> str:
    return {_SIGXCPU: "timeout", _SIGXFSZ: "file-size"}.get(number, "signal-%d" % number)


_NAMED = {"MemoryError": "memory", "AssertionError": "test-failed"}
_DENIED_ERRNOS = {1, 13}  # EPERM, EACCES
_EROFS = 30
_NETWORK_ERRNOS = {99, 100, 101}  # EADDRNOTAVAIL, ENETDOWN, ENETUNREACH


def exception_reason(name, errno) -> str:
    """The reason for an exception the job reported by type name and errno."""
    name = str(name)[:100]
    if name in _NAMED:
        return _NAMED[name]
    if name == "BlockingIOError" and errno == 11:
        return "process-limit"  # fork() at RLIMIT_NPROC
    if errno in _NETWORK_ERRNOS:
        return "network-blocked"
    if errno == _EROFS:
        return "write-blocked"
    if errno in _DENIED_ERRNOS and name in ("PermissionError", "OSError"):
        return "permission-denied"
    return "exception: " + name


def _remove_tree(path: str) -> None:
    # An uncontained job may leave read-only directories; make them writable so rmtree can finish.
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            try:
                os.chmod(os.path.join(root, name), 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)

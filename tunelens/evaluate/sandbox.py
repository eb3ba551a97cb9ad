"""Run untrusted Python (model-generated code and its tests) in a contained child process.

Every program runs in a fresh ``python -I -S`` interpreter (``sys.executable``) started through this
file's own launcher. When the host is root (as here) the launcher puts the program in new Linux
namespaces and drops to an unprivileged user id picked at random for this run:

* network: a new network namespace with no interfaces up, so any connect fails (even to 127.0.0.1);
* processes: a new PID namespace whose init is the program, so when it ends or is killed every
  process it started dies with it; ``RLIMIT_NPROC`` on the run's own uid caps a fork bomb (root is
  exempt from RLIMIT_NPROC, which is why the uid is dropped);
* files: ``/`` is remounted read-only for the program, ``/tmp`` and ``/dev/shm`` are replaced by
  empty tmpfs mounts, and the only writable place is the empty working directory ``/tmp/work``
  (a size-capped tmpfs that disappears with the namespace);
* memory: ``RLIMIT_AS``; time: a wall-clock deadline after which the whole process group is killed
  (plus ``RLIMIT_CPU`` as a backstop); output: stdout and stderr are read with a cap and the
  program is killed as soon as it passes it;
* environment: only a minimal ``PATH`` and ``LANG``; nothing of the parent's environment.

Without root (or where namespaces are refused) the launcher falls back to what an ordinary user can
do: resource limits, a clean environment, an empty temporary directory that is deleted afterwards,
and an audit hook that refuses sockets. ``sandbox_isolation()`` says which mode is in use.

Generated code is assumed to be buggy, not to be an attacker studying this file: a program that goes
out of its way to fake the completion marker could fake a pass.

The launcher is ``sandbox_boot.py`` (kept apart so that each program's start-up imports almost nothing).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable

from tunelens.evaluate.sandbox_boot import EXITED_EARLY, SETUP_FAILED

BOOT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_boot.py")
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
# Random per-run uids come from this range, so runs never share a process count or a file owner.
UID_BASE, UID_SPAN = 1_200_000, 800_000


@dataclass(frozen=True)
class Limits:
    """What one sandboxed program may use."""

    wall_s: float = 10
    memory_mb: int = 512
    max_output_bytes: int = 1_000_000
    max_processes: int = 16
    disk_mb: int = 64


@dataclass
class SandboxResult:
    """The outcome of one program.

    ``passed`` means the program ran to its end and exited with status 0. Otherwise ``reason`` is one
    of: ``timeout``, ``memory``, ``output-limit``, ``process-limit``, ``network-blocked``,
    ``write-blocked``, ``file-size``, ``exited-early`` (called exit before the end),
    ``exception: <Name>`` (an uncaught exception; ``exception: AssertionError`` is a failed test),
    ``signal-N``, ``exit-code N``, ``sandbox-error: ...`` (the sandbox itself could not start it).
    """

    passed: bool
    reason: str | None
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    isolation: str = "namespaces"
    uid: int | None = field(default=None, repr=False)


def run_python(code: str, limits: Limits | None = None) -> SandboxResult:
    """Run ``code`` as a program in the sandbox and report how it ended."""
    limits = limits or Limits()
    isolation = sandbox_isolation()
    nonce = secrets.token_hex(16)
    uid = UID_BASE + secrets.randbelow(UID_SPAN) if isolation == "namespaces" else None
    host_dir = None if isolation == "namespaces" else tempfile.mkdtemp(prefix="tunelens-sbx-")
    payload = {"code": code, "nonce": nonce, "uid": uid, "workdir": host_dir,
               "limits": limits.__dict__, "isolation": isolation}
    try:
        return _run_launcher(payload, limits, isolation, nonce, uid)
    finally:
        if host_dir:
            _remove_tree(host_dir)


def run_many(codes: Iterable[str], limits: Limits | None = None, workers: int = 2) -> list[SandboxResult]:
    """``[run_python(c, limits) for c in codes]``, with ``workers`` programs running at once."""
    codes = list(codes)
    if workers <= 1:
        return [run_python(code, limits) for code in codes]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda code: run_python(code, limits), codes))


_ISOLATION: str | None = None


def sandbox_isolation() -> str:
    """``namespaces`` when the full sandbox works here (root and unshare allowed), else ``rlimits``."""
    global _ISOLATION
    if _ISOLATION is None:
        _ISOLATION = "rlimits"
        if os.geteuid() == 0 and sys.platform.startswith("linux"):
            probe = _run_launcher({"code": "pass", "nonce": "probe", "uid": UID_BASE, "workdir": None,
                                   "limits": Limits().__dict__, "isolation": "namespaces"},
                                  Limits(wall_s=20), "namespaces", "probe", UID_BASE)
            if probe.passed:
                _ISOLATION = "namespaces"
            else:  # root without namespaces (a restricted container): say so, once
                warnings.warn(f"tunelens sandbox: namespaces unavailable ({probe.reason}); falling back "
                              "to resource limits only", RuntimeWarning, stacklevel=2)
    return _ISOLATION


# ---------------------------------------------------------------------------------------------------
# Host side: start the launcher, feed it the program, read its output with a cap and a deadline.


def _run_launcher(payload: dict, limits: Limits, isolation: str, nonce: str, uid) -> SandboxResult:
    start = time.monotonic()
    done_r, done_w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", BOOT_SCRIPT, "--boot", str(done_w)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        pass_fds=(done_w,), env=dict(CLEAN_ENV), cwd="/", start_new_session=True)
    os.close(done_w)
    try:
        _send_payload(proc, payload)
        out, err, done, killed_for = _collect(proc, done_r, limits, start)
    finally:
        os.close(done_r)
        _kill_group(proc.pid)
        proc.wait()
    duration = time.monotonic() - start
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    finished = done.decode(errors="replace") == nonce
    passed = killed_for is None and proc.returncode == 0 and finished
    reason = None if passed else (killed_for or _failure_reason(proc.returncode, stderr, finished))
    return SandboxResult(passed, reason, proc.returncode, stdout, stderr, duration, isolation, uid)


def _send_payload(proc: subprocess.Popen, payload: dict) -> None:
    try:
        proc.stdin.write(json.dumps(payload).encode())
        proc.stdin.close()
    except BrokenPipeError:  # the launcher died before reading; its stderr says why
        pass


def _collect(proc, done_r: int, limits: Limits, start: float):
    """Read stdout, stderr and the completion pipe until all close, the deadline, or the output cap."""
    chunks = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), done_r: bytearray()}
    sel = selectors.DefaultSelector()
    for fd in chunks:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    killed_for = None
    output = 0
    while sel.get_map():
        left = limits.wall_s - (time.monotonic() - start)
        if left <= 0:
            killed_for = "timeout"
            break
        for key, _ in sel.select(timeout=min(left, 0.5)):
            data = os.read(key.fd, 65536)
            if not data:
                sel.unregister(key.fd)
                continue
            chunks[key.fd] += data
            if key.fd != done_r:
                output += len(data)
        if output > limits.max_output_bytes:
            killed_for = "output-limit"
            break
    sel.close()
    if killed_for:
        _stop(proc)
    cap = limits.max_output_bytes
    return (bytes(chunks[proc.stdout.fileno()][:cap]), bytes(chunks[proc.stderr.fileno()][:cap]),
            bytes(chunks[done_r][:64]), killed_for)


def _stop(proc: subprocess.Popen) -> None:
    """Ask the launcher to kill and reap the program; kill the whole process group if it does not."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc.pid)


def _kill_group(pgid: int) -> None:
    # The launcher leads its own process group; in namespace mode killing it also ends the PID
    # namespace (its init has the launcher's death as its own death signal).
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))\b(.*)$", re.M)


def _failure_reason(returncode: int | None, stderr: str, finished: bool) -> str:
    if returncode == SETUP_FAILED and "sandbox-setup:" in stderr:
        return "sandbox-error: " + stderr.split("sandbox-setup:", 1)[1].strip().splitlines()[0]
    if returncode == EXITED_EARLY or (returncode == 0 and not finished):
        return "exited-early"
    if returncode is not None and returncode < 0:
        return "signal-%d" % -returncode
    if returncode is not None and returncode > 128 and not _EXCEPTION_LINE.search(stderr):
        sig = returncode - 128
        return "file-size" if sig == signal.SIGXFSZ else "signal-%d" % sig
    return _reason_from_traceback(stderr) or "exit-code %s" % returncode


def _reason_from_traceback(stderr: str) -> str | None:
    if "MemoryError" in stderr:
        return "memory"
    if "Network is unreachable" in stderr or "sandbox: network access is blocked" in stderr:
        return "network-blocked"
    if "BlockingIOError" in stderr and "Resource temporarily unavailable" in stderr:
        return "process-limit"
    if "Read-only file system" in stderr or "sandbox: writing outside" in stderr:
        return "write-blocked"
    found = _EXCEPTION_LINE.findall(stderr)
    if not found:
        return None
    name, message = found[-1]
    if name == "PermissionError" and ("Errno 13" in message or "Errno 1]" in message):
        return "write-blocked"
    return "exception: " + name.rsplit(".", 1)[-1]


def _remove_tree(path: str) -> None:
    import shutil

    # The fallback sandbox may leave read-only directories; make them writable so rmtree can finish.
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            try:
                os.chmod(os.path.join(root, name), 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)



"""The sandbox's launcher: run as ``python -I -S sandbox_boot.py --boot FD`` by tunelens.evaluate.sandbox.

It reads the program and its limits as JSON on stdin, sets up the containment (see sandbox.py) and runs
the program in this same interpreter after dropping privileges. It imports as little as possible,
because its start-up time is paid by every sandboxed program.
"""

import json
import os
import signal
import sys

# Exit statuses of the launcher's own outcomes; sandbox.py reads them.
SETUP_FAILED = 125
EXITED_EARLY = 124


CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1


class _SetupError(Exception):
    pass


def _boot(done_fd: int) -> None:
    payload = json.loads(sys.stdin.buffer.read().decode())
    limits = payload["limits"]
    try:
        if payload["isolation"] == "namespaces":
            _enter_namespaces(limits["disk_mb"])
            pid = os.fork()
            if pid:
                _wait_and_exit(pid)
            _prepare_init_process(payload["uid"])
            workdir = "/tmp/work"
        else:
            workdir = payload["workdir"]
            sys.addaudithook(_fallback_audit_hook(workdir))
        _apply_rlimits(limits)
        if payload["uid"] is not None:
            _drop_privileges(payload["uid"])
        os.chdir(workdir)
        _redirect_stdin()
    except (_SetupError, OSError) as err:
        sys.stderr.write("sandbox-setup: %s\n" % err)
        sys.stderr.flush()
        os._exit(SETUP_FAILED)
    _run_program(payload["code"], payload["nonce"], done_fd)


def _run_program(code: str, nonce: str, done_fd: int) -> None:
    import builtins
    import traceback

    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        # A __main__ guard in generated code must not run: tests import the code, they don't run it.
        exec(compile(code, "<program>", "exec"), namespace)
    except SystemExit as stop:
        sys.stderr.write("sandbox: program called exit(%r) before its end\n" % (stop.code,))
        sys.stderr.flush()
        os._exit(EXITED_EARLY)
    except BaseException as error:
        # Skip this launcher's own frame: the traceback starts in the program.
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os.write(done_fd, nonce.encode())
    os._exit(0)


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise _SetupError("%s: %s" % (what, os.strerror(errno)))


def _mount(source, target, fstype, flags, data=None) -> None:
    enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
    _check(_libc().mount(enc(source), enc(target), enc(fstype), flags, enc(data)), "mount %s" % target)


def _enter_namespaces(disk_mb: int) -> None:
    """New mount, network, PID, IPC and UTS namespaces; the filesystem made read-only but /tmp/work."""
    before = os.readlink("/proc/self/ns/mnt")
    _check(_libc().unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS),
           "unshare")
    # Never touch a mount unless this process really has its own mount namespace now.
    if os.readlink("/proc/self/ns/mnt") == before:
        raise _SetupError("unshare did not create a mount namespace")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
    _keep_interpreter_reachable()
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=0755" % disk_mb)
    os.mkdir("/tmp/work", 0o700)
    if os.path.isdir("/dev/shm"):
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,mode=0755")


def _keep_interpreter_reachable() -> None:
    """Let an unprivileged uid read the standard library even when it lives under e.g. /root (0700).

    The closed ancestor is covered with an empty tmpfs (which also hides everything else in it) and
    the interpreter's prefix is bind-mounted back, read-only, at its own path.
    """
    prefix = os.path.realpath(sys.base_prefix)
    closed = None
    parts = prefix.strip("/").split("/")
    for depth in range(1, len(parts) + 1):
        path = "/" + "/".join(parts[:depth])
        if not os.stat(path).st_mode & 0o001:
            closed = path
            break
    if closed is None:
        return
    keep = os.open(prefix, os.O_PATH)
    try:
        _mount("tmpfs", closed, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        os.makedirs(prefix, 0o755, exist_ok=True)
        _mount("/proc/self/fd/%d" % keep, prefix, None, MS_BIND | MS_REC)
        _mount(None, prefix, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        _mount(None, closed, None, MS_REMOUNT | MS_RDONLY)
    finally:
        os.close(keep)


def _wait_and_exit(pid: int) -> None:
    """The launcher outside the PID namespace: wait for its init and pass on how it ended.

    SIGTERM from the host means "stop": the launcher kills the init (which takes the whole namespace
    with it) and reaps it, so no zombie is left for the host's init to collect.
    """
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    _ignored, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def _prepare_init_process(uid: int) -> None:
    """In the new PID namespace (this process is its init): a /proc showing only its processes."""
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except _SetupError:
        pass  # the old /proc still shows only what the unprivileged uid may see
    os.chown("/tmp/work", uid, uid)


def _apply_rlimits(limits: dict) -> None:
    import resource

    memory = limits["memory_mb"] * 1024 * 1024
    cpu = int(limits["wall_s"]) + 2
    disk = limits["disk_mb"] * 1024 * 1024
    for name, value in (("RLIMIT_AS", memory), ("RLIMIT_NPROC", limits["max_processes"]),
                        ("RLIMIT_CPU", cpu), ("RLIMIT_FSIZE", disk), ("RLIMIT_CORE", 0),
                        ("RLIMIT_NOFILE", 256)):
        resource.setrlimit(getattr(resource, name), (value, value))


def _drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise _SetupError("could not drop to uid %d" % uid)
    # A uid change clears the parent-death signal, so it is set after: the launcher dying kills us.
    import ctypes

    _check(ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")


def _redirect_stdin() -> None:
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def _fallback_audit_hook(workdir: str):
    """Without namespaces: refuse sockets and writes outside the working directory (best effort)."""
    root = os.path.realpath(workdir)
    writing_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def writes(args) -> bool:
        mode, flags = (args[1], args[2]) if len(args) > 2 else (args[1] if len(args) > 1 else None, 0)
        return bool((mode and any(c in str(mode) for c in "wax+")) or (flags or 0) & writing_flags)

    def hook(event, args):
        if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo"):
            raise PermissionError("sandbox: network access is blocked")
        if event == "open" and isinstance(args[0], (str, bytes)) and writes(args):
            full = os.path.realpath(os.path.join(root, os.fsdecode(args[0])))
            if not (full == root or full.startswith(root + os.sep)):
                raise PermissionError("sandbox: writing outside the working directory is blocked")

    return hook


if __name__ == "__main__" and sys.argv[1:2] == ["--boot"]:
    _boot(int(sys.argv[2]))

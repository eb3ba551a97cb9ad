"""The sandbox's launcher: run as ``python -I -S -u sandbox_boot.py --boot FD`` by tunelens.evaluate.sandbox.

It reads a job as JSON on stdin, contains itself (see sandbox.py), drops privileges and runs it in
this interpreter: the answer's code then a list of **steps** (calls with plain-data arguments, each
call's outcome framed back as plain data; none for a program), or tests and answer **apart**
(``"remote"``, sandbox_remote.py). It also holds the one codec of plain data (``_encode``/``_decode``),
which the host imports. The host learns everything from JSON frames on the status pipe ``FD``; the
answer can write to it too, so the host trusts nothing there beyond "these are the answer's outputs"
and fails the case on anything malformed. This file imports little: every job pays its start-up time.
"""

import json
import os
import signal
import sys

# Exit statuses of the launcher's own outcomes.
SETUP_FAILED = 125

# Plain data crosses the sandbox boundary as tagged JSON (``_encode``), nested at most this deep.
MAX_DEPTH = 64
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
# Where the new root is assembled (a tmpfs mounted over this path in the job's own mount namespace).
NEW_ROOT = "/tmp"
DEVICES = ("null", "zero", "full", "random", "urandom")


class _SetupError(Exception):
    pass


class _Unserializable(Exception):
    pass


_STATUS_FD = -1


def _frame(*parts) -> None:
    """One status frame: a JSON list on its own line."""
    _write_line(_STATUS_FD, list(parts))


def _write_line(fd: int, message: list) -> None:
    """``message`` as JSON on a line of its own, written whole with os.write."""
    data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def _boot(status_fd: int) -> None:
    global _STATUS_FD
    _STATUS_FD = status_fd
    job = json.loads(sys.stdin.buffer.read().decode())
    limits = job["limits"]
    try:
        mode = job["isolation"]
        if mode == "namespaces":
            _contain(job)
            workdir = "/tmp/work"
        else:  # "bwrap" (contained before this started) or "unsafe" (not contained at all)
            workdir = job["workdir"]
            os.makedirs(workdir, 0o777, exist_ok=True)
            os.environ.pop("PWD", None)  # bwrap sets it after --chdir; the job's environment is PATH and LANG
        sys.path.extend(job["site_dirs"])
        _apply_rlimits(limits)
        os.chdir(workdir)
        _redirect_stdin()
        if job.get("remote"):
            _run_apart(job)  # never returns
        _become(job["uid"])
    except (_SetupError, OSError) as err:
        _frame("setup", str(err))
        os._exit(SETUP_FAILED)
    _run_calls(job["code"], job["calls"] or [])  # a program: no calls


def _become(uid) -> None:
    """Drop to ``uid`` (root namespaces), or keep this user (bwrap has shed every capability already;
    unsafe has none to shed); then no_new_privs and the parent-death signal either way."""
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise _SetupError("could not drop to uid %d" % uid)
    _check(_libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl no_new_privs")
    # A uid change clears the parent-death signal, so it is set after: the launcher dying kills us.
    _check(_libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl pdeathsig")


def _run_apart(job: dict) -> None:
    """Tests and answer in two processes of this sandbox (see sandbox_remote.py): the answer's process
    is a child that never holds the status pipe; this one runs the tests and writes the frames."""
    remote = dict(globals())
    exec(compile(job["remote_source"], "<sandbox_remote>", "exec"), remote)
    to_answer_r, to_answer_w = os.pipe()
    to_tests_r, to_tests_w = os.pipe()
    uid = job["uid"]  # None outside root namespaces
    # Not dumpable from before the fork on: a process of the same uid (the answer's, outside root
    # namespaces) cannot ptrace this one or open its pipes through /proc.
    _not_dumpable()
    if os.fork() == 0:
        for fd in (_STATUS_FD, job["private_fd"], to_answer_w, to_tests_r):  # private_fd: the tests' source
            os.close(fd)
        _become(uid)  # the same uid as the tests: files either writes, the other reads (mkstemp's 0600)
        _not_dumpable(1)  # its own /proc/self as usual; the tests' process stays closed
        remote["serve_answer"](job["code"], remote["_Channel"](to_answer_r, to_tests_w))
        _flush_output()
        os._exit(0)
    os.close(to_answer_r)
    os.close(to_tests_w)
    _become(uid)
    _not_dumpable()  # again: a uid change may reset it (fs.suid_dumpable)
    with os.fdopen(job["private_fd"], "rb") as private:
        tests = private.read().decode()
    remote["run_tests"](job, tests, remote["_Channel"](to_tests_r, to_answer_w))
    _flush_output()  # the tests' own prints, whether they passed or not
    os._exit(0)


def _not_dumpable(dumpable: int = 0) -> None:
    _check(_libc().prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0), "prctl dumpable")


# ---------------------------------------------------------------------------------------------------
# What runs: a whole program, or the answer's code then one call per test call.


def _run_calls(code: str, steps: list) -> None:
    """Define the code, then take the steps: ``["set", variable, value]`` gives a test variable (one a
    call takes as an argument) its value, ``["forget", variable]`` drops it; ``["call", name, args,
    kwargs, consume, store]`` makes the next call and frames its outcome, with every variable's value
    after it (a call may mutate the arguments it was given)."""
    namespace = {"__name__": "__sandbox__", "__builtins__": __builtins__}
    if not _define(code, namespace):
        return
    variables = {}
    index = 0
    for step in steps:
        _flush_output()  # each call's prints reach the host before its outcome, whatever happens next
        if step[0] == "set":
            variables[step[1]] = _decode(step[2])
            continue
        if step[0] == "forget":
            variables.pop(step[1], None)
            continue
        _one_call(index, namespace, variables, *step[1:])
        index += 1
    _flush_output()
    _frame("end")
    os._exit(0)


def _define(code: str, namespace: dict) -> bool:
    """Run ``code``; on an exception or exit, frame it and end the process (returns False if it ever
    comes back, e.g. when an answer neutered os._exit)."""
    try:
        # A __main__ guard in generated code must not run: tests import the code, they don't run it.
        exec(compile(code, "<program>", "exec"), namespace)
        return True
    except SystemExit as stop:
        _frame("exit", None, _plain_code(stop.code))
    except BaseException as error:
        _report_uncaught(error)
    _flush_output()  # what the answer printed before it failed is part of the verdict (docs/eval.md)
    os._exit(1)
    return False


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # a replaced or closed stream: nothing more to keep
            pass


def _one_call(index: int, namespace: dict, variables: dict, name: str, args, kwargs, consume: bool, store) -> None:
    try:
        function = namespace[name]
    except KeyError:
        _frame("raise", index, "NameError", None)
        return
    argument = lambda item: variables[item[1]] if item[0] == "$" else _decode(item)  # noqa: E731
    try:
        value = function(*[argument(a) for a in args], **{k: argument(v) for k, v in kwargs})
        if consume and type(value) not in _PLAIN_TYPES and getattr(type(value), "__module__", None) != "numpy":
            value = list(value)  # the test iterates it (list(f(x))): a generator's items, by its code
    except SystemExit as stop:
        _frame("exit", index, _plain_code(stop.code))
        return
    except BaseException as error:  # the answer's own exception is its outcome for this call
        _frame("raise", index, type(error).__name__, _errno(error))
        return
    if store is not None:
        variables[store] = value
    encoded = _encode_or_mark(value)
    if encoded[0] == "?":
        _frame("unplain", index, encoded[1])
    else:
        _frame("ok", index, encoded, [[key, _encode_or_mark(item)] for key, item in variables.items()])


def _encode_or_mark(value):
    """A variable's value, or ["?", why] when it holds something that is not plain data."""
    try:
        return _encode(value)
    except (_Unserializable, RecursionError) as why:
        return ["?", str(why)[:200] or "nested too deep"]


def _report_uncaught(error: BaseException) -> None:
    # The frame first: it is small, and after a MemoryError printing a traceback may itself fail.
    _frame("error", type(error).__name__, _errno(error))
    _print_traceback(error)


def _print_traceback(error: BaseException) -> None:
    """For the human reading the row; the reason comes from the frames."""
    try:
        import traceback

        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        sys.stderr.flush()
    except BaseException:
        pass


def _errno(error: BaseException):
    number = getattr(error, "errno", None)
    return number if type(number) is int else None


def _plain_code(code):
    return code if type(code) in (int, str) or code is None else repr(type(code))


# ---------------------------------------------------------------------------------------------------
# The one codec: plain data as tagged JSON, ``[tag, payload]``, exact types only. ``["n"]`` None,
# ``["B", b]`` bool, ``["i", hex]`` int, ``["f", float.hex]`` float, ``["s", text]`` str, ``["b", hex]``
# bytes, ``["l"|"t"|"S"|"F", items]`` list/tuple/set/frozenset, ``["d", [[k, v], ...]]`` dict,
# ``["A", dtype, shape, items]`` a numpy array of booleans or numbers (a numpy scalar is sent as the
# Python value it holds). The host and the tests' process decode what an answer sent, so ``_decode``
# trusts nothing: every tag, payload and depth is checked, and it builds only exact built-in types
# (and plain numpy arrays). The host imports this module for it (tunelens.evaluate.judge).

# ints and floats in hex: exact, no digit limit, and a float's carries inf and nan
_SCALAR_TAGS = {type(None): lambda v: ["n"], bool: lambda v: ["B", v], int: lambda v: ["i", hex(v)],
                float: lambda v: ["f", v.hex()], str: lambda v: ["s", v], bytes: lambda v: ["b", v.hex()]}
_CONTAINER_TAGS = {list: "l", tuple: "t", set: "S", frozenset: "F"}
_CONTAINER_KINDS = {tag: kind for kind, tag in _CONTAINER_TAGS.items()}
_PLAIN_TYPES = (type(None), bool, int, float, str, bytes, dict, *_CONTAINER_TAGS)
_HEX_INT = "-0123456789abcdefx"
_ARRAY_KINDS = "biuf"  # numpy dtype kinds sent as data: bool, int, unsigned, float


class Malformed(ValueError):
    """Received data that is not well-formed tagged plain data."""


def _encode(value, depth: int = 0, special=None):
    """``value`` as tagged JSON; anything that is not plain data goes to ``special`` (None: refused)."""
    if depth > MAX_DEPTH:
        raise _Unserializable("nested deeper than %d" % MAX_DEPTH)
    kind = type(value)
    if kind in _SCALAR_TAGS:
        return _SCALAR_TAGS[kind](value)
    if kind in _CONTAINER_TAGS:
        return [_CONTAINER_TAGS[kind], [_encode(item, depth + 1, special) for item in value]]
    if kind is dict:
        return ["d", [[_encode(k, depth + 1, special), _encode(v, depth + 1, special)] for k, v in value.items()]]
    if getattr(kind, "__module__", None) == "numpy":
        if kind.__name__ == "ndarray" and value.dtype.kind in _ARRAY_KINDS and value.ndim <= MAX_DEPTH:
            return ["A", value.dtype.str, list(value.shape), [_encode(x.item(), depth + 1) for x in value.ravel()]]
        if getattr(value, "ndim", None) == 0 and value.dtype.kind in _ARRAY_KINDS:
            return _encode(value.item(), depth)  # np.int64, np.float64, np.bool_...
    if special is not None:
        return special(value)
    raise _Unserializable("not plain data: %s" % kind.__name__)


def _decode(tagged, depth: int = 0, special=None):
    """The plain value ``tagged`` stands for; a tag it does not know goes to ``special`` (None:
    ``Malformed``), and so does anything that is not exactly the format."""
    if depth > MAX_DEPTH:
        raise Malformed("nested deeper than %d" % MAX_DEPTH)
    if type(tagged) is not list or not tagged or type(tagged[0]) is not str:
        raise Malformed("not a tagged value")
    tag, size = tagged[0], len(tagged)
    if tag == "n" and size == 1:
        return None
    payload = tagged[1] if size == 2 else None
    if tag == "B" and type(payload) is bool:
        return payload
    if tag == "s" and type(payload) is str:
        return payload
    if tag == "i" and type(payload) is str and payload.lstrip("-")[:2] == "0x" and not payload.strip(_HEX_INT):
        return _parse(int, payload, 16)
    if tag == "f" and type(payload) is str and len(payload) <= 40:
        return _parse(float.fromhex, payload)
    if tag == "b" and type(payload) is str:
        return _parse(bytes.fromhex, payload)
    if tag in _CONTAINER_KINDS and type(payload) is list:
        return _parse(_CONTAINER_KINDS[tag], [_decode(item, depth + 1, special) for item in payload])
    if tag == "d" and type(payload) is list:
        return _parse(dict, [_pair(item, depth, special) for item in payload])
    if tag == "A" and size == 4:
        return _array(tagged, depth)
    if special is not None and tag not in "nBsifbltSFdA":
        return special(tagged)
    raise Malformed("malformed value with tag %r" % tag[:20])


def _parse(convert, *args):
    try:
        return convert(*args)
    except (ValueError, TypeError, OverflowError):  # bad digits, an unhashable item in a set or dict
        raise Malformed("malformed %s" % getattr(convert, "__name__", "value")) from None


def _pair(item, depth: int, special):
    if type(item) is not list or len(item) != 2:
        raise Malformed("dict item")
    return _decode(item[0], depth + 1, special), _decode(item[1], depth + 1, special)


def _array(tagged, depth: int):
    _, dtype, shape, items = tagged
    if (type(dtype) is not str or len(dtype) > 8 or dtype[1:2] not in tuple(_ARRAY_KINDS)
            or type(shape) is not list or len(shape) > MAX_DEPTH or type(items) is not list
            or not all(type(n) is int and 0 <= n for n in shape)):
        raise Malformed("array")
    import numpy

    values = [_decode(item, depth + 1) for item in items]
    if not all(type(v) in (bool, int, float) for v in values):
        raise Malformed("array item")
    return _parse(lambda: numpy.array(values, dtype=numpy.dtype(dtype)).reshape(shape))


# ---------------------------------------------------------------------------------------------------
# Containment: new namespaces, a fresh root holding only the Python installation, no privileges.


_LIBC = []


def _libc():
    if not _LIBC:
        import ctypes

        _LIBC.append(ctypes.CDLL(None, use_errno=True))
        _LIBC[0].mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return _LIBC[0]


def _check(result: int, what: str) -> None:
    if result != 0:
        import ctypes

        raise _SetupError("%s: %s" % (what, os.strerror(ctypes.get_errno())))


def _mount(source, target, fstype, flags, data=None) -> None:
    enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
    _check(_libc().mount(enc(source), enc(target), enc(fstype), flags, enc(data)), "mount %s" % target)


def _contain(job: dict) -> None:
    """Namespaces, the new root, then fork: the child is the PID namespace's init and runs the job."""
    before = os.readlink("/proc/self/ns/mnt")
    _check(_libc().unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    # Never touch a mount unless this process really has its own mount namespace now.
    if os.readlink("/proc/self/ns/mnt") == before:
        raise _SetupError("unshare did not create a mount namespace")
    _build_root(job["binds"], job["limits"]["disk_mb"])
    pid = os.fork()
    if pid:
        _wait_and_exit(pid)
    # The init mounts the new namespace's /proc while the host's is still visible, then switches roots.
    _mount("proc", NEW_ROOT + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _enter_root()
    # Owned by the job's uid; writable by all, as the answer's process (another uid) shares it.
    os.chown("/tmp/work", job["uid"], job["uid"])
    os.chmod("/tmp/work", 0o777)


def _build_root(binds: list, disk_mb: int) -> None:
    """A tmpfs root holding read-only binds of ``binds`` (at their own paths), a minimal /dev, an empty
    /proc mount point and a private size-capped /tmp (``_enter_root`` switches to it).

    Sources are opened before anything is mounted over them (one might live under ``NEW_ROOT``).
    """
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
    # Whether each source is a directory is read now: a source under the host's /tmp (a checkout or a
    # venv there) is hidden as soon as the new root's tmpfs covers NEW_ROOT.
    sources = [(os.open(path, os.O_PATH | os.O_CLOEXEC), path, os.path.isdir(path))
               for path in binds if os.path.exists(path)]
    devices = [(os.open("/dev/" + name, os.O_PATH | os.O_CLOEXEC), name) for name in DEVICES]
    _mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    # The private /tmp goes in before the binds, so a bind below /tmp lands on top of it, not under it.
    os.makedirs(NEW_ROOT + "/tmp", 0o755)
    _mount("tmpfs", NEW_ROOT + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=1777" % disk_mb)
    os.mkdir(NEW_ROOT + "/tmp/work", 0o700)
    for fd, path, is_dir in sources:
        _bind_readonly(fd, NEW_ROOT + path, is_dir)
    for name in ("lib", "lib64", "bin"):  # merged-/usr systems: the loader looks in /lib64
        target = os.path.realpath("/" + name)
        if target != "/" + name and not os.path.lexists(NEW_ROOT + "/" + name):
            os.symlink(target.lstrip("/"), NEW_ROOT + "/" + name)
    _build_dev(devices)
    for path in ("/proc", "/.old"):
        os.makedirs(NEW_ROOT + path, 0o755, exist_ok=True)


def _enter_root() -> None:
    """pivot_root into the assembled root; detach the host's, and make the new root read-only."""
    os.chdir(NEW_ROOT)
    _check(_libc().syscall(155, b".", b".old"), "pivot_root")  # 155: pivot_root on x86_64
    os.chdir("/")
    _check(_libc().umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _bind_readonly(fd: int, target: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(target, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount("/proc/self/fd/%d" % fd, target, None, MS_BIND | MS_REC)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.close(fd)


def _build_dev(devices: list) -> None:
    dev = NEW_ROOT + "/dev"
    os.mkdir(dev, 0o755)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID, "size=64k,mode=0755")
    for fd, name in devices:
        os.close(os.open(dev + "/" + name, os.O_CREAT | os.O_WRONLY, 0o666))
        _mount("/proc/self/fd/%d" % fd, dev + "/" + name, None, MS_BIND)
        os.close(fd)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, dev + "/" + name)
    os.mkdir(dev + "/shm", 0o1777)
    _mount("tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=1777")
    # In a user namespace the job's uid owns this tmpfs: read-only, so /dev holds only what is put here.
    _mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID)


def _wait_and_exit(pid: int) -> None:
    """The launcher outside the PID namespace: wait for its init and pass on how it ended.

    SIGTERM from the host means "stop": the launcher kills the init (which takes the whole namespace
    with it) and reaps it, so no zombie is left for the host's init to collect.
    """
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    os.close(_STATUS_FD)  # only the job writes frames; the host sees end-of-file when it is gone
    _ignored, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def _apply_rlimits(limits: dict) -> None:
    import resource

    memory = limits["memory_mb"] * 1024 * 1024
    cpu = int(limits["wall_s"]) + 2
    disk = limits["disk_mb"] * 1024 * 1024
    for name, value in (("RLIMIT_AS", memory), ("RLIMIT_NPROC", limits["nproc"]),
                        ("RLIMIT_CPU", cpu), ("RLIMIT_FSIZE", disk), ("RLIMIT_CORE", 0),
                        ("RLIMIT_NOFILE", 256)):
        resource.setrlimit(getattr(resource, name), (value, value))


def _redirect_stdin() -> None:
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


if __name__ == "__main__" and sys.argv[1:2] == ["--boot"]:
    _boot(int(sys.argv[2]))

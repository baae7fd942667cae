"""Launch a distributed training job under its real launcher and follow it.

The parent process encodes the examples (so every rank trains on exactly the same token ids),
writes a spec, and starts ``torchrun`` (``torch.distributed.run``) for FSDP2 or the ``deepspeed``
launcher for ZeRO-3, each running ``python -m harness.lib.training.worker SPEC``.  It follows rank 0's
``events.jsonl`` for progress and checkpoint events, and turns a non-zero exit, a timeout, or a job
that did not shard its parameters into a ``CheckError`` quoting the end of the job's log: a
distributed run never falls back to something else silently.

Rendezvous settings come from the suite's ``launch`` block, else from the environment
(``HARNESS_NNODES``, ``HARNESS_NPROC_PER_NODE``, ``HARNESS_NODE_RANK``, ``HARNESS_RDZV_ENDPOINT``,
``HARNESS_RDZV_ID``, ``HARNESS_HOSTFILE``), else single-node defaults.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from harness.errors import CheckError, ConfigError
from harness.lib.training.events import LoopEvent, RankSharding, from_json
from harness.lib.training.examples import Example, save_examples
from harness.lib.training.loop import LoopResult
from harness.lib.refs import ComponentConfig


class LaunchConfig(ComponentConfig):
    """Where and how many processes run; unset values come from ``HARNESS_*`` variables."""

    nnodes: int | None = Field(None, ge=1, description="machines (env HARNESS_NNODES, default 1)")
    nproc_per_node: int | None = Field(
        None, ge=1, description="processes per machine (env HARNESS_NPROC_PER_NODE, default 2)"
    )
    node_rank: int | None = Field(None, ge=0, description="this machine's rank (env HARNESS_NODE_RANK, default 0)")
    rdzv_endpoint: str | None = Field(None, description="host:port of the rendezvous (env HARNESS_RDZV_ENDPOINT)")
    rdzv_id: str | None = Field(None, description="job id shared by all machines (env HARNESS_RDZV_ID)")
    hostfile: str | None = Field(None, description="DeepSpeed hostfile for several machines (env HARNESS_HOSTFILE)")
    threads_per_process: int | None = Field(None, ge=1, description="OMP threads per process (default: cores / processes)")
    timeout_s: int = Field(6 * 3600, ge=1, description="kill the job after this long")


@dataclass(frozen=True)
class Launch:
    nnodes: int
    nproc_per_node: int
    node_rank: int
    rdzv_endpoint: str | None
    rdzv_id: str
    hostfile: str | None
    threads: int
    timeout_s: int

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def resolve_launch(cfg: LaunchConfig, env: dict[str, str] | None = None) -> Launch:
    env = dict(os.environ if env is None else env)

    def pick(value: Any, name: str, default: Any, cast: Callable[[str], Any] = str) -> Any:
        if value is not None:
            return value
        raw = env.get(f"HARNESS_{name}")
        if raw in (None, ""):
            return default
        try:
            return cast(raw)
        except ValueError:
            raise ConfigError(f"environment HARNESS_{name}={raw!r} is not a valid value") from None

    nnodes = pick(cfg.nnodes, "NNODES", 1, int)
    nproc = pick(cfg.nproc_per_node, "NPROC_PER_NODE", 2, int)
    endpoint = pick(cfg.rdzv_endpoint, "RDZV_ENDPOINT", None)
    if nnodes > 1 and endpoint is None and pick(cfg.hostfile, "HOSTFILE", None) is None:
        raise ConfigError("launch: several nodes need rdzv_endpoint (or HARNESS_RDZV_ENDPOINT) or a hostfile")
    cores = os.cpu_count() or 1
    return Launch(
        nnodes=nnodes,
        nproc_per_node=nproc,
        node_rank=pick(cfg.node_rank, "NODE_RANK", 0, int),
        rdzv_endpoint=endpoint,
        rdzv_id=pick(cfg.rdzv_id, "RDZV_ID", "harness"),
        hostfile=pick(cfg.hostfile, "HOSTFILE", None),
        threads=cfg.threads_per_process or max(1, cores // nproc),
        timeout_s=cfg.timeout_s,
    )


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``), so that a
    killed ``harness run`` never leaves a launcher or its ranks training on behind it (a resumed
    run would otherwise find two jobs writing the same folder).  A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(engine: str, launch: Launch, spec: Path) -> list[str]:
    """The launcher's command line for ``engine`` (``fsdp2``: torchrun; ``deepspeed``)."""
    worker = ["harness.lib.training.worker", str(spec)]
    if engine == "fsdp2":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(launch.nnodes), "--nproc-per-node", str(launch.nproc_per_node)]
        if launch.nnodes == 1 and launch.rdzv_endpoint is None:
            cmd += ["--standalone"]
        else:
            cmd += ["--node-rank", str(launch.node_rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", str(launch.rdzv_endpoint), "--rdzv-id", launch.rdzv_id]
        return [*cmd, "-m", *worker]
    if engine == "deepspeed":
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(launch.nproc_per_node)]
        if launch.hostfile:
            cmd += ["--hostfile", launch.hostfile, "--num_nodes", str(launch.nnodes)]
        if launch.rdzv_endpoint:
            host, _, port = launch.rdzv_endpoint.rpartition(":")
            cmd += ["--master_addr", host, "--master_port", port]
        else:
            cmd += ["--master_port", str(_free_port())]
        return [*cmd, "--module", *worker]
    raise ConfigError(f"unknown training engine {engine!r}")


@dataclass(frozen=True)
class JobSpec:
    """One distributed training job: the engine (``fsdp2`` or ``deepspeed``) and its launch, the
    folders, the encoded examples (and the Fisher set for EWC), the training config as JSON, and
    what a resumed state must match (``config_digest``).  ``extra`` goes into the worker's spec
    as it is (e.g. the ``deepspeed`` options)."""

    engine: str
    launch: Launch
    output_dir: Path
    model_path: Path
    examples: Sequence[Example]
    fisher: Sequence[Example]
    config: Mapping[str, Any]
    seed: int
    pad_id: int
    config_digest: str
    resume: bool
    bf16: bool
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobResult:
    """What a finished job left: the loop's result, every rank's sharding, and the job's log."""

    result: LoopResult
    sharding: list[RankSharding]
    log: Path


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def run_job(job: JobSpec, on_event: Callable[[LoopEvent], None]) -> JobResult:
    """Run one distributed training job to the end, handing rank 0's events to ``on_event`` as
    they come; every rank's failure is a ``CheckError``."""
    spec_path = _write_spec(job)
    log = job.output_dir / "job.log"
    proc = _start(job, spec_path, log)
    try:
        _follow(job, proc, EventTail(job.output_dir / "events.jsonl", on_event), log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return _collect(job, proc.returncode, log)


def _write_spec(job: JobSpec) -> Path:
    """Clear what an earlier job left, write the examples and the worker's spec (``job.json``)."""
    out = job.output_dir
    out.mkdir(parents=True, exist_ok=True)
    for stale in [out / "events.jsonl", out / "result.json", *out.glob("sharding_rank*.json")]:
        stale.unlink(missing_ok=True)
    save_examples(out / "examples.jsonl", list(job.examples))
    save_examples(out / "fisher.jsonl", list(job.fisher))
    spec = {
        "engine": job.engine,
        "model_path": str(job.model_path),
        "output_dir": str(out),
        "examples": str(out / "examples.jsonl"),
        "fisher": str(out / "fisher.jsonl"),
        "config": dict(job.config),
        "seed": job.seed,
        "pad_id": job.pad_id,
        "config_digest": job.config_digest,
        "resume": job.resume,
        "bf16": job.bf16,
        "world_size": job.launch.world_size,
        **job.extra,
    }
    spec_path = out / "job.json"
    spec_path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return spec_path


def _start(job: JobSpec, spec_path: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start the launcher in its own session, its output appended to ``log``; through this
    module's main, so the launcher dies with the harness (see ``die_with_parent``)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(job.launch.threads), "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    import torch

    if job.engine == "deepspeed" and not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = "cpu"
    cmd = command(job.engine, job.launch, spec_path)
    with log.open("ab") as sink:
        sink.write(f"$ {' '.join(cmd)}\n".encode())
        sink.flush()
        wrapped = [sys.executable, "-m", "harness.lib.training.launch", *cmd]
        return subprocess.Popen(wrapped, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)


class EventTail:
    """Follows ``events.jsonl`` as rank 0 appends to it: each ``drain`` hands the complete lines
    written since the last one to ``on_event`` (a half-written last line waits for the next)."""

    def __init__(self, path: Path, on_event: Callable[[LoopEvent], None]) -> None:
        self.path, self.on_event, self.offset = path, on_event, 0

    def drain(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode("utf-8").splitlines():
            self.on_event(from_json(json.loads(line)))


def _follow(job: JobSpec, proc: subprocess.Popen[bytes], events: EventTail, log: Path) -> None:
    """Hand on events until the launcher exits; past ``launch.timeout_s`` a ``CheckError``."""
    deadline = time.monotonic() + job.launch.timeout_s
    while proc.poll() is None:
        events.drain()
        if time.monotonic() > deadline:
            raise CheckError(f"{job.engine} training exceeded launch.timeout_s={job.launch.timeout_s}; log: {log}")
        time.sleep(0.3)
    events.drain()


def _collect(job: JobSpec, returncode: int, log: Path) -> JobResult:
    """The job's result and sharding; a failed exit, a missing result or a model that was not
    sharded is a ``CheckError`` quoting the end of the log."""
    if returncode != 0:
        raise CheckError(f"{job.engine} training failed (launcher exit {returncode}); end of {log}:\n{_tail(log)}")
    out = job.output_dir
    try:
        result = LoopResult.from_json(json.loads((out / "result.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        raise CheckError(f"{job.engine} training exited 0 without a result; end of {log}:\n{_tail(log)}") from None
    sharding = [RankSharding(**json.loads(p.read_text())) for p in sorted(out.glob("sharding_rank*.json"))]
    check_sharded(job.engine, sharding, job.launch.world_size, job.launch.nnodes == 1)
    return JobResult(result, sharding, log)


def check_sharded(engine: str, sharding: Sequence[RankSharding], world_size: int, all_local: bool = True) -> None:
    """Fail unless every rank reported (the ranks of this machine, when ``all_local`` is false)
    and, with several ranks, each held a strict part of the parameters."""
    if not sharding or (all_local and len(sharding) != world_size):
        raise CheckError(f"{engine}: {len(sharding)} of {world_size} ranks reported their parameters")
    for entry in sharding:
        if entry.world_size != world_size:
            raise CheckError(f"{engine}: rank {entry.rank} ran in a world of {entry.world_size}, not {world_size}")
        if world_size > 1 and entry.local_params >= entry.total_params:
            raise CheckError(
                f"{engine}: rank {entry.rank} holds all {entry.total_params} parameters; the model was not sharded"
            )


def main(argv: list[str]) -> int:
    """``python -m harness.lib.training.launch CMD...``: run CMD in this process (exec), set to die
    with the parent, which a ``subprocess`` start cannot ask for without an unsafe ``preexec_fn``."""
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:
        return 1
    os.execv(argv[0], argv)
    return 1  # pragma: no cover - execv does not return


if __name__ == "__main__":  # pragma: no cover - run by run_job
    sys.exit(main(sys.argv[1:]))

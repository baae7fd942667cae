"""``harness run --shards N``: launch N local ``harness run --shard i/N`` workers and wait for them.

Each worker evaluates its item shard (see ``harness.lib.shards``) into the shared store; the
caller then runs the suite once more, unsharded, which finds every item in the store and gates.
Training, when the suite trains, is done once: the first worker takes the training key's lock and
the others wait for it and reuse its adapter.

Where GPUs are visible, worker ``i`` is pinned to one with ``CUDA_VISIBLE_DEVICES`` (the ``i``-th
of the parent's ``CUDA_VISIBLE_DEVICES`` list, else of the GPUs torch counts; round robin when there
are more workers than GPUs).  On CPU each worker gets an equal share of the cores
(``OMP_NUM_THREADS``) unless the environment sets it.  A worker writes its output to its own log
file; on SIGINT or SIGTERM every worker gets SIGTERM (it marks its run interrupted and keeps what
it scored) before the interruption goes on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.lib.shards import Shard

STOP_GRACE_S = 60.0
"""How long an interrupted launcher waits for its workers to record their interruption."""


@dataclass(frozen=True)
class Worker:
    """One launched shard: its command, the environment it adds, and its log file."""

    shard: Shard
    command: tuple[str, ...]
    env: Mapping[str, str]
    log: Path


@dataclass(frozen=True)
class WorkerExit:
    worker: Worker
    exit_code: int
    seconds: float


def self_command(argv: Sequence[str]) -> list[str]:
    """The command that started this process, without the arguments ``argv`` that ``harness``
    parsed (so a wrapper script that adds plugins launches its workers through itself too);
    ``python -m harness.cli`` when ``argv`` did not come from the command line."""
    orig, tail = list(getattr(sys, "orig_argv", [])), list(argv)
    if tail and len(orig) > len(tail) and orig[-len(tail) :] == tail:
        return [sys.executable, *orig[1 : -len(tail)]]
    return [sys.executable, "-m", "harness.cli"]


def gpu_devices(environ: Mapping[str, str]) -> list[str]:
    """The GPUs workers may be pinned to: ``CUDA_VISIBLE_DEVICES`` when set, else those torch
    counts (none on a CPU machine or without torch)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_env(index: int, count: int, devices: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """What worker ``index`` of ``count`` adds to the environment: its GPU, or its CPU share."""
    if devices:
        return {"CUDA_VISIBLE_DEVICES": devices[index % len(devices)]}
    if "OMP_NUM_THREADS" in environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // count))}


def plan_workers(prefix: Sequence[str], run_args: Sequence[str], count: int, log_dir: Path) -> list[Worker]:
    """The ``count`` workers of ``prefix run_args --shard i/count``, logging into ``log_dir``."""
    devices = gpu_devices(os.environ)
    return [
        Worker(
            Shard(i, count),
            (*prefix, *run_args, "--shard", f"{i}/{count}"),
            worker_env(i, count, devices, os.environ),
            log_dir / f"shard-{i}-of-{count}.log",
        )
        for i in range(count)
    ]


def run_workers(workers: Sequence[Worker], on_exit: Callable[[WorkerExit], None]) -> list[WorkerExit]:
    """Start every worker, wait for all of them (``on_exit`` as each ends), and return their
    exits in shard order.  An interruption stops the workers first, then goes on."""
    started = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    exits: dict[int, WorkerExit] = {}
    try:
        for worker in workers:
            worker.log.parent.mkdir(parents=True, exist_ok=True)
            with worker.log.open("wb") as log:
                env = {**os.environ, **worker.env}
                procs.append(subprocess.Popen(worker.command, env=env, stdout=log, stderr=subprocess.STDOUT))
        while len(exits) < len(procs):
            for i, proc in enumerate(procs):
                if i not in exits and proc.poll() is not None:
                    exits[i] = WorkerExit(workers[i], proc.returncode, time.monotonic() - started)
                    on_exit(exits[i])
            time.sleep(0.2)
    except BaseException:
        _stop(procs)
        raise
    return [exits[i] for i in range(len(workers))]


def _stop(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each still-running worker, wait for them to record it, then kill what is left."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

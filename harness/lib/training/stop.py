"""Ending a training early: a request the trainer's loop honours between two steps.

Whoever watches the checkpoints (the live forgetting probes) decides to stop; the training loop
obeys.  The two meet in one small file, ``stop.json`` in the training's output folder, because a
trainer may run in this process (the loop checks it between steps, right after the checkpoint
event that led to the decision) or in launched worker processes (rank 0 checks it at every step
and every rank agrees through one collective), and a file is what both can see.

A checkpoint callback asks for a stop by raising :class:`StopTraining`; the train stage turns it
into the file, so the callback needs to know nothing about folders.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

STOP_FILE = "stop.json"


@dataclass(frozen=True)
class StopRequest:
    """Why the training ends early, and the checkpoint step that showed it."""

    step: int
    reason: str


class StopTraining(Exception):
    """Raised by a checkpoint callback to end the training after that checkpoint."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"stop at step {step}: {reason}")
        self.request = StopRequest(step, reason)


def request_stop(folder: Path, request: StopRequest) -> None:
    """Write the stop request into ``folder`` (atomically: a reader never sees half of it)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STOP_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"step": request.step, "reason": request.reason}), encoding="utf-8")
    os.replace(tmp, folder / STOP_FILE)


def read_stop(folder: Path) -> StopRequest | None:
    """The stop request in ``folder``, if there is one."""
    path = folder / STOP_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return StopRequest(int(data["step"]), str(data["reason"]))


def clear_stop(folder: Path) -> None:
    """Remove an earlier run's request, so a new training in the same folder starts clean."""
    (folder / STOP_FILE).unlink(missing_ok=True)

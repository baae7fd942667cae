"""The lifecycle event payloads: one frozen value per hook call, so fields can be added
without breaking a plugin."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunStartEvent:
    run_id: str
    suite_path: Path
    suite_name: str


@dataclass(frozen=True)
class StageEndEvent:
    """Emitted after every stage; ``outcome`` is ``ok``, ``cached`` or ``error``."""

    run_id: str
    stage: str
    outcome: str
    duration_s: float
    detail: str = ""


@dataclass(frozen=True)
class CheckpointEvent:
    """Emitted by a trainer every ``eval_every`` steps, and once for the final weights."""

    trainer: str
    step: int
    total_steps: int
    path: Path
    loss: float
    final: bool = False


@dataclass(frozen=True)
class RunEndEvent:
    run_id: str
    exit_code: int
    report_dir: Path


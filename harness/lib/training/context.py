"""What a trainer receives from the run: where to write, how to report progress and checkpoints,
whether to resume, and how to read the extra data its options name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.lib.refs import DataSource
from harness.types import CheckpointEvent, Conversation, Loc, ProgressFn


class TrainerIdentity(Protocol):
    """What the training engine needs to know of the trainer that drives it."""

    @property
    def name(self) -> str: ...

    def cache_material(self) -> dict[str, Any]: ...


def no_reader(src: DataSource, loc: Loc) -> list[Conversation]:
    from harness.errors import ConfigError

    raise ConfigError(f"{src.path}: this trainer context cannot read data files (no suite)")


def plain_path(raw: str, loc: Loc) -> Path:
    from harness.lib.data import resolve_data_path

    return resolve_data_path(raw, Path.cwd())


@dataclass(frozen=True)
class TrainContext:
    """What the runner gives a trainer: where to write, how to report progress, whether to
    resume from the newest complete state in ``output_dir``, and how to read the extra data
    sources a trainer's options name (``read_data(source, loc)`` reads through the suite's readers
    and ``resolve_path(raw, loc)`` resolves ``${data}/...``; errors name the suite's line)."""

    output_dir: Path
    seed: int
    on_checkpoint: Callable[[CheckpointEvent], None]
    progress: ProgressFn
    resume: bool = True
    read_data: Callable[[DataSource, Loc], list[Conversation]] = no_reader
    resolve_path: Callable[[str, Loc], Path] = plain_path

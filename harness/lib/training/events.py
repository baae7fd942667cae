"""What the training loop reports while it runs, as frozen values.

The loop calls ``emit(event)`` with one of these; in this process the trainer turns them into
progress lines and ``CheckpointEvent``s (``harness.lib.training.run.emitter``).  A distributed
job's rank 0 writes them to ``events.jsonl`` as JSON lines (``to_json``: the fields plus a
``kind``) and the parent reads them back (``from_json``), so both paths hand the trainer the same
values.  Each rank also reports what it holds (``RankSharding``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from harness.errors import CheckError


@dataclass(frozen=True)
class Resumed:
    """The loop restored its state at ``step`` of ``total`` (the run goes on from there)."""

    kind: ClassVar[str] = "resumed"
    step: int
    total: int


@dataclass(frozen=True)
class Started:
    """The loop starts (or goes on) toward ``total`` steps; this rank holds ``local_params`` of
    the model's ``total_params`` trainable parameters in a world of ``world_size`` processes."""

    kind: ClassVar[str] = "start"
    total: int
    local_params: int
    total_params: int
    world_size: int


@dataclass(frozen=True)
class Progress:
    """Step ``step`` of ``total`` ran: its loss and gradient norm (before clipping), the
    non-padding tokens this process trained on so far, and the seconds since the loop started."""

    kind: ClassVar[str] = "progress"
    step: int
    total: int
    loss: float
    grad_norm: float
    input_tokens: int
    elapsed: float


@dataclass(frozen=True)
class CheckpointSaved:
    """Loadable weights (adapter or model folder) at ``step``: every ``eval_every`` steps, and
    the final ones (``final``).  ``path`` is absolute as reported (relative inside a saved
    state, see ``TrainLoop``)."""

    kind: ClassVar[str] = "checkpoint"
    step: int
    total: int
    path: str
    loss: float
    final: bool


@dataclass(frozen=True)
class PenaltyApplied:
    """EWC added its penalty's gradient at ``step``; ``penalty`` summed over the ranks."""

    kind: ClassVar[str] = "ewc"
    step: int
    penalty: float


@dataclass(frozen=True)
class EarlyStop:
    """The loop stopped before its last step: the checkpoint ``step`` that asked for it, and why."""

    step: int
    reason: str


@dataclass(frozen=True)
class RankSharding:
    """What one rank of a job holds: ``local_params`` of ``total_params`` (``sharding_rank<N>.json``)."""

    rank: int
    local_params: int
    total_params: int
    world_size: int


LoopEvent = Resumed | Started | Progress | CheckpointSaved | PenaltyApplied
"""Anything the loop emits."""

KINDS: dict[str, type[LoopEvent]] = {cls.kind: cls for cls in (Resumed, Started, Progress, CheckpointSaved, PenaltyApplied)}


def to_json(event: LoopEvent) -> dict[str, Any]:
    """``event`` as one JSON object: its ``kind`` and fields."""
    return {"kind": event.kind, **asdict(event)}


def from_json(data: dict[str, Any]) -> LoopEvent:
    """The event ``to_json`` wrote; an unknown kind or a missing field is a ``CheckError`` (the
    worker and the parent disagree, a bug to report rather than a line to skip)."""
    cls = KINDS.get(str(data.get("kind")))
    if cls is None:
        raise CheckError(f"training event of unknown kind {data.get('kind')!r}: {data}")
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise CheckError(f"training event {data}: {exc}") from None

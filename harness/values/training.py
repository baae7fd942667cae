"""What training produces and the forgetting curve drawn over its checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.values.results import Comparison


@dataclass(frozen=True)
class TrainOutput:
    """What a trainer produced: the adapter (or model) folder and how training went."""

    path: Path
    steps: int
    examples: int
    supervised_tokens: int
    first_loss: float
    last_loss: float
    seconds: float
    notes: tuple[str, ...] = ()
    stopped_step: int | None = None
    """The checkpoint step whose probes ended the training early (``forgetting.stop``), if any."""
    stop_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainOutput:
        return cls(**{**data, "path": Path(data["path"]), "notes": tuple(data["notes"])})


@dataclass(frozen=True)
class CurvePoint:
    """One probe at one step: its score, its headline figures and its change against step 0."""

    step: int
    score: float
    summary: dict[str, float]
    comparison: Comparison | None = None
    within_bound: bool | None = None
    note: str = ""


@dataclass
class ForgettingResult:
    domain: str
    bounds: dict[str, float]
    selection: str
    steps: list[int] = field(default_factory=list)
    series: dict[str, list[CurvePoint]] = field(default_factory=dict)
    selected_step: int | None = None
    selected_path: Path | None = None
    reasons: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    correction: str = ""
    """How the error over general probes x checkpoints is controlled (one line)."""
    stopped_step: int | None = None
    """The step at which ``forgetting.stop`` ended the training, when it did."""
    stop_reason: str = ""
    stop_when: str = ""
    """The stop condition that fired (``bound_exceeded`` or ``bound_exceeded_before_domain_converged``)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "correction": self.correction,
            "stopped_step": self.stopped_step,
            "stop_reason": self.stop_reason,
            "stop_when": self.stop_when,
            "domain": self.domain,
            "bounds": self.bounds,
            "selection": self.selection,
            "steps": self.steps,
            "series": {label: [asdict(p) for p in points] for label, points in self.series.items()},
            "selected_step": self.selected_step,
            "selected_path": str(self.selected_path) if self.selected_path else None,
            "reasons": {str(k): v for k, v in self.reasons.items()},
            "errors": self.errors,
        }


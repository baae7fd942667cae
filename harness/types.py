"""The small, typed values that flow between stages.

Stages never pass ``dict[str, Any]`` to each other: a conversation, a ledger, a per-item result, a
gate decision and the lifecycle events each have their own frozen dataclass.  They live by
concern in ``harness.values`` (``records``, ``results``, ``parity``, ``training``, ``events``);
this module holds the run's own values (its result, its history, the batch invariance finding)
and re-exports every other one, so ``from harness.types import X`` is the one import to know.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.values.events import CheckpointEvent, RunEndEvent, RunStartEvent, StageEndEvent
from harness.values.parity import CheckResult, CheckStatus, Finding, ParityResult, Severity
from harness.values.records import Conversation, Dropped, Ledger, Message, Quarantined, Role, StageLedger
from harness.values.results import (
    BenchmarkResult,
    Comparison,
    Decision,
    EvalError,
    ItemResult,
    Sample,
    Verdict,
    shown_verdict,
)
from harness.values.training import CurvePoint, ForgettingResult, TrainOutput

__all__ = [
    "BenchmarkResult",
    "CheckResult",
    "CheckStatus",
    "CheckpointEvent",
    "Comparison",
    "Conversation",
    "CurvePoint",
    "Decision",
    "Dropped",
    "EvalError",
    "Finding",
    "ForgettingResult",
    "InvarianceFinding",
    "ItemResult",
    "Ledger",
    "Loc",
    "Message",
    "ParityResult",
    "ProgressFn",
    "Quarantined",
    "Role",
    "RunEndEvent",
    "RunResult",
    "RunStartEvent",
    "RunSummary",
    "Sample",
    "Severity",
    "StageEndEvent",
    "StageLedger",
    "TrainOutput",
    "Verdict",
    "shown_verdict",
]

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, message)``: report progress of a long step to the terminal."""

Loc = tuple[str | int, ...]
"""Where a value sits in a suite file: its path of keys and list indexes."""


@dataclass(frozen=True)
class RunSummary:
    """An earlier run of the same suite, as the report's history shows it: each benchmark's
    score per model (``scores[label][model]``) and the run's exit code."""

    run_id: str
    started_at: str
    exit_code: int | None
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class InvarianceFinding:
    """One benchmark scored on the same model at two batch sizes: what changed between them
    (``harness.run.invariance``)."""

    benchmark: str
    batch_sizes: tuple[int, int]
    items: int
    changed: tuple[str, ...]
    """Items whose prediction differs between the two batch sizes."""
    drifted: tuple[str, ...]
    """Items with the same prediction whose log-probabilities differ by more than ``tolerance``."""
    max_logprob_diff: float | None
    """The largest log-probability difference over all items and choices (``None``: the
    benchmark has no log-probabilities, only predictions were compared)."""
    tolerance: float

    @property
    def invariant(self) -> bool:
        return not self.changed and not self.drifted

    @property
    def affected(self) -> tuple[str, ...]:
        """Every item that differs, changed predictions first."""
        return self.changed + self.drifted

    def line(self) -> str:
        a, b = self.batch_sizes
        diff = "" if self.max_logprob_diff is None else f"; largest log-prob difference {self.max_logprob_diff:.2e}"
        if self.invariant:
            return f"{self.benchmark}: batch sizes {a} and {b} agree on all {self.items} items{diff} (tolerance {self.tolerance:g})"
        drift = f", {len(self.drifted)} beyond the log-prob tolerance {self.tolerance:g}" if self.drifted else ""
        return (
            f"{self.benchmark}: batch sizes {a} and {b} differ: {len(self.changed)} of {self.items} "
            f"predictions changed{drift}{diff}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "batch_sizes": list(self.batch_sizes),
            "items": self.items,
            "changed": list(self.changed),
            "drifted": list(self.drifted),
            "max_logprob_diff": self.max_logprob_diff,
            "tolerance": self.tolerance,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InvarianceFinding:
        return cls(
            data["benchmark"], (data["batch_sizes"][0], data["batch_sizes"][1]), data["items"],
            tuple(data["changed"]), tuple(data["drifted"]), data["max_logprob_diff"], data["tolerance"],
        )  # fmt: skip


@dataclass(frozen=True)
class PromptCost:
    """What a prompt-variant arm costs per request: the examples' tokens (with its system prompt;
    a mean over items for ``nearest``), the input tokens of a whole prompt (mean over items) and
    the share of the model's context window the examples take."""

    example_tokens: float
    mean_input_tokens: float
    context_share: float


@dataclass(frozen=True)
class SeedScores:
    """One benchmark's score for each training seed's candidate, and their spread."""

    benchmark: str
    scores: dict[int, float]
    """Seed -> score; a seed whose training or evaluation failed is absent."""

    @property
    def spread(self) -> tuple[float, float, float] | None:
        """(min, max, sample standard deviation) of the scores; ``None`` without any."""
        values = list(self.scores.values())
        if not values:
            return None
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        return min(values), max(values), var**0.5

    def to_json(self) -> dict[str, Any]:
        spread = self.spread
        keys = ("min", "max", "std")
        return {"benchmark": self.benchmark, "scores": {str(k): v for k, v in self.scores.items()},
                **{k: (spread[i] if spread else None) for i, k in enumerate(keys)}}


@dataclass(frozen=True)
class SeedVariance:
    """The candidates of ``train.seeds``: which result label holds each seed's results, each
    benchmark's scores and spread, the gate rule (``all`` or ``pooled``) and the seeds that
    failed to train."""

    rule: str
    seeds: tuple[int, ...]
    labels: dict[int, str]
    """Seed -> result label (the first seed's is ``candidate``, the others ``trained@seed=N``)."""
    benchmarks: tuple[SeedScores, ...] = ()
    errors: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "seeds": list(self.seeds),
            "labels": {str(k): v for k, v in self.labels.items()},
            "benchmarks": [b.to_json() for b in self.benchmarks],
            "errors": {str(k): v for k, v in self.errors.items()},
        }


@dataclass(frozen=True)
class FilterImpact:
    """What one curate filter bought on one benchmark: the full candidate minus the one trained
    with that filter off (``curate.ablate``), on the same items; ``error`` says why there is no
    comparison."""

    filter: str
    label: str
    """The result label of the candidate trained without the filter."""
    benchmark: str
    comparison: Comparison | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    """Everything a reporter needs about a finished run."""

    run_id: str
    suite_name: str
    suite_path: Path
    started_at: float
    duration_s: float = 0.0
    models: dict[str, str] = field(default_factory=dict)
    arms: dict[str, dict[str, str]] = field(default_factory=dict)
    """The arm behind each result label: ``{"name": arm, "backend": backend}`` (``baseline`` ->
    ``deployed`` served by ``vllm_server``); see ``harness.suite.arms``."""
    ledger: Ledger | None = None
    train: TrainOutput | None = None
    train_from_cache: bool = False
    train_error: str | None = None
    forgetting: ForgettingResult | None = None
    forgetting_compare: dict[str, ForgettingResult] = field(default_factory=dict)
    """The curves of ``forgetting.compare``'s trainings, by label (the main one is ``forgetting``)."""
    compare_train: dict[str, TrainOutput | str] = field(default_factory=dict)
    """Each compared training's output, or the error that stopped it."""
    parity: ParityResult | None = None
    checkpoints: list[CheckpointEvent] = field(default_factory=list)
    benchmarks: dict[str, dict[str, BenchmarkResult]] = field(default_factory=dict)
    """``benchmarks[label][model_label]``: the per-item results of each evaluated model."""
    eval_errors: list[EvalError] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    stages: list[StageEndEvent] = field(default_factory=list)
    inconclusive_fails: bool = True
    exit_code: int = 0
    plugin_errors: list[str] = field(default_factory=list)
    """Failures of reporters and lifecycle hooks, each naming the plugin: recorded, the other
    reporters and hooks still run, and the run exits 3 unless a gate already failed it."""
    history: list[RunSummary] = field(default_factory=list)
    """Earlier runs of the same suite (oldest first), recorded when the report is written."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Suite digest, seed, command line and versions, recorded when the report is written."""
    invariance: list[InvarianceFinding] = field(default_factory=list)
    """The baseline's batch invariance check (``gating.check_batch_invariance``): advisory."""
    prompt_costs: dict[str, PromptCost] = field(default_factory=dict)
    """Per result label, each evaluated prompt-variant arm's cost over the items it was asked."""
    arm_pairs: dict[str, Any] | None = None
    """Every pair of arms compared on shared items and the prompting rule's verdict, in the JSON
    form of ``harness.stages.pairs.comparison_document``; ``None`` when the run compares no more
    than a baseline and a candidate (and no prompt variant)."""
    seeds: SeedVariance | None = None
    """The candidates of ``train.seeds`` and their spread (``None``: one training seed)."""
    ablation: list[FilterImpact] = field(default_factory=list)
    """What each filter of ``curate.ablate`` bought, per benchmark."""

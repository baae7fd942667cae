"""The small, typed values that flow between stages.

Stages never pass ``dict[str, Any]`` to each other: a conversation, a ledger, a per-item result, a
gate decision and the lifecycle events each have their own frozen dataclass here.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, message)``: report progress of a long step to the terminal."""

Loc = tuple[str | int, ...]
"""Where a value sits in a suite file: its path of keys and list indexes."""

Severity = Literal["high", "medium", "low"]
"""How much a parity finding matters."""



@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True)
class Conversation:
    """A normalised training or evaluation record.

    ``source_id`` is ``file:line`` (JSONL) or ``file:row`` (CSV) so that any record, kept or
    dropped, can be traced back to the exact place it came from.
    """

    messages: tuple[Message, ...]
    source_id: str

    def digest(self) -> str:
        """Content hash of the messages (not the source id): equal text, equal digest."""
        payload = json.dumps([[m.role, m.content] for m in self.messages], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"source_id": self.source_id, "messages": [asdict(m) for m in self.messages]}


@dataclass(frozen=True)
class Quarantined:
    """A record set aside with its raw text: one a reader could not parse (``filter`` empty,
    ``reason`` the parse error), or one a filter quarantined (``filter``, its reason code and a
    human ``detail``, the same fields a ``Dropped`` record carries)."""

    source_id: str
    reason: str
    raw: str
    filter: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Dropped:
    """A record a filter removed, with the filter's reason code and a human detail."""

    source_id: str
    filter: str
    reason: str
    detail: str = ""


@dataclass
class StageLedger:
    """Accounting for one curation step: ``n_in == kept + dropped + quarantined`` always."""

    name: str
    n_in: int = 0
    kept: int = 0
    dropped: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def balanced(self) -> bool:
        return self.n_in == self.kept + self.dropped + self.quarantined

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.n_in,
            "kept": self.kept,
            "dropped": self.dropped,
            "quarantined": self.quarantined,
            "reasons": dict(sorted(self.reasons.items())),
        }


@dataclass
class Ledger:
    """The curation ledger: one ``StageLedger`` per reader and filter, plus every drop."""

    stages: list[StageLedger] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return all(s.balanced for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return {
            "balanced": self.balanced,
            "stages": [s.to_json() for s in self.stages],
            "dropped": [asdict(d) for d in self.dropped],
            "quarantined": [asdict(q) for q in self.quarantined],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ledger:
        stages = [
            StageLedger(
                name=s["name"],
                n_in=s["in"],
                kept=s["kept"],
                dropped=s["dropped"],
                quarantined=s["quarantined"],
                reasons=Counter(s["reasons"]),
            )
            for s in data["stages"]
        ]
        return cls(
            stages=stages,
            dropped=[Dropped(**d) for d in data["dropped"]],
            quarantined=[Quarantined(**q) for q in data["quarantined"]],
        )


@dataclass(frozen=True)
class Sample:
    """One of several sampled outputs for one item (repeated sampling): its score and raw text."""

    score: float
    raw: str


@dataclass(frozen=True)
class ItemResult:
    """One benchmark item scored for one model; the unit that paired statistics work on."""

    item_id: str
    prediction: str
    reference: str
    score: float
    weight: float = 1.0
    """How much the item counts in a weighted summary (e.g. its token count for perplexity)."""
    raw: str = ""
    """The model's raw output before the benchmark extracted ``prediction`` from it (generation
    benchmarks), so a report can show what the model really said; empty when there is none."""
    prompt: str = ""
    """What the model was asked (filled from the benchmark item by the evaluate stage)."""
    category: str = ""
    """The item's category when the benchmark has one (an intent, a subject), so failures can be
    counted per category (``harness failures``); empty when there is none."""
    samples: tuple[Sample, ...] = ()
    """Each sample's outcome when the benchmark drew several per item (``samples: k``); ``score``
    is then their mean (or pass@k).  Empty for a single output."""

    def __post_init__(self) -> None:
        # Read back from JSON (the evaluation cache), samples are plain mappings.
        if not isinstance(self.samples, tuple) or any(not isinstance(s, Sample) for s in self.samples):
            samples = tuple(s if isinstance(s, Sample) else Sample(**s) for s in self.samples)
            object.__setattr__(self, "samples", samples)

    def to_json(self) -> dict[str, Any]:
        """The plain JSON value (``samples`` left out when there are none)."""
        data = asdict(self)
        data["samples"] = [asdict(s) for s in self.samples]
        if not self.samples:
            del data["samples"]
        return data


@dataclass(frozen=True)
class BenchmarkResult:
    """All items of one benchmark for one model, and where they came from."""

    benchmark: str
    model: str
    metric: str
    items: tuple[ItemResult, ...]
    cache_key: str
    from_cache: bool = False
    cached_items: int = 0
    summary: dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return sum(i.score for i in self.items) / len(self.items) if self.items else float("nan")


class Verdict(str, Enum):
    """The outcome of a gate.  ``error`` (a check could not run) can never count as a pass."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of candidate against baseline on the same items.

    ``diff`` is candidate minus baseline; ``ci_low``/``ci_high`` bound it at confidence
    ``1 - 2*alpha`` (a one-sided test at level ``alpha`` on each side); ``p_value`` is the
    two-sided p-value of "no difference"; ``mde`` is the smallest difference this sample could
    detect with 80% power at one-sided ``alpha``.
    """

    test: str
    n: int
    baseline: float
    candidate: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    mde: float
    alpha: float
    detail: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """A gate's verdict, with the comparison it was decided on and why."""

    gate: str
    benchmark: str
    rule: str
    verdict: Verdict
    reason: str
    blocking: bool = True
    comparison: Comparison | None = None
    underpowered: bool = False
    """A pass whose sample could not detect the rule's margin (shown ``pass (underpowered)``)."""

    @property
    def shown(self) -> str:
        """The verdict as every report shows it."""
        return shown_verdict(self.verdict.value, self.underpowered)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data


def shown_verdict(verdict: str, underpowered: bool) -> str:
    """``pass (underpowered)`` for an underpowered pass, else the verdict itself."""
    return f"{verdict} (underpowered)" if underpowered and verdict == "pass" else verdict


# ------------------------------------------------------------------------------- parity

CheckStatus = Literal["ok", "findings", "error"]


@dataclass(frozen=True)
class Finding:
    """One cause of "good offline, bad in production", found by a parity check.

    ``cause`` is a short code (``system_prompt``, ``double_bos``, ``sampling_params``,
    ``truncation``, ``strict_parser``, ``traffic_shift``...); ``evidence`` holds what a person
    needs to see it (a readable diff, the first divergence, token ids, example request ids);
    ``affected`` of ``total`` requests show it.
    """

    check: str
    cause: str
    severity: Severity
    summary: str
    affected: int
    total: int
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def share(self) -> float:
        return self.affected / self.total if self.total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "share": self.share}


@dataclass(frozen=True)
class CheckResult:
    """What one parity check returned: its findings and measurements, or the error it hit."""

    check: str
    component: str
    status: CheckStatus
    findings: tuple[Finding, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["findings"] = [f.to_json() for f in self.findings]
        return data


@dataclass
class ParityResult:
    """Every parity check of a run, in suite order."""

    requests: int
    checks: list[CheckResult] = field(default_factory=list)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """how the requests were read: counts, quarantined lines and requests left out, with reasons"""

    def findings(self) -> list[Finding]:
        return [f for c in self.checks for f in c.findings]


# ------------------------------------------------------------------------------- forgetting


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


# ---------------------------------------------------------------- lifecycle event payloads


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
class RunEndEvent:
    run_id: str
    exit_code: int
    report_dir: Path


@dataclass(frozen=True)
class EvalError:
    """A benchmark that could not be scored for a model; gates on it are ``error``."""

    benchmark: str
    model: str
    message: str


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
    seeds: SeedVariance | None = None
    """The candidates of ``train.seeds`` and their spread (``None``: one training seed)."""
    ablation: list[FilterImpact] = field(default_factory=list)
    """What each filter of ``curate.ablate`` bought, per benchmark."""

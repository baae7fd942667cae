"""Per-item benchmark results and the gate decisions made on them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


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


@dataclass(frozen=True)
class EvalError:
    """A benchmark that could not be scored for a model; gates on it are ``error``."""

    benchmark: str
    model: str
    message: str


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
    baseline_arm: str = "baseline"
    candidate_arm: str = "candidate"
    """The result labels of the two arms the gate compared (a gate may compare any two arms)."""

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


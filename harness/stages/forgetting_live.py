"""Forgetting watched while the trainer runs: the probes are scored on each checkpoint as it is
written, the curve grows on the terminal, and ``forgetting.stop`` can end the training early.

The trainer calls the checkpoint callback between two steps (in this process), or the train stage
calls it as it follows a launched job's events; :class:`LiveForgetting` is that callback.  It scores
every probe on the base model (step 0, once) and on the checkpoint, compares each general probe
with step 0 on the same items, prints one line of the curve, and decides whether to stop:

* ``bound_exceeded``: some general probe shows evidence of a drop beyond its bound (its
  ``no_regression`` test against step 0 fails: the whole interval lies below ``-bound``);
* ``bound_exceeded_before_domain_converged``: the same, while the domain probe is still improving
  (it gained at least ``min_domain_gain`` since the previous checkpoint, or this is the first one):
  the run forgets before it has learned, which a later checkpoint will not fix.

It stops by raising ``StopTraining``; the train stage turns that into the request the loop obeys.
Every score goes through the per-item cache and is kept, so the curve and the selection drawn after
training (``run_forgetting``) reuse these results instead of scoring again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from harness.lib.console import RunConsole
from harness.lib.models import ModelRef
from harness.lib.training.stop import StopRequest, StopTraining
from harness.plugin.components import Backend, Benchmark, Statistic
from harness.stages.env import StageEnv
from harness.stages.evaluate import Evaluator
from harness.stages.gate import Rule, decide, paired_comparison
from harness.suite.config import ForgettingSpec, StopSpec
from harness.types import BenchmarkResult, CheckpointEvent, Comparison, Verdict

SPARK = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Exceeded:
    """A general probe whose drop at a checkpoint is beyond its bound, with the test's reason."""

    label: str
    bound: float
    note: str


def exceeded_bounds(
    comparisons: Mapping[str, Comparison], bounds: Mapping[str, float]
) -> list[Exceeded]:
    """The general probes whose comparison with step 0 shows a drop beyond their bound."""
    found = []
    for label, cmp in comparisons.items():
        verdict, note = decide(Rule("no_regression", bounds[label]), cmp)
        if verdict is Verdict.FAIL:
            found.append(Exceeded(label, bounds[label], note))
    return found


def stop_reason(stop: StopSpec, exceeded: list[Exceeded], domain_scores: list[float]) -> str | None:
    """Why the training should end at this checkpoint, or ``None``.  ``domain_scores`` are the
    domain probe's scores at step 0, the earlier checkpoints and this one, in order."""
    if not exceeded:
        return None
    drops = "; ".join(f"{e.label} dropped beyond its bound {e.bound:g} ({e.note})" for e in exceeded)
    if stop.when == "bound_exceeded":
        return drops
    if len(domain_scores) >= 3:
        gain = domain_scores[-1] - domain_scores[-2]
        if gain < stop.min_domain_gain:
            return None  # the domain has converged: the selection picks among the checkpoints so far
        return f"{drops}; the domain probe is still improving (+{gain:.3f} since the previous checkpoint)"
    return f"{drops}; at the first checkpoint, before the domain probe converged"


def sparkline(values: list[float]) -> str:
    """A one-line curve of ``values`` (scaled between their minimum and maximum)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * (len(SPARK) - 1) + 0.5))] for v in values)


@dataclass
class LiveForgetting:
    """The checkpoint callback that scores the probes as training goes (see the module's doc)."""

    env: StageEnv
    spec: ForgettingSpec
    backend: Backend
    probes: Mapping[str, Benchmark]
    base: ModelRef
    statistics: Mapping[str, Statistic]
    alpha: float
    scored: dict[tuple[str, int], BenchmarkResult] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stop: StopRequest | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    _base_scored: bool = False

    @property
    def console(self) -> RunConsole:
        return self.env.console

    @property
    def bounds(self) -> dict[str, float]:
        return {label: self.spec.bounds.get(label, self.spec.default_bound) for label in self.probes if label != self.spec.domain}

    def score_base(self) -> None:
        """Score the probes on the base model (step 0), once: before training starts, so a probe
        that cannot run shows before the training is paid for, and the curve starts at once."""
        if not self._base_scored:
            self._base_scored = True
            self._score(0, self.base)
            self._line(0, "step 0", {})

    def __call__(self, event: CheckpointEvent) -> None:
        self.score_base()
        self._score(event.step, self.base.derived(f"step-{event.step}", event.path))
        comparisons = self._compare(event.step)
        self._line(event.step, f"step {event.step}/{event.total_steps}", comparisons)
        if self.spec.stop is None or event.final or self.stop is not None:
            return
        domain = self.history.get(self.spec.domain, [])
        reason = stop_reason(self.spec.stop, exceeded_bounds(comparisons, self.bounds), domain)
        if reason is not None:
            self.stop = StopRequest(event.step, reason)
            self.console.stage("forgetting", f"stopping the training at step {event.step}: {reason}", style="red")
            raise StopTraining(event.step, reason)

    def _score(self, step: int, ref: ModelRef) -> None:
        """Every probe on ``ref``, through the cache; one model load for all of them."""
        evaluator = Evaluator(self.env.store, self.backend, ref, self.console, self.env.use_cache)
        try:
            for label, probe in self.probes.items():
                try:
                    res = self.scored[(label, step)] = evaluator.run(label, probe)
                except Exception as exc:  # a probe that cannot run makes its points unknown, not passing
                    self.errors.append(f"{label} at step {step}: {type(exc).__name__}: {exc}")
                    self.console.stage("forgetting", self.errors[-1], style="red")
                    continue
                self.history.setdefault(label, []).append(res.score)
        finally:
            evaluator.release()

    def _compare(self, step: int) -> dict[str, Comparison]:
        """Each general probe at ``step`` against step 0, paired on its items."""
        out = {}
        for label in self.bounds:
            base, now = self.scored.get((label, 0)), self.scored.get((label, step))
            if base is not None and now is not None:
                out[label] = paired_comparison(self.statistics, base, now, "auto", self.alpha)
        return out

    def _line(self, step: int, point: str, comparisons: Mapping[str, Comparison]) -> None:
        """One point of the curve: each probe's score, its change and whether it is within bound."""
        cells = []
        for label in self.probes:
            res = self.scored.get((label, step))
            if res is None:
                cells.append(f"{label} ?")
                continue
            cell = f"{label} {res.score:.3f} {sparkline(self.history.get(label, []))}"
            cmp = comparisons.get(label)
            if cmp is not None:
                bad = exceeded_bounds({label: cmp}, self.bounds)
                cell += f" {cmp.diff:+.3f}" + (" beyond bound" if bad else "")
            cells.append(cell)
        self.console.curve(point, cells)

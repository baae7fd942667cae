"""The forgetting curve and checkpoint selection.

The suite's probes (small, fixed subsets of general benchmarks, held-out perplexity, and the domain
benchmark) are scored on the base model (step 0) and on every checkpoint the trainer emitted.  Each
point is compared with the base model on the same items (paired), so the curve shows, per probe,
the score and its change with a confidence interval at every step.

A checkpoint is *eligible* when every general probe stays within its bound (by the suite's
selection rule); the selected checkpoint is the eligible one with the best domain score (the
earliest on a tie).  The claims "probe P stays within its bound at checkpoint C" form one family
over general probes x checkpoints, decided under the suite's ``gating.correction`` (Holm's
step-down by default), so the chance that any checkpoint is called eligible while one of its
probes is in truth beyond its bound stays at most ``alpha``.  Every other checkpoint gets the reason it was not chosen.  Checkpoints are
scored from their saved adapters, through the per-item cache: while the trainer runs
(``harness.stages.forgetting_live``, which may also stop it) or, with ``live: false``, after it;
points scored live are passed in and not scored again.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import cast
from pathlib import Path

from harness.lib.models import ModelRef
from harness.plugin.components import Backend, Benchmark, Statistic
from harness.stages.env import StageEnv
from harness.stages.evaluate import Evaluator, describe
from harness.lib.stats import holm_levels
from harness.stages.gate import Rule, decide, paired_comparison
from harness.suite.config import ForgettingSpec
from harness.types import BenchmarkResult, Comparison, CheckpointEvent, CurvePoint, ForgettingResult, Verdict


def _points(base: ModelRef, checkpoints: list[CheckpointEvent]) -> list[tuple[int, ModelRef, Path | None]]:
    points: list[tuple[int, ModelRef, Path | None]] = [(0, base, None)]
    for event in sorted(checkpoints, key=lambda e: e.step):
        points.append((event.step, base.derived(f"step-{event.step}", event.path), event.path))
    return points


def _score_all(
    env: StageEnv,
    backend: Backend,
    probes: Mapping[str, Benchmark],
    points: list[tuple[int, ModelRef, Path | None]],
    prescored: Mapping[tuple[str, int], BenchmarkResult],
) -> tuple[dict[tuple[str, int], BenchmarkResult], list[str]]:
    results: dict[tuple[str, int], BenchmarkResult] = dict(prescored)
    errors: list[str] = []
    for step, ref, _path in points:
        todo = {label: probe for label, probe in probes.items() if (label, step) not in results}
        if not todo:
            continue
        evaluator = Evaluator(env.store, backend, ref, env.console, env.use_cache)
        for label, probe in todo.items():
            try:
                results[(label, step)] = res = evaluator.run(label, probe)
            except Exception as exc:  # a probe that cannot run makes its points unknown, not passing
                errors.append(f"{label} at step {step}: {type(exc).__name__}: {exc}")
                env.console.stage("forgetting", errors[-1], style="red")
                continue
            env.console.stage("forgetting", describe(label, res))
        evaluator.release()
    return results, errors


def run_forgetting(
    env: StageEnv,
    spec: ForgettingSpec,
    backend: Backend,
    probes: Mapping[str, Benchmark],
    base: ModelRef,
    checkpoints: list[CheckpointEvent],
    statistics: Mapping[str, Statistic],
    alpha: float,
    correction: str = "holm",
    prescored: Mapping[tuple[str, int], BenchmarkResult] | None = None,
) -> ForgettingResult:
    """Score every probe at every point (those in ``prescored`` are taken as they are), draw the
    series, and select a checkpoint.  Each point is compared with step 0 by the plan's
    ``statistics``; the general probes' bound checks are one family at family-wise level
    ``alpha`` under ``correction``."""
    points = _points(base, checkpoints)
    result = ForgettingResult(
        domain=spec.domain,
        bounds={label: spec.bounds.get(label, spec.default_bound) for label in probes if label != spec.domain},
        selection=spec.selection,
        steps=[step for step, _, _ in points],
    )
    scored, result.errors = _score_all(env, backend, probes, points, prescored or {})
    cache: dict[tuple[str, int, float], Comparison] = {}

    def compare(label: str, step: int, level: float) -> Comparison:
        if (label, step, level) not in cache:
            cache[(label, step, level)] = paired_comparison(statistics, scored[(label, 0)], scored[(label, step)], "auto", level)
        return cache[(label, step, level)]

    def within(key: Hashable, level: float) -> bool:
        label, step = cast(tuple[str, int], key)
        rule = Rule(spec.selection, result.bounds[label])
        return decide(rule, compare(label, step, level))[0] is Verdict.PASS

    family = [(label, step) for label in result.bounds for step, _, _ in points[1:]
              if (label, 0) in scored and (label, step) in scored]
    levels = holm_levels(family, alpha, within, correction)
    result.correction = (
        f"{correction} over {len(family)} bound checks ({len(result.bounds)} general probes x "
        f"{len(points) - 1} checkpoints), family-wise alpha {alpha:g}"
    )
    rejections: dict[int, list[str]] = {step: [] for step, _, _ in points[1:]}
    for label in probes:
        result.series[label] = _series(label, points, scored, spec, result, compare, levels, alpha, rejections)
    eligible = {step: not reasons for step, reasons in rejections.items()}
    _select(result, spec.domain, points, eligible, rejections)
    return result


def _series(
    label: str,
    points: list[tuple[int, ModelRef, Path | None]],
    scored: Mapping[tuple[str, int], BenchmarkResult],
    spec: ForgettingSpec,
    result: ForgettingResult,
    compare: Callable[[str, int, float], Comparison],
    levels: Mapping[Hashable, float],
    alpha: float,
    rejections: dict[int, list[str]],
) -> list[CurvePoint]:
    """One probe's curve; a general probe's bound check at its family level, the domain probe's
    comparison at ``alpha`` (it is reported, not tested)."""
    series: list[CurvePoint] = []
    for step, _ref, _path in points:
        res = scored.get((label, step))
        if res is None:
            if step:
                rejections[step].append(f"{label} could not be scored")
            continue
        if step == 0 or (label, 0) not in scored:
            series.append(CurvePoint(step, res.score, res.summary))
            continue
        if label == spec.domain:
            series.append(CurvePoint(step, res.score, res.summary, compare(label, step, alpha), None, ""))
            continue
        rule = Rule(spec.selection, result.bounds[label])
        cmp = compare(label, step, levels[(label, step)])
        verdict, note = decide(rule, cmp)
        ok = verdict is Verdict.PASS
        if not ok:
            rejections[step].append(f"{label} not within -{rule.margin:g}: {note}")
        series.append(CurvePoint(step, res.score, res.summary, cmp, ok, note))
    return series


def _select(
    result: ForgettingResult,
    domain: str,
    points: list[tuple[int, ModelRef, Path | None]],
    eligible: dict[int, bool],
    rejections: dict[int, list[str]],
) -> None:
    domain_score = {p.step: p.score for p in result.series.get(domain, [])}
    candidates = [step for step, ok in eligible.items() if ok and step in domain_score]
    if not candidates:
        for step, reasons in rejections.items():
            result.reasons[step] = "; ".join(reasons) or "its domain score is unknown"
        return
    best = max(candidates, key=lambda s: (domain_score[s], -s))
    result.selected_step = best
    result.selected_path = next(path for step, _ref, path in points if step == best)
    result.reasons[best] = (
        f"selected: best domain score {domain_score[best]:.3f} among the {len(candidates)} "
        f"checkpoint(s) whose general probes stay within their bounds"
    )
    for step in rejections:
        if step == best:
            continue
        if rejections[step]:
            result.reasons[step] = "; ".join(rejections[step])
        else:
            result.reasons[step] = (
                f"domain score {domain_score.get(step, float('nan')):.3f} < {domain_score[best]:.3f} at step {best}"
                if domain_score.get(step, float("-inf")) < domain_score[best]
                else f"same domain score as step {best}, which is earlier"
            )

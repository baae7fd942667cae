"""Gate rules and the gate stage: verdicts from paired per-item results.

Rules (written in suites as ``name(arg=value)``):

* ``non_inferior(margin=d)``: pass only on evidence that the candidate is at most ``d`` worse
  (the lower bound of the difference is above ``-d``); fail on evidence that it is more than ``d``
  worse; otherwise inconclusive.  The release-gate form.
* ``superior(margin=0)``: pass only on evidence that the candidate beats the baseline by more than
  ``margin``; fail when the upper bound says it does not; otherwise inconclusive.
* ``no_regression(margin=0)``: fail only on evidence of a regression larger than ``margin``;
  otherwise pass.  The smoke-test form.

A benchmark whose baseline is indistinguishable from chance cannot show forgetting, so guard rules
on it are ``inconclusive`` with that reason, never ``pass``; so is one whose binary baseline is at
the metric's floor or ceiling (every item 0, or every item 1), and intervals of binary scores are
clipped to the differences the baseline allows.  Every pass states the smallest effect the sample
could detect; a ``no_regression`` pass that could not detect its margin is flagged
``underpowered`` (shown as ``pass (underpowered)``), and is ``inconclusive`` under
``gating.require_power``.

The blocking gates form one family: ``gating.correction`` is ``holm`` (step-down, the default),
``bonferroni`` or ``none``.  A gate's hypothesis is its rule's claim: non-inferiority or
superiority for a pass, a regression beyond the margin for ``no_regression``'s fail.  A comparison that could not be made
(an evaluation errored, items do not pair up) is ``error``, never ``pass``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from harness.lib.stats import clip_interval, holm_levels, is_binary, wilson
from harness.plugin.components import Statistic
from harness.suite.config import GatingSpec
from harness.suite.rules import Rule, parse_rule
from harness.types import BenchmarkResult, Comparison, Decision, RunResult, Verdict


def _fmt(x: float) -> str:
    return f"{x:+.3f}"


def underpowered(rule: Rule, cmp: Comparison) -> bool:
    """A ``no_regression`` guard whose sample could not detect (80% power) a drop of its margin."""
    return rule.kind == "no_regression" and cmp.mde > rule.margin


def _at_bound(cmp: Comparison) -> str | None:
    if cmp.test != "mcnemar" or cmp.baseline not in (0.0, 1.0):
        return None
    where = "floor (every item 0)" if cmp.baseline == 0.0 else "ceiling (every item 1)"
    return f"baseline {cmp.baseline:.3f} is at the metric's {where} on {cmp.n} items, so it cannot show forgetting"


def decide(
    rule: Rule, cmp: Comparison, chance: float | None = None, require_power: bool = False
) -> tuple[Verdict, str]:
    """The verdict of ``rule`` on one paired comparison, and a one-line reason."""
    ci = f"diff {_fmt(cmp.diff)}, CI [{_fmt(cmp.ci_low)}, {_fmt(cmp.ci_high)}]"
    detectable = f"can detect >= {cmp.mde:.3f}"
    bound = _at_bound(cmp) if rule.kind in ("non_inferior", "no_regression") else None
    if bound:
        return Verdict.INCONCLUSIVE, f"{bound}; {ci}; {detectable}"
    if rule.kind in ("non_inferior", "no_regression") and chance is not None:
        low, high = wilson(cmp.baseline * cmp.n, cmp.n, cmp.alpha)
        if low <= chance <= high:
            return Verdict.INCONCLUSIVE, (
                f"baseline {cmp.baseline:.3f} is indistinguishable from chance ({chance:.2f}) "
                f"on {cmp.n} items, so it cannot show forgetting; {ci}; {detectable}"
            )
    if rule.kind == "non_inferior":
        if cmp.ci_low > -rule.margin:
            return Verdict.PASS, f"not worse than -{rule.margin:g}: {ci}; {detectable}"
        if cmp.ci_high < -rule.margin:
            return Verdict.FAIL, f"worse than -{rule.margin:g}: {ci}"
        return Verdict.INCONCLUSIVE, f"interval straddles -{rule.margin:g}: {ci}; {detectable}"
    if rule.kind == "superior":
        if cmp.ci_low > rule.margin:
            return Verdict.PASS, f"better by more than {rule.margin:g}: {ci}, p={cmp.p_value:.3g}; {detectable}"
        if cmp.ci_high <= rule.margin:
            return Verdict.FAIL, f"not better than {rule.margin:g}: {ci}"
        return Verdict.INCONCLUSIVE, f"no evidence of improvement: {ci}; {detectable}"
    if cmp.ci_high < -rule.margin:
        return Verdict.FAIL, f"regressed by more than {rule.margin:g}: {ci}, p={cmp.p_value:.3g}"
    if underpowered(rule, cmp):
        weak = f"could not detect a drop of {rule.margin:g} ({detectable})"
        if require_power:
            return Verdict.INCONCLUSIVE, f"no evidence of a regression, but {weak}: {ci}"
        return Verdict.PASS, f"underpowered: no evidence of a regression beyond {rule.margin:g}, but {weak}: {ci}"
    return Verdict.PASS, f"no evidence of a regression beyond {rule.margin:g}: {ci}; {detectable}"


def pair_scores(
    baseline: BenchmarkResult, candidate: BenchmarkResult
) -> tuple[list[float], list[float]]:
    """Align two results by item id; raise ``ValueError`` when the item sets differ."""
    base, cand, _ids = _paired(baseline, candidate)
    return base, cand


def _paired(baseline: BenchmarkResult, candidate: BenchmarkResult) -> tuple[list[float], list[float], list[str]]:
    base = {i.item_id: i.score for i in baseline.items}
    cand = {i.item_id: i.score for i in candidate.items}
    if base.keys() != cand.keys():
        missing = len(base.keys() ^ cand.keys())
        raise ValueError(f"{missing} items are not scored for both models")
    ids = sorted(base)
    return [base[i] for i in ids], [cand[i] for i in ids], ids


def auto_statistic(baseline: list[float], candidate: list[float]) -> str:
    return "mcnemar" if is_binary(baseline) and is_binary(candidate) else "paired_bootstrap"


def exit_code(decisions: list[Decision], inconclusive_fails: bool) -> int:
    """0 all blocking gates pass, 1 one failed (or was inconclusive), 3 one errored."""
    blocking = [d for d in decisions if d.blocking]
    if any(d.verdict is Verdict.ERROR for d in blocking):
        return 3
    failing = {Verdict.FAIL} | ({Verdict.INCONCLUSIVE} if inconclusive_fails else set())
    return 1 if any(d.verdict in failing for d in blocking) else 0


def per_gate_alpha(alpha: float, n_gates: int, correction: str) -> float:
    """The level of every test under Bonferroni (and the first step of Holm): the family-wise
    error rate split across the blocking gates; ``none``: ``alpha`` itself."""
    return alpha if correction == "none" else alpha / max(n_gates, 1)


def rejects(rule: Rule, verdict: Verdict) -> bool:
    """Whether ``verdict`` rejects the rule's hypothesis (what the family-wise rate controls):
    a pass of ``non_inferior``/``superior``, a fail of ``no_regression``."""
    return verdict is (Verdict.FAIL if rule.kind == "no_regression" else Verdict.PASS)


def errored(
    gate: str, benchmark: str, rule: str, reason: str, blocking: bool, arms: tuple[str, str] = ("baseline", "candidate")
) -> Decision:
    return Decision(gate, benchmark, rule, Verdict.ERROR, reason, blocking, baseline_arm=arms[0], candidate_arm=arms[1])


@dataclass(frozen=True)
class GatePlan:
    """One gate as the run plan built it: the benchmark label it decides on, its rule, the
    statistic (``auto`` or a name), the benchmark's chance level (a guard rule on a
    benchmark at chance is inconclusive), and the result labels of the two arms it compares."""

    name: str
    label: str
    rule: Rule
    statistic: str
    blocking: bool
    chance: float | None
    loc: tuple[str | int, ...]
    baseline: str = "baseline"
    candidate: str = "candidate"


def paired_comparison(
    statistics: Mapping[str, Statistic],
    baseline: BenchmarkResult,
    candidate: BenchmarkResult,
    statistic: str,
    alpha: float,
    clusters: Mapping[str, str] | None = None,
) -> Comparison:
    """Compare two results item by item with the named statistic (``auto``: McNemar for 0/1
    scores, paired bootstrap otherwise); ``statistics`` are the ones the run plan built;
    ``clusters`` maps item ids to their source (cluster-aware intervals).  Intervals of binary
    scores are clipped to the differences the baseline's score allows."""
    base, cand, ids = _paired(baseline, candidate)
    name = statistic if statistic != "auto" else auto_statistic(base, cand)
    stat = statistics[name]
    if not stat.applies_to(base + cand):
        raise ValueError(f"statistic {name!r} does not apply to these scores")
    labels = [clusters.get(i, i) for i in ids] if clusters else None
    cmp = stat.compare(base, cand, alpha, labels) if labels else stat.compare(base, cand, alpha)
    return clip_interval(cmp) if is_binary(base) and is_binary(cand) else cmp


def _problem(gate: GatePlan, result: RunResult, errors: Mapping[tuple[str, str], str]) -> str | None:
    per_model = result.benchmarks.get(gate.label, {})
    pair = (gate.baseline, gate.candidate)
    problems = [f"{m}: {errors[(gate.label, m)]}" for m in pair if (gate.label, m) in errors]
    if problems or any(m not in per_model for m in pair):
        return "; ".join(problems) or result.train_error or "no candidate was trained or evaluated"
    return None


def run_gates(
    gates: Sequence[GatePlan],
    statistics: Mapping[str, Statistic],
    gating: GatingSpec,
    result: RunResult,
    clusters: Mapping[str, Mapping[str, str] | None] | None = None,
) -> list[Decision]:
    """Decide every planned gate on the run's paired per-item results, the blocking ones as a
    family under ``gating.correction``; ``clusters``: per benchmark label, item id -> source."""
    errors = {(e.benchmark, e.model): e.message for e in result.eval_errors}
    problems = {g.name: _problem(g, result, errors) for g in gates}
    cache: dict[tuple[str, float], Comparison | Exception] = {}

    def compare(gate: GatePlan, level: float) -> Comparison | Exception:
        if (gate.name, level) not in cache:
            models = result.benchmarks[gate.label]
            try:
                cache[(gate.name, level)] = paired_comparison(
                    statistics, models[gate.baseline], models[gate.candidate], gate.statistic, level,
                    (clusters or {}).get(gate.label),
                )
            except Exception as exc:
                cache[(gate.name, level)] = exc
        return cache[(gate.name, level)]

    def rejected(gate: GatePlan, level: float) -> bool:
        cmp = compare(gate, level)
        return isinstance(cmp, Comparison) and rejects(gate.rule, decide(gate.rule, cmp, gate.chance, gating.require_power)[0])

    family = {g.name: g for g in gates if g.blocking and problems[g.name] is None}
    levels = holm_levels(family, gating.alpha, lambda name, level: rejected(family[str(name)], level), gating.correction)
    advisory = per_gate_alpha(gating.alpha, sum(1 for g in gates if g.blocking), gating.correction)
    return [_decision(g, problems[g.name], compare, levels.get(g.name, advisory), gating.require_power) for g in gates]


def _decision(
    gate: GatePlan,
    problem: str | None,
    compare: Callable[[GatePlan, float], Comparison | Exception],
    level: float,
    require_power: bool,
) -> Decision:
    rule = str(gate.rule)
    if problem is not None:
        return errored(gate.name, gate.label, rule, problem, gate.blocking, (gate.baseline, gate.candidate))
    cmp = compare(gate, level)
    if isinstance(cmp, Exception):
        return errored(gate.name, gate.label, rule, f"{type(cmp).__name__}: {cmp}", gate.blocking, (gate.baseline, gate.candidate))
    verdict, reason = decide(gate.rule, cmp, chance=gate.chance, require_power=require_power)
    weak = verdict is Verdict.PASS and underpowered(gate.rule, cmp)
    return Decision(gate.name, gate.label, rule, verdict, reason, gate.blocking, cmp, underpowered=weak,
                    baseline_arm=gate.baseline, candidate_arm=gate.candidate)


__all__ = [
    "GatePlan",
    "Rule",
    "auto_statistic",
    "decide",
    "errored",
    "exit_code",
    "pair_scores",
    "paired_comparison",
    "parse_rule",
    "per_gate_alpha",
    "rejects",
    "run_gates",
    "underpowered",
]


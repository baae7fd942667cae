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
on it are ``inconclusive`` with that reason, never ``pass``.  A comparison that could not be made
(an evaluation errored, items do not pair up) is ``error``, never ``pass``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.lib.stats import is_binary, wilson
from harness.plugin.components import Statistic
from harness.suite.config import GatingSpec
from harness.suite.rules import Rule, parse_rule
from harness.types import BenchmarkResult, Comparison, Decision, RunResult, Verdict


def _fmt(x: float) -> str:
    return f"{x:+.3f}"


def decide(rule: Rule, cmp: Comparison, chance: float | None = None) -> tuple[Verdict, str]:
    """The verdict of ``rule`` on one paired comparison, and a one-line reason."""
    ci = f"diff {_fmt(cmp.diff)}, CI [{_fmt(cmp.ci_low)}, {_fmt(cmp.ci_high)}]"
    detectable = f"can detect >= {cmp.mde:.3f}"
    if rule.kind in ("non_inferior", "no_regression") and chance is not None:
        low, high = wilson(cmp.baseline * cmp.n, cmp.n, cmp.alpha)
        if low <= chance <= high:
            return Verdict.INCONCLUSIVE, (
                f"baseline {cmp.baseline:.3f} is indistinguishable from chance ({chance:.2f}) "
                f"on {cmp.n} items, so it cannot show forgetting; {ci}; {detectable}"
            )
    if rule.kind == "non_inferior":
        if cmp.ci_low > -rule.margin:
            return Verdict.PASS, f"not worse than -{rule.margin:g}: {ci}"
        if cmp.ci_high < -rule.margin:
            return Verdict.FAIL, f"worse than -{rule.margin:g}: {ci}"
        return Verdict.INCONCLUSIVE, f"interval straddles -{rule.margin:g}: {ci}; {detectable}"
    if rule.kind == "superior":
        if cmp.ci_low > rule.margin:
            return Verdict.PASS, f"better by more than {rule.margin:g}: {ci}, p={cmp.p_value:.3g}"
        if cmp.ci_high <= rule.margin:
            return Verdict.FAIL, f"not better than {rule.margin:g}: {ci}"
        return Verdict.INCONCLUSIVE, f"no evidence of improvement: {ci}; {detectable}"
    if cmp.ci_high < -rule.margin:
        return Verdict.FAIL, f"regressed by more than {rule.margin:g}: {ci}, p={cmp.p_value:.3g}"
    return Verdict.PASS, f"no evidence of a regression beyond {rule.margin:g}: {ci}"


def pair_scores(
    baseline: BenchmarkResult, candidate: BenchmarkResult
) -> tuple[list[float], list[float]]:
    """Align two results by item id; raise ``ValueError`` when the item sets differ."""
    base = {i.item_id: i.score for i in baseline.items}
    cand = {i.item_id: i.score for i in candidate.items}
    if base.keys() != cand.keys():
        missing = len(base.keys() ^ cand.keys())
        raise ValueError(f"{missing} items are not scored for both models")
    ids = sorted(base)
    return [base[i] for i in ids], [cand[i] for i in ids]


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
    """Bonferroni: split the family-wise error rate across the blocking gates."""
    return alpha / max(n_gates, 1) if correction == "bonferroni" else alpha


def errored(gate: str, benchmark: str, rule: str, reason: str, blocking: bool) -> Decision:
    return Decision(gate, benchmark, rule, Verdict.ERROR, reason, blocking)


@dataclass(frozen=True)
class GatePlan:
    """One gate as the run plan built it: the benchmark label it decides on, its rule, the
    statistic (``auto`` or a name), and the benchmark's chance level (a guard rule on a
    benchmark at chance is inconclusive)."""

    name: str
    label: str
    rule: Rule
    statistic: str
    blocking: bool
    chance: float | None
    loc: tuple[str | int, ...]


def paired_comparison(
    statistics: Mapping[str, Statistic],
    baseline: BenchmarkResult,
    candidate: BenchmarkResult,
    statistic: str,
    alpha: float,
) -> Comparison:
    """Compare two results item by item with the named statistic (``auto``: McNemar for 0/1
    scores, paired bootstrap otherwise); ``statistics`` are the ones the run plan built."""
    base, cand = pair_scores(baseline, candidate)
    name = statistic if statistic != "auto" else auto_statistic(base, cand)
    stat = statistics[name]
    if not stat.applies_to(base + cand):
        raise ValueError(f"statistic {name!r} does not apply to these scores")
    return stat.compare(base, cand, alpha)


def run_gates(
    gates: Sequence[GatePlan], statistics: Mapping[str, Statistic], gating: GatingSpec, result: RunResult
) -> list[Decision]:
    """Decide every planned gate on the run's paired per-item results."""
    n_blocking = sum(1 for g in gates if g.blocking)
    alpha = per_gate_alpha(gating.alpha, n_blocking, gating.correction)
    errors = {(e.benchmark, e.model): e.message for e in result.eval_errors}
    decisions = []
    for gate in gates:
        rule, label = str(gate.rule), gate.label
        per_model = result.benchmarks.get(label, {})
        problems = [f"{m}: {errors[(label, m)]}" for m in ("baseline", "candidate") if (label, m) in errors]
        if problems or "baseline" not in per_model or "candidate" not in per_model:
            reason = "; ".join(problems) or result.train_error or "no candidate was trained or evaluated"
            decisions.append(errored(gate.name, label, rule, reason, gate.blocking))
            continue
        try:
            comparison = paired_comparison(statistics, per_model["baseline"], per_model["candidate"], gate.statistic, alpha)
        except Exception as exc:
            decisions.append(errored(gate.name, label, rule, f"{type(exc).__name__}: {exc}", gate.blocking))
            continue
        verdict, reason = decide(gate.rule, comparison, chance=gate.chance)
        decisions.append(Decision(gate.name, label, rule, verdict, reason, gate.blocking, comparison))
    return decisions


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
    "run_gates",
]


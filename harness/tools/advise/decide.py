"""``advise(measurements, traffic, prices, rules)``: the recommendation and every reason.

Each rule of the table (``harness/suite/advise_rules.yaml``) is checked against the measurement it reads and gives a
reason: ``fired`` (the rule's condition holds), ``held`` (it does not) or ``not_measured`` (the
run or the user did not give what it reads, said in the reason).  The first rule that fires, in
the table's order, decides; ``fine_tune`` becomes the best trained arm's kind (``lora`` or
``full``; ``lora`` when the run trained none).  When no rule fires the best-scoring arm decides.
A "point" is 0.01 of the benchmark's score (one percentage point of accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from harness.tools.advise.economics import Economics, Prices, Traffic, economics
from harness.tools.advise.measure import TRAINED, ArmMeasure, Measurements
from harness.suite.advise import Rule

Outcome = Literal["fired", "held", "not_measured"]
Recommendation = Literal["prompting", "lora", "full"]


@dataclass(frozen=True)
class Reason:
    """One rule checked against its measured number."""

    rule: str
    source: str
    outcome: Outcome
    recommends: str
    measured: float | None
    text: str
    thresholds: dict[str, float]
    """The thresholds the rule was checked with (after overrides)."""


@dataclass(frozen=True)
class Advice:
    """What to do, which arm that means, which rule decided, and every reason."""

    recommendation: Recommendation
    arm: str | None
    decided_by: str
    reasons: tuple[Reason, ...]
    measurements: Measurements
    economics: Economics
    traffic: Traffic
    prices: Prices

    @property
    def summary(self) -> str:
        how = f"rule {self.decided_by}" if self.decided_by != "best_score" else "the best score (no rule fired)"
        arm = f" (arm {self.arm})" if self.arm else ""
        return f"{self.recommendation}{arm}, decided by {how}"


Check = Callable[[Rule, Measurements, Economics, Traffic], tuple[Outcome, float | None, str]]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def duration(days: float) -> str:
    """A break-even time as people say it: hours under a day, else days."""
    return f"{24 * days:.1f} hours" if days < 1 else f"{days:.1f} days"


def _few_examples(rule: Rule, m: Measurements, e: Economics, t: Traffic) -> tuple[Outcome, float | None, str]:
    n, limit = m.labelled_examples, rule.thresholds["min_examples"]
    if n is None:
        return "not_measured", None, "the run records no labelled training examples"
    if n < limit:
        return "fired", n, f"{n} labelled examples, below {limit:g}: prompting first"
    return "held", n, f"{n} labelled examples, at least {limit:g}"


def _format_failures(rule: Rule, m: Measurements, e: Economics, t: Traffic) -> tuple[Outcome, float | None, str]:
    arm, limit = m.few_shot(), rule.thresholds["max_rate"]
    if arm is None or arm.format_failure_rate is None:
        why = "no prompting arm" if arm is None else f"{m.benchmark} has no format check"
        return "not_measured", None, why
    rate = arm.format_failure_rate
    said = f"prompting arm {arm.name}: {arm.format_failures}/{arm.n} answers ({_pct(rate)}) are not a known label"
    if rate > limit:
        return "fired", rate, f"{said}, above {_pct(limit)} despite {'examples' if arm.has_examples else 'the prompt'}"
    return "held", rate, f"{said}, at most {_pct(limit)}"


def _context_share(rule: Rule, m: Measurements, e: Economics, t: Traffic) -> tuple[Outcome, float | None, str]:
    arm, limit = m.best_of(("prompting",), with_examples=True), rule.thresholds["max_share"]
    if arm is None or arm.cost is None:
        return "not_measured", None, "no few-shot arm with a measured prompt cost"
    share = arm.cost.context_share
    said = f"few-shot arm {arm.name}: examples take {arm.cost.example_tokens:.0f} tokens, {_pct(share)} of the context"
    if share > limit:
        return "fired", share, f"{said}, above {_pct(limit)}"
    return "held", share, f"{said}, at most {_pct(limit)}"


def _quality_gap(rule: Rule, m: Measurements, e: Economics, t: Traffic) -> tuple[Outcome, float | None, str]:
    trained, few, pair = m.best_of(TRAINED), m.few_shot(), m.trained_vs_prompting
    if trained is None or few is None or pair is None:
        return "not_measured", None, "needs a trained arm and a prompting arm"
    within = rule.thresholds["within"]
    level = 100 * (1 - 2 * pair.alpha)
    said = (f"{trained.kind} arm {trained.name} {trained.score:.3f} vs {few.name} {few.score:.3f}: "
            f"{100 * pair.diff:+.1f} points ({level:.0f}% CI {100 * pair.ci_low:+.1f} to {100 * pair.ci_high:+.1f}, n={pair.n})")
    if pair.diff <= within:
        where = f"within {100 * within:g} points" if pair.diff >= -within else f"more than {100 * within:g} points below it"
        return "fired", pair.diff, f"{said}, {where}: consider prompting"
    return "held", pair.diff, f"{said}, more than {100 * within:g} points better"


def _break_even(rule: Rule, m: Measurements, e: Economics, t: Traffic) -> tuple[Outcome, float | None, str]:
    days, limit = e.break_even_days, rule.thresholds["max_days"]
    if days is None:
        return "not_measured", None, e.note or "break-even not computed"
    said = (f"training {e.trained_arm} costs {e.training_cost:,.2f} ({e.training_hours:.2f} GPU-hours); "
            f"serving it instead of {e.prompting_arm} saves {e.monthly_saving:,.2f}/month")
    if math.isinf(days):
        return "held", days, f"{said}: it never pays back"
    if days <= limit:
        return "fired", days, f"{said}: pays back in {duration(days)}, within {limit:g} days"
    return "held", days, f"{said}: pays back in {duration(days)}, more than {limit:g} days"


def _traffic(rule: Rule, m: Measurements, e: Economics, t: Traffic) -> tuple[Outcome, float | None, str]:
    arm = m.best_of(("prompting",))
    cost = e.cost(arm.name) if arm else None
    if cost is None or cost.input_tokens is None or t.requests_per_month is None:
        return "not_measured", None, "needs the prompting arm's input tokens and the requests per month"
    tokens, rpm = cost.input_tokens, t.requests_per_month
    max_tokens, max_rpm = rule.thresholds["prompt_tokens"], rule.thresholds["requests_per_month"]
    said = f"prompt of {arm.name if arm else '?'} {tokens:,.0f} tokens, {rpm:,.0f} requests/month"
    if tokens > max_tokens and rpm > max_rpm:
        return "fired", tokens, f"{said}: above {max_tokens:,.0f} tokens and {max_rpm:,.0f} requests"
    return "held", tokens, f"{said}: not above both {max_tokens:,.0f} tokens and {max_rpm:,.0f} requests"


CHECKS: dict[str, Check] = {
    "labelled_examples": _few_examples,
    "format_failure_rate": _format_failures,
    "context_share": _context_share,
    "quality_gap": _quality_gap,
    "break_even_days": _break_even,
    "prompt_tokens_and_traffic": _traffic,
}


def _resolve(recommends: str, m: Measurements) -> tuple[Recommendation, str | None]:
    if recommends == "prompting":
        arm: ArmMeasure | None = m.best_of(("prompting",))
        return "prompting", arm.name if arm else None
    trained = m.best_of(TRAINED)
    return (trained.kind, trained.name) if trained else ("lora", None)


def advise(measurements: Measurements, traffic: Traffic, prices: Prices, rules: tuple[Rule, ...]) -> Advice:
    """Check every rule in order; the first that fires decides (see the module docstring)."""
    econ = economics(measurements, traffic, prices)
    reasons = []
    for rule in rules:
        outcome, value, text = CHECKS[rule.reads](rule, measurements, econ, traffic)
        reasons.append(Reason(rule.id, rule.source, outcome, rule.recommends, value, text, dict(rule.thresholds)))
    fired = next((r for r in reasons if r.outcome == "fired"), None)
    if fired is not None:
        recommendation, arm = _resolve(fired.recommends, measurements)
        decided_by = fired.rule
    else:
        best = measurements.arm(measurements.best)
        recommendation, arm, decided_by = best.kind, best.name, "best_score"
    return Advice(recommendation, arm, decided_by, tuple(reasons), measurements, econ, traffic, prices)

"""Every pair of arms compared on the same items, and the prompting-or-training rule.

A suite with several arms (zero-shot, few-shot, nearest examples, a LoRA adapter) asks two
things of its results: how each arm differs from each other one, with a paired interval, and
whether training was worth it.  :func:`compare_arms` answers both from the per-item results
``benchmarks[label][arm]`` that the evaluate stage produces:

* **Pairs.** For every two arms (in the order of ``kinds``), the difference ``second - first``
  on the items both scored, with the gates' statistics: exact McNemar with the Agresti-Min
  interval for 0/1 scores, the paired bootstrap otherwise (``harness.lib.stats``, or the run
  plan's statistic components when given), at confidence ``1 - 2 * alpha``.  The intervals are
  per pair and descriptive: no correction across pairs is applied, since no pair is a gate.
* **The rule** (:data:`PROMPTING_RULE`, after the chapter's Q4): "train a LoRA adapter and
  compare it with a few-shot baseline; if it is within 2 points of the best prompting arm,
  consider prompting".  Per benchmark, the best trained arm's score minus the best prompting
  arm's score (ties go to the arm named first) is the gap; a gap of at most ``margin`` gives
  ``consider prompting``, a larger one ``keep training``.  The rule reads point estimates, as
  the chapter states it; the verdict also says whether the paired interval of the gap settles
  it (its upper bound at most the margin, or its lower bound above it) or the sample is too
  small to tell.  A benchmark without both kinds of arm, or with a missing result, is ``not
  applicable`` with the reason.

In a run, :func:`compare_run_arms` picks what to compare (every benchmark scored on more than two
arms, or on a prompt variant) and each arm's kind from the kind its result entry declares; the
runner keeps :func:`comparison_document` of it as the result's ``arm_pairs``, and every report
renders that through ``harness.lib.armview``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, Literal

from harness.lib.armview import arms_markdown
from harness.lib.stats import clip_interval, is_binary, mcnemar, paired_bootstrap
from harness.plugin.components import Statistic
from harness.stages.gate import pair_scores, paired_comparison
from harness.suite.advise import default_rules
from harness.types import BenchmarkResult, Comparison, RunResult

ArmKind = Literal["prompting", "trained", "model"]
RuleVerdict = Literal["consider prompting", "keep training", "not applicable"]



def _chapter_margin() -> float:
    """The margin of the chapter's rule, from the one table of its decision rules
    (``advise_rules.yaml``, rule ``lora_close``), which ``harness advise`` reads too."""
    return next(r for r in default_rules() if r.id == "lora_close").thresholds["within"]


PROMPTING_RULE: Mapping[str, float] = MappingProxyType({"margin": _chapter_margin()})
"""The chapter's rule as data: a trained arm within ``margin`` (0.02) of the best prompting arm."""

TOLERANCE = 1e-9
"""Scores are means of floats: a gap of exactly the margin must not miss it by rounding."""


@dataclass(frozen=True)
class ArmPair:
    """Two arms on one benchmark: ``comparison`` is ``second - first``, or ``error`` says why
    there is none (an arm has no result, the items do not pair up)."""

    benchmark: str
    first: str
    second: str
    comparison: Comparison | None
    error: str | None = None


@dataclass(frozen=True)
class RuleDecision:
    """The prompting rule on one benchmark, with the numbers it was decided on."""

    benchmark: str
    verdict: RuleVerdict
    reason: str
    best_trained: str | None = None
    best_prompting: str | None = None
    gap: float | None = None
    """Best trained score minus best prompting score."""
    ci_low: float | None = None
    ci_high: float | None = None
    settled: bool = False
    """Whether the gap's interval lies wholly on the verdict's side of the margin."""


@dataclass(frozen=True)
class ArmComparison:
    """Every pair of arms per benchmark and the prompting rule's decision per benchmark."""

    pairs: tuple[ArmPair, ...]
    decisions: tuple[RuleDecision, ...]
    margin: float
    alpha: float

    @property
    def consider_prompting(self) -> bool | None:
        """``True`` when the rule says "consider prompting" on every benchmark it applies to,
        ``False`` when it says "keep training" on one, ``None`` when it applies to none."""
        applied = [d for d in self.decisions if d.verdict != "not applicable"]
        return all(d.verdict == "consider prompting" for d in applied) if applied else None


def compare_arms(
    benchmarks: Mapping[str, Mapping[str, BenchmarkResult]],
    kinds: Mapping[str, ArmKind],
    alpha: float,
    seed: int,
    *,
    margin: float = PROMPTING_RULE["margin"],
    statistics: Mapping[str, Statistic] | None = None,
    clusters: Mapping[str, Mapping[str, str] | None] | None = None,
) -> ArmComparison:
    """Compare every pair of the arms in ``kinds`` (in its order) on every benchmark label of
    ``benchmarks`` and apply the prompting rule.  ``seed`` seeds the bootstrap when scores are
    not 0/1; ``statistics`` are the run plan's (``auto`` choice, as gates make it), else
    ``harness.lib.stats``; ``clusters``: per label, item id -> source."""
    arms = list(kinds)
    pairs: list[ArmPair] = []
    decisions: list[RuleDecision] = []
    for label, results in benchmarks.items():
        items = (clusters or {}).get(label)
        found = {
            (a, b): _pair(label, a, b, results, alpha, seed, statistics, items)
            for i, a in enumerate(arms)
            for b in arms[i + 1 :]
        }
        pairs += found.values()
        decisions.append(_decide(label, results, kinds, found, margin))
    return ArmComparison(tuple(pairs), tuple(decisions), margin, alpha)


def _pair(
    label: str,
    first: str,
    second: str,
    results: Mapping[str, BenchmarkResult],
    alpha: float,
    seed: int,
    statistics: Mapping[str, Statistic] | None,
    clusters: Mapping[str, str] | None,
) -> ArmPair:
    missing = [arm for arm in (first, second) if arm not in results]
    if missing:
        return ArmPair(label, first, second, None, f"no result for {', '.join(map(repr, missing))}")
    try:
        cmp = _compare(results[first], results[second], alpha, seed, statistics, clusters)
    except ValueError as exc:
        return ArmPair(label, first, second, None, str(exc))
    return ArmPair(label, first, second, cmp)


def _compare(
    first: BenchmarkResult,
    second: BenchmarkResult,
    alpha: float,
    seed: int,
    statistics: Mapping[str, Statistic] | None,
    clusters: Mapping[str, str] | None,
) -> Comparison:
    """``second - first`` as the gates compare: McNemar for 0/1 scores (interval clipped to what
    the first arm's score allows), the paired bootstrap otherwise."""
    if statistics is not None:
        return paired_comparison(statistics, first, second, "auto", alpha, clusters)
    base, cand = pair_scores(first, second)
    ids = sorted(i.item_id for i in first.items)
    labels = [clusters.get(i, i) for i in ids] if clusters else None
    if is_binary(base) and is_binary(cand):
        return clip_interval(mcnemar(base, cand, alpha, labels))
    return paired_bootstrap(base, cand, alpha, seed=seed, clusters=labels)


def _best(results: Mapping[str, BenchmarkResult], kinds: Mapping[str, ArmKind], kind: ArmKind) -> str | None:
    """The arm of ``kind`` with the highest score; the one named first on a tie."""
    arms = [a for a, k in kinds.items() if k == kind and a in results]
    return max(arms, key=lambda a: results[a].score) if arms else None


def _decide(
    label: str,
    results: Mapping[str, BenchmarkResult],
    kinds: Mapping[str, ArmKind],
    pairs: Mapping[tuple[str, str], ArmPair],
    margin: float,
) -> RuleDecision:
    trained, prompting = _best(results, kinds, "trained"), _best(results, kinds, "prompting")
    if trained is None or prompting is None:
        lacking = " and ".join(k for k, a in (("trained", trained), ("prompting", prompting)) if a is None)
        return RuleDecision(label, "not applicable", f"no {lacking} arm has a result on {label!r}")
    gap = results[trained].score - results[prompting].score
    low, high = _gap_interval(pairs, trained, prompting)
    within = gap <= margin + TOLERANCE
    verdict: RuleVerdict = "consider prompting" if within else "keep training"
    settled = low is not None and high is not None and (high <= margin + TOLERANCE if within else low > margin)
    side = "of" if abs(gap) <= margin + TOLERANCE else ("above" if gap > 0 else "below")
    where = "within" if side == "of" else "more than"
    interval = f"interval [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else "no interval"
    tell = "settled by the interval" if settled else "the interval cannot settle it"
    reason = (
        f"best trained arm {trained!r} {results[trained].score:.3f} is {where} {margin:g} {side} best prompting arm "
        f"{prompting!r} {results[prompting].score:.3f} (gap {gap:+.3f}, {interval}; {tell})"
    )
    return RuleDecision(label, verdict, reason, trained, prompting, gap, low, high, settled)


def _gap_interval(pairs: Mapping[tuple[str, str], ArmPair], trained: str, prompting: str) -> tuple[float | None, float | None]:
    """The interval of ``trained - prompting`` from whichever way round their pair was made."""
    pair = pairs.get((prompting, trained)) or pairs.get((trained, prompting))
    if pair is None or pair.comparison is None:
        return None, None
    cmp = pair.comparison
    return (cmp.ci_low, cmp.ci_high) if pair.second == trained else (-cmp.ci_high, -cmp.ci_low)


def comparison_document(comparison: ArmComparison) -> dict[str, Any]:
    """The comparison in plain JSON types, for the result document (``result.json``) and the
    reporters that render from it."""
    return {
        "margin": comparison.margin,
        "alpha": comparison.alpha,
        "consider_prompting": comparison.consider_prompting,
        "pairs": [asdict(p) for p in comparison.pairs],
        "decisions": [asdict(d) for d in comparison.decisions],
    }


def render_markdown(comparison: ArmComparison) -> str:
    """The section of a Markdown (or plain terminal) report: per benchmark, a table of every
    pair with its difference, interval and p-value, then the rule's verdict and reason (the
    reports' one rendering, ``harness.lib.armview``)."""
    return "\n".join(arms_markdown(comparison_document(comparison))) + "\n"


# ------------------------------------------------------------------------------- in a run

KIND_OF_ARM: Mapping[str, ArmKind] = MappingProxyType({"prompting": "prompting", "lora": "trained", "full": "trained"})
"""An arm's kind in the rule, from the kind its result entry declares (``RunResult.arms``):
``prompting`` (the base model or a prompt variant), ``trained`` (this run's LoRA or full
fine-tuning, or an adapter); any other arm (a folder or endpoint of unknown making) is ``model``."""


def run_kinds(arms: Mapping[str, Mapping[str, str]], labels: Collection[str]) -> dict[str, ArmKind]:
    """The kind of each result label in ``labels``, prompting arms first, then other models,
    then trained arms (each in the run's order), so a pair's difference reads trained minus
    prompting."""
    kinds: dict[str, ArmKind] = {
        label: KIND_OF_ARM.get(arms.get(label, {}).get("kind", ""), "model") for label in arms if label in labels
    }
    kinds.update({label: "model" for label in labels if label not in kinds})
    order: tuple[ArmKind, ...] = ("prompting", "model", "trained")
    return {label: kinds[label] for kind in order for label in kinds if kinds[label] == kind}


def compare_run_arms(
    result: RunResult,
    variants: Collection[str],
    alpha: float,
    seed: int,
    statistics: Mapping[str, Statistic] | None = None,
    clusters: Mapping[str, Mapping[str, str] | None] | None = None,
) -> ArmComparison | None:
    """The comparison a run reports: every benchmark scored on more than two arms, or on a
    prompt variant (result labels ``variants``), all pairs of its arms; ``None`` when no
    benchmark qualifies (a plain baseline-candidate run has its gates)."""
    chosen = {
        label: per_arm
        for label, per_arm in result.benchmarks.items()
        if len(per_arm) > 2 or set(variants) & set(per_arm)
    }
    if not chosen:
        return None
    labels = {arm for per_arm in chosen.values() for arm in per_arm}
    return compare_arms(chosen, run_kinds(result.arms, labels), alpha, seed, statistics=statistics, clusters=clusters)

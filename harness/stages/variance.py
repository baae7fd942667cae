"""Training-seed variance and filter ablation, decided on results the evaluate stage produced.

**Seeds** (``train.seeds: [1, 2, 3]``).  One candidate is trained per seed, everything else the
same; each is evaluated on the same items.  The first seed's candidate is the suite's
``trained`` arm (result label ``candidate``: the forgetting curve, parity and the reports' main
columns use it); every other seed's is the arm ``trained@seed=N``, with that label.  A gate on the
candidate is then decided by ``train.seed_rule``:

* ``all`` (the default): the gate is decided on each seed's candidate as if it were the only one
  (each seed a family of its own under ``gating.correction``), and its verdict is the worst of
  them (``error`` > ``fail`` > ``inconclusive`` > ``pass``); the reason names the seed that gave
  it and lists every seed's verdict.
* ``pooled``: one decision on the items of every seed, pooled: candidate item ``i`` of seed ``s``
  becomes ``i@seed=s``, paired with the baseline's item ``i`` repeated once per seed, and the
  intervals are clustered by item (the benchmark's own cluster when it declares one), so the
  repeated baseline does not pass for independent evidence.  This asks whether the *recipe*
  holds on average over seeds; ``all`` asks whether *every* trained model would ship.

A seed whose training (or evaluation) failed makes the gates on the candidate ``error``, under
either rule: a gate never passes on the seeds that happened to work.

**Ablation** (``curate.ablate: [near_dedup, language]``).  One more candidate per listed filter,
trained on the curated data without that filter (same sources, same other filters, same seed),
is the arm ``trained@without=NAME``.  Per benchmark the report shows the full candidate minus the
ablated one on the same items, with the paired interval of :func:`harness.stages.pairs.compare_arms`:
what the filter bought (positive: the filter helped).  Ablations are descriptive, never gated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from harness.plugin.components import Statistic
from harness.stages.pairs import compare_arms
from harness.types import BenchmarkResult, Decision, FilterImpact, RunResult, SeedScores, SeedVariance, Verdict

CANDIDATE = "candidate"
SEVERITY = {Verdict.PASS: 0, Verdict.INCONCLUSIVE: 1, Verdict.FAIL: 2, Verdict.ERROR: 3}
"""The order in which one seed's verdict outweighs another's under ``seed_rule: all``."""

Clusters = Mapping[str, Mapping[str, str] | None]
DecideGates = Callable[[RunResult, Clusters], list[Decision]]


def seed_label(seed: int) -> str:
    """The arm (and result label) of a seed's candidate other than the first."""
    return f"trained@seed={seed}"


def ablated_label(name: str) -> str:
    """The arm (and result label) of the candidate trained without filter ``name``."""
    return f"trained@without={name}"


def seed_labels(seeds: Sequence[int]) -> dict[int, str]:
    """Seed -> result label: the first seed's candidate is ``candidate``, the others their arm."""
    return {seed: CANDIDATE if i == 0 else seed_label(seed) for i, seed in enumerate(seeds)}


def seed_variance(result: RunResult, rule: str, seeds: Sequence[int], errors: Mapping[int, str]) -> SeedVariance:
    """Each benchmark's score per seed (from ``result.benchmarks``) and the seeds that failed."""
    labels = seed_labels(seeds)
    scores = tuple(
        SeedScores(bench, {s: per[label].score for s, label in labels.items() if label in per})
        for bench, per in result.benchmarks.items()
    )
    return SeedVariance(rule, tuple(seeds), labels, scores, dict(errors))


def decide_seeds(decide: DecideGates, result: RunResult, variance: SeedVariance, clusters: Clusters) -> list[Decision]:
    """The gates under the suite's seed rule; ``decide(result, clusters)`` runs the gate stage."""
    if variance.rule == "pooled":
        view, pooled = pooled_view(result, variance, clusters)
        prefix = f"pooled over seeds {', '.join(map(str, variance.seeds))} (items clustered by item)"
        return [_prefixed(d, prefix) for d in decide(view, pooled)]
    per_seed = {seed: decide(seed_view(result, variance, seed), clusters) for seed in variance.seeds}
    gates = zip(*per_seed.values(), strict=True)
    return [_worst(dict(zip(per_seed, decisions, strict=True))) for decisions in gates]


def seed_view(result: RunResult, variance: SeedVariance, seed: int) -> RunResult:
    """The run as if ``seed``'s candidate were the only one: its results (and evaluation errors)
    under the label ``candidate``, and its training error, if any, as the run's."""
    label, others = variance.labels[seed], set(variance.labels.values())
    benchmarks = {
        bench: {**{m: r for m, r in per.items() if m not in others}, **({CANDIDATE: per[label]} if label in per else {})}
        for bench, per in result.benchmarks.items()
    }
    errors = [e for e in result.eval_errors if e.model not in others]
    errors += [replace(e, model=CANDIDATE) for e in result.eval_errors if e.model == label]
    train_error = variance.errors.get(seed, result.train_error if label == CANDIDATE else None)
    return replace(result, benchmarks=benchmarks, eval_errors=errors, train_error=train_error)


def pooled_view(result: RunResult, variance: SeedVariance, clusters: Clusters) -> tuple[RunResult, dict[str, dict[str, str]]]:
    """The run with every seed's candidate items pooled under ``candidate`` (item ``i`` of seed
    ``s`` is ``i@seed=s``), every other arm's items repeated once per seed, and per benchmark
    the cluster of each pooled item (the item's own cluster, else the item itself).  A benchmark
    that lacks a seed's results has no pooled candidate (its gates are ``error``)."""
    labels, others = variance.labels, set(variance.labels.values())
    benchmarks: dict[str, dict[str, BenchmarkResult]] = {}
    pooled_clusters: dict[str, dict[str, str]] = {}
    for bench, per in result.benchmarks.items():
        own = clusters.get(bench) or {}
        first = next((r for r in per.values()), None)
        ids = [i.item_id for i in first.items] if first is not None else []
        pooled_clusters[bench] = {f"{i}@seed={s}": own.get(i, i) for s in labels for i in ids}
        benchmarks[bench] = {m: _repeated(r, labels) for m, r in per.items() if m not in others}
        if all(label in per for label in labels.values()):
            benchmarks[bench][CANDIDATE] = _pooled(per, labels)
    missing = [f"seed {s}: {variance.errors.get(s) or 'no result'}" for s, label in labels.items()
               if any(label not in per for per in result.benchmarks.values())]  # fmt: skip
    errors = [e for e in result.eval_errors if e.model not in others]
    errors += [replace(e, model=CANDIDATE, message=f"{e.model}: {e.message}") for e in result.eval_errors if e.model in others]
    train_error = "; ".join(missing) or None
    return replace(result, benchmarks=benchmarks, eval_errors=errors, train_error=train_error), pooled_clusters


def _repeated(res: BenchmarkResult, labels: Mapping[int, str]) -> BenchmarkResult:
    items = tuple(replace(i, item_id=f"{i.item_id}@seed={s}") for s in labels for i in res.items)
    return replace(res, items=items)


def _pooled(per: Mapping[str, BenchmarkResult], labels: Mapping[int, str]) -> BenchmarkResult:
    items = tuple(replace(i, item_id=f"{i.item_id}@seed={s}") for s, label in labels.items() for i in per[label].items)
    return replace(per[labels[next(iter(labels))]], model=CANDIDATE, items=items)


def _prefixed(decision: Decision, prefix: str) -> Decision:
    return replace(decision, reason=f"{prefix}: {decision.reason}")


def _worst(by_seed: Mapping[int, Decision]) -> Decision:
    """One gate's decisions on every seed, folded into one: the worst verdict, naming its seed;
    unchanged when every seed gave the same decision (a gate that does not use the candidate)."""
    decisions = list(by_seed.values())
    if all((d.verdict, d.reason) == (decisions[0].verdict, decisions[0].reason) for d in decisions):
        return decisions[0]
    seed, worst = max(by_seed.items(), key=lambda kv: SEVERITY[kv[1].verdict])
    verdicts = ", ".join(f"{s} {d.shown}" for s, d in by_seed.items())
    reason = f"every seed must pass (seeds: {verdicts}); seed {seed}: {worst.reason}"
    return replace(worst, reason=reason)


def filter_impacts(
    result: RunResult,
    ablated: Mapping[str, str],
    errors: Mapping[str, str],
    alpha: float,
    seed: int,
    statistics: Mapping[str, Statistic] | None = None,
    clusters: Clusters | None = None,
) -> list[FilterImpact]:
    """Per filter of ``ablated`` (name -> result label) and per benchmark, the full candidate
    minus the one trained without it, paired on the same items (``errors``: filter -> why its
    candidate has no results)."""
    impacts = []
    for name, label in ablated.items():
        for bench, per in result.benchmarks.items():
            if CANDIDATE in per and label in per:
                found = compare_arms({bench: per}, {label: "trained", CANDIDATE: "trained"}, alpha, seed,
                                     statistics=statistics, clusters=clusters)  # fmt: skip
                pair = found.pairs[0]
                impacts.append(FilterImpact(name, label, bench, pair.comparison, pair.error))
                continue
            lacking = label if CANDIDATE in per else CANDIDATE
            why = errors.get(name) if lacking == label else result.train_error
            impacts.append(FilterImpact(name, label, bench, None, why or f"no result for {lacking!r}"))
    return impacts

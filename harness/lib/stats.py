"""Paired statistics for comparing a candidate with its baseline on the same items.

Pure Python (no SciPy), so the core stays light and the numbers are easy to check by hand:

* ``mcnemar`` for binary per-item scores: exact two-sided p-value from the binomial distribution
  of the discordant pairs, and the Agresti-Min adjusted Wald interval for the paired difference
  of proportions (it stays honest when there are no discordant pairs).
* ``paired_bootstrap`` for any per-item score: the items are resampled with the same indices for
  both models; percentile interval, two-sided bootstrap p-value.
* ``wilson`` for a single proportion.

Items that share a source (HellaSwag contexts of one activity, MMLU questions of one subject,
samples of one HumanEval problem) are not independent.  Both tests take an optional ``clusters``
label per item: McNemar's interval and minimum detectable effect widen by the design effect of
the clustered standard error (Liang-Zeger sandwich over cluster totals, never below 1, so a
clustered interval is never narrower than the unclustered one), and its p-value is the larger of
the exact one and the clustered z-test's; the bootstrap resamples whole clusters.

``holm_levels`` runs Holm's step-down over tests whose rejection regions shrink with the level
(interval tests), so a family of gates or checkpoint probes keeps its family-wise error rate.

Intervals are two-sided at confidence ``1 - 2*alpha``, i.e. each bound is a one-sided test at
level ``alpha``, which is what a non-inferiority or superiority rule needs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import replace
from statistics import NormalDist

from harness.types import Comparison

POWER = 0.8


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


def mde(se: float, alpha: float, power: float = POWER) -> float:
    """Minimum detectable effect of a one-sided test at ``alpha`` with the given power."""
    return (_z(1 - alpha) + _z(power)) * se


def binom_cdf(k: int, n: int, p: float = 0.5) -> float:
    """P(X <= k) for X ~ Binomial(n, p), exact."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def _check_paired(baseline: Sequence[float], candidate: Sequence[float]) -> int:
    if len(baseline) != len(candidate):
        raise ValueError(f"paired samples differ in length: {len(baseline)} vs {len(candidate)}")
    if not baseline:
        raise ValueError("no items to compare")
    return len(baseline)


def is_binary(scores: Sequence[float]) -> bool:
    return all(s in (0, 1) for s in scores)


def design_effect(deltas: Sequence[float], clusters: Sequence[Hashable] | None) -> float:
    """Variance of the mean of ``deltas`` with clustered (sandwich) errors over the i.i.d.
    variance; 1 without clusters, when every item is its own cluster, or when it would be
    below 1 (a clustered interval is never narrower than the plain one)."""
    n = len(deltas)
    if clusters is None or n < 2:
        return 1.0
    if len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster labels for {n} items")
    totals: dict[Hashable, list[float]] = {}
    for c, d in zip(clusters, deltas):
        totals.setdefault(c, [0.0, 0.0])
        totals[c][0] += d
        totals[c][1] += 1
    g = len(totals)
    if g < 2 or g == n:
        return 1.0
    mean = sum(deltas) / n
    iid = sum((d - mean) ** 2 for d in deltas) / (n - 1) / n
    clustered = g / (g - 1) * sum((t - k * mean) ** 2 for t, k in totals.values()) / n**2
    return max(1.0, clustered / iid) if iid > 0 else 1.0


def _clustered_p(deltas: Sequence[float], deff: float) -> float:
    """Two-sided p-value of a zero mean from the clustered normal approximation."""
    n = len(deltas)
    mean = sum(deltas) / n
    iid = sum((d - mean) ** 2 for d in deltas) / (n - 1) / n if n > 1 else 0.0
    se = math.sqrt(iid * deff)
    return 1.0 if se == 0 else 2 * (1 - NormalDist().cdf(abs(mean) / se))


def mcnemar(
    baseline: Sequence[float],
    candidate: Sequence[float],
    alpha: float,
    clusters: Sequence[Hashable] | None = None,
) -> Comparison:
    """Exact McNemar test and Agresti-Min interval for binary paired scores; with ``clusters``
    the interval is widened by the clustered design effect."""
    n = _check_paired(baseline, candidate)
    if not (is_binary(baseline) and is_binary(candidate)):
        raise ValueError("McNemar's test needs binary (0/1) scores")
    b = sum(1 for x, y in zip(baseline, candidate) if x == 1 and y == 0)  # lost by candidate
    c = sum(1 for x, y in zip(baseline, candidate) if x == 0 and y == 1)  # won by candidate
    discordant = b + c
    p_value = 1.0 if discordant == 0 else min(1.0, 2 * binom_cdf(min(b, c), discordant))
    # Agresti & Min (2005): add 1/2 to each of the four cells.
    b_adj, c_adj, n_adj = b + 0.5, c + 0.5, n + 2
    diff_adj = (c_adj - b_adj) / n_adj
    deltas = [y - x for x, y in zip(baseline, candidate)]
    deff = design_effect(deltas, clusters)
    se = math.sqrt(max((b_adj + c_adj) - (c_adj - b_adj) ** 2 / n_adj, 0.0) * deff) / n_adj
    if deff > 1:
        p_value = max(p_value, _clustered_p(deltas, deff))
    z = _z(1 - alpha)
    return Comparison(
        test="mcnemar",
        n=n,
        baseline=sum(baseline) / n,
        candidate=sum(candidate) / n,
        diff=(c - b) / n,
        ci_low=max(-1.0, diff_adj - z * se),
        ci_high=min(1.0, diff_adj + z * se),
        p_value=p_value,
        mde=mde(se, alpha),
        alpha=alpha,
        detail={"lost": float(b), "won": float(c), "design_effect": deff},
    )


def paired_bootstrap(
    baseline: Sequence[float],
    candidate: Sequence[float],
    alpha: float,
    resamples: int = 2000,
    seed: int = 0,
    clusters: Sequence[Hashable] | None = None,
) -> Comparison:
    """Paired bootstrap of the mean difference (candidate - baseline); with ``clusters`` whole
    clusters are resampled (each draw's mean is its items' total over its items' count)."""
    n = _check_paired(baseline, candidate)
    deltas = [y - x for x, y in zip(baseline, candidate)]
    mean = sum(deltas) / n
    rng = random.Random(seed)
    groups = _groups(deltas, clusters)
    boots = sorted(_cluster_mean(rng.choices(groups, k=len(groups))) for _ in range(resamples))
    lo_index = max(0, math.floor(alpha * resamples))
    hi_index = min(resamples - 1, math.ceil((1 - alpha) * resamples) - 1)
    below = sum(1 for d in boots if d <= 0) / resamples
    above = sum(1 for d in boots if d >= 0) / resamples
    p_value = min(1.0, max(2 * min(below, above), 1 / resamples))
    sd = math.sqrt(sum((d - mean) ** 2 for d in deltas) / (n - 1)) if n > 1 else 0.0
    return Comparison(
        test="paired_bootstrap",
        n=n,
        baseline=sum(baseline) / n,
        candidate=sum(candidate) / n,
        diff=mean,
        ci_low=boots[lo_index],
        ci_high=boots[hi_index],
        p_value=p_value,
        mde=mde(sd / math.sqrt(n) * math.sqrt(deff := design_effect(deltas, clusters)), alpha),
        alpha=alpha,
        detail={"resamples": float(resamples), "clusters": float(len(groups)), "design_effect": deff},
    )


def _groups(deltas: Sequence[float], clusters: Sequence[Hashable] | None) -> list[tuple[float, int]]:
    """(total, count) per cluster, in first-seen order; each item alone without clusters."""
    if clusters is None:
        return [(d, 1) for d in deltas]
    if len(clusters) != len(deltas):
        raise ValueError(f"{len(clusters)} cluster labels for {len(deltas)} items")
    totals: dict[Hashable, tuple[float, int]] = {}
    for c, d in zip(clusters, deltas):
        t, k = totals.get(c, (0.0, 0))
        totals[c] = (t + d, k + 1)
    return list(totals.values())


def _cluster_mean(draw: Sequence[tuple[float, int]]) -> float:
    return sum(t for t, _ in draw) / sum(k for _, k in draw)


def holm_levels(
    keys: Iterable[Hashable], alpha: float, rejects: Callable[[Hashable, float], bool], correction: str = "holm"
) -> dict[Hashable, float]:
    """The level each test is decided at under ``correction`` (``holm``, ``bonferroni``, ``none``).

    Holm's step-down for tests given as ``rejects(key, level)``: with ``r`` tests not yet
    rejected, every one that rejects at ``alpha / r`` is rejected at that level; repeat with the
    rest until none rejects.  The tests left keep the last (largest) level tried.  Valid when a
    test that rejects at a level also rejects at every larger one (interval tests do)."""
    remaining = list(keys)
    if correction == "none":
        return {k: alpha for k in remaining}
    if correction == "bonferroni":
        return {k: alpha / max(len(remaining), 1) for k in remaining}
    levels: dict[Hashable, float] = {}
    while remaining:
        level = alpha / len(remaining)
        rejected = [k for k in remaining if rejects(k, level)]
        for k in remaining:
            levels[k] = level
        if not rejected:
            break
        remaining = [k for k in remaining if k not in rejected]
    return levels


def clip_interval(cmp: Comparison, low: float = 0.0, high: float = 1.0) -> Comparison:
    """``cmp`` with its interval clipped to the differences a metric in [low, high] allows
    given the baseline's score (e.g. a baseline at 0 cannot drop)."""
    lo_bound, hi_bound = low - cmp.baseline, high - cmp.baseline
    return replace(cmp, ci_low=min(max(cmp.ci_low, lo_bound), hi_bound), ci_high=max(min(cmp.ci_high, hi_bound), lo_bound))


def wilson(successes: float, n: int, alpha: float) -> tuple[float, float]:
    """Wilson score interval for a proportion at confidence ``1 - 2*alpha``."""
    if n == 0:
        return (0.0, 1.0)
    z = _z(1 - alpha)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def planning_sd(baseline: float, correlation: float = 0.5) -> float:
    """Per-item standard deviation of a paired 0/1 difference when both models score about
    ``baseline`` and their items correlate by ``correlation`` (a planning assumption)."""
    return math.sqrt(max(2 * baseline * (1 - baseline) * (1 - correlation), 0.0))


def detectable_effect(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """The smallest true change a one-sided test at ``alpha`` finds with ``power`` on ``n`` items."""
    return mde(sd / math.sqrt(max(n, 1)), alpha, power)


def needed_n(sd: float, effect: float, alpha: float, power: float = POWER) -> int | None:
    """Items needed to detect ``effect`` with ``power`` at one-sided ``alpha``; ``None`` for an
    effect of 0 (no sample is enough)."""
    if effect <= 0:
        return None
    return max(1, math.ceil(((_z(1 - alpha) + _z(power)) * sd / effect) ** 2))

"""Paired statistics for comparing a candidate with its baseline on the same items.

Pure Python (no SciPy), so the core stays light and the numbers are easy to check by hand:

* ``mcnemar`` for binary per-item scores: exact two-sided p-value from the binomial distribution
  of the discordant pairs, and the Agresti-Min adjusted Wald interval for the paired difference
  of proportions (it stays honest when there are no discordant pairs).
* ``paired_bootstrap`` for any per-item score: the items are resampled with the same indices for
  both models; percentile interval, two-sided bootstrap p-value.
* ``wilson`` for a single proportion.

Intervals are two-sided at confidence ``1 - 2*alpha``, i.e. each bound is a one-sided test at
level ``alpha``, which is what a non-inferiority or superiority rule needs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
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


def mcnemar(baseline: Sequence[float], candidate: Sequence[float], alpha: float) -> Comparison:
    """Exact McNemar test and Agresti-Min interval for binary paired scores."""
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
    se = math.sqrt(max((b_adj + c_adj) - (c_adj - b_adj) ** 2 / n_adj, 0.0)) / n_adj
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
        detail={"lost": float(b), "won": float(c)},
    )


def paired_bootstrap(
    baseline: Sequence[float],
    candidate: Sequence[float],
    alpha: float,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Paired bootstrap of the mean difference (candidate - baseline)."""
    n = _check_paired(baseline, candidate)
    deltas = [y - x for x, y in zip(baseline, candidate)]
    mean = sum(deltas) / n
    rng = random.Random(seed)
    boots = sorted(sum(rng.choices(deltas, k=n)) / n for _ in range(resamples))
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
        mde=mde(sd / math.sqrt(n), alpha),
        alpha=alpha,
        detail={"resamples": float(resamples)},
    )


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

"""How often each gate rule passes, fails or is inconclusive on simulated paired data.

For each rule (``non_inferior``, ``superior``, ``no_regression``), score type (binary: McNemar;
continuous: paired bootstrap), clustering (independent items, or clusters of 10 items sharing a
random effect) and sample size, ``--sims`` paired data sets are drawn with a true change of 0,
of -margin and of -2 x margin (guards: a drop) or +margin and +2 x margin (``superior``: a
gain), and the gate is decided as the harness decides it (``harness.stages.gate.decide``, the
cluster-aware statistics).  One table: the pass / fail / inconclusive shares.

The unsafe pass is a pass where the rule's claim is false: ``non_inferior`` passing at a true
drop of the margin, ``superior`` passing at a true gain of exactly the margin.  Its share should
stay at or below alpha (0.05), plus Monte-Carlo error.

    python benchmarks/gate_calibration.py --sims 400
"""

from __future__ import annotations

import argparse
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from harness.lib.stats import mcnemar, paired_bootstrap
from harness.stages.gate import decide
from harness.suite.rules import Rule

MARGIN = 0.05
CLUSTER_SIZE = 10


@dataclass(frozen=True)
class Case:
    rule: str
    binary: bool
    clustered: bool
    n: int
    change: float  # true candidate - baseline


def simulate(case: Case, rng: random.Random) -> tuple[list[float], list[float], list[str] | None]:
    """One paired data set with the true mean change ``case.change``."""
    groups = [f"c{i // CLUSTER_SIZE}" for i in range(case.n)]
    effect = {g: rng.gauss(0, 0.15 if case.clustered else 0.0) for g in set(groups)}
    base, cand = [], []
    for g in groups:
        if case.binary:
            p = min(0.8, max(0.3, 0.6 + effect[g]))  # keeps every flip probability below 1
            x = float(rng.random() < p)
            # the candidate keeps the baseline's answer unless it flips; flips set the mean change
            flip_down = max(0.0, -case.change) / p if x else 0.0
            flip_up = max(0.0, case.change) / (1 - p) if not x else 0.0
            y = x
            if x and rng.random() < 0.1 + flip_down:
                y = 0.0
            elif not x and rng.random() < 0.1 * p / (1 - p) + flip_up:
                y = 1.0
            base.append(x)
            cand.append(y)
        else:
            x = 0.6 + effect[g] + rng.gauss(0, 0.2)
            base.append(x)
            cand.append(x + case.change + effect[g] * 0.5 + rng.gauss(0, 0.1))
    return base, cand, (groups if case.clustered else None)


def verdict(case: Case, rng: random.Random, alpha: float, resamples: int) -> str:
    base, cand, clusters = simulate(case, rng)
    if case.binary:
        cmp = mcnemar(base, cand, alpha, clusters)
    else:
        cmp = paired_bootstrap(base, cand, alpha, resamples, rng.randrange(2**31), clusters)
    return decide(Rule(case.rule, MARGIN), cmp)[0].value


def changes(rule: str) -> tuple[float, ...]:
    return (0.0, MARGIN, 2 * MARGIN) if rule == "superior" else (0.0, -MARGIN, -2 * MARGIN)


def shares(case: Case, sims: int, alpha: float = 0.05, seed: int = 0, resamples: int = 400) -> dict[str, float]:
    """Shares of pass / fail / inconclusive over ``sims`` simulated data sets."""
    rng = random.Random(f"{seed}:{case}")
    counts = Counter(verdict(case, rng, alpha, resamples) for _ in range(sims))
    return {k: counts.get(k, 0) / sims for k in ("pass", "fail", "inconclusive")}


def unsafe_case(rule: str, binary: bool, clustered: bool, n: int) -> Case:
    """Where a pass is unsafe: non_inferior at a true drop of the margin, superior at a true
    gain of exactly its margin."""
    return Case(rule, binary, clustered, n, -MARGIN if rule == "non_inferior" else MARGIN)


def mc_se(p: float, sims: int) -> float:
    return math.sqrt(p * (1 - p) / sims)


def table(sizes: Sequence[int], sims: int) -> list[str]:
    lines = ["| rule | scores | clustered | n | true change | pass | fail | inconclusive |", "|---|---|---|---|---|---|---|---|"]
    for rule in ("non_inferior", "superior", "no_regression"):
        for binary in (True, False):
            for clustered in (False, True):
                for n in sizes:
                    for change in changes(rule):
                        s = shares(Case(rule, binary, clustered, n, change), sims)
                        lines.append(
                            f"| {rule}({MARGIN:g}) | {'binary' if binary else 'continuous'} | {'yes' if clustered else 'no'} "
                            f"| {n} | {change:+.2f} | {s['pass']:.2f} | {s['fail']:.2f} | {s['inconclusive']:.2f} |"
                        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400, 1000])
    args = parser.parse_args()
    print("\n".join(table(args.sizes, args.sims)))


if __name__ == "__main__":
    main()

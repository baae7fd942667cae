"""The seed and ablation sections of a result document as table rows, for every reporter.

A run with ``train.seeds`` has a ``seeds`` section (each benchmark's score per seed and the
spread), a run with ``curate.ablate`` an ``ablation`` section (per filter and benchmark, the full
candidate minus the one trained without the filter); see ``harness.stages.variance``.  Both take
the JSON form (``result.json``), so a stored run renders exactly as a fresh one.
"""

from __future__ import annotations

from typing import Any

from harness.lib.reportview import number, signed

Rows = tuple[list[str], list[list[str]]]


def seed_rows(seeds: dict[str, Any] | None) -> Rows | None:
    """Header and rows of the seed table (benchmark, each seed's score, min, max, std); ``None``
    when the run trained a single seed."""
    if not seeds:
        return None
    order = [str(s) for s in seeds["seeds"]]
    header = ["benchmark", *(f"seed {s}" for s in order), "min", "max", "std"]
    rows = [
        [b["benchmark"], *(number(b["scores"].get(s)) for s in order), number(b["min"]), number(b["max"]), number(b["std"])]
        for b in seeds["benchmarks"]
    ]
    return header, rows


def seed_title(seeds: dict[str, Any]) -> str:
    """What the seed table shows and how the gates read it."""
    n = len(seeds["seeds"])
    how = (
        "every seed's candidate must pass each gate"
        if seeds["rule"] == "all"
        else "each gate is decided once on the items of every seed, pooled and clustered by item"
    )
    return f"Training seeds: {n} candidates (arms trained@seed=N); rule {seeds['rule']}: {how}"


def seed_errors(seeds: dict[str, Any] | None) -> list[str]:
    """One line per seed whose candidate failed to train."""
    return [f"seed {s}: {message}" for s, message in ((seeds or {}).get("errors") or {}).items()]


def ablation_rows(ablation: list[dict[str, Any]] | None) -> Rows | None:
    """Header and rows of what each ablated filter bought: per filter and benchmark, the full
    candidate's score, the ablated one's, the difference (full minus ablated), its interval and
    test; ``None`` without ablations."""
    if not ablation:
        return None
    header = ["filter", "benchmark", "with filter", "without", "bought", "interval", "p", "test"]
    rows = []
    for a in ablation:
        c = a.get("comparison")
        if c is None:
            rows.append([a["filter"], a["benchmark"], "-", "-", "-", "-", "-", a.get("error") or "no comparison"])
            continue
        # the comparison is candidate (with the filter) minus the ablated arm (without it)
        rows.append([
            a["filter"], a["benchmark"], number(c["candidate"]), number(c["baseline"]), signed(c["diff"]),
            f"[{signed(c['ci_low'])}, {signed(c['ci_high'])}] ({1 - 2 * c['alpha']:.0%})", number(c["p_value"]),
            f"{c['test']} (n={c['n']})",
        ])  # fmt: skip
    return header, rows

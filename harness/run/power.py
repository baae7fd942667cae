"""Power before the run: what each gate can detect at its sample size, and what it would need.

For every gate: its items (``n``, from the planned benchmark), the baseline score (the store's
cached baseline results of this exact evaluation when there are any, else the gate's or the
suite's ``assumed_baseline``, else 0.5, the largest variance of a 0/1 score; a metric that is not
a proportion, such as perplexity, needs its stored scores and is reported as unknown without
them), the per-item
standard deviation of the paired difference under ``gating.assumed_correlation``, the smallest
effect detectable with 80% power at the gate's first corrected level (``alpha / blocking gates``,
the strictest step of Holm's procedure), and the items needed for 80% power at its margin.  A
gate whose margin is below what it can detect "cannot reach its margin".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from harness.lib.console import RunConsole
from harness.lib.models import resolve_model
from harness.lib.stats import detectable_effect, needed_n, planning_sd
from harness.lib.store import DB_NAME, Store
from harness.suite.arms import BASE, gate_arms
from harness.run.plan import RunPlan
from harness.stages.evaluate import Evaluator
from harness.stages.gate import per_gate_alpha
from harness.suite.config import LoadedSuite


@dataclass(frozen=True)
class GatePower:
    gate: str
    rule: str
    blocking: bool
    n: int
    baseline: float
    source: str
    """Where ``baseline`` came from: ``store``, ``assumed`` or ``default``."""
    alpha: float
    detectable: float
    margin: float
    needed: int | None

    @property
    def reaches_margin(self) -> bool:
        """Whether 80% power at the margin holds (a ``superior(margin=0)`` gate has no margin to
        reach; a metric whose spread is unknown before its first run is not flagged)."""
        if math.isnan(self.baseline):
            return True
        if self.margin <= 0 and self.rule.startswith("superior") and self.baseline not in (0.0, 1.0):
            return True
        return self.needed is not None and self.needed <= self.n

    def line(self) -> str:
        if math.isnan(self.baseline):
            return f"{self.gate}: {self.rule} on {self.n} items: power unknown ({self.source}; not a 0/1 metric)"
        needed = f"{self.needed} items" if self.needed is not None else (
            "no sample size (baseline at the floor or ceiling)" if self.baseline in (0.0, 1.0) else "no sample size (margin 0)")
        return (
            f"{self.gate}: {self.rule} on {self.n} items, baseline {self.baseline:.3f} ({self.source}), "
            f"alpha {self.alpha:.3g}: detects >= {self.detectable:.3f}; 80% power at margin {self.margin:g} "
            f"needs {needed}"
        )


def _stored_baseline(loaded: LoadedSuite, plan: RunPlan, store_dir: Path | None, label: str) -> list[float] | None:
    """The baseline's per-item scores on this exact evaluation, when the store has them cached."""
    if store_dir is None or not (store_dir / DB_NAME).exists():
        return None
    try:
        spec = loaded.suite.model
        ref = resolve_model(spec.source, spec.backend, spec.dtype, loaded.dir)
        evaluator = Evaluator(Store(store_dir), plan.backend, ref, RunConsole(quiet=True))
        cached = evaluator.store.cached_items("evaluate", evaluator.material(plan.benchmarks[label]))
    except Exception:  # no usable store: fall back to the stated assumption
        return None
    scores = [float(r["score"]) for r in cached.values()]
    return scores or None


def gate_power(loaded: LoadedSuite, plan: RunPlan, store_dir: Path | None = None) -> list[GatePower]:
    """Power of every planned gate (see the module docstring)."""
    gating = loaded.suite.gating
    alpha = per_gate_alpha(gating.alpha, sum(1 for g in plan.gates if g.blocking), gating.correction)
    rows = []
    for gate in plan.gates:
        bench = plan.benchmarks.get(gate.label)
        if bench is None:
            continue
        n = len(bench.items())
        # the store's baseline is looked up for the base model; another baseline arm is assumed
        on_base = gate.name not in loaded.suite.gates or gate_arms(loaded.suite, gate.name)[0] == BASE
        stored = _stored_baseline(loaded, plan, store_dir, gate.label) if on_base else None
        assumed = loaded.suite.gates[gate.name].assumed_baseline if gate.name in loaded.suite.gates else None
        assumed = assumed if assumed is not None else gating.assumed_baseline
        if stored is not None:
            baseline, source = sum(stored) / len(stored), "store"
        elif not bench.proportion:
            rows.append(GatePower(gate.name, str(gate.rule), gate.blocking, n, float("nan"), "unknown: no stored "
                                  "scores", alpha, float("nan"), gate.rule.margin, None))
            continue
        else:
            baseline, source = (assumed, "assumed") if assumed is not None else (0.5, "default 0.5")
        sd = planning_sd(baseline, gating.assumed_correlation)
        if stored is not None and not all(s in (0.0, 1.0) for s in stored):  # a continuous metric
            sd = statistics.stdev(stored) * math.sqrt(2 * (1 - gating.assumed_correlation)) if len(stored) > 1 else 0.0
        if sd == 0:  # a baseline at the floor or ceiling: a guard on it can show nothing
            detectable, needed = float("inf"), None
        else:
            detectable, needed = detectable_effect(sd, n, alpha), needed_n(sd, gate.rule.margin, alpha)
        rows.append(GatePower(gate.name, str(gate.rule), gate.blocking, n, baseline, source, alpha,
                              detectable, gate.rule.margin, needed))
    return rows

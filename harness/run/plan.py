"""The run plan: every component of a suite built once, and every check that needs no work done
before anything runs.

``plan_run(loaded, registries, work_dir)`` is the only place where a suite's components are
constructed: data readers (the suite's sources and those a trainer's options name), filters, the
trainer and the trainings ``forgetting.compare`` adds, forgetting probes, benchmarks, the
statistics every gate will use, parity checks and reporters.  Each is validated by its own
config model and its readiness checks run (a benchmark reads its items, a code benchmark finds
its sandbox).  ``harness validate`` is exactly this plan; ``harness run`` executes it.

How one component is built lives in ``harness.run.plan_build``, the checks that are not a
component's own in ``harness.run.plan_checks``; this module assembles the whole plan.

Problems are collected, not raised one by one: a suite with a misspelled statistic, a missing
data file and an unknown reporter gets all three reported at once, each naming ``file:line``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from harness.errors import ConfigError
from harness.lib.pipeline import Request
from harness.lib.refs import ComponentRef
from harness.plugin.components import Backend, Benchmark, Filter, Reporter, RunContext, Statistic, Trainer
from harness.plugin.parity import ParityCheck
from harness.plugin.registry import Registries
from harness.run.ablation import check_ablate
from harness.run.arms import ArmPlan, needs_curation, plan_arms
from harness.run.plan_build import (
    TEXT_READERS,
    PlanError,
    Problems,
    build_as,
    build_benchmark,
    build_component,
    build_statistic,
    data_sources,
    plan_source,
    run_context,
    train_sources,
)
from harness.run.plan_checks import check_batch_sizes, check_environment, check_models, preflight, require_batch_size
from harness.stages.curate import CuratePlan, CurateOutcome, FilterStep, SourcePlan, check_quarantined, curate, read_source, select
from harness.stages.curate_report import Examples
from harness.stages.gate import GatePlan
from harness.stages.parity import ParityPlan
from harness.suite.arms import arm_label, gate_arms
from harness.suite.config import LoadedSuite
from harness.suite.preflight import check_model_reference
from harness.suite.rules import parse_rule
from harness.suite.yamlpos import Loc

__all__ = [
    "AUTO_STATISTICS",
    "TEXT_READERS",
    "PlanError",
    "RunPlan",
    "build_component",
    "curate_suite",
    "data_sources",
    "plan_curate",
    "plan_gates",
    "plan_parity",
    "plan_run",
    "plan_source",
    "require_batch_size",
    "run_context",
]

AUTO_STATISTICS = ("mcnemar", "paired_bootstrap")
"""What ``statistic: auto`` chooses between: McNemar for 0/1 scores, the paired bootstrap else."""


# ------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class RunPlan:
    """Every component of a suite, built and checked before any work."""

    loaded: LoadedSuite
    registries: Registries
    ctx: RunContext
    backend: Backend
    curate: CuratePlan | None
    trainer: Trainer | None
    compared: Mapping[str, Trainer]
    train_sources: Mapping[Loc, SourcePlan]
    """Data sources that the trainers' options name (replay, EWC, multi-task), by location."""
    probes: Mapping[str, Benchmark]
    benchmarks: Mapping[str, Benchmark]
    gates: tuple[GatePlan, ...]
    statistics: Mapping[str, Statistic]
    parity: ParityPlan | None
    reporters: tuple[Reporter, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Warnings that do not stop the run (printed by ``harness validate`` and at the run's start)."""
    arms: Mapping[str, ArmPlan] = field(default_factory=dict)
    """Every arm the run evaluates, by name (``harness.run.arms``), each with its backend;
    ``backend`` above is the base model's (training, forgetting probes, parity)."""


# ------------------------------------------------------------------------------ the slots


def _chance(registries: Registries, ref: ComponentRef | None) -> float | None:
    if ref is None or ref.name not in registries["benchmark"]:
        return None
    cls = registries.get("benchmark", ref.name).cls
    chance = cls.chance if issubclass(cls, Benchmark) else None
    return chance if isinstance(chance, float) else None


def plan_gates(registries: Registries, loaded: LoadedSuite, ctx: RunContext) -> tuple[tuple[GatePlan, ...], dict[str, Statistic]]:
    """The gates and statistics alone (all problems at once)."""
    problems = Problems()
    planned = _gates(registries, loaded, ctx, problems)
    problems.raise_any()
    return planned


def _gates(
    registries: Registries, loaded: LoadedSuite, ctx: RunContext, problems: Problems
) -> tuple[tuple[GatePlan, ...], dict[str, Statistic]]:
    """Every gate with its rule and statistic.  The statistics are built here, so a misspelled
    one fails before any work rather than after every evaluation; ``auto`` (and the forgetting
    curve) choose between McNemar and the paired bootstrap, so those two are always built."""
    statistics: dict[str, Statistic] = {}
    for name in AUTO_STATISTICS:
        built = problems.attempt(partial(build_statistic, registries, loaded, ctx, name, ("gating",)))
        if built is not None:
            statistics[name] = built
    gates: list[GatePlan] = []
    for gate_name, gate in loaded.suite.gates.items():
        loc: Loc = ("gates", gate_name)
        if gate.statistic != "auto" and gate.statistic not in statistics:
            built = problems.attempt(partial(build_statistic, registries, loaded, ctx, gate.statistic, loc + ("statistic",)))
            if built is not None:
                statistics[gate.statistic] = built
        label = gate.benchmark or gate_name
        chance = _chance(registries, loaded.suite.evaluate.get(label))
        base_arm, cand_arm = gate_arms(loaded.suite, gate_name)
        pair = arm_label(loaded.suite, base_arm), arm_label(loaded.suite, cand_arm) if cand_arm else "candidate"
        gates.append(GatePlan(gate_name, label, parse_rule(gate.rule), gate.statistic, gate.blocking, chance, loc, *pair))
    return tuple(gates), statistics


def plan_curate(registries: Registries, loaded: LoadedSuite, ctx: RunContext) -> CuratePlan:
    """The curate stage's readers and filters (all problems at once)."""
    problems = Problems()
    plan = _plan_curate(registries, loaded, ctx, problems)
    problems.raise_any()
    return plan


def _plan_curate(registries: Registries, loaded: LoadedSuite, ctx: RunContext, problems: Problems) -> CuratePlan:
    suite = loaded.suite
    sources = [
        problems.attempt(partial(plan_source, registries, loaded, ctx, ("data", i), src, malformed_ok=True))
        for i, src in enumerate(suite.data)
    ]
    # As the curate stage does: the malformed share is over all the training data, not per file.
    reads = [s.read for s in sources if s is not None and s.read is not None]
    quarantined = [q for read in reads for q in read.quarantined]
    problems.attempt(partial(
        check_quarantined, quarantined, sum(read.stage.n_in for read in reads),
        suite.curate.max_quarantined_fraction, "curate.max_quarantined_fraction",
    ))
    filters = []
    for i, ref in enumerate(suite.curate.filters):
        flt = problems.attempt(
            partial(build_as, Filter, registries, "filter", ref, ("curate", "filters", i), loaded, ctx)
        )
        if flt is not None:
            filters.append(FilterStep(flt, registries.get("filter", ref.name).origin))
    return CuratePlan(
        tuple(s for s in sources if s is not None),
        tuple(filters),
        suite.curate.max_quarantined_fraction,
        loaded.where(("data",)),
    )


def plan_run(
    loaded: LoadedSuite,
    registries: Registries,
    work_dir: Path,
    *,
    reports_dir: Path | None = None,
    store_dir: Path | None = None,
) -> RunPlan:
    """Build every component of ``loaded`` and run every check that needs no work (the data
    read and checked, the model reference, the folders the run will write, the API keys); raise
    the problem found, or a ``PlanError`` listing them all.  Slots are planned in suite order,
    so the problems are listed in that order too."""
    suite = loaded.suite
    ctx = run_context(loaded, registries, work_dir)
    problems = Problems()
    notes: list[str] = []
    check_environment(loaded, reports_dir, store_dir, problems, notes)
    backend = _plan_backend(registries, loaded, ctx, problems, notes)
    curate = _plan_curate(registries, loaded, ctx, problems) if needs_curation(loaded) else None
    problems.found.extend(check_ablate(loaded, registries))
    arms = plan_arms(
        loaded, backend, partial(_build_backend, registries, loaded=loaded, ctx=ctx), problems.found, notes
    )  # fmt: skip
    trainer, compared = _plan_trainers(registries, loaded, ctx, problems)
    probe_refs = suite.forgetting.probes if suite.forgetting is not None else {}
    probes = _plan_benchmarks(registries, loaded, ctx, probe_refs, ("forgetting", "probes"), problems)
    trainers: dict[Loc, Trainer] = {("train",): trainer} if trainer is not None else {}
    trainers.update({("forgetting", "compare", label): t for label, t in compared.items()})
    sources = train_sources(registries, loaded, ctx, trainers, problems)
    benchmarks = _plan_benchmarks(registries, loaded, ctx, suite.evaluate, ("evaluate",), problems)
    check_batch_sizes(loaded, registries, benchmarks, problems)
    check_models(loaded, backend, arms, benchmarks, probes, problems)
    gates, statistics = _gates(registries, loaded, ctx, problems)
    parity = problems.attempt(lambda: plan_parity(loaded, registries, ctx)) if suite.parity is not None else None
    reporters = _plan_reporters(registries, loaded, ctx, problems)
    problems.raise_any()
    assert backend is not None
    return RunPlan(
        loaded=loaded,
        registries=registries,
        ctx=ctx,
        backend=backend,
        curate=curate,
        trainer=trainer,
        compared=compared,
        train_sources=sources,
        probes=probes,
        benchmarks=benchmarks,
        gates=gates,
        statistics=statistics,
        parity=parity,
        reporters=reporters,
        notes=tuple(notes),
        arms=arms,
    )


def _build_backend(registries: Registries, kind: str, ref: ComponentRef, loc: Loc, *, loaded: LoadedSuite, ctx: RunContext) -> Backend:
    """A backend component (the base model's, or an arm's)."""
    return build_as(Backend, registries, kind, ref, loc, loaded, ctx)


def _plan_backend(
    registries: Registries, loaded: LoadedSuite, ctx: RunContext, problems: Problems, notes: list[str]
) -> Backend | None:
    """The base model's backend, and its model reference checked when it reads a folder."""
    model = loaded.suite.model
    ref = ComponentRef(name=model.backend, options=model.backend_options)
    backend = problems.attempt(partial(_build_backend, registries, "backend", ref, ("model",), loaded=loaded, ctx=ctx))
    if backend is not None and backend.reads_model_folder:
        preflight(problems, check_model_reference(model.source, loaded.dir, where=loaded.where(("model",))), notes)
    return backend


def _plan_trainers(
    registries: Registries, loaded: LoadedSuite, ctx: RunContext, problems: Problems
) -> tuple[Trainer | None, dict[str, Trainer]]:
    """The suite's trainer (``train``) and the trainings ``forgetting.compare`` adds, by label."""
    suite = loaded.suite
    trainer = None
    if suite.train is not None:
        trainer = problems.attempt(partial(build_as, Trainer, registries, "trainer", suite.train, ("train",), loaded, ctx))
    compared: dict[str, Trainer] = {}
    for label, ref in (suite.forgetting.compare if suite.forgetting is not None else {}).items():
        loc: Loc = ("forgetting", "compare", label)
        built = problems.attempt(partial(build_as, Trainer, registries, "trainer", ref, loc, loaded, ctx))
        if built is not None:
            compared[label] = built
    return trainer, compared


def _plan_benchmarks(
    registries: Registries,
    loaded: LoadedSuite,
    ctx: RunContext,
    refs: Mapping[str, ComponentRef],
    section: Loc,
    problems: Problems,
) -> dict[str, Benchmark]:
    """The benchmarks ``refs`` under ``section`` of the suite (``evaluate``, or the probes under
    ``forgetting.probes``) by label, each with its items read and its readiness checked."""
    built: dict[str, Benchmark] = {}
    for label, ref in refs.items():
        bench = problems.attempt(partial(build_benchmark, registries, loaded, ctx, ref, section + (label,)))
        if bench is not None:
            built[label] = bench
    return built


def _plan_reporters(registries: Registries, loaded: LoadedSuite, ctx: RunContext, problems: Problems) -> tuple[Reporter, ...]:
    """The suite's reporters, in suite order."""
    reporters = []
    for i, ref in enumerate(loaded.suite.report):
        reporter = problems.attempt(partial(build_as, Reporter, registries, "reporter", ref, ("report", i), loaded, ctx))
        if reporter is not None:
            reporters.append(reporter)
    return tuple(reporters)


# ----------------------------------------------------------------------------------- parity


def _requests(registries: Registries, loaded: LoadedSuite, ctx: RunContext, loc: Loc, notes: list[str]) -> list[Request]:
    """The production (or offline) requests parity compares, read and selected up front."""
    spec = loaded.suite.parity
    assert spec is not None
    src = spec.requests if loc[-1] == "requests" else spec.offline_set
    assert src is not None
    read = read_source(plan_source(registries, loaded, ctx, loc, src, malformed_ok=True))
    chosen, select_stage = select(src, read.records, loaded.where(loc + ("sample",)))
    notes.append(
        f"{'.'.join(map(str, loc))}: read {read.stage.n_in}, quarantined {len(read.quarantined)}, "
        f"kept {len(chosen)} ({', '.join(f'{k}: {v}' for k, v in select_stage.reasons.items()) or 'all'})"
    )
    notes.extend(f"quarantined {q.source_id}: {q.reason}" for q in read.quarantined)
    requests = []
    for conv in chosen:
        try:
            requests.append(Request.from_conversation(conv))
        except ConfigError as exc:
            notes.append(f"left out {conv.source_id}: {exc}")
    if not requests:
        raise ConfigError(f"{loaded.where(loc)}: no usable requests in {src.path}")
    return requests


def plan_parity(loaded: LoadedSuite, registries: Registries, ctx: RunContext) -> ParityPlan:
    """Build the parity checks and read the requests; config and data errors surface here."""
    spec = loaded.suite.parity
    if spec is None:
        raise ConfigError(f"{loaded.path}: the suite has no 'parity' section")
    problems = Problems()
    checks: dict[str, ParityCheck] = {}
    for label, ref in spec.checks.items():
        loc: Loc = ("parity", "checks", label)
        check = problems.attempt(
            partial(build_as, ParityCheck, registries, "parity_check", ref, loc, loaded, ctx)
        )
        if check is not None:
            checks[label] = check
    notes: list[str] = []
    requests = problems.attempt(lambda: _requests(registries, loaded, ctx, ("parity", "requests"), notes))
    offline_set = None
    if spec.offline_set is not None:
        offline_set = problems.attempt(lambda: _requests(registries, loaded, ctx, ("parity", "offline_set"), notes))
    problems.raise_any()
    assert requests is not None
    return ParityPlan(spec, checks, requests, offline_set, notes)


# ------------------------------------------------------------------------ outside a run


def curate_suite(
    loaded: LoadedSuite, registries: Registries, work_dir: Path, examples: Examples | None = None
) -> CurateOutcome:
    """A suite's curate stage on its own (``harness curate SUITE``, ``harness audit SUITE``)."""
    return curate(plan_curate(registries, loaded, run_context(loaded, registries, work_dir)), examples)

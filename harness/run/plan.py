"""The run plan: every component of a suite built once, and every check that needs no work done
before anything runs.

``plan_run(loaded, registries, work_dir)`` is the only place where a suite's components are
constructed: data readers (the suite's sources and those a trainer's options name), filters, the
trainer and the trainings ``forgetting.compare`` adds, forgetting probes, benchmarks, the
statistics every gate will use, parity checks and reporters.  Each is validated by its own
config model and its readiness checks run (a benchmark reads its items, a code benchmark finds
its sandbox).  ``harness validate`` is exactly this plan; ``harness run`` executes it.

Problems are collected, not raised one by one: a suite with a misspelled statistic, a missing
data file and an unknown reporter gets all three reported at once, each naming ``file:line``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from harness.errors import EXIT_BAD_INPUT, ConfigError, DataError, HarnessError, UnknownComponentError
from harness.lib.pipeline import Request
from harness.lib.refs import ComponentRef, DataSource
from harness.plugin.components import (
    Backend,
    Benchmark,
    Component,
    Filter,
    Reader,
    Reporter,
    RunContext,
    Statistic,
    Trainer,
)
from harness.plugin.parity import ParityCheck
from harness.plugin.registry import Registries, narrow
from harness.run.arms import ArmPlan, check_arm_capabilities, needs_curation, plan_arms
from harness.run.ablation import check_ablate
from harness.stages.curate import (
    CuratePlan,
    CurateOutcome,
    FilterStep,
    SourcePlan,
    check_quarantined,
    curate,
    read_source,
    select,
)
from harness.stages.curate_report import Examples
from harness.stages.gate import GatePlan
from harness.stages.parity import ParityPlan
from harness.suite.arms import arm_label, gate_arms
from harness.suite.config import LoadedSuite, format_validation
from harness.suite.rules import parse_rule
from harness.suite.preflight import Problem, check_data_path, check_env_var, check_model_reference, check_store, check_writable_dir
from harness.suite.yamlpos import Loc

T = TypeVar("T")
C = TypeVar("C", bound=Component)

TEXT_READERS = frozenset({"csv"})
"""Readers of whole UTF-8 text files, whose encoding the plan checks before reading (a JSONL
reader decodes line by line and quarantines a line that is not UTF-8)."""

AUTO_STATISTICS = ("mcnemar", "paired_bootstrap")
"""What ``statistic: auto`` chooses between: McNemar for 0/1 scores, the paired bootstrap else."""


class PlanError(ConfigError):
    """One or more problems found while planning a run, each a line naming ``file:line``."""

    def __init__(self, problems: list[HarnessError]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
        codes = {p.exit_code for p in problems}
        self.exit_code = EXIT_BAD_INPUT if EXIT_BAD_INPUT in codes or not codes else max(codes)


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


# --------------------------------------------------------------------------- construction


def build_component(
    registries: Registries,
    kind: str,
    ref: ComponentRef,
    loc: Loc,
    loaded: LoadedSuite,
    ctx: RunContext,
    options_loc: Loc | None = None,
) -> Component:
    """Look up ``ref.name`` among the ``kind`` components and construct it with its options.

    ``loc`` is where the name stands in the suite; ``options_loc`` where the options do, when
    that differs (a data source's reader options sit beside its ``format`` key)."""
    try:
        info = registries.get(kind, ref.name)
    except UnknownComponentError as exc:
        raise UnknownComponentError(f"{loaded.where(loc)}: {exc}") from None
    try:
        config = info.cls.Config.model_validate(ref.options)
    except ValidationError as exc:
        message = format_validation(exc, loaded.positions, loc if options_loc is None else options_loc)
        raise ConfigError(f"{message} (in {kind} {ref.name!r} from {info.origin})") from None
    return info.cls(config, ctx)


class _Problems:
    """Collects the problems of every slot so that all are reported at once."""

    def __init__(self) -> None:
        self.found: list[HarnessError] = []

    def raise_any(self) -> None:
        """Raise the one problem found as it is, or a ``PlanError`` listing several."""
        if len(self.found) == 1:
            raise self.found[0]
        if self.found:
            raise PlanError(self.found)

    def attempt(self, build: Callable[[], T]) -> T | None:
        try:
            return build()
        except PlanError as exc:
            self.found.extend(exc.problems)
        except HarnessError as exc:
            self.found.append(exc)
        return None


def plan_source(
    registries: Registries, loaded: LoadedSuite, ctx: RunContext, loc: Loc, src: DataSource, *, malformed_ok: bool = False
) -> SourcePlan:
    """A data source's reader, built with its options, and its data read once, up front: a
    missing, unreadable, empty or mis-encoded file, too many malformed lines or a sample larger
    than the data are all found here, before any work (the curate stage takes the records read)."""
    ref = ComponentRef(name=src.format, options=src.options)
    reader = narrow(build_component(registries, "reader", ref, loc + ("format",), loaded, ctx, options_loc=loc), Reader)
    where = loaded.where(loc + ("path",))
    path = loaded.resolve_path(src.path, loc + ("path",))
    folder = bool(getattr(reader, "reads_folder", False))
    text = src.format in TEXT_READERS
    found = check_data_path(path, "utf-8" if text else None, where=where, kind="folder" if folder else "file", raw=src.path)
    if found:
        raise DataError(str(found[0]))
    origin = registries.get("reader", src.format).origin
    planned = SourcePlan(loc, src, reader, origin, path, where)
    read = read_source(planned)
    if not malformed_ok:  # logged requests are allowed their bad lines: parity lists them as notes
        limit = loaded.suite.curate.max_quarantined_fraction
        check_quarantined(read.quarantined, read.stage.n_in, limit, "curate.max_quarantined_fraction")
    select(src, read.records, where)  # the split and the sample fit the data
    return replace(planned, read=read)


def data_sources(config: BaseModel, loc: Loc) -> Iterator[tuple[Loc, DataSource]]:
    """Every ``DataSource`` inside a component's config, with its location in the suite."""
    for name in type(config).model_fields:
        value = getattr(config, name)
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
        for index, item in items:
            where = loc + ((name,) if index is None else (name, index))
            if isinstance(item, DataSource):
                yield where, item
            elif isinstance(item, BaseModel):
                yield from data_sources(item, where)


def _train_sources(
    registries: Registries, loaded: LoadedSuite, ctx: RunContext, trainers: Mapping[Loc, Trainer], problems: _Problems
) -> dict[Loc, SourcePlan]:
    """The data a trainer's mitigations read: plain text must exist; other formats get a reader."""
    planned: dict[Loc, SourcePlan] = {}
    for trainer_loc, trainer in trainers.items():
        for loc, src in data_sources(trainer.config, trainer_loc):
            if src.format == "text":
                path = problems.attempt(partial(loaded.resolve_path, src.path, loc + ("path",)))
                if path is not None:
                    where = loaded.where(loc + ("path",))
                    problems.found.extend(DataError(str(p)) for p in check_data_path(path, where=where, raw=src.path))
                continue
            plan = problems.attempt(partial(plan_source, registries, loaded, ctx, loc, src))
            if plan is not None:
                planned[loc] = plan
    return planned


def _preflight(problems: _Problems, found: list[Problem], notes: list[str]) -> None:
    """Errors become the plan's problems, warnings its notes."""
    for problem in found:
        if problem.severity == "warning":
            notes.append(str(problem))
        else:
            problems.found.append(DataError(str(problem)))


def _environment(loaded: LoadedSuite, reports_dir: Path | None, store_dir: Path | None, problems: _Problems, notes: list[str]) -> None:
    """The folders the run writes, and the API keys endpoints need."""
    suite = loaded.suite
    if reports_dir is not None:
        _preflight(problems, check_writable_dir(reports_dir, where=str(loaded.path), what="reports folder"), notes)
    if store_dir is not None:
        _preflight(problems, check_store(store_dir, where=str(loaded.path)), notes)
    endpoint = suite.parity.production.endpoint if suite.parity is not None else None
    if endpoint is not None and endpoint.api_key_env:
        where = loaded.where(("parity", "production", "endpoint", "api_key_env"))
        _preflight(problems, check_env_var(endpoint.api_key_env, where=where, purpose="the production endpoint's API key"), notes)


def _build_as(
    cls: type[C], registries: Registries, kind: str, ref: ComponentRef, loc: Loc, loaded: LoadedSuite, ctx: RunContext
) -> C:
    """``build_component``, checked to be a ``cls`` (the base class of ``kind``)."""
    return narrow(build_component(registries, kind, ref, loc, loaded, ctx), cls)


def _benchmark(registries: Registries, loaded: LoadedSuite, ctx: RunContext, ref: ComponentRef, loc: Loc) -> Benchmark:
    """A benchmark whose items can be read and which can run here (``check_ready``)."""
    bench = narrow(build_component(registries, "benchmark", ref, loc, loaded, ctx), Benchmark)
    try:
        bench.items_digest()
        bench.check_ready()
    except HarnessError as exc:
        dotted = ".".join(map(str, loc))
        raise type(exc)(f"{loaded.where(loc)}: {dotted}: {exc}") from None
    return bench


def _check_capabilities(loaded: LoadedSuite, backend: Backend, benchmarks: Mapping[Loc, Benchmark], problems: _Problems) -> None:
    """A benchmark that needs what the backend's models cannot do (log-likelihoods from a
    chat-only endpoint) is a problem of the plan, naming both."""
    for loc, bench in benchmarks.items():
        missing = backend.capabilities.missing(bench.required_capabilities())
        if missing:
            dotted = ".".join(map(str, loc))
            problems.found.append(ConfigError(
                f"{loaded.where(loc)}: {dotted}: benchmark {bench.name!r} needs {', '.join(missing)}, "
                f"which backend {backend.name!r} does not provide"
            ))


def require_batch_size(loaded: LoadedSuite, registries: Registries, label: str) -> set[str]:
    """The option names of the benchmark under ``evaluate.<label>``; a ``ConfigError`` naming its
    line when it has no ``batch_size`` (it cannot be run at a chosen size).  The plan checks
    it for ``gating.check_batch_invariance``, so ``harness validate`` says so before any work;
    ``harness.run.invariance`` checks it for ``harness invariance``."""
    name = loaded.suite.evaluate[label].name
    fields = set(registries.get("benchmark", name).cls.Config.model_fields)
    if "batch_size" not in fields:
        raise ConfigError(
            f"{loaded.where(('evaluate', label))}: evaluate.{label}: benchmark {name!r} has no "
            "'batch_size' option, so its batch invariance cannot be checked"
        )
    return fields


def _statistic(registries: Registries, loaded: LoadedSuite, ctx: RunContext, name: str, loc: Loc) -> Statistic:
    return narrow(build_component(registries, "statistic", ComponentRef(name=name), loc, loaded, ctx), Statistic)


def _chance(registries: Registries, ref: ComponentRef | None) -> float | None:
    if ref is None or ref.name not in registries["benchmark"]:
        return None
    cls = registries.get("benchmark", ref.name).cls
    chance = cls.chance if issubclass(cls, Benchmark) else None
    return chance if isinstance(chance, float) else None


def plan_gates(registries: Registries, loaded: LoadedSuite, ctx: RunContext) -> tuple[tuple[GatePlan, ...], dict[str, Statistic]]:
    """The gates and statistics alone (all problems at once)."""
    problems = _Problems()
    planned = _gates(registries, loaded, ctx, problems)
    problems.raise_any()
    return planned


def _gates(
    registries: Registries, loaded: LoadedSuite, ctx: RunContext, problems: _Problems
) -> tuple[tuple[GatePlan, ...], dict[str, Statistic]]:
    """Every gate with its rule and statistic.  The statistics are built here, so a misspelled
    one fails before any work rather than after every evaluation; ``auto`` (and the forgetting
    curve) choose between McNemar and the paired bootstrap, so those two are always built."""
    statistics: dict[str, Statistic] = {}
    for name in AUTO_STATISTICS:
        built = problems.attempt(partial(_statistic, registries, loaded, ctx, name, ("gating",)))
        if built is not None:
            statistics[name] = built
    gates: list[GatePlan] = []
    for gate_name, gate in loaded.suite.gates.items():
        loc: Loc = ("gates", gate_name)
        if gate.statistic != "auto" and gate.statistic not in statistics:
            built = problems.attempt(partial(_statistic, registries, loaded, ctx, gate.statistic, loc + ("statistic",)))
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
    problems = _Problems()
    plan = _plan_curate(registries, loaded, ctx, problems)
    problems.raise_any()
    return plan


def _plan_curate(registries: Registries, loaded: LoadedSuite, ctx: RunContext, problems: _Problems) -> CuratePlan:
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
            partial(_build_as, Filter, registries, "filter", ref, ("curate", "filters", i), loaded, ctx)
        )
        if flt is not None:
            filters.append(FilterStep(flt, registries.get("filter", ref.name).origin))
    return CuratePlan(
        tuple(s for s in sources if s is not None),
        tuple(filters),
        suite.curate.max_quarantined_fraction,
        loaded.where(("data",)),
    )


def run_context(loaded: LoadedSuite, registries: Registries, work_dir: Path) -> RunContext:
    """What components get from the run: folders, seed, and the registries to reach others."""
    return RunContext(loaded.dir, work_dir, loaded.suite.seed, registries)


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
    the problem found, or a ``PlanError`` listing them all."""
    suite = loaded.suite
    ctx = run_context(loaded, registries, work_dir)
    problems = _Problems()
    notes: list[str] = []
    _environment(loaded, reports_dir, store_dir, problems, notes)
    backend = problems.attempt(
        lambda: narrow(build_component(registries, "backend", ComponentRef(name=suite.model.backend, options=suite.model.backend_options), ("model",), loaded, ctx), Backend)
    )
    if backend is not None and backend.reads_model_folder:
        _preflight(problems, check_model_reference(suite.model.source, loaded.dir, where=loaded.where(("model",))), notes)
    curate = _plan_curate(registries, loaded, ctx, problems) if needs_curation(loaded) else None
    problems.found.extend(check_ablate(loaded, registries))
    arms = plan_arms(
        loaded, backend,
        lambda kind, ref, loc: narrow(build_component(registries, kind, ref, loc, loaded, ctx), Backend),
        problems.found, notes,
    )  # fmt: skip
    trainer = None
    if suite.train is not None:
        train_ref = suite.train
        trainer = problems.attempt(lambda: narrow(build_component(registries, "trainer", train_ref, ("train",), loaded, ctx), Trainer))
    compared: dict[str, Trainer] = {}
    probes: dict[str, Benchmark] = {}
    if suite.forgetting is not None:
        for label, ref in suite.forgetting.compare.items():
            loc: Loc = ("forgetting", "compare", label)
            built = problems.attempt(partial(_build_as, Trainer, registries, "trainer", ref, loc, loaded, ctx))
            if built is not None:
                compared[label] = built
        for label, ref in suite.forgetting.probes.items():
            probe = problems.attempt(
                partial(_benchmark, registries, loaded, ctx, ref, ("forgetting", "probes", label))
            )
            if probe is not None:
                probes[label] = probe
    trainers: dict[Loc, Trainer] = {("train",): trainer} if trainer is not None else {}
    trainers.update({("forgetting", "compare", label): t for label, t in compared.items()})
    train_sources = _train_sources(registries, loaded, ctx, trainers, problems)
    benchmarks: dict[str, Benchmark] = {}
    for label, ref in suite.evaluate.items():
        bench = problems.attempt(partial(_benchmark, registries, loaded, ctx, ref, ("evaluate", label)))
        if bench is not None:
            benchmarks[label] = bench
    if suite.gating.check_batch_invariance:  # each benchmark must take a batch size
        for label in benchmarks:
            problems.attempt(partial(require_batch_size, loaded, registries, label))
    if backend is not None:
        _check_capabilities(loaded, backend, {("evaluate", k): b for k, b in benchmarks.items()}, problems)
        _check_capabilities(loaded, backend, {("forgetting", "probes", k): b for k, b in probes.items()}, problems)
        check_arm_capabilities(loaded, arms, {("evaluate", k): b for k, b in benchmarks.items()}, problems.found)
    gates, statistics = _gates(registries, loaded, ctx, problems)
    parity = problems.attempt(lambda: plan_parity(loaded, registries, ctx)) if suite.parity is not None else None
    reporters = []
    for i, ref in enumerate(suite.report):
        reporter = problems.attempt(
            partial(_build_as, Reporter, registries, "reporter", ref, ("report", i), loaded, ctx)
        )
        if reporter is not None:
            reporters.append(reporter)
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
        train_sources=train_sources,
        probes=probes,
        benchmarks=benchmarks,
        gates=gates,
        statistics=statistics,
        parity=parity,
        reporters=tuple(reporters),
        notes=tuple(notes),
        arms=arms,
    )


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
    problems = _Problems()
    checks: dict[str, ParityCheck] = {}
    for label, ref in spec.checks.items():
        loc: Loc = ("parity", "checks", label)
        check = problems.attempt(
            partial(_build_as, ParityCheck, registries, "parity_check", ref, loc, loaded, ctx)
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

"""The runner: composes the stages of a suite (curate, train, evaluate, parity, gate, report).

Each stage is a small function; the runner only wires them together, times them, emits lifecycle
hooks and records what came from the cache.  Models are loaded lazily: a fully cached re-run loads
no model at all.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness.plugin.components import Backend, Benchmark, Reporter, RunContext, Trainer
from harness.suite.config import ComponentRef, LoadedSuite, build_component
from harness.lib.console import RunConsole
from harness.stages.curate import CurateOutcome, check_quarantined, curate, read_source, select
from harness.errors import ConfigError, DataError, HarnessError
from harness.stages.evaluate import Evaluator, describe
from harness.stages.forgetting import run_forgetting
from harness.stages.gate import exit_code, run_gates
from harness.lib.models import ModelRef, resolve_model
from harness.stages.parity import ParityPlan, parity_decisions, plan_parity, run_parity
from harness.plugin.manager import HarnessPluginManager
from harness.lib.refs import DataSource
from harness.plugin.registry import Registries
from harness.lib.resultdoc import record_result
from harness.lib.store import Store
from harness.stages.train import TrainStage
from harness.types import (
    CheckpointEvent,
    Conversation,
    Decision,
    EvalError,
    RunEndEvent,
    RunResult,
    RunStartEvent,
    StageEndEvent,
    TrainOutput,
)


@dataclass
class RunOptions:
    reports_root: Path | None = None
    store_dir: Path | None = None
    use_cache: bool = True
    only_parity: bool = False
    """run the parity stage alone, on the base model (``harness parity``)"""


@dataclass
class Runner:
    loaded: LoadedSuite
    pm: HarnessPluginManager
    registries: Registries
    console: RunConsole
    options: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        suite = self.loaded.suite
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.run_id = f"{stamp}-{suite.name}-{uuid.uuid4().hex[:6]}"
        store_dir = self.options.store_dir or (
            self.loaded.dir / suite.store if suite.store else self.loaded.dir / ".harness"
        )
        self.store = Store(store_dir)
        self.report_dir = (self.options.reports_root or Path("reports")) / self.run_id
        self.ctx = RunContext(self.loaded.dir, self.store.root / "work" / self.run_id, suite.seed)
        self.result = RunResult(self.run_id, suite.name, self.loaded.path, time.time())

    def _stage_end(self, stage: str, outcome: str, started: float, detail: str = "") -> None:
        event = StageEndEvent(self.run_id, stage, outcome, time.perf_counter() - started, detail)
        self.result.stages.append(event)
        self.pm.hook.harness_on_stage_end(event=event)

    def run(self) -> RunResult:
        suite = self.loaded.suite
        self.store.start_run(self.run_id, suite.name, self.loaded.path)
        self.pm.hook.harness_on_run_start(
            event=RunStartEvent(self.run_id, self.loaded.path, suite.name)
        )
        self.console.stage("run", f"{suite.name} ({self.run_id})")
        # Build every component before any work, so that a config error costs nothing.
        backend = build_component(
            self.registries, "backend", ComponentRef(name=suite.model.backend), ("model",), self.loaded, self.ctx
        )
        trainer = (
            build_component(self.registries, "trainer", suite.train, ("train",), self.loaded, self.ctx)
            if suite.train
            else None
        )
        benchmarks = {
            label: build_component(self.registries, "benchmark", ref, ("evaluate", label), self.loaded, self.ctx)
            for label, ref in suite.evaluate.items()
        }
        reporters = [
            build_component(self.registries, "reporter", ref, ("report", i), self.loaded, self.ctx)
            for i, ref in enumerate(suite.report)
        ]
        probes = {
            label: build_component(self.registries, "benchmark", ref, ("forgetting", "probes", label), self.loaded, self.ctx)
            for label, ref in (suite.forgetting.probes.items() if suite.forgetting else ())
        }
        compared = {
            label: build_component(self.registries, "trainer", ref, ("forgetting", "compare", label), self.loaded, self.ctx)
            for label, ref in (suite.forgetting.compare.items() if suite.forgetting else ())
        }
        assert isinstance(backend, Backend)
        # Read every benchmark's items now: missing or broken data is bad input, found up front.
        for loc, group in ((("evaluate",), benchmarks), (("forgetting", "probes"), probes)):
            for label, bench in group.items():
                try:
                    bench.items_digest()  # type: ignore[attr-defined]
                    bench.check_ready()  # type: ignore[attr-defined]
                except HarnessError as exc:
                    dotted = ".".join(loc + (label,))
                    raise type(exc)(f"{self.loaded.where(loc + (label,))}: {dotted}: {exc}") from None
        parity_plan = plan_parity(self.loaded, self.registries, self.ctx) if suite.parity else None
        if self.options.only_parity:
            if parity_plan is None:
                raise ConfigError(f"{self.loaded.path}: the suite has no 'parity' section")
            base = self._resolve_base()
            self.result.models = {base.label: base.describe()}
            self._parity(parity_plan, backend, base)
            self._gate([])
            self._report(reporters)  # type: ignore[arg-type]
            return self.result
        outcome = self._curate() if trainer is not None else None
        base = self._resolve_base()
        models = [base]
        if trainer is not None and outcome is not None:
            assert isinstance(trainer, Trainer)
            output = self._train_or_record(trainer, backend, base, outcome)
            if output is not None:
                adapter = self._forgetting(backend, probes, base, output)  # type: ignore[arg-type]
                models.append(base.derived("candidate", adapter))
                self._compare(compared, backend, probes, base, outcome)  # type: ignore[arg-type]
        self.result.models = {m.label: m.describe() for m in models}
        self._evaluate(backend, benchmarks, models)  # type: ignore[arg-type]
        if parity_plan is not None:
            self._parity(parity_plan, backend, models[-1])
        self._gate(run_gates(self.loaded, self.registries, self.ctx, self.result))
        self._report(reporters)  # type: ignore[arg-type]
        return self.result

    def _gate(self, decisions: list[Decision]) -> None:
        started = time.perf_counter()
        parity = self.loaded.suite.parity
        if parity is not None and self.result.parity is not None:
            decisions = decisions + parity_decisions(parity, self.result.parity)
        self.result.decisions = decisions
        self.result.inconclusive_fails = self.loaded.suite.gating.inconclusive == "fail"
        self.result.exit_code = exit_code(decisions, self.result.inconclusive_fails)
        self.store.save_decisions(self.run_id, decisions)
        self._stage_end("gate", "ok", started)

    # ------------------------------------------------------------------------------ stages

    def _resolve_base(self) -> ModelRef:
        spec = self.loaded.suite.model
        started = time.perf_counter()
        try:
            ref = resolve_model(spec.source, spec.backend, spec.dtype, self.loaded.dir)
        except HarnessError as exc:
            raise type(exc)(f"{self.loaded.where(('model',))}: {exc}") from None
        self.console.stage("model", f"baseline {ref.describe()}")
        self._stage_end("model", "ok", started)
        return ref

    def _curate(self) -> CurateOutcome:
        started = time.perf_counter()
        outcome = curate(self.loaded, self.registries, self.ctx)
        self.result.ledger = outcome.ledger
        self.store.save_ledger(self.run_id, outcome.ledger)
        self.console.stage("curate", f"{len(outcome.records)} records kept")
        for stage in outcome.ledger.stages:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(stage.reasons.items()))
            self.console.note(
                f"{stage.name}: in {stage.n_in} = kept {stage.kept} + dropped {stage.dropped} "
                f"+ quarantined {stage.quarantined}" + (f" ({reasons})" if reasons else "")
            )
        self._stage_end("curate", "ok", started)
        return outcome

    def _train_or_record(
        self, trainer: Trainer, backend: Backend, base: ModelRef, outcome: CurateOutcome
    ) -> TrainOutput | None:
        """Train; a training failure is recorded (its gates become ``error``), not raised, so the
        baseline is still evaluated and the reports are still written."""
        started = time.perf_counter()
        try:
            return self._train(trainer, backend, base, outcome)
        except HarnessError as exc:
            if exc.exit_code == 2:
                raise
            message = str(exc)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
        self.result.train_error = f"training failed: {message}"
        self.console.stage("train", self.result.train_error, style="red")
        self._stage_end("train", "error", started, message)
        return None

    def _train(
        self, trainer: Trainer, backend: Backend, base: ModelRef, outcome: CurateOutcome
    ) -> TrainOutput:
        started = time.perf_counter()

        def on_checkpoint(event: CheckpointEvent) -> None:
            self.result.checkpoints.append(event)
            self.pm.hook.harness_on_checkpoint(event=event)

        run = TrainStage(self.store, self.console, self.options.use_cache, self._read_data, self._resolve_path)
        output, from_cache = run(trainer, backend, base, outcome, self.loaded.suite.seed, self.run_id, on_checkpoint)
        self.result.train, self.result.train_from_cache = output, from_cache
        self._stage_end("train", "cached" if from_cache else "ok", started)
        return output

    def _read_data(self, src: DataSource, loc: tuple) -> list[Conversation]:
        """Read a data source a component's options name (e.g. a trainer's replay data) through
        the suite's readers; its split and sample are applied, and errors name the suite's line."""
        records, quarantined, _stage = read_source(self.loaded, self.registries, self.ctx, loc, src)
        check_quarantined(quarantined, len(records) + len(quarantined), self.loaded.suite.curate.max_quarantined_fraction, self.loaded.where(loc))
        return select(src, records)[0]

    def _resolve_path(self, raw: str, loc: tuple) -> Path:
        """A data path a component's options name, which must exist (the error names the line)."""
        path = self.loaded.resolve_path(raw, loc)
        if not path.exists():
            raise DataError(f"{self.loaded.where(loc)}: data file not found: {path}")
        return path

    def _forgetting(
        self, backend: Backend, probes: dict[str, Benchmark], base: ModelRef, output: TrainOutput
    ) -> Path:
        """Draw the forgetting curve when the suite asks for it; return the adapter to gate."""
        spec = self.loaded.suite.forgetting
        if spec is None:
            return output.path
        started = time.perf_counter()
        self.console.stage("forgetting", f"{len(probes)} probes at steps 0, {', '.join(str(c.step) for c in self.result.checkpoints)}")
        result = run_forgetting(self, spec, backend, probes, base, self.result.checkpoints)
        self.result.forgetting = result
        for step in sorted(result.reasons):
            self.console.note(f"step {step}: {result.reasons[step]}")
        self._stage_end("forgetting", "error" if result.errors else "ok", started)
        if result.selected_path is None:
            self.console.stage("forgetting", "no checkpoint stays within the bounds; gating the final one", style="yellow")
            return output.path
        return result.selected_path

    def _compare(
        self, trainers: dict[str, Trainer], backend: Backend, probes: dict[str, Benchmark], base: ModelRef, outcome: CurateOutcome
    ) -> None:
        """Train each of ``forgetting.compare``'s trainers on the same curated data and draw its
        curve on the same probes; a failure is recorded for that label and the others go on."""
        spec = self.loaded.suite.forgetting
        if spec is None or not trainers:
            return
        for label, trainer in trainers.items():
            started = time.perf_counter()
            events: list[CheckpointEvent] = []
            run = TrainStage(self.store, self.console, self.options.use_cache, self._read_data, self._resolve_path)
            self.console.stage("compare", f"{label}: {trainer.name}")
            try:
                output, _cached = run(trainer, backend, base, outcome, self.loaded.suite.seed, self.run_id, events.append)
                self.result.compare_train[label] = output
                self.result.forgetting_compare[label] = run_forgetting(self, spec, backend, probes, base, events)
            except Exception as exc:  # recorded: one broken comparison does not stop the run
                message = f"{type(exc).__name__}: {exc}"
                self.result.compare_train[label] = message
                self.console.stage("compare", f"{label}: error: {message}", style="red")
                self._stage_end(f"compare:{label}", "error", started, message)
                continue
            self._stage_end(f"compare:{label}", "ok", started)

    def _evaluate(self, backend: Backend, benchmarks: dict[str, Benchmark], models: list[ModelRef]) -> None:
        """Every benchmark on every model (one model in memory at a time); an evaluation that
        raises is recorded as an error for that (benchmark, model) and the others go on."""
        started = time.perf_counter()
        for ref in models:
            evaluator = Evaluator(self.store, backend, ref, self.console, self.options.use_cache)
            for label, bench in benchmarks.items():
                try:
                    res = evaluator.run(label, bench)
                except Exception as exc:  # recorded, never cached: gates on it become `error`
                    message = f"{type(exc).__name__}: {exc}"
                    self.result.eval_errors.append(EvalError(label, ref.label, message))
                    self.console.stage("evaluate", f"{label} / {ref.label}: error: {message}", style="red")
                    continue
                self.result.benchmarks.setdefault(label, {})[ref.label] = res
                self.store.save_items(self.run_id, label, res)
                self.console.stage("evaluate", describe(label, res))
            evaluator.release()
        outcome = "error" if self.result.eval_errors else "ok"
        self._stage_end("evaluate", outcome, started)

    def _parity(self, plan: ParityPlan, backend: Backend, model: ModelRef) -> None:
        """Compare the offline pipeline with production on the model that would ship."""
        started = time.perf_counter()
        self.console.stage("parity", f"{len(plan.requests)} production requests, {len(plan.checks)} checks on {model.label}")
        for note in plan.notes:
            self.console.note(note)
        result = run_parity(plan, self.loaded, model, backend, self.store, self.console, self.loaded.suite.seed, self.options.use_cache)
        self.result.parity = result
        errored = any(c.status == "error" for c in result.checks)
        self._stage_end("parity", "error" if errored else "ok", started)

    def _report(self, reporters: list[Reporter]) -> None:
        started = time.perf_counter()
        self.result.duration_s = time.time() - self.result.started_at
        self.report_dir.mkdir(parents=True, exist_ok=True)
        # Reports: the suite's history and the run's result document, kept in the store so that
        # `harness report RUN` renders this run again without recomputing it.
        record_result(self.store, self.result, self.loaded.suite.seed)
        for reporter in reporters:
            reporter.report(self.result, self.report_dir)
        self._stage_end("report", "ok", started)
        self.store.finish_run(self.run_id, self.result.exit_code, self.report_dir)
        self.pm.hook.harness_on_run_end(
            event=RunEndEvent(self.run_id, self.result.exit_code, self.report_dir)
        )


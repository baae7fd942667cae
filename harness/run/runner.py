"""The runner: the run plan, then the stages in order (curate, train, forgetting, evaluate,
parity, gate, report) over one frozen stage environment.

Every component is built by ``plan_run`` before the first stage starts, so a configuration error
costs nothing.  Each stage is a function of the environment and its part of the plan that
returns one value; the runner records those values in the ``RunResult``, times the stages, emits
the lifecycle hooks and keeps going where a failure concerns one check only (a training that
fails makes its gates ``error``; the baseline is still evaluated and the reports still written).
Models are loaded lazily: a fully cached re-run loads no model at all.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from harness.errors import EXIT_BAD_INPUT, EXIT_CHECK_ERRORED, ConfigError, HarnessError
from harness.lib.console import RunConsole
from harness.lib.interrupt import raise_pending
from harness.lib.models import ModelRef, resolve_model
from harness.lib.refs import DataSource
from harness.lib.resultdoc import record_result, result_document
from harness.lib.shards import Shard
from harness.lib.store import Store
from harness.plugin.components import Benchmark, Trainer
from harness.plugin.manager import HarnessPluginManager
from harness.plugin.registry import Registries
from harness.run.arm_results import measures_cost, record_arm_pairs, record_prompt_cost
from harness.run.arms import arm_groups, declared_model, describe_arms
from harness.run.plan import RunPlan, plan_run, plan_source
from harness.run.variance import ExtraCandidates, evaluate_extra, train_extra, train_seed
from harness.stages.curate import CurateOutcome, curate, read_selected
from harness.stages.env import StageEnv
from harness.stages.evaluate import Evaluator, PromptVariant, describe
from harness.stages.forgetting import run_forgetting
from harness.stages.forgetting_live import LiveForgetting
from harness.stages.gate import exit_code, run_gates
from harness.stages.parity import parity_decisions, run_parity
from harness.stages.train import TrainStage
from harness.stages.variance import decide_seeds, filter_impacts, seed_variance
from harness.suite.arms import BASE, TRAINED, arm_label
from harness.suite.config import LoadedSuite
from harness.suite.yamlpos import Loc
from harness.types import (
    CheckpointEvent,
    Conversation,
    Decision,
    EvalError,
    ForgettingResult,
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
    shard: Shard | None = None
    """evaluate only this item shard into the store, then stop: no parity, gates or reports
    (``harness run --shard i/N``; a later unsharded run reuses the items and gates)"""


def new_run_id(suite_name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{suite_name}-{uuid.uuid4().hex[:6]}"


@dataclass
class Runner:
    loaded: LoadedSuite
    pm: HarnessPluginManager
    registries: Registries
    console: RunConsole
    options: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        suite = self.loaded.suite
        self.run_id = new_run_id(suite.name)
        store_dir = self.options.store_dir or (self.loaded.dir / (suite.store or ".harness"))
        self.store = Store(store_dir)
        self.report_dir = (self.options.reports_root or Path("reports")) / self.run_id
        self.env = StageEnv(self.run_id, self.store, self.console, self.options.use_cache)
        self.result = RunResult(self.run_id, suite.name, self.loaded.path, time.time())

    # -------------------------------------------------------------------------- the run

    def run(self) -> RunResult:
        """Plan, then run every stage; return the result (its ``exit_code`` is the verdict)."""
        suite = self.loaded.suite
        plan = plan_run(
            self.loaded, self.registries, self.store.root / "work" / self.run_id,
            reports_dir=self.report_dir.parent, store_dir=self.store.root,
        )
        for note in plan.notes:
            self.console.stage("plan", note, style="yellow")
        self.store.start_run(self.run_id, suite.name, self.loaded.path)
        self._notify("harness_on_run_start", RunStartEvent(self.run_id, self.loaded.path, suite.name))
        self.console.stage("run", f"{suite.name} ({self.run_id})")
        if self.options.only_parity:
            return self._parity_only(plan)
        outcome = self._curate(plan) if plan.curate is not None else None
        base = self._resolve_base()
        refs: dict[str, ModelRef | None] = {BASE: base}
        extra = ExtraCandidates()
        if plan.trainer is not None and outcome is not None:
            refs[TRAINED] = self._train_candidate(plan, plan.trainer, base, outcome)
            extra = train_extra(self, plan, plan.trainer, base, outcome)
        refs.update(self._resolve_arms(plan))
        models, arms = describe_arms(plan.arms, refs, plan.backend.name, suite.train)
        self.result.models, self.result.arms = {**models, **self.result.models}, {**arms, **self.result.arms}
        self._evaluate(plan, refs, tuple(outcome.records) if outcome is not None else ())
        evaluate_extra(self, plan, extra)
        if self.options.shard is not None:
            return self._end_shard(self.options.shard)
        if plan.parity is not None:
            self._parity(plan, refs.get(TRAINED) or base)
        if suite.gating.check_batch_invariance:
            self._batch_invariance()
        self._gate(plan, self._decide(plan, extra))
        record_arm_pairs(self.result, self.console, plan, self._clusters(plan), self._plugin_error)
        self._report(plan)
        return self.result

    def _decide(self, plan: RunPlan, extra: ExtraCandidates) -> list[Decision]:
        """The gates' decisions, under ``train.seed_rule`` when the suite trains several seeds;
        what each ablated filter bought (``harness.stages.variance``)."""
        suite, clusters = self.loaded.suite, self._clusters(plan)

        def decide(result: RunResult, by_item: Mapping[str, Mapping[str, str] | None]) -> list[Decision]:
            return run_gates(plan.gates, plan.statistics, suite.gating, result, by_item)

        if extra.ablated:
            self.result.ablation = filter_impacts(
                self.result, extra.ablated, extra.ablation_errors, self._alpha, suite.seed, plan.statistics, clusters
            )
        if suite.train is None or suite.train.seeds is None:
            return decide(self.result, clusters)
        errors = {**({suite.train.seeds[0]: self.result.train_error} if self.result.train_error else {}), **extra.seed_errors}
        self.result.seeds = seed_variance(self.result, suite.train.seed_rule, suite.train.seeds, errors)
        return decide_seeds(decide, self.result, self.result.seeds, clusters)

    def _parity_only(self, plan: RunPlan) -> RunResult:
        if plan.parity is None:
            raise ConfigError(f"{self.loaded.path}: the suite has no 'parity' section")
        base = self._resolve_base()
        self.result.models = {base.label: base.describe()}
        self._parity(plan, base)
        self._gate(plan, [])
        self._report(plan)
        return self.result

    @contextmanager
    def _stage(self, name: str) -> Iterator[Callable[[str, str], None]]:
        """Time a stage; the body calls ``done(outcome, detail)`` (default ``ok``) to record it."""
        raise_pending()
        started = time.perf_counter()
        ended: list[tuple[str, str]] = []

        def done(outcome: str, detail: str = "") -> None:
            ended.append((outcome, detail))

        yield done
        outcome, detail = ended[-1] if ended else ("ok", "")
        event = StageEndEvent(self.run_id, name, outcome, time.perf_counter() - started, detail)
        self.result.stages.append(event)
        self._notify("harness_on_stage_end", event)

    # ------------------------------------------------------------------------- stages

    def _resolve_base(self) -> ModelRef:
        spec = self.loaded.suite.model
        with self._stage("model"):
            try:
                ref = resolve_model(spec.source, spec.backend, spec.dtype, self.loaded.dir)
            except HarnessError as exc:
                raise type(exc)(f"{self.loaded.where(('model',))}: {exc}") from None
            role = "baseline" if self.loaded.suite.baseline == BASE else "base"
            self.console.stage("model", f"{role} {ref.describe()}")
        return ref

    def _curate(self, plan: RunPlan) -> CurateOutcome:
        assert plan.curate is not None
        with self._stage("curate"):
            outcome = curate(plan.curate)
            self.result.ledger = outcome.ledger
            self.store.save_ledger(self.run_id, outcome.ledger)
            self.console.stage("curate", f"{len(outcome.records)} records kept")
            for stage in outcome.ledger.stages:
                reasons = ", ".join(f"{k}: {v}" for k, v in sorted(stage.reasons.items()))
                self.console.note(
                    f"{stage.name}: in {stage.n_in} = kept {stage.kept} + dropped {stage.dropped} "
                    f"+ quarantined {stage.quarantined}" + (f" ({reasons})" if reasons else "")
                )
        return outcome

    def _train_candidate(self, plan: RunPlan, trainer: Trainer, base: ModelRef, outcome: CurateOutcome) -> ModelRef | None:
        """Train, draw the forgetting curve, train the compared configurations; the model to
        gate, or ``None`` when training failed (recorded: its gates become ``error``)."""
        spec = self.loaded.suite.forgetting
        live = None
        if spec is not None and spec.live:
            live = LiveForgetting(self.env, spec, plan.backend, plan.probes, base, plan.statistics, self._alpha)
            live.score_base()
        output = self._train_or_record(plan, trainer, base, outcome, live)
        if output is None:
            return None
        gated = self._forgetting(plan, base, output, live)
        self._compare(plan, base, outcome)
        return base.derived("candidate", gated)

    def _train_or_record(
        self, plan: RunPlan, trainer: Trainer, base: ModelRef, outcome: CurateOutcome, live: LiveForgetting | None
    ) -> TrainOutput | None:
        """Train the candidate (the live probes, when given, watch each checkpoint); its output, or
        ``None`` when training failed (recorded)."""

        def on_checkpoint(event: CheckpointEvent) -> None:
            self._on_checkpoint(event)
            if live is not None:
                live(event)

        with self._stage("train") as done:
            try:
                output, from_cache = self._train(plan, trainer, ("train",), base, outcome, on_checkpoint)
            except HarnessError as exc:
                if exc.exit_code == 2:
                    raise
                message = str(exc)
            except Exception as exc:  # recorded, never a pass: the gates on it become `error`
                message = f"{type(exc).__name__}: {exc}"
            else:
                self.result.train, self.result.train_from_cache = output, from_cache
                done("cached" if from_cache else "ok", "")
                return output
            self.result.train_error = f"training failed: {message}"
            self.console.stage("train", self.result.train_error, style="red")
            done("error", message)
        return None

    def _on_checkpoint(self, event: CheckpointEvent) -> None:
        self.result.checkpoints.append(event)
        self._notify("harness_on_checkpoint", event)

    def _train(
        self,
        plan: RunPlan,
        trainer: Trainer,
        loc: Loc,
        base: ModelRef,
        outcome: CurateOutcome,
        on_checkpoint: Callable[[CheckpointEvent], None],
        seed: int | None = None,
    ) -> tuple[TrainOutput, bool]:
        """Train (or reuse) one candidate; ``seed`` defaults to the ``trained`` arm's."""
        stage = TrainStage(self.store, self.console, self.options.use_cache, self._data_reader(plan, loc), self._resolve_path)
        seed = train_seed(self.loaded) if seed is None else seed
        return stage(trainer, plan.backend, base, outcome, seed, self.run_id, on_checkpoint)

    def _data_reader(self, plan: RunPlan, trainer_loc: Loc) -> Callable[[DataSource, Loc], list[Conversation]]:
        """How a trainer reads the data its options name: through the readers the plan built
        for it (a mitigation's location is given relative to ``train``)."""

        def read(src: DataSource, loc: Loc) -> list[Conversation]:
            where = trainer_loc + tuple(loc[1:]) if loc and loc[0] == "train" else tuple(loc)
            planned = plan.train_sources.get(where) or plan_source(self.registries, self.loaded, plan.ctx, where, src)
            setting = self.loaded.where(where)
            return read_selected(planned, self.loaded.suite.curate.max_quarantined_fraction, setting)

        return read

    def _resolve_path(self, raw: str, loc: Loc) -> Path:
        """A data path a component's options name, which must exist (the error names the line)."""
        from harness.errors import DataError

        path = self.loaded.resolve_path(raw, loc)
        if not path.exists():
            raise DataError(f"{self.loaded.where(loc)}: data file not found: {path}")
        return path

    def _forgetting(self, plan: RunPlan, base: ModelRef, output: TrainOutput, live: LiveForgetting | None) -> Path:
        """Draw the forgetting curve when the suite asks for it; return the weights to gate."""
        spec = self.loaded.suite.forgetting
        if spec is None:
            return output.path
        with self._stage("forgetting") as done:
            steps = ", ".join(str(c.step) for c in self.result.checkpoints)
            self.console.stage("forgetting", f"{len(plan.probes)} probes at steps 0, {steps}")
            result = run_forgetting(
                self.env, spec, plan.backend, plan.probes, base, self.result.checkpoints, plan.statistics, self._alpha,
                self.loaded.suite.gating.correction,
                prescored=live.scored if live is not None else None,
            )
            if spec.stop is not None:
                _record_stop(result, output, live, spec.stop.when, self.console)
            self.result.forgetting = result
            for step in sorted(result.reasons):
                self.console.note(f"step {step}: {result.reasons[step]}")
            done("error" if result.errors else "ok", "")
        if result.selected_path is None:
            self.console.stage("forgetting", "no checkpoint stays within the bounds; gating the final one", style="yellow")
            return output.path
        return result.selected_path

    @property
    def _alpha(self) -> float:
        return self.loaded.suite.gating.alpha

    @staticmethod
    def _clusters(plan: RunPlan) -> dict[str, dict[str, str] | None]:
        """Per benchmark label, each item's cluster (source); ``None`` for independent items."""
        return {label: bench.clusters() for label, bench in plan.benchmarks.items()}

    def _compare(self, plan: RunPlan, base: ModelRef, outcome: CurateOutcome) -> None:
        """Train each of ``forgetting.compare``'s trainers on the same curated data and draw its
        curve on the same probes; a failure is recorded for that label and the others go on."""
        spec = self.loaded.suite.forgetting
        for label, trainer in plan.compared.items():
            assert spec is not None
            with self._stage(f"compare:{label}") as done:
                events: list[CheckpointEvent] = []
                self.console.stage("compare", f"{label}: {trainer.name}")
                try:
                    loc: Loc = ("forgetting", "compare", label)
                    output, _cached = self._train(plan, trainer, loc, base, outcome, events.append)
                    self.result.compare_train[label] = output
                    self.result.forgetting_compare[label] = run_forgetting(
                        self.env, spec, plan.backend, plan.probes, base, events, plan.statistics, self._alpha,
                self.loaded.suite.gating.correction,
                    )
                except Exception as exc:  # recorded: one broken comparison does not stop the run
                    message = f"{type(exc).__name__}: {exc}"
                    self.result.compare_train[label] = message
                    self.console.stage("compare", f"{label}: error: {message}", style="red")
                    done("error", message)

    def _resolve_arms(self, plan: RunPlan) -> dict[str, ModelRef]:
        """The model of every arm other than ``base`` and ``trained`` that the run evaluates (a
        folder, an adapter on a source, or the local tokenizer folder of an endpoint)."""
        refs: dict[str, ModelRef] = {}
        for root, group in arm_groups(plan.arms).items():
            arm = group[0]  # a variant carries its root's model, backend and location
            if root in (BASE, TRAINED) or arm.source is None:
                continue
            with self._stage(f"model:{root}"):
                refs[root] = declared_model(self.loaded, arm)
                self.console.stage("model", f"{root} ({arm.backend.name}) {refs[root].describe()}")
        return refs

    def _evaluate(self, plan: RunPlan, refs: Mapping[str, ModelRef | None], pool: tuple[Conversation, ...]) -> None:
        """Every benchmark on every arm, one model in memory at a time: an arm's prompt variants
        reuse its loaded model.  An evaluation that raises is recorded as an error for that
        (benchmark, arm) and the others go on; an arm without a model (its training failed) is
        left out, and its gates are ``error``."""
        with self._stage("evaluate") as done:
            for root, group in arm_groups(plan.arms).items():
                ref = refs.get(root)
                if ref is None:
                    continue
                loader = Evaluator(
                    self.store, group[0].backend, replace(ref, label=arm_label(self.loaded.suite, root)), self.console,
                    self.options.use_cache, shard=self.options.shard,
                )  # fmt: skip
                for arm in group:
                    evaluator = loader
                    if arm.prompts:
                        variant = PromptVariant(arm.prompts, pool, self.loaded.suite.seed)
                        evaluator = Evaluator(
                            self.store, arm.backend, replace(ref, label=arm.label), self.console, self.options.use_cache,
                            shard=self.options.shard, variant=variant, source=loader.model,
                        )  # fmt: skip
                    for label, bench in plan.benchmarks.items():
                        try:
                            self._evaluate_one(evaluator, label, bench, evaluator.ref)
                        except HarnessError as exc:  # a prompt variant that cannot be built: name it
                            raise type(exc)(f"{self.loaded.where(arm.loc)}: models.{arm.name}.prompt: {exc}") from None
                    if self.options.shard is None and measures_cost(arm, plan.arms):
                        record_prompt_cost(self.result, self.console, evaluator, arm, plan.benchmarks, self._plugin_error)
                loader.release()
            done("error" if self.result.eval_errors else "ok", "")

    def _evaluate_one(self, evaluator: Evaluator, label: str, bench: Benchmark, ref: ModelRef) -> None:
        try:
            res = evaluator.run(label, bench)
        except Exception as exc:  # recorded, never cached: gates on it become `error`
            if isinstance(exc, HarnessError) and exc.exit_code == EXIT_BAD_INPUT and evaluator.variant is not None:
                raise  # a prompt variant that cannot be built (examples overflow the context) is bad input
            message = f"{type(exc).__name__}: {exc}"
            self.result.eval_errors.append(EvalError(label, ref.label, message))
            self.console.stage("evaluate", f"{label} / {ref.label}: error: {message}", style="red")
            return
        self.result.benchmarks.setdefault(label, {})[ref.label] = res
        self.store.save_items(self.run_id, label, res)
        self.console.stage("evaluate", describe(label, res))

    def _end_shard(self, shard: Shard) -> RunResult:
        """A shard's run ends with its evaluation: its items are in the store, and the gates
        belong to the run that gathers every shard.  Exit 3 if an evaluation errored, else 0."""
        items = sum(len(res.items) for by_model in self.result.benchmarks.values() for res in by_model.values())
        self.result.exit_code = EXIT_CHECK_ERRORED if self.result.eval_errors else 0
        self.console.stage(
            "shard", f"{shard}: {items} items in the store; a run without --shard reuses them and gates the suite"
        )
        raise_pending()
        self.store.end_run(self.run_id, "shard", self.result.exit_code)
        return self.result

    def _parity(self, plan: RunPlan, model: ModelRef) -> None:
        """Compare the offline pipeline with production on the model that would ship."""
        parity = plan.parity
        assert parity is not None
        with self._stage("parity") as done:
            self.console.stage(
                "parity", f"{len(parity.requests)} production requests, {len(parity.checks)} checks on {model.label}"
            )
            for note in parity.notes:
                self.console.note(note)
            result = run_parity(
                parity, self.loaded, model, plan.backend, self.store, self.console, self.loaded.suite.seed,
                self.options.use_cache,
            )
            self.result.parity = result
            done("error" if any(c.status == "error" for c in result.checks) else "ok", "")

    def _batch_invariance(self) -> None:
        """The baseline at batch sizes 1 and 8 (``harness.run.invariance``): advisory, a difference
        is a finding in the reports; a check that cannot run is recorded (exit 3, never a pass)."""
        from harness.run.invariance import run_invariance

        with self._stage("invariance") as done:
            try:
                findings = run_invariance(self.loaded, self.registries, self.store.root / "work" / self.run_id)
            except Exception as exc:  # recorded: the gates still run
                self._plugin_error("the batch invariance check", f"{type(exc).__name__}: {exc}")
                done("error", f"{type(exc).__name__}: {exc}")
                return
            self.result.invariance = findings
            for finding in findings:
                self.console.stage("invariance", finding.line(), style="" if finding.invariant else "yellow")

    def _gate(self, plan: RunPlan, decisions: list[Decision]) -> None:
        with self._stage("gate"):
            parity = self.loaded.suite.parity
            if parity is not None and self.result.parity is not None:
                decisions = decisions + parity_decisions(parity, self.result.parity)
            self.result.decisions = decisions
            self.result.inconclusive_fails = self.loaded.suite.gating.inconclusive == "fail"
            code = exit_code(decisions, self.result.inconclusive_fails)
            self.result.exit_code = EXIT_CHECK_ERRORED if code == 0 and self.result.plugin_errors else code
            self.store.save_decisions(self.run_id, decisions)

    def _report(self, plan: RunPlan) -> None:
        """Every reporter, each on its own: one that fails is recorded and the others still
        write (the gate table, the JSON, the JUnit file...)."""
        with self._stage("report") as done:
            self.result.duration_s = time.time() - self.result.started_at
            try:
                self.report_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._plugin_error("the report folder", f"cannot create {self.report_dir}: {exc}")
            # Reports: the suite's history and the run's result document, kept in the store so that
            # `harness report RUN` renders this run again without recomputing it.
            record_result(self.store, self.result, self.loaded.suite.seed)
            for reporter in plan.reporters:
                try:
                    reporter.report(self.result, self.report_dir)
                except Exception as exc:  # recorded: the other reporters still run
                    origin = plan.registries.get("reporter", reporter.name).origin
                    self._plugin_error(f"reporter {reporter.name!r} from {origin}", f"{type(exc).__name__}: {exc}")
            if self.result.plugin_errors:
                # the stored document says what failed, even if files written before it cannot
                self.store.save_result(self.run_id, self.result.suite_name, result_document(self.result))
                done("error", "; ".join(self.result.plugin_errors))
        self._notify("harness_on_run_end", RunEndEvent(self.run_id, self.result.exit_code, self.report_dir))
        raise_pending()
        self.store.finish_run(self.run_id, self.result.exit_code, self.report_dir)

    def _plugin_error(self, who: str, message: str) -> None:
        """Record a failure outside the gates; a run that would pass exits 3 instead."""
        self.result.plugin_errors.append(f"{who}: {message}")
        self.console.stage("report", f"{who} failed: {message}", style="red")
        if self.result.exit_code == 0:
            self.result.exit_code = EXIT_CHECK_ERRORED

    def _notify(self, hook_name: str, event: object) -> None:
        """Call every implementation of a lifecycle hook, each on its own: an exception is
        recorded with the plugin's name, and never stops the run or the other plugins."""
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            try:
                impl.function(event=event)
            except Exception as exc:
                plugin = f"plugin {impl.plugin_name!r} ({self.pm.distribution_of(impl.plugin_name)})"
                self._plugin_error(f"{plugin} in {hook_name}", f"{type(exc).__name__}: {exc}")


def _record_stop(
    result: ForgettingResult, output: TrainOutput, live: LiveForgetting | None, when: str, console: RunConsole
) -> None:
    """Put an early stop into the forgetting result.  A launched job may end before the request
    reaches it (its workers go on while a checkpoint is scored), and a trainer outside the shared
    loop may not read requests: then the rule fired, nothing stopped, and the reason says so
    while ``stopped_step`` stays empty."""
    if output.stopped_step is not None:
        result.stopped_step, result.stop_reason, result.stop_when = output.stopped_step, output.stop_reason, when
        console.stage("forgetting", f"training stopped at step {output.stopped_step} ({when}): {output.stop_reason}", style="yellow")
    elif live is not None and live.stop is not None:
        result.stop_when = when
        result.stop_reason = f"the rule fired at step {live.stop.step} but the training ran to its end: {live.stop.reason}"
        console.stage("forgetting", result.stop_reason, style="yellow")

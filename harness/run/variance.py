"""The extra candidates of a run: one per further training seed (``train.seeds``) and one per
ablated filter (``curate.ablate``); see :mod:`harness.stages.variance` for what is decided on them.

Each extra candidate is trained through the same train stage as ``trained`` (its own cache entry:
the seed or the curated data differ), then evaluated on every benchmark on the base model's
backend.  A training that fails is recorded for that candidate and the run goes on: the gates on a
failed seed are ``error``, an ablation without a candidate shows why.  The plan checks
``curate.ablate`` (``harness.run.ablation``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from harness.errors import EXIT_BAD_INPUT, HarnessError
from harness.lib.console import RunConsole
from harness.lib.models import ModelRef
from harness.lib.store import Store
from harness.plugin.components import Benchmark, Trainer
from harness.suite.yamlpos import Loc
from harness.types import CheckpointEvent, RunResult, TrainOutput
from harness.stages.curate import CurateOutcome, curate
from harness.stages.evaluate import Evaluator
from harness.stages.variance import ablated_label, seed_label
from harness.suite.config import LoadedSuite

if TYPE_CHECKING:
    from harness.run.plan import RunPlan


class Runner(Protocol):
    """What this module uses of ``harness.run.runner.Runner`` (which imports this module)."""

    loaded: LoadedSuite
    console: RunConsole
    store: Store
    options: Any
    result: RunResult

    def _stage(self, name: str) -> AbstractContextManager[Callable[[str, str], None]]: ...
    def _train(self, plan: RunPlan, trainer: Trainer, loc: Loc, base: ModelRef, outcome: CurateOutcome,
               on_checkpoint: Callable[[CheckpointEvent], None], seed: int | None = None) -> tuple[TrainOutput, bool]: ...  # fmt: skip
    def _evaluate_one(self, evaluator: Evaluator, label: str, bench: Benchmark, ref: ModelRef) -> None: ...


def train_seed(loaded: LoadedSuite) -> int:
    """The seed of the ``trained`` arm (and of every ablation): the first of ``train.seeds``,
    else the suite's seed."""
    train = loaded.suite.train
    return train.seeds[0] if train is not None and train.seeds else loaded.suite.seed


@dataclass
class ExtraCandidates:
    """The extra candidates trained: result label -> model, and why a seed or filter has none."""

    models: dict[str, ModelRef] = field(default_factory=dict)
    seed_errors: dict[int, str] = field(default_factory=dict)
    ablation_errors: dict[str, str] = field(default_factory=dict)
    ablated: dict[str, str] = field(default_factory=dict)
    """Filter name -> result label of its ablation."""


def train_extra(runner: Runner, plan: RunPlan, trainer: Trainer, base: ModelRef, outcome: CurateOutcome) -> ExtraCandidates:
    """Train the candidate of every seed after the first, then one per ablated filter."""
    suite = runner.loaded.suite
    extra = ExtraCandidates()
    for seed in (suite.train.seeds or [])[1:] if suite.train is not None else []:
        error = _train_one(runner, plan, trainer, base, outcome, seed, seed_label(seed), extra)
        if error is not None:
            extra.seed_errors[seed] = error
    for name in suite.curate.ablate:
        assert plan.curate is not None
        label = ablated_label(name)
        extra.ablated[name] = label
        kept = tuple(step for step in plan.curate.filters if step.filter.name != name)
        without = curate(replace(plan.curate, filters=kept))
        runner.console.stage("ablate", f"without {name}: {len(without.records)} records (all filters: {len(outcome.records)})")
        error = _train_one(runner, plan, trainer, base, without, train_seed(runner.loaded), label, extra)
        if error is not None:
            extra.ablation_errors[name] = error
    return extra


def _train_one(
    runner: Runner, plan: RunPlan, trainer: Trainer, base: ModelRef, data: CurateOutcome, seed: int, label: str,
    extra: ExtraCandidates,
) -> str | None:  # fmt: skip
    """Train one extra candidate into ``extra.models``; the error message when it failed."""
    with runner._stage(f"train:{label}") as done:
        runner.console.stage("train", f"{label} (seed {seed})")
        try:
            output, cached = runner._train(plan, trainer, ("train",), base, data, _ignore, seed=seed)
        except Exception as exc:  # recorded: the gates on this candidate become `error`
            if isinstance(exc, HarnessError) and exc.exit_code == EXIT_BAD_INPUT:
                raise
            message = f"training failed: {type(exc).__name__}: {exc}"
            runner.console.stage("train", f"{label}: {message}", style="red")
            done("error", message)
            return message
        done("cached" if cached else "ok", "")
    extra.models[label] = base.derived(label, output.path)
    runner.result.models[label] = f"{label}: {extra.models[label].describe()}"
    runner.result.arms[label] = {"name": label, "backend": plan.backend.name, "kind": trainer.name}
    return None


def _ignore(_event: object) -> None:
    """Extra candidates draw no forgetting curve: their checkpoints are not watched."""


def evaluate_extra(runner: Runner, plan: RunPlan, extra: ExtraCandidates) -> None:
    """Every benchmark on every extra candidate, one model in memory at a time."""
    evaluate: Callable[..., None] = runner._evaluate_one
    for ref in extra.models.values():
        with runner._stage(f"evaluate:{ref.label}"):
            evaluator = Evaluator(
                runner.store, plan.backend, ref, runner.console, runner.options.use_cache, shard=runner.options.shard
            )
            for label, bench in plan.benchmarks.items():
                evaluate(evaluator, label, bench, ref)
            evaluator.release()

"""The run plan's checks that are not a component's own: the folders the run writes, the API
keys endpoints need, and whether each benchmark can run on the models it is given.

Each check adds what it finds to the plan's ``Problems`` (errors) or its notes (warnings), so
``harness validate`` reports them all at once, before any work.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

from harness.errors import ConfigError, DataError
from harness.plugin.components import Backend, Benchmark
from harness.plugin.registry import Registries
from harness.run.arms import ArmPlan, check_arm_capabilities
from harness.run.plan_build import Problems
from harness.suite.config import LoadedSuite
from harness.suite.preflight import Problem, check_env_var, check_store, check_writable_dir
from harness.suite.yamlpos import Loc


def preflight(problems: Problems, found: list[Problem], notes: list[str]) -> None:
    """Errors become the plan's problems, warnings its notes."""
    for problem in found:
        if problem.severity == "warning":
            notes.append(str(problem))
        else:
            problems.found.append(DataError(str(problem)))


def check_environment(
    loaded: LoadedSuite, reports_dir: Path | None, store_dir: Path | None, problems: Problems, notes: list[str]
) -> None:
    """The folders the run writes, and the API keys endpoints need."""
    suite = loaded.suite
    if reports_dir is not None:
        preflight(problems, check_writable_dir(reports_dir, where=str(loaded.path), what="reports folder"), notes)
    if store_dir is not None:
        preflight(problems, check_store(store_dir, where=str(loaded.path)), notes)
    endpoint = suite.parity.production.endpoint if suite.parity is not None else None
    if endpoint is not None and endpoint.api_key_env:
        where = loaded.where(("parity", "production", "endpoint", "api_key_env"))
        preflight(problems, check_env_var(endpoint.api_key_env, where=where, purpose="the production endpoint's API key"), notes)


def check_capabilities(loaded: LoadedSuite, backend: Backend, benchmarks: Mapping[Loc, Benchmark], problems: Problems) -> None:
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


def check_batch_sizes(loaded: LoadedSuite, registries: Registries, benchmarks: Mapping[str, Benchmark], problems: Problems) -> None:
    """Each benchmark takes a batch size when ``gating.check_batch_invariance`` is set."""
    if loaded.suite.gating.check_batch_invariance:
        for label in benchmarks:
            problems.attempt(partial(require_batch_size, loaded, registries, label))


def check_models(
    loaded: LoadedSuite,
    backend: Backend | None,
    arms: Mapping[str, ArmPlan],
    benchmarks: Mapping[str, Benchmark],
    probes: Mapping[str, Benchmark],
    problems: Problems,
) -> None:
    """Every benchmark and probe can run on the models it is given: the base model's backend
    and each arm's (skipped when the base backend could not be built: that is reported)."""
    if backend is None:
        return
    evaluated: dict[Loc, Benchmark] = {("evaluate", k): b for k, b in benchmarks.items()}
    check_capabilities(loaded, backend, evaluated, problems)
    check_capabilities(loaded, backend, {("forgetting", "probes", k): b for k, b in probes.items()}, problems)
    check_arm_capabilities(loaded, arms, evaluated, problems.found)

"""Backend agreement: the same benchmark items through two (or more) backends, compared item by
item.  It proves a new backend right against ``hf`` and answers a user's question: does my
evaluation backend agree with my serving backend?

Log-likelihood benchmarks that expose ``loglikelihoods(model, items)`` (MMLU, HellaSwag) are
compared on their per-choice log-probabilities: the predicted choice (arg-max) and the largest
absolute difference of any choice's log-probability.  Every other benchmark is compared on its
``ItemResult.prediction`` (generation: the extracted answer).  Each backend's time per benchmark
(model load excluded) gives its items per second.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.lib.model_api import model_api
from harness.lib.models import resolve_model
from harness.plugin.components import Backend, Benchmark, RunContext
from harness.plugin.registry import Registries
from harness.suite.config import LoadedSuite


@dataclass
class Outputs:
    """One backend's outputs on one benchmark's items."""

    predictions: list[str]
    logprobs: list[list[float]] | None
    seconds: float


@dataclass
class Agreement:
    """Two backends compared on one benchmark."""

    benchmark: str
    items: int
    agree: int
    max_logprob_diff: float | None
    items_per_s: dict[str, float]
    disagreements: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    """Items whose predictions agree but whose log-probabilities differ by more than the
    tolerance given to :func:`compare` (empty when none was given)."""

    def line(self) -> str:
        diff = "" if self.max_logprob_diff is None else f", largest log-prob difference {self.max_logprob_diff:.4f}"
        speed = ", ".join(f"{name} {rate:.2f} items/s" for name, rate in self.items_per_s.items())
        return f"{self.benchmark}: {self.agree}/{self.items} predictions agree{diff}; {speed}"


def score_items(bench: Benchmark, model: Any, items: Sequence[dict[str, Any]]) -> Outputs:
    """One benchmark's outputs on ``items``: per-choice log-probabilities when it exposes
    ``loglikelihoods`` (the prediction is their arg-max), else its results' predictions."""
    began = time.perf_counter()
    scorer = getattr(bench, "loglikelihoods", None)
    if callable(scorer):
        logprobs = [list(map(float, row)) for row in scorer(model, items)]
        predictions = [str(max(range(len(row)), key=row.__getitem__)) for row in logprobs]
        return Outputs(predictions, logprobs, time.perf_counter() - began)
    results = bench.evaluate(model, items, lambda *a: None)
    return Outputs([r.prediction for r in results], None, time.perf_counter() - began)


def compare(
    label: str, items: Sequence[dict[str, Any]], outputs: Mapping[str, Outputs], tolerance: float | None = None
) -> Agreement:
    """The first output against the second, item by item; with a ``tolerance``, items whose
    predictions agree but whose log-probabilities differ by more are listed as ``drifted``."""
    a, b = list(outputs.values())[:2]
    agree = [x == y for x, y in zip(a.predictions, b.predictions)]
    diffs: list[float] | None = None
    if a.logprobs is not None and b.logprobs is not None:
        diffs = [max((abs(x - y) for x, y in zip(ra, rb)), default=0.0) for ra, rb in zip(a.logprobs, b.logprobs)]
    rates = {name: len(items) / o.seconds if o.seconds > 0 else float("inf") for name, o in outputs.items()}
    missed = [str(item["id"]) for item, ok in zip(items, agree) if not ok]
    drifted = []
    if diffs is not None and tolerance is not None:
        drifted = [str(item["id"]) for item, ok, d in zip(items, agree, diffs) if ok and d > tolerance]
    largest = None if diffs is None else max(diffs, default=0.0)
    return Agreement(label, len(items), sum(agree), largest, rates, missed, drifted)


def suite_benchmarks(
    loaded: LoadedSuite,
    registries: Registries,
    ctx: RunContext,
    labels: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Benchmark]:
    """The suite's benchmarks under ``evaluate`` (or the named ones), built as the run plan
    builds them, with ``options`` laid over each one's own (``{"batch_size": 1}``)."""
    from harness.run.plan_build import build_benchmark

    chosen = list(labels or loaded.suite.evaluate)
    unknown = [name for name in chosen if name not in loaded.suite.evaluate]
    if unknown:
        raise ConfigError(f"{loaded.path}: no benchmark {', '.join(map(repr, unknown))} under 'evaluate' (have: {', '.join(loaded.suite.evaluate)})")
    built = {}
    for name in chosen:
        ref = loaded.suite.evaluate[name]
        if options:
            ref = ref.model_copy(update={"options": {**ref.options, **options}})
        built[name] = build_benchmark(registries, loaded, ctx, ref, ("evaluate", name))
    return built


def run_agreement(
    loaded: LoadedSuite,
    registries: Registries,
    work_dir: Path,
    backends: Sequence[tuple[str, Mapping[str, Any]]],
    benchmarks: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[Agreement]:
    """The suite's benchmarks (or the named ones) through each backend, first ``limit`` items."""
    from harness.run.plan import run_context

    if len(backends) < 2:
        raise ConfigError("agreement needs two backends")
    ctx = run_context(loaded, registries, work_dir)
    benches = suite_benchmarks(loaded, registries, ctx, benchmarks)
    labels = list(benches)
    items = {name: bench.items()[:limit] if limit else bench.items() for name, bench in benches.items()}
    outputs: dict[str, dict[str, Outputs]] = {name: {} for name in labels}
    spec = loaded.suite.model
    names = [name if [n for n, _ in backends].count(name) == 1 else f"{name}#{i + 1}" for i, (name, _) in enumerate(backends)]
    for shown, (backend_name, options) in zip(names, backends):
        backend = registries.build("backend", backend_name, dict(options), ctx)
        assert isinstance(backend, Backend)
        ref = resolve_model(spec.source, backend_name, spec.dtype, loaded.dir)
        model = backend.load(ref)
        try:
            for name, bench in benches.items():
                outputs[name][shown] = score_items(bench, model, items[name])
        finally:
            model_api(model).close()
    return [compare(name, items[name], outputs[name]) for name in labels]

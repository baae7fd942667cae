"""The evaluate stage: score every benchmark on every model, item by item, through the cache.

The cache key is the model fingerprint (weights, tokenizer, chat template, generation config and
adapter), the backend and its precision, the benchmark's name and config, the digest of its items,
and the harness version.  Errors are recorded per (benchmark, model) and never cached.
"""

from __future__ import annotations

import gc
import math
from typing import TYPE_CHECKING

from harness.components import Backend, Benchmark
from harness.models import LoadedModel, ModelRef
from harness.types import BenchmarkResult, EvalError, ItemResult

if TYPE_CHECKING:
    from harness.runner import Runner


def _validate(items: list[ItemResult]) -> None:
    if not items:
        raise ValueError("the benchmark returned no items")
    ids = [i.item_id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError("the benchmark returned duplicate item ids")
    if not all(math.isfinite(i.score) for i in items):
        raise ValueError("the benchmark returned a non-finite score")


def _from_cache(label: str, ref: ModelRef, bench: Benchmark, value: dict, key: str) -> BenchmarkResult:
    items = tuple(ItemResult(**i) for i in value["items"])
    return BenchmarkResult(bench.name, ref.label, bench.metric, items, key, from_cache=True)


def evaluate_all(
    runner: Runner, backend: Backend, benchmarks: dict[str, Benchmark], models: list[ModelRef]
) -> None:
    """Fill ``runner.result.benchmarks`` and ``eval_errors``; load each model at most once."""
    from harness.store import cache_key

    result, store, console = runner.result, runner.store, runner.console
    for ref in models:
        loaded: LoadedModel | None = None
        for label, bench in benchmarks.items():
            material = {
                "model": ref.fingerprint,
                "backend": backend.cache_material_for(ref),
                "benchmark": bench.cache_material(),
                "items": bench.items_digest(),
            }
            key = cache_key("evaluate", material)[0]
            cached = store.cache_get("evaluate", material) if runner.options.use_cache else None
            if cached is not None:
                res = _from_cache(label, ref, bench, cached, key)
                result.benchmarks.setdefault(label, {})[ref.label] = res
                console.stage("evaluate", f"{label} / {ref.label}: {res.score:.3f} on {len(res.items)} items (from cache)")
                continue
            try:
                if loaded is None:
                    loaded = backend.load(ref)
                with console.progress(f"{label} / {ref.label}") as progress:
                    items = bench.evaluate(loaded, progress)
                _validate(items)
            except Exception as exc:  # recorded, never cached: gates on it become `error`
                message = f"{type(exc).__name__}: {exc}"
                result.eval_errors.append(EvalError(label, ref.label, message))
                console.stage("evaluate", f"{label} / {ref.label}: error: {message}", style="red")
                continue
            res = BenchmarkResult(bench.name, ref.label, bench.metric, tuple(items), key)
            store.cache_put("evaluate", material, {"items": [i.__dict__ for i in items]})
            result.benchmarks.setdefault(label, {})[ref.label] = res
            console.stage("evaluate", f"{label} / {ref.label}: {res.score:.3f} on {len(items)} items")
        del loaded
        gc.collect()

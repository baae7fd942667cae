"""The evaluate stage: score every benchmark on every model, item by item, through the cache.

The cache key is the model fingerprint (weights, tokenizer, chat template, generation config and
adapter), the backend and its precision, the benchmark's name and config, the digest of its items,
and the harness version.  Results are cached per item as soon as each chunk is scored, so a killed
run resumes where it stopped; errors are recorded per (benchmark, model) and never cached.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from harness.plugin.components import Backend, Benchmark, Item
from harness.lib.console import RunConsole
from harness.lib.models import LoadedModel, ModelRef
from harness.lib.store import Store, cache_key
from harness.types import BenchmarkResult, ItemResult


def _validate(items: Sequence[Item], results: list[ItemResult]) -> None:
    if [r.item_id for r in results] != [i["id"] for i in items]:
        raise ValueError("the benchmark did not return one result per item, in order")
    if not all(math.isfinite(r.score) and math.isfinite(r.weight) for r in results):
        raise ValueError("the benchmark returned a non-finite score")


def _with_prompt(result: ItemResult, bench: Benchmark, item: Item) -> ItemResult:
    """The result with the item's prompt, for reports (not cached: the item holds it)."""
    return result if result.prompt else replace(result, prompt=bench.item_prompt(item))


@dataclass
class Evaluator:
    """Scores benchmarks on one model through the store; loads the model only when needed."""

    store: Store
    backend: Backend
    ref: ModelRef
    console: RunConsole
    use_cache: bool = True
    _model: LoadedModel | None = None

    def material(self, bench: Benchmark) -> dict[str, Any]:
        return {
            "model": self.ref.fingerprint,
            "backend": self.backend.cache_material_for(self.ref),
            "benchmark": bench.cache_material(),
            "items": bench.items_digest(),
        }

    def model(self) -> LoadedModel:
        if self._model is None:
            self._model = self.backend.load(self.ref)
        return self._model

    def release(self) -> None:
        self._model = None
        gc.collect()

    def run(self, label: str, bench: Benchmark) -> BenchmarkResult:
        """All items of ``bench`` for this model: cached ones reused, the rest scored in chunks."""
        material = self.material(bench)
        key = cache_key("evaluate", material)[0]
        items = bench.items()
        cached = self.store.cached_items("evaluate", material) if self.use_cache else {}
        todo = [item for item in items if item["id"] not in cached]
        if todo:
            with self.console.progress(f"{label} / {self.ref.label}") as progress:
                done = 0

                def chunk_progress(offset: int) -> Callable[[int, int, str], None]:
                    return lambda d, _t, msg: progress(offset + d, len(todo), msg)

                for start in range(0, len(todo), bench.chunk_size):
                    chunk = todo[start : start + bench.chunk_size]
                    results = bench.evaluate(self.model(), chunk, chunk_progress(done))
                    _validate(chunk, results)
                    values = {r.item_id: r.__dict__ for r in results}
                    self.store.put_items("evaluate", material, values)
                    cached.update(values)
                    done += len(chunk)
                    progress(done, len(todo), "")
        ordered = tuple(_with_prompt(ItemResult(**cached[item["id"]]), bench, item) for item in items)
        return BenchmarkResult(
            bench.name,
            self.ref.label,
            bench.metric,
            ordered,
            key,
            from_cache=not todo,
            cached_items=len(items) - len(todo),
            summary=bench.summary(ordered),
        )


def describe(label: str, res: BenchmarkResult) -> str:
    origin = ""
    if res.from_cache:
        origin = " (from cache)"
    elif res.cached_items:
        origin = f" ({res.cached_items} items from cache, {len(res.items) - res.cached_items} scored)"
    figures = ", ".join(f"{k} {v:.3f}" for k, v in res.summary.items())
    return f"{label} / {res.model}: {figures} on {len(res.items)} items{origin}"

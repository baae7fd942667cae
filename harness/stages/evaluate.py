"""The evaluate stage: score every benchmark on every model, item by item, through the cache.

The cache key is the model fingerprint (weights, tokenizer, chat template, generation config and
adapter), the backend and its precision, the benchmark's name and config, the digest of its items,
and the harness version.  Results are cached per item as soon as each chunk is scored, so a killed
run resumes where it stopped; errors are recorded per (benchmark, model) and never cached.

Chunks are sized by time: after the first one (a few items), a chunk holds as many items as take
about ``COMMIT_SECONDS`` to score (never more than the benchmark's ``chunk_size``), so an
interruption loses at most that much work however slow the items are.  A run holds the
evaluation key's lock while it scores, so a second run of the same evaluation on the same store
waits and then reuses the items instead of scoring them again.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from harness.plugin.components import Backend, Benchmark, Item
from harness.lib.console import RunConsole
from harness.lib.models import LoadedModel, ModelRef
from harness.lib.store import Store, cache_key
from harness.types import BenchmarkResult, ItemResult


COMMIT_SECONDS = 5.0
"""Target time between two commits of evaluated items."""
FIRST_CHUNK = 4
"""Items in the first chunk of a benchmark, which measures how long an item takes."""


def next_chunk_size(limit: int, seconds_per_item: float, target: float = COMMIT_SECONDS) -> int:
    """How many items the next chunk holds: about ``target`` seconds of work, at least 1 and at
    most ``limit``; from 8 up, a multiple of 8 (the backends' usual batch size)."""
    if seconds_per_item <= 0:
        return limit
    n = max(1, min(limit, int(target / seconds_per_item)))
    return n - n % 8 if n >= 8 and n != limit else n


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

            def waiting() -> None:
                self.console.stage("evaluate", f"{label} / {self.ref.label}: waiting for another run that is evaluating it", style="yellow")

            with self.store.lock("evaluate", key, on_wait=waiting):
                if self.use_cache:  # the run this one waited for may have scored them
                    cached = self.store.cached_items("evaluate", material)
                    todo = [item for item in items if item["id"] not in cached]
                self._score(label, bench, material, todo, cached)
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

    def _score(
        self, label: str, bench: Benchmark, material: dict[str, Any], todo: list[Item], cached: dict[str, Any]
    ) -> None:
        """Score ``todo`` in time-sized chunks, committing each chunk's items as it is done."""
        if not todo:
            return
        with self.console.progress(f"{label} / {self.ref.label}") as progress:
            done, size = 0, min(bench.chunk_size, FIRST_CHUNK)

            def chunk_progress(offset: int) -> Callable[[int, int, str], None]:
                return lambda d, _t, msg: progress(offset + d, len(todo), msg)

            while done < len(todo):
                chunk = todo[done : done + size]
                model = self.model()
                started = time.perf_counter()
                results = bench.evaluate(model, chunk, chunk_progress(done))
                elapsed = time.perf_counter() - started
                _validate(chunk, results)
                values = {r.item_id: r.to_json() for r in results}
                self.store.put_items("evaluate", material, values)
                cached.update(values)
                done += len(chunk)
                progress(done, len(todo), "")
                size = next_chunk_size(bench.chunk_size, elapsed / len(chunk))


def describe(label: str, res: BenchmarkResult) -> str:
    origin = ""
    if res.from_cache:
        origin = " (from cache)"
    elif res.cached_items:
        origin = f" ({res.cached_items} items from cache, {len(res.items) - res.cached_items} scored)"
    figures = ", ".join(f"{k} {v:.3f}" for k, v in res.summary.items())
    return f"{label} / {res.model}: {figures} on {len(res.items)} items{origin}"

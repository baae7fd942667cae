"""The evaluate stage: score every benchmark on every model, item by item, through the cache.

The cache key is the model fingerprint (weights, tokenizer, chat template, generation config and
adapter), the backend and its precision (an endpoint's: its served model ids and a log-probability
probe), the prompt variant (its spec, seed and examples' digest) when the arm is one, the
benchmark's name and config, the digest of its items, and the harness version.  Results are cached per item as soon as each chunk is scored, so a killed
run resumes where it stopped; errors are recorded per (benchmark, model) and never cached.

Chunks are sized by time: after the first one (a few items), a chunk holds as many items as take
about ``COMMIT_SECONDS`` to score (never more than the benchmark's ``chunk_size``), so an
interruption loses at most that much work however slow the items are.  A run holds the
evaluation key's lock while it scores, so a second run of the same evaluation on the same store
waits and then reuses the items instead of scoring them again.

With a ``shard`` (``harness run --shard i/N``), only the items that shard owns are scored (see
``harness.lib.shards``), under a lock of their own: shards of one evaluation run side by side, and
a later unsharded run reuses all their items.
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
from harness.lib.model_api import ModelAPI, model_api
from harness.lib.models import LoadedModel, ModelRef
from harness.lib.prompting import PromptCost, PromptSpec, prompt_cost, prompt_material, prompted
from harness.lib.shards import Shard
from harness.lib.store import Store, cache_key
from harness.types import BenchmarkResult, Conversation, ItemResult


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


@dataclass(frozen=True)
class PromptVariant:
    """A prompting arm's variants (innermost first) over its example pool (the curated data)."""

    specs: tuple[PromptSpec, ...]
    pool: tuple[Conversation, ...]
    seed: int

    def _seed(self, spec: PromptSpec) -> int:
        return self.seed if spec.seed is None else spec.seed

    def material(self) -> list[dict[str, Any]]:
        return [prompt_material(spec, self.pool, self._seed(spec)) for spec in self.specs]

    def cost(self, api: ModelAPI, items_messages: Sequence[Sequence[dict[str, str]]]) -> PromptCost:
        """What the variants add to each of these conversations, on the inner model ``api``: the
        examples' tokens of every layer summed, the whole prompt's mean input tokens, and the
        examples' share of the context (one layer: exactly ``prompt_cost``; none: the zero-shot
        prompt, no examples)."""
        if not self.specs:
            inputs = [len(api.encode(api.render_chat(list(m)))) for m in items_messages]
            return PromptCost(0.0, sum(inputs) / len(inputs), 0.0)
        layers = []
        for spec in self.specs:
            layers.append(prompt_cost(api, spec, self.pool, self._seed(spec), items_messages))
            api = prompted(api, spec, self.pool, self._seed(spec))
        examples = sum(c.example_tokens for c in layers)
        return PromptCost(examples, layers[-1].mean_input_tokens, examples / api.tokenizer_facts().max_length)

    def wrap(self, model: LoadedModel) -> LoadedModel:
        """The same loaded model, its API seen through every variant."""
        api = model_api(model)
        for spec in self.specs:
            api = prompted(api, spec, self.pool, self._seed(spec))
        return replace(model, api=api)


@dataclass
class Evaluator:
    """Scores benchmarks on one model through the store; loads the model only when needed.

    A prompting arm's evaluator takes its ``variant`` and the ``source`` of its inner arm's
    loaded model, so the model is loaded once for an arm and all its variants."""

    store: Store
    backend: Backend
    ref: ModelRef
    console: RunConsole
    use_cache: bool = True
    shard: Shard | None = None
    """Score only this shard's items (and return only them)."""
    _model: LoadedModel | None = None
    variant: PromptVariant | None = None
    source: Callable[[], LoadedModel] | None = None

    def material(self, bench: Benchmark) -> dict[str, Any]:
        material: dict[str, Any] = {
            "model": self.ref.fingerprint,
            "backend": self.backend.cache_material_for(self.ref),
            "benchmark": bench.cache_material(),
            "items": bench.items_digest(),
        }
        if self.variant is not None:
            material["prompt"] = self.variant.material()
        return material

    def model(self) -> LoadedModel:
        if self._model is None:
            inner = self.source() if self.source is not None else self.backend.load(self.ref)
            self._model = self.variant.wrap(inner) if self.variant is not None else inner
        return self._model

    def release(self) -> None:
        """Drop the model; one this evaluator loaded also releases what it holds outside the
        process (a server it started), so one model at a time runs."""
        model, self._model = self._model, None
        if model is not None and self.source is None:
            close = getattr(getattr(model, "api", None), "close", None)
            if callable(close):
                close()
        del model
        gc.collect()

    def run(self, label: str, bench: Benchmark) -> BenchmarkResult:
        """All items of ``bench`` for this model: cached ones reused, the rest scored in chunks."""
        material = self.material(bench)
        key = cache_key("evaluate", material)[0]
        items = bench.items()
        if self.shard is not None:
            items = [item for item in items if self.shard.owns(item["id"])]
        cached = self.store.cached_items("evaluate", material) if self.use_cache else {}
        todo = [item for item in items if item["id"] not in cached]
        if todo:

            def waiting() -> None:
                self.console.stage("evaluate", f"{label} / {self.ref.label}: waiting for another run that is evaluating it", style="yellow")

            part = "" if self.shard is None else f"shard-{self.shard.index}-of-{self.shard.count}"
            with self.store.lock("evaluate", key, on_wait=waiting, part=part):
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

"""The evaluation cache: every key component matters, and models never share entries."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness.plugin.components import Backend, Benchmark, ComponentConfig, RunContext
from harness.lib.console import RunConsole
from harness.stages.evaluate import Evaluator
from harness.lib.models import LoadedModel, ModelRef
from harness.lib.store import Store
from harness.types import ItemResult


class _Backend(Backend):
    name = "counting_backend"

    def load(self, ref, *, trainable=False):
        return LoadedModel(ref, None, None, ref.dtype)


class _Config(ComponentConfig):
    offset: int = 0
    n: int = 6


class _Bench(Benchmark):
    """Scores item i as (i + offset + len(model label)) % 2; counts what it scores."""

    name = "counting"
    Config = _Config
    chunk_size = 4
    scored: list[str] = []

    def items(self):
        return [{"id": f"i{i}", "text": f"q{i}"} for i in range(self.config.n)]

    def evaluate(self, model, items, progress):
        type(self).scored.extend(f"{model.ref.label}:{it['id']}" for it in items)
        shift = self.config.offset + len(model.ref.fingerprint)
        return [ItemResult(it["id"], "", "", float((int(it["id"][1:]) + shift) % 2)) for it in items]


@pytest.fixture
def setup(tmp_path: Path):
    _Bench.scored = []
    store = Store(tmp_path / "store")
    ctx = RunContext(tmp_path, tmp_path)
    ref = ModelRef("a", tmp_path, "counting_backend", "float32", None, "fingerprint-a")

    def run(ref=ref, config=_Config(), backend_config=None, use_cache=True):
        backend = _Backend(ComponentConfig(), ctx)
        if backend_config is not None:
            backend.cache_material_for = lambda r: {**backend_config, "dtype": r.dtype}
        evaluator = Evaluator(store, backend, ref, RunConsole(), use_cache)
        return evaluator.run("bench", _Bench(config, ctx))

    return run, ref


def test_unchanged_evaluation_is_served_from_the_cache(setup) -> None:
    run, _ = setup
    first = run()
    assert not first.from_cache and len(_Bench.scored) == 6
    second = run()
    assert second.from_cache and second.items == first.items and len(_Bench.scored) == 6
    third = run(use_cache=False)
    assert not third.from_cache and len(_Bench.scored) == 12


@pytest.mark.parametrize(
    "mutation",
    ["model fingerprint", "adapter", "dtype", "backend config", "benchmark config", "items", "harness version"],
)
def test_each_key_component_misses(setup, monkeypatch, mutation: str) -> None:
    run, ref = setup
    run()
    before = len(_Bench.scored)
    if mutation == "model fingerprint":
        result = run(ref=replace(ref, fingerprint="fingerprint-b"))
    elif mutation == "adapter":
        result = run(ref=replace(ref, fingerprint=ref.fingerprint + "+adapter:x"))
    elif mutation == "dtype":
        result = run(ref=replace(ref, dtype="bfloat16"))
    elif mutation == "backend config":
        result = run(backend_config={"component": "counting_backend", "config": {"device": "cuda"}})
    elif mutation == "benchmark config":
        result = run(config=_Config(offset=1))
    elif mutation == "items":
        result = run(config=_Config(n=7))
    else:
        monkeypatch.setattr("harness.lib.store.__version__", "999")
        result = run()
    assert not result.from_cache and result.cached_items == 0
    assert len(_Bench.scored) - before == len(result.items)


def test_two_models_in_one_store_never_share_results(setup) -> None:
    run, ref = setup
    a = run()
    b = run(ref=replace(ref, label="b", fingerprint="fingerprint-bb"))
    assert not b.from_cache
    assert [i.score for i in a.items] != [i.score for i in b.items]  # the scores really differ
    assert run().items == a.items and run(ref=replace(ref, label="b", fingerprint="fingerprint-bb")).items == b.items


# ------------------------------------------------------------------- commits every few seconds


def test_chunk_sizes_follow_the_time_an_item_takes() -> None:
    from harness.stages.evaluate import next_chunk_size

    assert next_chunk_size(64, 0.001) == 64  # fast items: the benchmark's own chunk
    assert next_chunk_size(64, 0.2) == 24  # 5 s of work, rounded down to a multiple of 8
    assert next_chunk_size(64, 1.5) == 3
    assert next_chunk_size(64, 60.0) == 1  # one slow item: commit after each
    assert next_chunk_size(4, 0.01) == 4


def test_slow_items_are_committed_every_few_seconds(tmp_path: Path, monkeypatch) -> None:
    """With items that take 2 s each (a fake clock), every commit holds at most ~5 s of work."""
    import harness.stages.evaluate as evaluate

    clock = [0.0]
    monkeypatch.setattr(evaluate.time, "perf_counter", lambda: clock[0])
    commits: list[int] = []

    class Slow(_Bench):
        chunk_size = 64

        def evaluate(self, model, items, progress):
            clock[0] += 2.0 * len(items)
            return super().evaluate(model, items, progress)

    store = Store(tmp_path / "store")
    put = store.put_items
    monkeypatch.setattr(store, "put_items", lambda kind, material, values: commits.append(len(values)) or put(kind, material, values))
    ctx = RunContext(tmp_path, tmp_path)
    ref = ModelRef("a", tmp_path, "counting_backend", "float32", None, "fingerprint-a")
    Evaluator(store, _Backend(ComponentConfig(), ctx), ref, RunConsole()).run("slow", Slow(_Config(n=20), ctx))
    assert sum(commits) == 20
    assert commits[0] == 4 and all(2.0 * n <= 5.0 for n in commits[1:]), commits

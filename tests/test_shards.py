"""Item shards: a stable split of any item ids, and sharded evaluations that run side by side
and leave a store from which an unsharded run takes every item without scoring it again."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from harness.errors import ConfigError
from harness.lib.console import RunConsole
from harness.lib.models import ModelRef
from harness.lib.shards import Shard, shard_of
from harness.lib.store import Store, cache_key
from harness.plugin.components import ComponentConfig, RunContext
from harness.stages.evaluate import Evaluator
from test_evaluate import _Backend, _Bench, _Config


def test_parse_and_reject() -> None:
    assert Shard.parse(" 3/8 ") == Shard(3, 8) and str(Shard(3, 8)) == "3/8"
    for text in ("8/8", "-1/8", "1/0", "1of8", "a/b", "1/2/3"):
        with pytest.raises(ConfigError, match="numbered from 0"):
            Shard.parse(text)


def test_every_item_belongs_to_exactly_one_shard_of_similar_size() -> None:
    ids = [f"mmlu/{i:05d}" for i in range(2000)]
    shards = [Shard(i, 8) for i in range(8)]
    owners = Counter(sum(s.owns(x) for s in shards) for x in ids)
    assert owners == Counter({1: 2000})
    sizes = [sum(s.owns(x) for x in ids) for s in shards]
    assert min(sizes) > 180 and max(sizes) < 320, sizes  # 250 each on average


def test_the_split_depends_on_the_id_alone() -> None:
    """Fixed values: every process (any PYTHONHASHSEED, any item order) and every release agrees;
    a change here would make the shards of two workers disagree."""
    expected = [1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    assert [shard_of(f"item-{i:02d}", 2) for i in range(12)] == expected
    assert [shard_of(x, 4) for x in ("a", "b", "item-07", "é")] == [2, 2, 0, 3]
    code = "from harness.lib.shards import shard_of; print([shard_of(f'item-{i:02d}', 2) for i in range(12)])"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert other.stdout.strip() == str(expected)


@pytest.fixture
def evaluate(tmp_path: Path):
    _Bench.scored = []
    ctx = RunContext(tmp_path, tmp_path)
    ref = ModelRef("a", tmp_path, "counting_backend", "float32", None, "fingerprint-a")
    out = io.StringIO()

    def run(store: Store, shard: Shard | None = None, n: int = 40):
        evaluator = Evaluator(store, _Backend(ComponentConfig(), ctx), ref, RunConsole(Console(file=out)), True, shard)
        return evaluator.run("bench", _Bench(_Config(n=n), ctx))

    run.out = out  # type: ignore[attr-defined]
    run.ctx = ctx  # type: ignore[attr-defined]
    return run


def test_shards_then_an_unsharded_run_equal_one_unsharded_run(tmp_path: Path, evaluate) -> None:
    reference = evaluate(Store(tmp_path / "reference"))
    _Bench.scored = []
    store = Store(tmp_path / "sharded")
    parts = [evaluate(store, Shard(i, 3)) for i in range(3)]
    assert sorted(i.item_id for p in parts for i in p.items) == sorted(i.item_id for i in reference.items)
    assert all(p.items and not p.from_cache for p in parts)
    gathered = evaluate(store)
    assert gathered.from_cache and gathered.items == reference.items and gathered.cache_key == reference.cache_key
    assert sorted(_Bench.scored) == sorted(set(_Bench.scored)) and len(_Bench.scored) == 40  # each item once
    again = evaluate(store, Shard(1, 3))  # a shard run again (a resumed worker) scores nothing
    assert again.from_cache and len(_Bench.scored) == 40


def test_shards_of_one_evaluation_do_not_wait_for_each_other(tmp_path: Path, evaluate) -> None:
    store = Store(tmp_path / "store")
    ref = ModelRef("a", tmp_path, "counting_backend", "float32", None, "fingerprint-a")
    evaluator = Evaluator(store, _Backend(ComponentConfig(), evaluate.ctx), ref, RunConsole())
    key = cache_key("evaluate", evaluator.material(_Bench(_Config(n=40), evaluate.ctx)))[0]
    with store.lock("evaluate", key), store.lock("evaluate", key, part="shard-0-of-2"):
        assert evaluate(store, Shard(1, 2)).items  # neither the whole key's lock nor shard 0's blocks it
        waiting = threading.Thread(target=lambda: evaluate(Store(store.root), Shard(0, 2)), daemon=True)
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive() and "waiting for another run" in evaluate.out.getvalue()
    waiting.join(10)
    assert not waiting.is_alive()

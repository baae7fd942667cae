"""The SQLite store: a content-addressed cache that never serves a wrong entry, and run records."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness.lib.store import Store, cache_key, canonical_json
from harness.types import (
    BenchmarkResult,
    Comparison,
    Decision,
    Dropped,
    ItemResult,
    Ledger,
    Quarantined,
    StageLedger,
    Verdict,
)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store")
    yield s
    s.close()


MATERIAL = {
    "model": "sha256:model-a",
    "backend": {"component": "hf", "config": {}, "dtype": "float32"},
    "benchmark": {"component": "mmlu", "config": {"per_subject": 1, "seed": 0}},
    "items": "sha256:items",
}
VALUE = {"items": [{"item_id": "q1", "prediction": "A", "reference": "B", "score": 0.0}]}


def changed(path: tuple[str, ...], value) -> dict:
    material = json.loads(json.dumps(MATERIAL))
    node = material
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return material


def test_cache_round_trip(store):
    key = store.cache_put("evaluate", MATERIAL, VALUE)
    assert store.cache_get("evaluate", MATERIAL) == VALUE
    assert key == cache_key("evaluate", MATERIAL)[0]
    assert len(key) == 64


def test_cache_ignores_key_order(store):
    store.cache_put("evaluate", MATERIAL, VALUE)
    reordered = dict(reversed(list(MATERIAL.items())))
    assert store.cache_get("evaluate", reordered) == VALUE


def test_cache_miss_on_empty_store(store):
    assert store.cache_get("evaluate", MATERIAL) is None


@pytest.mark.parametrize(
    "path, value",
    [
        (("model",), "sha256:model-b"),
        (("items",), "sha256:other-items"),
        (("backend", "dtype"), "bfloat16"),
        (("backend", "component"), "vllm"),
        (("benchmark", "config", "per_subject"), 2),
        (("benchmark", "config", "seed"), 1),
        (("benchmark", "config", "new_option"), True),
    ],
)
def test_changing_any_material_field_misses(store, path, value):
    store.cache_put("evaluate", MATERIAL, VALUE)
    assert store.cache_get("evaluate", changed(path, value)) is None
    assert store.cache_get("evaluate", MATERIAL) == VALUE  # the original is still served


def test_kind_is_part_of_the_key(store):
    store.cache_put("evaluate", MATERIAL, VALUE)
    assert store.cache_get("train", MATERIAL) is None


def test_different_model_fingerprints_never_share_an_entry(store):
    a, b = changed(("model",), "sha256:aaa"), changed(("model",), "sha256:bbb")
    store.cache_put("evaluate", a, {"score": 1})
    assert store.cache_get("evaluate", b) is None
    store.cache_put("evaluate", b, {"score": 2})
    assert store.cache_get("evaluate", a) == {"score": 1}
    assert store.cache_get("evaluate", b) == {"score": 2}
    assert store.db.execute("SELECT COUNT(*) FROM cache").fetchone()[0] == 2


def test_row_with_different_material_is_not_served(store):
    key = store.cache_put("evaluate", MATERIAL, VALUE)
    # a colliding (or stale) row: same key, but the stored material is not the request's
    stale = cache_key("evaluate", changed(("model",), "sha256:someone-else"))[1]
    with store.db:
        store.db.execute("UPDATE cache SET material = ? WHERE key = ?", (stale, key))
    assert store.cache_get("evaluate", MATERIAL) is None


def test_cache_survives_reopening(tmp_path):
    first = Store(tmp_path / "s")
    first.cache_put("train", MATERIAL, VALUE)
    first.close()
    second = Store(tmp_path / "s")
    try:
        assert second.cache_get("train", MATERIAL) == VALUE
    finally:
        second.close()


def test_canonical_json_refuses_nan():
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"score": float("nan")})


# --------------------------------------------------------------------------- run records


def test_run_rows_are_written(store, tmp_path):
    ledger = Ledger(
        stages=[StageLedger("read d.jsonl", n_in=3, kept=1, dropped=1, quarantined=1,
                            reasons=Counter({"quarantined: invalid JSON": 1}))],
        dropped=[Dropped("d.jsonl:2", "exact_dedup", "duplicate", "same as d.jsonl:1")],
        quarantined=[Quarantined("d.jsonl:3", "invalid JSON", "{")],
    )
    items = (ItemResult("q1", "A", "A", 1.0), ItemResult("q2", "C", "B", 0.0))
    bench = BenchmarkResult("mmlu", "candidate", "accuracy", items, cache_key="k")
    comparison = Comparison("mcnemar", 2, 0.5, 0.5, 0.0, -0.4, 0.4, 1.0, 0.9, 0.05, {"lost": 0.0, "won": 0.0})
    decisions = [
        Decision("mmlu", "mmlu", "non_inferior(margin=0.02)", Verdict.INCONCLUSIVE, "too few", False, comparison),
        Decision("intent", "intent", "superior(margin=0)", Verdict.ERROR, "candidate: boom"),
    ]

    store.start_run("r1", "demo", Path("suites/demo.yaml"))
    store.save_ledger("r1", ledger)
    store.save_items("r1", "knowledge", bench)
    store.save_decisions("r1", decisions)
    store.finish_run("r1", 3, tmp_path / "reports" / "r1")

    run = store.db.execute("SELECT suite, suite_path, exit_code, report_dir, finished >= started FROM runs").fetchall()
    assert run == [("demo", "suites/demo.yaml", 3, str(tmp_path / "reports" / "r1"), 1)]

    (stored,) = store.db.execute("SELECT ledger FROM ledgers WHERE run_id = 'r1'").fetchone()
    assert Ledger.from_json(json.loads(stored)) == ledger

    rows = store.db.execute(
        "SELECT benchmark, model, item_id, prediction, reference, score FROM items ORDER BY item_id"
    ).fetchall()
    assert rows == [("knowledge", "candidate", "q1", "A", "A", 1.0), ("knowledge", "candidate", "q2", "C", "B", 0.0)]

    rows = store.db.execute("SELECT gate, verdict, decision FROM decisions ORDER BY gate").fetchall()
    assert [(g, v) for g, v, _ in rows] == [("intent", "error"), ("mmlu", "inconclusive")]
    mmlu = json.loads(rows[1][2])
    assert mmlu["blocking"] is False
    assert mmlu["comparison"]["ci_low"] == -0.4
    assert json.loads(rows[0][2])["comparison"] is None


def test_items_of_a_rerun_replace_not_duplicate(store):
    items = (ItemResult("q1", "A", "A", 1.0),)
    store.save_items("r1", "mmlu", BenchmarkResult("mmlu", "baseline", "accuracy", items, "k"))
    store.save_items("r1", "mmlu", BenchmarkResult("mmlu", "baseline", "accuracy", items, "k"))
    assert store.db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 1


def test_starting_the_same_run_twice_fails(store):
    import sqlite3

    store.start_run("r1", "demo", Path("a.yaml"))
    with pytest.raises(sqlite3.IntegrityError):
        store.start_run("r1", "demo", Path("a.yaml"))


def test_item_cache_round_trips_raw_output_and_prompt(store):
    item = ItemResult("q1", "refund", "refund", 1.0, raw=" refund\n", prompt="Classify: money back")
    store.put_items("evaluate", {"m": 1}, {"q1": item.__dict__})
    assert ItemResult(**store.cached_items("evaluate", {"m": 1})["q1"]) == item


def test_result_documents_are_kept_per_run(store, tmp_path):
    store.start_run("r1", "demo", tmp_path / "demo.yaml")
    store.start_run("r2", "other", tmp_path / "other.yaml")
    doc = {"schema": "x", "score": float("nan"), "text": "héllo"}
    store.save_result("r1", "demo", doc)
    loaded = store.load_result("r1")
    assert loaded["text"] == "héllo" and loaded["score"] != loaded["score"]  # NaN survives
    assert store.load_result("r2") is None
    assert [(r["run_id"], r["has_result"]) for r in store.list_runs()] == [("r1", True), ("r2", False)]
    assert [r["run_id"] for r in store.list_runs("other")] == ["r2"]


def _count_elsewhere(db: Path) -> int:
    """Items another process sees in the store (it opens, reads and closes its own connection)."""
    import subprocess
    import sys

    code = f"import sqlite3; d = sqlite3.connect({str(db)!r}); print(d.execute('SELECT count(*) FROM item_cache').fetchone()[0]); d.close()"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def test_commits_stay_visible_to_other_processes_after_checking_the_open_store(store):
    """Checking a store this process holds open (a run's preflight) must not drop SQLite's locks:
    another process would then reset the WAL, and this one's later commits stayed invisible
    until it exited (an interrupted evaluation looked as if nothing had been committed)."""
    from harness.suite.preflight import check_store

    store.put_items("evaluate", MATERIAL, {"q1": {"v": 1}})
    assert check_store(store.root, where="suite.yaml") == []
    assert _count_elsewhere(store.path) == 1
    store.put_items("evaluate", MATERIAL, {"q2": {"v": 2}})
    assert _count_elsewhere(store.path) == 2
    second = Store(store.root)  # a second store on the same file, in the same process
    second.close()
    store.put_items("evaluate", MATERIAL, {"q3": {"v": 3}})
    assert _count_elsewhere(store.path) == 3


def test_the_header_of_a_closed_store_is_read_from_the_file(tmp_path):
    from harness.lib.store import SQLITE_HEADER, read_header

    s = Store(tmp_path / "s")
    s.close()
    assert read_header(s.path) == SQLITE_HEADER
    s.path.write_bytes(b"not a database at all")
    assert read_header(s.path) == b"not a database a"

"""``harness run --shards 2`` on real processes: two workers score disjoint item shards side by
side into one store, each item once, and the gathering run gates with the results of an
unsharded run; ``--shard i/N`` alone scores its shard and stops without gating."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.lib.shards import Shard
from harness.run.shards import gpu_devices, self_command, worker_env

CLI = Path(__file__).parents[1] / "fixtures" / "slow_cli.py"
ROOT = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, harness_tiny_model_dir: Path) -> Path:
    import yaml

    folder = tmp_path_factory.mktemp("shards")
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Spell {i}.", "output": f"{i}."}) + "\n" for i in range(8)))
    suite = {
        "name": "shards",
        "seed": 3,
        "model": {"source": str(harness_tiny_model_dir), "dtype": "float32"},
        "data": [{"path": str(data), "format": "alpaca"}],
        "train": {"name": "lora", "r": 4, "max_steps": 2, "batch_size": 4, "max_length": 64},
        "evaluate": {"slow": "slow"},
        "gates": {"slow": "no_regression()"},
        "report": ["json"],
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def _harness(suite: Path, folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "SLOW_LOG": str(folder / "scored.log")}
    cmd = [sys.executable, str(CLI), "run", str(suite), "--store", str(folder / "store"), "--reports", str(folder / "reports"), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _result(folder: Path) -> dict:
    (path,) = (folder / "reports").glob("*/result.json")
    result = json.loads(path.read_text())
    return {
        "exit_code": result["exit_code"],
        "fingerprints": {label: text.rsplit("[", 1)[1] for label, text in result["models"].items()},
        "items": {model: r["items"] for model, r in result["benchmarks"]["slow"].items()},
        "decisions": [(d["gate"], d["verdict"], d["comparison"]) for d in result["decisions"]],
    }


def _statuses(folder: Path) -> list[str]:
    db = sqlite3.connect(folder / "store" / "store.sqlite")
    try:
        return [row[0] for row in db.execute("SELECT status FROM runs ORDER BY started")]
    finally:
        db.close()


def test_two_workers_then_gate_equal_an_unsharded_run(tmp_path: Path, suite: Path) -> None:
    plain = _harness(suite, tmp_path / "plain")
    assert plain.returncode in (0, 1), plain.stdout + plain.stderr

    sharded = _harness(suite, tmp_path / "sharded", "--shards", "2")
    assert sharded.returncode == plain.returncode, sharded.stdout + sharded.stderr
    out = sharded.stdout
    assert "0/2: exit 0" in out and "1/2: exit 0" in out, out
    assert "slow / baseline: " in out and out.count("(from cache)") == 2, out  # the gathering run scored nothing
    assert _result(tmp_path / "sharded") == _result(tmp_path / "plain")

    scored = Counter((tmp_path / "sharded" / "scored.log").read_text().splitlines())
    assert set(scored.values()) == {1} and len(scored) == 2 * 24  # every item of both models, once
    logs = sorted((tmp_path / "sharded" / "reports").glob("shards-*/shard-*-of-2.log"))
    assert [p.name for p in logs] == ["shard-0-of-2.log", "shard-1-of-2.log"]
    # one worker trained, the other waited for it and reused the adapter
    texts = [p.read_text() for p in logs]
    assert sum("training: 2/2" in t for t in texts) == 1, texts
    assert sum("waiting for another run that is training" in t and "from cache" in t for t in texts) == 1, texts
    assert _statuses(tmp_path / "sharded") == ["shard", "shard", "finished"]


def test_one_shard_scores_its_items_and_does_not_gate(tmp_path: Path, suite: Path) -> None:
    done = _harness(suite, tmp_path, "--shard", "1/2")
    assert done.returncode == 0, done.stdout + done.stderr
    mine = sorted(f"item-{i:02d}" for i in range(24) if Shard(1, 2).owns(f"item-{i:02d}"))
    scored = (tmp_path / "scored.log").read_text().splitlines()
    assert sorted(line.split()[1] for line in scored if line.startswith("baseline ")) == mine
    assert f"1/2: {2 * len(mine)} items in the store" in done.stdout, done.stdout  # both models' share
    assert " gate " not in done.stdout and "decision" not in done.stdout, done.stdout
    assert not list((tmp_path / "reports").glob("*/result.json"))
    assert _statuses(tmp_path) == ["shard"]

    bad = _harness(suite, tmp_path, "--shard", "2/2")
    assert bad.returncode == 2 and "the index must be 0 to 1" in bad.stderr, bad.stderr


def test_workers_are_pinned_to_gpus_round_robin() -> None:
    assert gpu_devices({"CUDA_VISIBLE_DEVICES": "4, 6"}) == ["4", "6"]
    assert [worker_env(i, 3, ["4", "6"], {})["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["4", "6", "4"]
    assert worker_env(0, 2, [], {"OMP_NUM_THREADS": "3"}) == {}  # the user's setting stands
    assert worker_env(0, 2, [], {})["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))


def test_workers_are_launched_through_the_command_that_started_this_process(monkeypatch) -> None:
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-X", "dev", "wrapper.py", "run", "s.yaml", "--shards", "2"])
    assert self_command(["run", "s.yaml", "--shards", "2"]) == [sys.executable, "-X", "dev", "wrapper.py"]
    assert self_command(["run", "other.yaml"]) == [sys.executable, "-m", "harness.cli"]  # called in-process


def test_interrupting_the_launcher_stops_its_workers(tmp_path: Path, suite: Path) -> None:
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "SLOW_LOG": str(tmp_path / "scored.log")}
    cmd = [sys.executable, str(CLI), "run", str(suite), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "reports"), "--shards", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not ((tmp_path / "scored.log").exists() and len((tmp_path / "scored.log").read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("harness: interrupted by SIGINT (exit 130)"), err
    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "reports").glob("shards-*/shard-*-of-2.log")))
    assert _statuses(tmp_path) == ["interrupted", "interrupted"], logs  # both workers recorded it, and stopped
    db = sqlite3.connect(tmp_path / "store" / "store.sqlite")
    assert {row[0] for row in db.execute("SELECT exit_code FROM runs")} == {143}
    db.close()

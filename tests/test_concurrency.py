"""Two ``harness run`` of the same suite on one store, started at the same moment (CI jobs that
share a cache): both exit with the gates' code, their results are identical, and the candidate is
trained once (the other run waits for it, then reuses it).  Repeated on five fresh stores, each
pair with another ``PYTHONHASHSEED``: the adapter trained in each store has the same fingerprint,
although peft writes ``target_modules`` in hash order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPEATS = 5
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]

ROOT = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")) if p)
"""This checkout's harness first, whichever one is installed."""


@pytest.fixture
def suite(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> Path:
    data = tmp_path / "train.jsonl"
    rows = [{"instruction": f"What is {i} plus {i}?", "output": f"It is {2 * i}."} for i in range(24)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return harness_write_suite(
        {
            "name": "shared",
            "seed": 3,
            "model": {"source": str(harness_tiny_model_dir), "dtype": "float32"},
            "data": [{"path": str(data), "format": "alpaca"}],
            "train": {"name": "lora", "r": 4, "max_steps": 4, "batch_size": 4, "max_length": 64, "save_every": 2, "target_modules": TARGETS},
            "evaluate": {"ppl": {"name": "perplexity", "windows": 6, "span_chars": 200, "context_chars": 100, "window": 64, "stride": 32}},
            "gates": {"ppl": "no_regression()"},
            "report": ["json"],
        }
    )


def _start(suite: Path, store: Path, reports: Path, hash_seed: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "harness.cli", "run", str(suite), "--store", str(store), "--reports", str(reports)]
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": str(hash_seed)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _comparable(result: dict) -> dict:
    """What two runs of the same suite must agree on (not run ids, timings or cache origins)."""
    benchmarks = {
        label: {model: {"summary": r["summary"], "items": r["items"]} for model, r in by_model.items()}
        for label, by_model in result["benchmarks"].items()
    }
    decisions = [{k: d[k] for k in ("gate", "verdict", "comparison")} for d in result["decisions"]]
    return {"exit_code": result["exit_code"], "models": result["models"], "benchmarks": benchmarks, "decisions": decisions}


def test_two_runs_on_one_store_train_once_and_agree(tmp_path: Path, suite: Path) -> None:
    fingerprints, orders, waits = set(), set(), 0
    for repeat in range(REPEATS):
        store, reports = tmp_path / f"store-{repeat}", tmp_path / f"reports-{repeat}"
        procs = [_start(suite, store, reports, hash_seed=repeat) for _ in range(2)]
        outputs = [p.communicate(timeout=600) for p in procs]
        for proc, (out, err) in zip(procs, outputs):
            assert proc.returncode in (0, 1), f"exit {proc.returncode}\n{out}\n{err}"
        results = [json.loads(p.read_text()) for p in sorted(reports.glob("*/result.json"))]
        assert len(results) == 2
        assert {p.returncode for p in procs} == {r["exit_code"] for r in results} and len({p.returncode for p in procs}) == 1
        assert _comparable(results[0]) == _comparable(results[1])
        # trained once: one run trained, the other took it from the store; one training folder
        assert sorted(r["train"]["from_cache"] for r in results) == [False, True]
        assert len(list(store.glob("artifacts/train/*/adapter"))) == 1
        waits += sum("waiting for another run that is training the same candidate" in out for out, _ in outputs)
        fingerprints.add(results[0]["models"]["candidate"].rsplit("[", 1)[1])
        (config,) = store.glob("artifacts/train/*/adapter/adapter_config.json")
        orders.add(tuple(json.loads(config.read_text())["target_modules"]))
    assert waits > 0, "the runs never overlapped: the lock was not exercised"
    assert len(orders) > 1, "the hash seeds did not change peft's module order; the fingerprint check proves nothing"
    assert len(fingerprints) == 1, fingerprints

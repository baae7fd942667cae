"""SIGINT and SIGTERM, during training and during evaluation, on real ``harness run`` processes:
exit 130 / 143 with a line saying what the store kept, the run marked ``interrupted`` in the
store, and the next run resumes (training from its saved state, evaluation without rescoring a
committed item) and ends with the results of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

CLI = Path(__file__).parent / "fixtures" / "slow_cli.py"
STEPS = 8  # one epoch of 32 records in batches of 4

ROOT = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")) if p)
"""This checkout's harness first, whichever one is installed."""


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, harness_tiny_model_dir: Path) -> Path:
    import yaml

    folder = tmp_path_factory.mktemp("interrupt")
    data = folder / "train.jsonl"
    rows = [{"instruction": f"Spell {i}.", "output": f"{i} is spelled {i}."} for i in range(32)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = {
        "name": "interrupt",
        "seed": 5,
        "model": {"source": str(harness_tiny_model_dir), "dtype": "float32"},
        "data": [{"path": str(data), "format": "alpaca"}],
        "train": {"name": "lora", "r": 4, "dropout": 0.1, "max_steps": STEPS, "batch_size": 4, "max_length": 64, "save_every": 1},
        "evaluate": {"slow": "slow"},
        "gates": {"slow": "no_regression()"},
        "report": ["json"],
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


class Run:
    def __init__(self, suite: Path, store: Path, reports: Path, log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "SLOW_LOG": str(log)}
        cmd = [sys.executable, str(CLI), "run", str(suite), "--store", str(store), "--reports", str(reports)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_until(self, ready: Callable[[], bool], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, f"the run ended first:\n{self.proc.communicate()}"
            assert time.monotonic() < deadline, "timed out waiting for the run"
            time.sleep(0.05)

    def finish(self, sig: int | None = None) -> tuple[int, str, str]:
        if sig is not None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=300)
        return self.proc.returncode, out, err


def _latest_step(store: Path) -> int:
    return max((int(p.name.split("-")[1]) for p in store.glob("artifacts/train/*/state/step-*")), default=0)


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _committed(store: Path) -> set[tuple[str, str]]:
    """(evaluation key, item id) of every item the store holds."""
    if not (store / "store.sqlite").exists():
        return set()
    db = sqlite3.connect(store / "store.sqlite")
    try:
        return set(db.execute("SELECT key, item_id FROM item_cache"))
    finally:
        db.close()


def _run_rows(store: Path) -> list[tuple[str, int]]:
    db = sqlite3.connect(store / "store.sqlite")
    try:
        return list(db.execute("SELECT status, exit_code FROM runs ORDER BY started"))
    finally:
        db.close()


def _comparable(reports: Path) -> dict:
    (path,) = reports.glob("*/result.json")
    result = json.loads(path.read_text())
    return {
        "exit_code": result["exit_code"],
        "fingerprints": {label: text.rsplit("[", 1)[1] for label, text in result["models"].items()},
        "items": {model: r["items"] for model, r in result["benchmarks"]["slow"].items()},
        "decisions": [(d["gate"], d["verdict"], d["comparison"]) for d in result["decisions"]],
    }


@pytest.fixture(scope="module")
def reference(suite: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("reference")
    code, out, err = Run(suite, folder / "store", folder / "reports", folder / "log").finish()
    assert code in (0, 1), out + err
    return _comparable(folder / "reports")


def _kept_line(err: str, sig: int) -> str:
    line = err.strip().splitlines()[-1]
    name = signal.Signals(sig).name
    assert re.fullmatch(rf"harness: interrupted by {name} \(exit {128 + sig}\); the store .* keeps .*; run \S+ is marked interrupted, and the same command resumes it", line), line
    return line


def test_interrupts_in_training_and_evaluation_then_resume(tmp_path: Path, suite: Path, reference: dict) -> None:
    store, log = tmp_path / "store", tmp_path / "scored.log"

    def start(n: int) -> Run:
        return Run(suite, store, tmp_path / f"reports-{n}", log)

    # 1. SIGINT while training, once two steps are saved
    run = start(1)
    run.wait_until(lambda: _latest_step(store) >= 2)
    code, _out, err = run.finish(signal.SIGINT)
    assert code == 130, err
    kept = re.search(r"keeps training state at step (\d+);", _kept_line(err, signal.SIGINT))
    assert kept, err
    first = int(kept.group(1))
    assert _run_rows(store) == [("interrupted", 130)]
    assert not list((tmp_path / "reports-1").glob("*/result.json"))

    # 2. SIGTERM while training again: it resumed from the saved state, not from step 1
    run = start(2)
    run.wait_until(lambda: _latest_step(store) >= first + 2)
    code, out, err = run.finish(signal.SIGTERM)
    assert code == 143, err
    assert "keeps training state at step" in _kept_line(err, signal.SIGTERM)
    assert f"training: {first + 1}/{STEPS} " in out and "training: 1/" not in out, out

    # 3. SIGINT while evaluating, once the first chunk is committed (seen from this process: a
    # run's commits are visible to others as it makes them, see harness.lib.store.read_header)
    run = start(3)
    run.wait_until(lambda: len(_committed(store)) >= 4 and len(_lines(log)) >= 8)
    # (the first chunk is 4 items, the next one about 5 s of them: the signal lands inside it)
    code, out, err = run.finish(signal.SIGINT)
    assert code == 130, err
    assert "training: 1/" not in out and f"training: {STEPS}/{STEPS} " in out, out
    committed = _committed(store)
    assert len({key for key, _ in committed}) == 1  # within the baseline's evaluation
    assert re.search(rf"keeps {len(committed)} scored items", _kept_line(err, signal.SIGINT)), err

    # 4. SIGTERM while evaluating again, once one more chunk is committed
    before = len(_lines(log))
    run = start(4)
    run.wait_until(lambda: len(_committed(store)) > len(committed))
    code, out, err = run.finish(signal.SIGTERM)
    assert code == 143, err
    assert "training: " not in out and "from cache" in out, out  # the training is finished and stored
    rescored = {tuple(line.split()) for line in _lines(log)[before:]}
    assert {item for _, item in committed}.isdisjoint(item for model, item in rescored if model == "baseline")
    committed = _committed(store)
    _kept_line(err, signal.SIGTERM)
    assert _run_rows(store) == [("interrupted", 130), ("interrupted", 143), ("interrupted", 130), ("interrupted", 143)]

    # 5. finishes: no committed item is scored again; the results of an uninterrupted run
    before = len(_lines(log))
    code, out, err = start(5).finish()
    assert code == reference["exit_code"], out + err
    # every item not committed, once (and since the results are complete, no committed one)
    assert len(_lines(log)[before:]) == 2 * 24 - len(committed)
    assert _comparable(tmp_path / "reports-5") == reference
    assert _run_rows(store)[-1] == ("finished", reference["exit_code"])


def test_an_interruption_a_library_swallowed_still_stops_the_run(tmp_path: Path) -> None:
    """A signal whose exception lands in code that swallows it (a ``__del__``, a callback, a broad
    ``except``) is raised again at the next checkpoint, and the run is marked interrupted, not
    finished: the flake where a sharded worker ran on to the end after its SIGTERM."""
    from harness.lib.interrupt import Interrupted, handle_signals, raise_pending, recording
    from harness.lib.store import Store

    store = Store(tmp_path / "store")
    store.start_run("r1", "suite", tmp_path / "suite.yaml")
    with pytest.raises(Interrupted) as caught, handle_signals(), recording(store, "r1"):
        try:  # what a library's ``except BaseException: pass`` does to the handler's exception
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except BaseException:
            pass
        store.put_items("eval", {"bench": "b"}, {"item-0": 1.0})  # committed, then the checkpoint raises
        store.finish_run("r1", 0, tmp_path)  # never reached
    assert caught.value.exit_code == 143
    assert store.cached_items("eval", {"bench": "b"}) == {"item-0": 1.0}  # the item scored before it is kept
    status = store.db.execute("SELECT status, exit_code FROM runs WHERE run_id = 'r1'").fetchone()
    assert tuple(status) == ("interrupted", 143)
    raise_pending()  # recorded once: nothing is pending any more

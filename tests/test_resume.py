"""A run killed with SIGKILL during evaluation resumes without recomputing finished items and
ends with the same results as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).parent / "fixtures" / "slow_eval.py"


def _start(suite: Path, tmp: Path, name: str) -> subprocess.Popen[bytes]:
    # this checkout's harness (not whichever one is installed), and the fixture's plugin module
    path = [str(SCRIPT.parent), str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    args = [sys.executable, str(SCRIPT), str(suite), str(tmp / f"store-{name.split('-')[0]}"), str(tmp / "reports"), str(tmp / f"{name}.log")]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stored_items(store: Path) -> set[str]:
    db = sqlite3.connect(store / "store.sqlite")
    try:
        return {row[0] for row in db.execute("SELECT item_id FROM item_cache")}
    finally:
        db.close()


def _result(tmp: Path) -> list[dict]:
    newest = max((tmp / "reports").iterdir(), key=lambda p: p.stat().st_mtime)
    return json.loads((newest / "result.json").read_text())["benchmarks"]["slow"]["baseline"]["items"]


def test_sigkill_during_evaluation_then_resume(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> None:
    suite = harness_write_suite(
        {
            "name": "resume",
            "model": {"source": str(harness_tiny_model_dir), "backend": "slow_backend"},
            "evaluate": {"slow": "slow"},
            "report": ["json"],
        }
    )
    reference = _start(suite, tmp_path, "reference")
    assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()
    expected = _result(tmp_path)

    first = _start(suite, tmp_path, "killed-1")
    log = tmp_path / "killed-1.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().split()) < 10):
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    finished = _stored_items(tmp_path / "store-killed")
    assert 8 <= len(finished) < 20  # at least two chunks of four were stored before the kill

    second = _start(suite, tmp_path, "killed-2")
    assert second.wait(timeout=120) == 0, second.stderr.read().decode()
    rescored = set((tmp_path / "killed-2.log").read_text().split())
    assert rescored.isdisjoint(finished)  # 0 finished items recomputed
    assert len(rescored) == 20 - len(finished)
    assert _result(tmp_path) == expected

"""Store faults a CI job meets: a 0-byte, corrupted or read-only store is a one-line error naming
the file and the fix (a 0-byte one a warning); ``harness store check`` names the problem and
``harness store repair`` sets the file aside and keeps what verifies; paths are relative to the
store, so a copied store is served from the copy; concurrent writers take per-key locks."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import StoreError
from harness.lib.console import RunConsole
from harness.lib.models import LoadedModel, ModelRef
from harness.lib.store import Store
from harness.plugin.components import Backend, ComponentConfig, RunContext, Trainer
from harness.stages.curate import CurateOutcome
from harness.stages.train import TrainStage
from harness.types import Ledger, TrainOutput

MATERIAL = {"model": "sha256:m", "items": "sha256:i"}


def _garble(path: Path, offset: int, length: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, min(offset + length, len(data))):
        data[i] = (data[i] * 7 + 13) % 256
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------- opening


def test_wal_mode_busy_timeout_and_run_status(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] >= 30000
    store.start_run("r1", "s", Path("s.yaml"))
    store.end_run("r1", "interrupted", 143)
    store.end_run("r1", "failed", 3)  # only a running run is closed
    assert store.db.execute("SELECT status, exit_code FROM runs").fetchall() == [("interrupted", 143)]
    store.close()


def test_a_store_of_an_older_version_gets_the_status_column(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "store.sqlite")
    db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, suite TEXT, suite_path TEXT, started REAL, finished REAL, exit_code INTEGER, report_dir TEXT)")
    db.execute("INSERT INTO runs VALUES ('old', 's', 's.yaml', 1, 2, 0, 'r')")
    db.commit()
    db.close()
    store = Store(tmp_path)
    assert store.db.execute("SELECT run_id, status FROM runs").fetchall() == [("old", None)]
    store.close()


def test_a_zero_byte_store_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "store.sqlite").write_bytes(b"")
    Store(tmp_path).close()
    err = capsys.readouterr().err
    assert err.startswith("harness: warning: ") and "store.sqlite is empty (0 bytes)" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("where", ["header", "page"])
def test_a_corrupted_store_is_one_line_naming_the_file_and_the_fix(tmp_path: Path, where: str) -> None:
    store = Store(tmp_path)
    store.put_items("evaluate", MATERIAL, {f"i{i}": {"text": "x" * 200} for i in range(500)})
    store.close()
    _garble(tmp_path / "store.sqlite", 0 if where == "header" else 4096 * 5, 100 if where == "header" else 4096)
    with pytest.raises(StoreError) as info:
        Store(tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'store.sqlite'}: the store is corrupted")
    assert f"harness store repair {tmp_path}" in message


def test_a_read_only_store_is_one_line(harness_readonly_folder: Path, harness_unprivileged_python) -> None:
    os.chmod(harness_readonly_folder, 0o755)
    Store(harness_readonly_folder / "store").close()
    os.chmod(harness_readonly_folder / "store", 0o555)
    os.chmod(harness_readonly_folder / "store" / "store.sqlite", 0o444)
    code = (
        "import sys; from pathlib import Path; from harness.lib.store import Store\n"
        f"try: Store(Path({str(harness_readonly_folder / 'store')!r}))\n"
        "except Exception as exc: print(type(exc).__name__, exc)\n"
    )
    done = harness_unprivileged_python(code)
    os.chmod(harness_readonly_folder / "store", 0o755)
    assert done.stdout.startswith("StoreError ") and "the store is read-only" in done.stdout, done.stdout + done.stderr
    assert str(harness_readonly_folder / "store") in done.stdout and len(done.stdout.splitlines()) == 1


def test_the_cli_reports_a_corrupted_store_before_any_work(tmp_path: Path, harness_write_suite, capsys) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "store.sqlite").write_bytes(b"not a database at all" * 10)
    suite = harness_write_suite({"name": "s", "model": "smollm2-135m-instruct"})
    for extra in ([], ["--no-cache"]):
        code = main(["run", str(suite), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "r"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "store.sqlite: the store is corrupted (not an SQLite database)" in err and "harness store repair" in err


# --------------------------------------------------------------------------------- locks


def test_a_second_holder_of_a_key_waits_for_the_first(tmp_path: Path) -> None:
    store = Store(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from pathlib import Path; from harness.lib.store import Store\n"
            f"s = Store(Path({str(tmp_path)!r}))\n"
            "with s.lock('train', 'k' * 64):\n"
            "    print('held', flush=True); time.sleep(1.5)\n"
        )],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert holder.stdout.readline().strip() == "held"
    waited: list[float] = []
    with store.lock("train", "k" * 64, on_wait=lambda: waited.append(time.monotonic())):
        assert holder.poll() is not None  # this block only starts once the other one let go
    assert len(waited) == 1
    with store.lock("train", "k" * 64, on_wait=lambda: waited.append(0.0)):
        pass  # free now: no wait
    assert len(waited) == 1
    holder.wait(timeout=30)
    store.close()


# ------------------------------------------------------------------ trainings in the store


class _Backend(Backend):
    name = "fake"

    def load(self, ref, *, trainable=False):
        return LoadedModel(ref, None, None, "float32")


class _Trainer(Trainer):
    name = "writes_adapter"
    runs = 0

    def train(self, base, data, ctx):
        type(self).runs += 1
        adapter = ctx.output_dir / "adapter"
        adapter.mkdir(parents=True, exist_ok=True)
        (adapter / "adapter_config.json").write_text(json.dumps({"r": 4, "target_modules": ["v_proj", "q_proj"]}))
        (adapter / "adapter_model.safetensors").write_bytes(os.urandom(64))
        return TrainOutput(adapter, 3, 2, 10, 1.0, 0.5, 0.1)


def _train(store: Store) -> tuple[TrainOutput, bool]:
    base = ModelRef("baseline", Path("/models/base"), "fake", "float32", None, "f" * 64)
    outcome = CurateOutcome(records=[], ledger=Ledger())
    trainer = _Trainer(ComponentConfig(), RunContext(Path("."), Path(".")))
    return TrainStage(store, RunConsole())(trainer, _Backend(ComponentConfig(), RunContext(Path("."), Path("."))), base, outcome, 1, "run", lambda e: None)


def test_a_copied_store_serves_its_own_artifacts(tmp_path: Path) -> None:
    store = Store(tmp_path / "a")
    output, cached = _train(store)
    store.close()
    assert not cached and output.path.is_relative_to(tmp_path / "a")
    (value,) = [json.loads(v) for (v,) in sqlite3.connect(tmp_path / "a" / "store.sqlite").execute("SELECT value FROM cache")]
    assert not Path(value["output"]["path"]).is_absolute()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    copy = Store(tmp_path / "b")
    runs = _Trainer.runs
    output, cached = _train(copy)
    assert cached and _Trainer.runs == runs and output.path.is_relative_to(tmp_path / "b") and output.path.is_dir()
    copy.close()


def test_check_and_repair_keep_what_verifies(tmp_path: Path, capsys) -> None:
    root = tmp_path / "store"
    store = Store(root)
    _train(store)
    store.put_items("evaluate", MATERIAL, {f"i{i}": {"text": "x" * 200} for i in range(400)})
    store.close()
    assert main(["store", "check", str(root)]) == 0
    assert "store.sqlite: ok" in capsys.readouterr().out

    _garble(root / "store.sqlite", 4096 * 6, 4096)  # one page of the per-item results
    assert main(["store", "check", str(root)]) == 2
    out = capsys.readouterr().out
    assert "store.sqlite: is corrupted or unreadable: database disk image is malformed" in out
    assert f"fix: run `harness store repair {root}`" in out

    assert main(["store", "repair", str(root)]) == 0
    out = capsys.readouterr().out
    (aside,) = root.glob("store.sqlite.corrupt-*[0-9]")
    assert f"moved aside to {aside.name}" in out
    assert main(["store", "check", str(root)]) == 0
    capsys.readouterr()
    store = Store(root)
    items = store.cached_items("evaluate", MATERIAL)
    assert 300 <= len(items) <= 400  # the readable rows came back (a garbled index costs none)
    runs = _Trainer.runs
    assert _train(store)[1] is True and _Trainer.runs == runs  # the training is served again
    store.close()


def test_repair_of_an_unreadable_file_reindexes_the_trainings(tmp_path: Path, capsys) -> None:
    root = tmp_path / "store"
    store = Store(root)
    _train(store)
    store.close()
    _garble(root / "store.sqlite", 0, 4096 * 4)  # nothing can be read any more
    assert main(["store", "check", str(root)]) == 2
    assert "store.sqlite: is not an SQLite database" in capsys.readouterr().out
    assert main(["store", "repair", str(root)]) == 0
    assert "and 1 training from their artifacts" in capsys.readouterr().out
    store = Store(root)
    runs = _Trainer.runs
    assert _train(store)[1] is True and _Trainer.runs == runs
    store.close()


def test_a_run_after_repair_reuses_the_surviving_training(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path, capsys) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": f"{i}."}) + "\n" for i in range(12)))
    suite = harness_write_suite(
        {
            "name": "repaired",
            "model": {"source": str(harness_tiny_model_dir), "dtype": "float32"},
            "data": [{"path": str(data), "format": "alpaca"}],
            "train": {"name": "lora", "r": 2, "max_steps": 2, "batch_size": 4, "max_length": 48},
            "evaluate": {"ppl": {"name": "perplexity", "windows": 2, "span_chars": 120, "context_chars": 40, "window": 48, "stride": 24}},
            "report": ["json"],
        }
    )
    store, reports = tmp_path / "store", tmp_path / "reports"
    args = ["run", str(suite), "--store", str(store), "--reports", str(reports)]
    assert main(args) == 0
    _garble(store / "store.sqlite", 0, 4096 * 3)
    capsys.readouterr()
    assert main(args) == 2
    assert "the store is corrupted" in capsys.readouterr().err
    assert main(["store", "check", str(store)]) == 2
    assert main(["store", "repair", str(store)]) == 0
    capsys.readouterr()
    assert main(args) == 0
    assert "train from cache" in " ".join(capsys.readouterr().out.split())
    newest = max(reports.glob("*/result.json"), key=lambda p: p.stat().st_mtime)
    assert json.loads(newest.read_text())["train"]["from_cache"] is True


def test_a_run_that_fails_is_closed_as_failed(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path, capsys) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    suite = harness_write_suite({  # valid as planned; the curate stage then keeps nothing
        "name": "s", "model": str(harness_tiny_model_dir), "data": [{"path": str(data), "format": "alpaca"}],
        "curate": {"filters": [{"name": "min_response_length", "min_chars": 100}]}, "train": "lora",
    })
    assert main(["run", str(suite), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "r")]) == 2
    assert "no records left after curation" in capsys.readouterr().err
    db = sqlite3.connect(tmp_path / "store" / "store.sqlite")
    assert db.execute("SELECT status, exit_code FROM runs").fetchall() == [("failed", 2)]
    db.close()

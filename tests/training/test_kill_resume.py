"""A training run SIGKILLed at random points, some of them in the middle of writing a checkpoint,
and started again each time, ends with weights bit-identical to an uninterrupted run; a half-written
checkpoint is never resumed from."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STEPS = 14
CSV = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"


def _suite(harness_write_suite, model: Path) -> Path:
    return harness_write_suite(
        {
            "name": "kill",
            "seed": 11,
            "model": {"source": str(model), "dtype": "float32"},
            "data": [{"path": CSV, "format": "csv", "sample": 48, "user": "{instruction}", "assistant": "{response}"}],
            "train": {
                "name": "lora",
                "r": 4,
                "dropout": 0.1,  # random masks: the RNG state must be restored too
                "max_steps": STEPS,
                "epochs": 3,  # 12 batches an epoch: the run crosses an epoch boundary
                "batch_size": 4,
                "max_length": 96,
                "learning_rate": 5e-3,
                "save_every": 1,
                "batching": "length_grouped",
                "replay": {"data": {"path": "${data}/wikitext2/valid.txt", "format": "text", "limit": 12}, "fraction": 0.25},
            },
            "report": ["json"],
        }
    )


def _start(suite: Path, store: Path, tmp: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "harness.cli", "run", str(suite), "--store", str(store), "--reports", str(tmp / "reports")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _state_root(store: Path) -> Path | None:
    roots = list(store.glob("artifacts/train/*/state"))
    return roots[0] if roots else None


def _completed(store: Path) -> int:
    root = _state_root(store)
    steps = [int(p.name.split("-")[1]) for p in root.glob("step-*")] if root else []
    return max(steps, default=0)


def _adapter(store: Path) -> dict:
    from safetensors.torch import load_file

    (adapter,) = store.glob("artifacts/train/*/adapter/adapter_model.safetensors")
    return load_file(str(adapter))


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> None:
    suite = _suite(harness_write_suite, harness_tiny_model_dir)
    reference = _start(suite, tmp_path / "ref", tmp_path)
    assert reference.wait(timeout=600) == 0, reference.stderr.read().decode()
    expected = _adapter(tmp_path / "ref")

    store = tmp_path / "killed"
    rng = random.Random(20261129)
    kills, during_save = 0, 0
    # Kill points: after a random completed step, or the moment a checkpoint is being written.
    plan = ["save", "after", "save", "after", "save"]
    for mode in plan:
        before = _completed(store)
        if before >= STEPS - 2:
            break
        target = min(before + rng.randint(1, 3), STEPS - 2)
        proc = _start(suite, store, tmp_path)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            root = _state_root(store)
            if mode == "save" and root is not None and any(root.glob("tmp-*")) and _completed(store) >= before:
                break
            if mode == "after" and _completed(store) >= target:
                time.sleep(rng.uniform(0, 0.3))  # somewhere inside the next step
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        root = _state_root(store)
        during_save += bool(root and any(root.glob("tmp-*")))
    assert kills >= 5
    assert during_save >= 1, "no kill landed while a checkpoint was being written"

    final = _start(suite, store, tmp_path)
    assert final.wait(timeout=600) == 0, final.stderr.read().decode()
    # Every interrupted save was set aside with its reason; none was resumed from.
    quarantine = _state_root(store).parent / "state" / "quarantine"
    reasons = [p.read_text() for p in quarantine.glob("*.reason.txt")]
    assert reasons and all("interrupted save" in r or "manifest" in r for r in reasons)
    got = _adapter(store)
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name].dtype == expected[name].dtype
        assert bool((got[name] == expected[name]).all()) and got[name].numpy().tobytes() == expected[name].numpy().tobytes(), name


def test_a_corrupted_or_foreign_checkpoint_is_never_resumed(tmp_path: Path) -> None:
    from harness.lib.training import checkpoint

    root = tmp_path / "state"

    def writer(text: str):
        return lambda folder: (folder / "weights.bin").write_text(text)

    checkpoint.save(root, 1, writer("one"), {"config_digest": "a"}, keep=5)
    checkpoint.save(root, 2, writer("two"), {"config_digest": "a"}, keep=5)
    checkpoint.save(root, 3, writer("three"), {"config_digest": "b"}, keep=5)
    (root / "step-00000002" / "weights.bin").write_text("flipped")  # a bit flip after the commit
    half = checkpoint.staging_dir(root, 4, "x")
    half.mkdir()
    (half / "weights.bin").write_text("partial")
    found = checkpoint.latest(root, "a")
    assert found is not None and found.step == 1
    reasons = {p.name: p.read_text() for p in (root / "quarantine").glob("*.reason.txt")}
    assert "sha256" in reasons["step-00000002.reason.txt"]
    assert "another training configuration" in reasons["step-00000003.reason.txt"]
    assert "interrupted save" in reasons[f"{half.name}.reason.txt"]
    assert (root / "quarantine" / "step-00000002" / "weights.bin").read_text() == "flipped"  # kept, not deleted


def test_optimizer_and_rng_state_round_trip_without_pickle(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from harness.lib.training import checkpoint

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    checkpoint.save_optimizer(tmp_path, opt.state_dict())
    loaded = checkpoint.load_optimizer(tmp_path)
    original = opt.state_dict()
    assert loaded["state"].keys() == original["state"].keys()
    for key, values in original["state"].items():
        for name, value in values.items():
            assert torch.equal(loaded["state"][key][name], value)
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))

    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    checkpoint.save_rng(tmp_path, 0, torch)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    checkpoint.load_rng(tmp_path, 0, torch)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


@pytest.mark.parametrize("broken", ["missing", "garbage"])
def test_a_broken_rng_file_is_a_clear_error(tmp_path: Path, broken: str) -> None:
    import torch

    from harness.errors import DataError
    from harness.lib.training import checkpoint

    if broken == "garbage":
        (tmp_path / "rng_rank0.json").write_text("{not json")
    with pytest.raises(DataError, match="rng_rank0.json"):
        checkpoint.load_rng(tmp_path, 0, torch)

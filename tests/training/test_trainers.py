"""The trainers through ``harness run`` on a tiny model: the mitigations' data reach the batches,
the full trainers write loadable model folders, DeepSpeed runs under its launcher, and bad
mitigation options are one-line config errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.cli import main

CSV = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
TEXT = "${data}/wikitext2/valid.txt"
ALPACA = "${data}/self_instruct/seed_tasks_alpaca.jsonl"


def _suite(model: Path, train: dict) -> dict:
    return {
        "name": "trainers",
        "seed": 5,
        "model": {"source": str(model), "dtype": "float32"},
        "data": [{"path": CSV, "format": "csv", "sample": 16, "user": "{instruction}", "assistant": "{intent}"}],
        "train": {"max_steps": 2, "batch_size": 4, "max_length": 64, **train},
        "report": ["json"],
    }


def _run(tmp_path: Path, harness_write_suite, suite: dict, capsys=None) -> tuple[int, dict | None]:
    path = harness_write_suite(suite)
    code = main(["run", str(path), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "reports")])
    reports = list((tmp_path / "reports").glob("*/result.json")) if (tmp_path / "reports").exists() else []
    return code, json.loads(reports[0].read_text()) if reports else None


def test_lora_with_replay_multitask_and_ewc(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> None:
    train = {
        "name": "lora",
        "batching": "packed",
        "replay": {"data": {"path": TEXT, "format": "text", "limit": 8}, "fraction": 0.25},
        "multitask": [{"name": "instructions", "data": {"path": ALPACA, "format": "alpaca", "limit": 12}, "fraction": 0.25, "weight": 0.5}],
        "ewc": {"data": {"path": TEXT, "format": "text", "limit": 4}, "lambda": 1.0, "batches": 2, "batch_size": 2},
    }
    code, result = _run(tmp_path, harness_write_suite, _suite(harness_tiny_model_dir, train))
    assert code == 0 and result is not None
    notes = " | ".join(result["train"]["notes"])
    assert "replay: 8 examples from" in notes and "25% of each batch" in notes
    # 12 instructions read; those whose answer starts beyond 64 tokens have nothing to supervise.
    assert re.search(r"multitask instructions: (1[0-2]|[1-9]) examples, 25% of each batch, weight 0.5", notes), notes
    assert "ewc: Fisher on 4 examples" in notes
    assert result["train"]["steps"] == 2 and result["train"]["last_loss"] == result["train"]["last_loss"]  # finite
    (job,) = (tmp_path / "store" / "artifacts" / "train").iterdir()
    assert (job / "adapter" / "adapter_model.safetensors").is_file()


def test_full_in_process_writes_a_model_folder(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> None:
    import torch
    import transformers

    code, result = _run(tmp_path, harness_write_suite, _suite(harness_tiny_model_dir, {"name": "full", "learning_rate": 1e-3}))
    assert code == 0 and result is not None
    folder = Path(result["train"]["path"])
    assert folder.name == "model" and (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    trained = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    base = transformers.AutoModelForCausalLM.from_pretrained(str(harness_tiny_model_dir), dtype=torch.float32)
    assert not torch.equal(trained.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)


@pytest.mark.integration
def test_full_deepspeed_under_its_launcher(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> None:
    train = {"name": "full_deepspeed", "learning_rate": 1e-3, "launch": {"nproc_per_node": 2}}
    suite = {**_suite(harness_tiny_model_dir, train), "evaluate": {"ppl": {"name": "perplexity", "windows": 2}}}
    code, result = _run(tmp_path, harness_write_suite, suite)
    assert code == 0 and result is not None, result and result.get("train_error")
    assert any(note.startswith("deepspeed: 2 processes, rank 0 held") for note in result["train"]["notes"])
    assert Path(result["train"]["path"]).name == "model"
    # The consolidated folder reloads and is evaluated as the candidate, with other weights.
    ppl = result["benchmarks"]["ppl"]
    assert set(ppl) == {"baseline", "candidate"}
    assert ppl["candidate"]["summary"]["log_prob_per_token"] != ppl["baseline"]["summary"]["log_prob_per_token"]


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        ({"name": "full_deepspeed", "ewc": {"data": {"path": TEXT, "format": "text"}, "lambda": 1.0}}, r"ewc is not supported with ZeRO-3"),
        ({"name": "lora", "replay": {"data": {"path": TEXT, "format": "text"}, "fraction": 0.6}, "multitask": [{"name": "t", "data": {"path": ALPACA, "format": "alpaca"}, "fraction": 0.5}]}, r"take 1.10 of each batch"),
        ({"name": "lora", "replay": {"data": {"path": TEXT, "format": "text"}, "fraction": 0.25, "weigth": 2}}, r"train.replay.weigth: unknown key"),
        ({"name": "full_fsdp", "launch": {"nproc_per_node": 0}}, r"train.launch.nproc_per_node"),
    ],
)
def test_bad_training_options_are_one_line_errors(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path, capsys, train: dict, expected: str) -> None:
    code, _ = _run(tmp_path, harness_write_suite, _suite(harness_tiny_model_dir, train))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and re.search(r"suite.yaml:\d+: ", err), err
    assert re.search(expected, err), err


def test_missing_replay_data_names_the_suite_line(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path, capsys) -> None:
    train = {"name": "lora", "replay": {"data": {"path": "no-such.txt", "format": "text"}, "fraction": 0.2}}
    code, _ = _run(tmp_path, harness_write_suite, _suite(harness_tiny_model_dir, train))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert re.search(r"suite.yaml:\d+: data file .*no-such.txt does not exist", err), err

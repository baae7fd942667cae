"""Full fine-tuning under torchrun with FSDP2: 2 processes on the CPU (gloo), parameters sharded
across the ranks, consolidated weights that reload and evaluate, and loud failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main

CSV = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"


def _suite(model: Path, **train) -> dict:
    return {
        "name": "fsdp",
        "seed": 3,
        "model": {"source": str(model), "dtype": "float32"},
        "data": [{"path": CSV, "format": "csv", "sample": 24, "user": "{instruction}", "assistant": "{intent}"}],
        "train": {
            "name": "full_fsdp",
            "max_steps": 3,
            "batch_size": 4,
            "max_length": 64,
            "eval_every": 2,
            "learning_rate": 1e-3,
            "launch": {"nproc_per_node": 2},
            **train,
        },
        "evaluate": {"ppl": {"name": "perplexity", "windows": 2}},
        "report": ["json"],
    }


def _result(reports: Path) -> dict:
    (folder,) = reports.iterdir()
    return json.loads((folder / "result.json").read_text())


def test_two_process_fsdp2_shards_trains_and_saves_loadable_weights(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> None:
    import torch
    import transformers

    suite = harness_write_suite(_suite(harness_tiny_model_dir))
    code = main(["run", str(suite), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "reports")])
    assert code == 0
    result = _result(tmp_path / "reports")
    train = result["train"]
    assert train["steps"] == 3 and train["first_loss"] > train["last_loss"]
    (out,) = (tmp_path / "store" / "artifacts" / "train").iterdir()
    # Each of the two ranks held a strict part of the parameters, together all of them.
    shards = [json.loads((out / f"sharding_rank{r}.json").read_text()) for r in (0, 1)]
    total = shards[0]["total_params"]
    assert all(s["world_size"] == 2 and 0 < s["local_params"] < total for s in shards)
    assert sum(s["local_params"] for s in shards) == total
    assert any("fsdp2: 2 processes" in note for note in train["notes"])
    # The checkpoint at step 2 and the final model are plain HF folders that load without FSDP.
    base = transformers.AutoModelForCausalLM.from_pretrained(str(harness_tiny_model_dir), dtype=torch.float32)
    for folder in (out / "checkpoint-2", out / "model"):
        model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        changed = [n for n, p in model.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
        assert changed, f"{folder} holds the base weights"
    assert Path(train["path"]) == out / "model"
    # The candidate (the final model folder) was evaluated beside the base model.
    ppl = result["benchmarks"]["ppl"]
    assert set(ppl) == {"baseline", "candidate"}
    assert ppl["candidate"]["summary"]["log_prob_per_token"] != ppl["baseline"]["summary"]["log_prob_per_token"]


def test_a_rank_that_fails_fails_the_training_loudly(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> None:
    """Workers that cannot load the weights make the training an error quoting their log, never
    a silent fallback: no candidate is evaluated."""
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(harness_tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # the tokenizer loads, the weights do not
    suite = harness_write_suite(_suite(broken))
    code = main(["run", str(suite), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "reports")])
    result = _result(tmp_path / "reports")
    assert result["train"] is None
    assert "fsdp2 training failed (launcher exit" in result["train_error"] and "job.log" in result["train_error"]
    assert code == 0  # no gate depends on the candidate here; the error is in the report
    assert "candidate" not in result["benchmarks"].get("ppl", {})


def test_unsharded_reports_are_refused() -> None:
    from harness.errors import CheckError
    from dataclasses import replace

    from harness.lib.training.events import RankSharding
    from harness.lib.training.launch import check_sharded

    whole = RankSharding(rank=0, world_size=2, local_params=100, total_params=100)
    with pytest.raises(CheckError, match="not sharded"):
        check_sharded("fsdp2", [whole, replace(whole, rank=1)], 2)
    with pytest.raises(CheckError, match="1 of 2 ranks"):
        check_sharded("fsdp2", [replace(whole, local_params=50)], 2)
    with pytest.raises(CheckError, match="world of 1"):
        check_sharded("fsdp2", [replace(whole, world_size=1, local_params=50), replace(whole, rank=1, local_params=50)], 2)


def test_launch_settings_come_from_the_suite_then_the_environment() -> None:
    from harness.errors import ConfigError
    from harness.lib.training.launch import LaunchConfig, command, resolve_launch

    env = {"HARNESS_NNODES": "2", "HARNESS_NPROC_PER_NODE": "4", "HARNESS_RDZV_ENDPOINT": "10.0.0.1:29400", "HARNESS_NODE_RANK": "1"}
    launch = resolve_launch(LaunchConfig(nproc_per_node=8), env)
    assert (launch.nnodes, launch.nproc_per_node, launch.node_rank, launch.world_size) == (2, 8, 1, 16)
    cmd = command("fsdp2", launch, Path("job.json"))
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == "10.0.0.1:29400" and "--standalone" not in cmd
    assert "--standalone" in command("fsdp2", resolve_launch(LaunchConfig(), {}), Path("job.json"))
    with pytest.raises(ConfigError, match="HARNESS_NNODES"):
        resolve_launch(LaunchConfig(), {"HARNESS_NNODES": "two"})
    with pytest.raises(ConfigError, match="rdzv_endpoint"):
        resolve_launch(LaunchConfig(nnodes=2), {})

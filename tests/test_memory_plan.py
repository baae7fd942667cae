"""``harness plan``: the training memory planner (``harness/tools/memory/``).

The chapter's 7B arithmetic (14 + 14 + 56 = 84 GB before activations), LoRA / QLoRA against full
fine-tuning on a 24 GiB GPU, ZeRO-3 sharding, the activation count against the tensors autograd
really keeps, and the whole estimate against the peak memory of real CPU training steps (a tiny
random Llama and SmolLM2-135M, each in a fresh subprocess).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.errors import ConfigError
from harness.tools.memory import (
    GB,
    NF4_BYTES_PER_PARAM,
    PlanOptions,
    activation_bytes,
    estimate,
    load_config,
    load_shape,
    measure_training_peak,
    plan,
)

TINY: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 32000,
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "tie_word_embeddings": False,
}
"""A random Llama whose training memory (~0.6 GB) is model state, activations and logits."""

TOLERANCE = 0.25


def close(value: float, expected: float, rel: float = 0.05) -> bool:
    return abs(value - expected) <= rel * expected


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = main(["plan", *args, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


@pytest.fixture(scope="module")
def llama7b():
    return load_shape("llama-2-7b")


# --------------------------------------------------------------------------- the chapter's 7B


def test_chapter_7b_full_bf16_adamw_through_the_api():
    p = estimate(None, PlanOptions(params=7_000_000_000, method="full", precision="bf16", optimizer="adamw"))
    assert close(p.weights, 14 * GB)
    assert close(p.gradients, 14 * GB)
    assert close(p.optimizer, 56 * GB)
    assert p.master_weights == 0
    assert close(p.state_total, 84 * GB)
    assert p.activations is None and p.logits is None  # no shape: the model state alone
    assert p.total == p.state_total
    # 84 GB = 78.2 GiB > 72 GiB usable of one 80 GiB GPU; two shards of 42 GB fit
    assert not p.fits and p.min_gpus == 2
    assert p.verdict.startswith("does not fit on 1 x 80 GiB") and "needs >= 2 GPUs" in p.verdict


def test_llama2_7b_preset_is_counted_exactly(llama7b):
    assert llama7b.params == 6_738_415_616  # meta-device count of LlamaForCausalLM, untied head
    assert (llama7b.hidden, llama7b.layers, llama7b.heads, llama7b.kv_heads) == (4096, 32, 32, 32)
    p = estimate(llama7b, PlanOptions(method="full", precision="bf16", optimizer="adamw"))
    assert close(p.state_total, 6.74 * 12 * GB)
    assert close(p.weights, 6.74 * 2 * GB) and close(p.optimizer, 6.74 * 8 * GB)
    assert p.activations is not None and p.activations > 0 and p.logits is not None
    assert p.total > p.state_total


def test_chapter_7b_through_the_cli(capsys):
    data = cli_json(capsys, "--params", "7e9", "--method", "full", "--precision", "bf16", "--optimizer", "adamw")
    b = data["bytes"]
    assert close(b["weights"], 14 * GB) and close(b["gradients"], 14 * GB) and close(b["optimizer"], 56 * GB)
    assert close(b["state_total"], 84 * GB)
    assert data["gb"]["state_total"] == pytest.approx(84.0)
    assert data["fits"] is False and data["min_gpus"] == 2

    data = cli_json(capsys, "--model", "llama-2-7b", "--method", "full", "--precision", "bf16", "--optimizer", "adamw")
    assert data["params"] == 6_738_415_616
    assert close(data["bytes"]["state_total"], 6.74 * 12 * GB)
    assert data["bytes"]["total"] == data["bytes"]["state_total"] + data["bytes"]["activations"] + data["bytes"]["logits"]


def test_the_table_and_verdict_are_printed(capsys):
    assert main(["plan", "--model", "llama-2-7b", "--gpu-memory", "24"]) == 0
    out = capsys.readouterr().out
    for label in ("weights", "gradients", "optimizer states", "total before activations", "activations", "total per GPU"):
        assert label in out
    assert "13.48" in out  # weights, GB
    assert "does not fit on 1 x 24 GiB" in out


# --------------------------------------------------------------------------- LoRA, QLoRA, sharding


def test_lora_and_qlora_7b_on_one_24_gib_gpu(capsys, llama7b):
    common = ("--model", "llama-2-7b", "--precision", "bf16", "--seq-len", "2048", "--gpu-memory", "24")
    full = cli_json(capsys, *common, "--method", "full")
    lora = cli_json(capsys, *common, "--method", "lora")
    qlora = cli_json(capsys, *common, "--method", "qlora")

    # r=8 on q_proj and v_proj: 32 layers x 2 x 8 x (4096 + 4096)
    assert lora["trainable_params"] == qlora["trainable_params"] == 32 * 2 * 8 * (4096 + 4096)
    assert lora["bytes"]["state_total"] < 0.2 * full["bytes"]["state_total"]
    assert qlora["bytes"]["weights"] < 0.3 * lora["bytes"]["weights"]
    quantized = llama7b.quantizable_params
    expected = quantized * NF4_BYTES_PER_PARAM + (llama7b.params - quantized) * 2 + qlora["trainable_params"] * 2
    assert qlora["bytes"]["weights"] == pytest.approx(expected, rel=1e-6)
    # adapter grads in bf16, AdamW states in fp32
    assert qlora["bytes"]["gradients"] == 2 * qlora["trainable_params"]
    assert qlora["bytes"]["optimizer"] == 8 * qlora["trainable_params"]

    assert full["fits"] is False and full["verdict"].startswith("does not fit on 1 x 24 GiB")
    assert full["min_gpus"] > 1
    assert "QLoRA" in full["verdict"]
    assert qlora["fits"] is True and qlora["verdict"].startswith("fits on 1 x 24 GiB")
    assert qlora["min_gpus"] == 1
    assert lora["fits"] is False and "use gradient checkpointing" in lora["verdict"]
    checkpointed = cli_json(capsys, *common, "--method", "lora", "--gradient-checkpointing")
    assert checkpointed["fits"] is True
    assert checkpointed["bytes"]["activations"] == checkpointed["bytes"]["activations_checkpointing"]
    assert checkpointed["bytes"]["activations_checkpointing"] < lora["bytes"]["activations_no_checkpointing"] / 5


def test_zero3_over_8_gpus_divides_the_state_by_8(llama7b):
    one = estimate(llama7b, PlanOptions(gpus=1))
    eight = estimate(llama7b, PlanOptions(gpus=8))
    assert eight.options.effective_sharding == "zero3"
    for name in ("weights", "gradients", "optimizer", "state_total"):
        assert getattr(eight, name) == pytest.approx(getattr(one, name) / 8, abs=8), name
    assert eight.activations == one.activations and eight.logits == one.logits  # per-GPU micro-batch
    assert eight.buffers > 0  # the gathered layers
    replicas = estimate(llama7b, PlanOptions(gpus=8, sharding="none"))
    assert replicas.state_total == one.state_total and replicas.buffers == 0


def test_precision_and_optimizer_bytes_per_param():
    def state(**kw: Any) -> float:
        p = estimate(None, PlanOptions(params=10**9, **kw))
        return p.state_total / 10**9

    assert state(precision="fp32") == 16  # 4 + 4 + 8
    assert state(precision="bf16") == 12  # 2 + 2 + 8
    mixed = estimate(None, PlanOptions(params=10**9, precision="mixed"))
    assert (mixed.weights, mixed.master_weights, mixed.gradients, mixed.optimizer) == (2e9, 4e9, 4e9, 8e9)
    assert state(precision="bf16", optimizer="adamw8bit") == 6
    assert state(precision="bf16", optimizer="sgd") == 8
    assert state(precision="bf16", optimizer="adafactor") == pytest.approx(4.004)


def test_adafactor_state_is_counted_from_the_shapes(llama7b):
    p = estimate(llama7b, PlanOptions(optimizer="adafactor"))
    # rows + cols per matrix: a 4096 x 4096 projection keeps 8192 floats, not 16.8M
    assert 0 < p.optimizer < 0.001 * 4 * llama7b.params
    assert p.optimizer == llama7b.adafactor_state_bytes


def test_eager_attention_adds_the_quadratic_scores(llama7b):
    sdpa = estimate(llama7b, PlanOptions(seq_len=4096, attention="sdpa"))
    eager = estimate(llama7b, PlanOptions(seq_len=4096, attention="eager"))
    scores = 32 * 32 * 4096 * 4096 * (4 + 2)  # layers x heads x s^2 x (fp32 softmax + bf16 copy)
    assert eager.activations - sdpa.activations == pytest.approx(scores, rel=0.02)


# --------------------------------------------------------------------------- model inputs


def test_a_folder_a_config_json_and_a_mapping_give_the_same_shape(tmp_path):
    _, config = load_config(TINY)
    config.save_pretrained(str(tmp_path))
    from_mapping = load_shape(TINY)
    from_folder, from_file = load_shape(tmp_path), load_shape(tmp_path / "config.json")
    assert from_folder.name == str(tmp_path) and from_file.name == str(tmp_path / "config.json")
    assert replace(from_folder, name="tiny") == replace(from_file, name="tiny") == replace(from_mapping, name="tiny")
    # embeddings and head 2 x 32000 x 256, 4 layers of attention (q, o 256x256; k, v 256x128),
    # MLP 3 x 256 x 688, 2 norms each, final norm
    layer = 2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 688 + 2 * 256
    assert from_mapping.params == 2 * 32000 * 256 + 4 * layer + 256
    assert from_mapping.layer_params == layer


def test_params_override_keeps_the_shape_for_activations(llama7b):
    base = estimate(llama7b, PlanOptions())
    p = estimate(llama7b, PlanOptions(params=7_000_000_000))
    assert p.params == 7_000_000_000 and close(p.state_total, 84 * GB, 1e-9)
    assert p.activations == base.activations


def test_bad_inputs_are_one_line_config_errors(capsys, tmp_path):
    assert main(["plan", "--model", "llama-9b"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "llama-9b" in err and "llama-2-7b" in err  # names the known presets

    empty = tmp_path / "no-config"
    empty.mkdir()
    assert main(["plan", "--model", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(empty) in err and "config.json" in err

    broken = tmp_path / "config.json"
    broken.write_text("{not json", encoding="utf-8")
    assert main(["plan", "--model", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(broken) in err

    assert main(["plan", "--params", "7e9", "--method", "qlora"]) == 2
    assert "--method qlora needs --model" in capsys.readouterr().err
    assert main(["plan"]) == 2
    assert "--model or --params" in capsys.readouterr().err
    assert main(["plan", "--params", "7e9", "--gpu-memory", "8", "--reserve-gib", "9"]) == 2
    assert "--reserve-gib" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--lora-targets nope"):
        estimate(load_shape(TINY), PlanOptions(method="lora", lora_targets=("nope",)))


# --------------------------------------------------------------------------- against real memory


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_activation_count_matches_the_tensors_autograd_keeps(attention):
    """Every tensor saved for backward (parameters excluded) of one forward pass of the tiny
    Llama: the formula's activations plus the fp32 log-softmax output cross-entropy keeps."""
    import torch
    import transformers

    _, config = load_config(TINY)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    b, s = 2, 64
    ids = torch.randint(0, TINY["vocab_size"], (b, s))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    options = PlanOptions(precision="fp32", seq_len=s, micro_batch=b, attention=attention)
    expected = activation_bytes(load_shape(TINY), options, checkpointing=False) + 4 * b * s * TINY["vocab_size"]
    assert sum(saved.values()) == pytest.approx(expected, rel=0.02)


def _check_measured(model: Path | dict[str, Any], seq_len: int, batch: int, attention: str) -> tuple[int, int]:
    measured = measure_training_peak(model, seq_len=seq_len, micro_batch=batch, steps=2, attention=attention)
    source = model if isinstance(model, dict) else str(model)
    options = PlanOptions(
        precision="fp32", optimizer="adamw", seq_len=seq_len, micro_batch=batch, attention=attention, reserve_gib=0
    )
    p = plan(source, options)
    assert p.params == measured.params
    error = (p.total - measured.peak_bytes) / measured.peak_bytes
    assert abs(error) <= TOLERANCE, (
        f"estimate {p.total / 1e6:.0f} MB vs measured {measured.peak_bytes / 1e6:.0f} MB ({error:+.1%}); {p.to_json()['gb']}"
    )
    # not dominated by the runtime: the model state alone is most of what was measured
    assert p.state_total > 0.3 * measured.peak_bytes
    return p.total, measured.peak_bytes


def test_estimate_matches_cpu_training_peak_of_a_tiny_llama():
    _, measured = _check_measured(TINY, seq_len=128, batch=4, attention="eager")
    assert measured > 400e6  # states 309 MB + activations 54 MB + logits and loss 262 MB


@pytest.mark.integration
def test_estimate_matches_cpu_training_peak_of_smollm2(harness_embedded_model_dir, capsys):
    estimate_bytes, measured = _check_measured(harness_embedded_model_dir, seq_len=128, batch=2, attention="sdpa")
    assert measured > 2e9  # 134.5M params x 16 bytes = 2.15 GB of state
    # the embedded name resolves to the same model
    data = cli_json(capsys, "--model", "smollm2-135m-instruct", "--precision", "fp32", "--seq-len", "128",
                    "--micro-batch", "2", "--reserve-gib", "0")
    assert data["params"] == 134_515_008
    assert data["bytes"]["total"] == estimate_bytes
    assert math.isclose(data["bytes"]["state_total"], 16 * 134_515_008)

"""The fast training step keeps the math of the plain one.

The reference is the step as it was before the loss and optimizer were made cheaper: the model's
full logits, ``token_loss`` on them, fp32 weights under autocast, torch's per-parameter AdamW.
Stated tolerances (relative, on a tiny random Llama):

* the loss of a batch and of each example: 1e-6 in fp32, 1e-5 under bf16 autocast (only the
  order of float32 sums differs);
* the gradients of one step: 1e-5 in fp32, 1e-3 under bf16 autocast (bf16 rounding of the
  logits' gradient, applied before or after the 1/N scale);
* the LoRA adapter's update after 4 optimizer steps: 1e-5 in fp32, 1e-3 under bf16 autocast (Adam divides
  by the root of the second moment, which magnifies rounding noise in near-zero gradients).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest

from harness.lib.training.batching import collate, model_inputs, token_loss
from harness.lib.training.examples import IGNORE, Example
from harness.lib.training.loss import supervised_loss, supports_supervised_loss

TOLERANCE = {  # (loss, gradients, adapter after 4 steps)
    False: (1e-6, 1e-5, 1e-5),
    True: (1e-5, 1e-3, 1e-3),
}


def _examples(count: int = 6, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        n = rng.randint(6, 40)
        ids = [rng.randrange(2, 1000) for _ in range(n)]
        prompt = n // 3
        labels = [IGNORE if j < prompt else t for j, t in enumerate(ids)]
        out.append(Example(ids, labels, weight=1.0 if i % 3 else 2.0))  # some weighted tokens
    return out


def _model(model_dir: Path, lora: bool) -> Any:
    import peft
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if lora:
        config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        model = peft.get_peft_model(model, config)
        with torch.no_grad():  # B starts at zero: make the adapter do something from step one
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.05)
    model.train()
    return model


def _autocast(bf16: bool) -> Any:
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def _rel(a: Any, b: Any) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12))


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_supervised_loss_matches_the_full_logits_loss(harness_tiny_model_dir: Path, lora: bool, bf16: bool) -> None:
    import torch

    model = _model(harness_tiny_model_dir, lora)
    assert supports_supervised_loss(model)
    examples = _examples()
    batch = collate(torch, examples, [[i] for i in range(len(examples))], pad_id=2)
    params = [p for p in model.parameters() if p.requires_grad]
    dtype = torch.bfloat16 if bf16 else None
    with _autocast(bf16):
        logits = model(**model_inputs(batch)).logits
    reference = token_loss(torch, logits, batch["labels"], batch["loss_weights"])
    expected = torch.autograd.grad(reference, params)
    loss = supervised_loss(torch, model, batch, _autocast(bf16), dtype)
    got = torch.autograd.grad(loss, params)
    loss_tol, grad_tol, _ = TOLERANCE[bf16]
    assert abs(float(loss.detach()) - float(reference.detach())) <= loss_tol * abs(float(reference.detach()))
    assert max(_rel(g, e) for g, e in zip(got, expected)) <= grad_tol
    # Per example (a batch of one each): the same loss, and padding never changes it.
    with torch.no_grad():
        for i in range(len(examples)):
            alone = collate(torch, examples, [[i]], pad_id=2)
            with _autocast(bf16):
                one = token_loss(torch, model(**model_inputs(alone)).logits, alone["labels"], alone["loss_weights"])
            fused = supervised_loss(torch, model, alone, _autocast(bf16), dtype)
            assert abs(float(fused) - float(one)) <= loss_tol * abs(float(one)), i


def test_a_batch_without_supervised_tokens_has_zero_loss_and_gradient(harness_tiny_model_dir: Path) -> None:
    import torch

    model = _model(harness_tiny_model_dir, lora=True)
    example = Example([5, 6, 7, 8], [IGNORE] * 4)
    batch = collate(torch, [example], [[0]], pad_id=2)
    loss = supervised_loss(torch, model, batch, _autocast(False), None)
    loss.backward()
    assert float(loss) == 0.0
    assert all(float(p.grad.abs().sum()) == 0.0 for p in model.parameters() if p.requires_grad)


def test_models_with_transformed_logits_keep_the_full_logits_loss(harness_tiny_model_dir: Path) -> None:
    model = _model(harness_tiny_model_dir, lora=False)
    model.config.final_logit_softcapping = 30.0  # Gemma-2 style: logits are changed after lm_head
    assert not supports_supervised_loss(model)


def test_frozen_weights_stored_in_bf16_give_the_same_logits_under_autocast(harness_tiny_model_dir: Path) -> None:
    import torch

    from harness.lib.training.local import freeze_in_dtype

    model = _model(harness_tiny_model_dir, lora=True)
    cast = copy.deepcopy(model)
    assert freeze_in_dtype(torch, cast, torch.bfloat16) > 0
    assert all(p.dtype == torch.float32 for p in cast.parameters() if p.requires_grad)  # the adapter keeps fp32
    batch = collate(torch, _examples(), [[i] for i in range(6)], pad_id=2)
    with torch.no_grad(), _autocast(True):
        expected = model(**model_inputs(batch)).logits
        got = cast(**model_inputs(batch)).logits
    assert torch.equal(got, expected)


def _reference_steps(torch: Any, model: Any, batches: list[dict[str, Any]], bf16: bool, lr: float) -> None:
    """The step as it was: full logits, ``token_loss``, per-parameter AdamW, clip, linear decay."""
    import transformers

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=False)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, 0, len(batches))
    for batch in batches:
        with _autocast(bf16):
            logits = model(**model_inputs(batch)).logits
        token_loss(torch, logits, batch["labels"], batch["loss_weights"]).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_lora_training_matches_the_reference_step(harness_tiny_model_dir: Path, tmp_path: Path, bf16: bool) -> None:
    import torch

    from harness.lib.training.config import TrainingConfig
    from harness.lib.training.local import LocalEngine
    from harness.lib.training.loop import LoopSetup, TrainLoop

    examples = _examples(8, seed=1)
    plan = [[[0], [1], [2], [3]], [[4], [5], [6], [7]], [[1], [3], [5], [7]], [[0], [2], [4], [6]]]
    lr = 5e-3
    reference = _model(harness_tiny_model_dir, lora=True)
    fast = copy.deepcopy(reference)
    _reference_steps(torch, reference, [collate(torch, examples, rows, 2) for rows in plan], bf16, lr)
    engine = LocalEngine(
        torch, fast, learning_rate=lr, weight_decay=0.0, warmup_steps=0, total_steps=len(plan),
        max_grad_norm=1.0, bf16=bf16, save_weights=lambda *_: None,
    )
    assert engine.fused_loss
    setup = LoopSetup(seed=0, output_dir=tmp_path, pad_id=2, config_digest="x", resume=False)
    loop = TrainLoop(engine, TrainingConfig(batch_size=4, max_length=64), examples, setup, emit=lambda *_: None)
    for step, rows in enumerate(plan):
        loop._train_step(rows, step)
    # Compare the updates (trained - initial), not the weights, which the initial values dominate.
    initial = dict(_model(harness_tiny_model_dir, lora=True).named_parameters())
    expected = {n: (p - initial[n]).detach() for n, p in reference.named_parameters() if p.requires_grad}
    got = {n: (p - initial[n]).detach() for n, p in fast.named_parameters() if p.requires_grad}
    assert min(float(e.norm()) for e in expected.values()) > 0, "the reference did not train"
    worst = max(_rel(got[n], expected[n]) for n in expected)
    assert worst <= TOLERANCE[bf16][2], worst

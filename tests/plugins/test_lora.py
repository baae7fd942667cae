"""The LoRA trainer: assistant-only loss, seeded determinism, checkpoints, safetensors output."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness_plugins.backends.hf import HFBackend
from harness_plugins.trainers.lora import LoRAConfig, LoRATrainer

from harness.plugin.components import ComponentConfig, RunContext, TrainContext
from harness.lib.models import ModelRef, dir_fingerprint
from harness.lib.training.examples import IGNORE
from harness.lib.training.examples import encode_conversation as encode
from harness.types import CheckpointEvent, Conversation, Message

CONVERSATIONS = [
    Conversation((Message("user", f"What is {a} plus {b}?"), Message("assistant", str(a + b))), f"t:{i}")
    for i, (a, b) in enumerate([(1, 2), (3, 4), (5, 6), (7, 8), (2, 2), (9, 1)])
]


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    return RunContext(tmp_path, tmp_path / "work")


def _base(model_dir: Path) -> ModelRef:
    return ModelRef("baseline", model_dir, "hf", "float32", None, dir_fingerprint(model_dir))


def test_loss_covers_assistant_turns_only(harness_embedded_model_dir: Path) -> None:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(harness_embedded_model_dir))
    record = Conversation(
        (
            Message("user", "Hi there"),
            Message("assistant", "Hello!"),
            Message("user", "2+2?"),
            Message("assistant", "4"),
        ),
        "x:1",
    )
    ids, labels, truncated = encode(tokenizer, record, 256)
    supervised = tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE])
    assert supervised == "Hello!<|im_end|>\n4<|im_end|>\n"
    assert not truncated
    assert tokenizer.decode(ids).startswith("<|im_start|>system\n")  # the template's own system turn
    short_ids, short_labels, cut = encode(tokenizer, record, 10)
    assert cut and len(short_ids) == 10 and all(label == IGNORE for label in short_labels)


def _train(model_dir: Path, ctx: RunContext, out: Path, **options) -> tuple[object, list[CheckpointEvent]]:
    backend = HFBackend(ComponentConfig(), ctx)
    base = backend.load(_base(model_dir), trainable=True)
    events: list[CheckpointEvent] = []
    trainer = LoRATrainer(LoRAConfig(**options), ctx)
    output = trainer.train(base, CONVERSATIONS, TrainContext(out, 7, events.append, lambda *a: None))
    return output, events


def test_training_is_seeded_checkpointed_and_saved_as_safetensors(harness_tiny_model_dir: Path, ctx: RunContext, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    options = dict(batch_size=2, epochs=4, max_steps=5, eval_every=2, learning_rate=5e-3, precision="fp32")
    first, events = _train(harness_tiny_model_dir, ctx, tmp_path / "a", **options)
    assert [(e.step, e.final) for e in events] == [(2, False), (4, False), (5, True)]
    assert all((e.path / "adapter_model.safetensors").is_file() for e in events)
    assert not list(first.path.glob("*.bin"))
    assert first.steps == 5 and first.examples == len(CONVERSATIONS)
    second, _ = _train(harness_tiny_model_dir, ctx, tmp_path / "b", **options)
    a = load_file(str(first.path / "adapter_model.safetensors"))
    b = load_file(str(second.path / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert dir_fingerprint(first.path) == dir_fingerprint(second.path)


def test_training_lowers_the_loss(harness_tiny_model_dir: Path, ctx: RunContext, tmp_path: Path) -> None:
    # One batch holds the whole data set and dropout is off, so without learning every step's
    # loss would be exactly the first one.  (A random 64-wide model cannot get far below ln|V|.)
    output, _ = _train(
        harness_tiny_model_dir, ctx, tmp_path / "c", batch_size=6, max_steps=20, epochs=20,
        learning_rate=5e-2, precision="fp32", dropout=0.0, r=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    assert output.last_loss < output.first_loss - 0.2


def test_untrained_adapter_has_zero_effect_and_is_not_failed(harness_tiny_model_dir: Path, ctx: RunContext, tmp_path: Path) -> None:
    """An identical candidate (a LoRA adapter whose B matrices are still zero) gives the same
    per-item results as its baseline, and the gate does not fail it."""
    import peft
    import torch

    from harness.stages.gate import decide, parse_rule
    from harness.lib.stats import mcnemar
    from harness.types import Verdict

    backend = HFBackend(ComponentConfig(), ctx)
    base_ref = _base(harness_tiny_model_dir)
    base = backend.load(base_ref, trainable=True)
    adapter = tmp_path / "zero-adapter"
    peft.get_peft_model(base.model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(str(adapter))
    cand_ref = base_ref.with_adapter("candidate", adapter)
    assert cand_ref.fingerprint != base_ref.fingerprint
    baseline, candidate = backend.load(base_ref), backend.load(cand_ref)
    ids = torch.randint(0, 1000, (4, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        base_pred = baseline.model(ids).logits.argmax(-1).flatten()
        cand_pred = candidate.model(ids).logits.argmax(-1).flatten()
    assert torch.equal(base_pred, cand_pred)
    # Score each position as an item (1 if the model predicts the next token): identical items.
    targets = ids[:, 1:].flatten()
    keep = torch.ones(4, 16, dtype=torch.bool)
    keep[:, -1] = False
    base_scores = (base_pred[keep.flatten()] == targets).float().tolist()
    cand_scores = (cand_pred[keep.flatten()] == targets).float().tolist()
    for rule in ("non_inferior(margin=0.02)", "no_regression()"):
        verdict, _ = decide(parse_rule(rule), mcnemar(base_scores, cand_scores, 0.05))
        assert verdict is not Verdict.FAIL

"""LoRA fine-tuning with peft: a plain, seeded PyTorch loop.

Conversations are rendered with the model's own chat template; the loss covers the assistant
turns only (their content and end-of-turn token).  bf16 autocast is used where the hardware runs
bf16 natively.  Every ``eval_every`` steps the adapter is saved as a checkpoint and a checkpoint
event is emitted; the final adapter is saved as safetensors, atomically.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

import harness
from harness.components import ComponentConfig, TrainContext, Trainer
from harness.errors import CheckError, require
from harness.models import LoadedModel
from harness.types import CheckpointEvent, Conversation, TrainOutput

IGNORE = -100


class LoRAConfig(ComponentConfig):
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (lora_alpha)")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = Field(2e-4, gt=0)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(256, ge=8, description="tokens per example; longer ones are truncated")
    warmup_steps: int = Field(0, ge=0)
    eval_every: int = Field(0, ge=0, description="save a checkpoint every N steps (0: only the end)")
    precision: str = Field("auto", pattern="^(auto|bf16|fp32)$")


def encode(tokenizer: Any, record: Conversation, max_length: int) -> tuple[list[int], list[int], bool]:
    """Token ids and labels of one conversation; labels are IGNORE outside assistant turns.

    Returns ``(input_ids, labels, truncated)``.
    """
    messages = [{"role": m.role, "content": m.content} for m in record.messages]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = (
            tokenizer.apply_chat_template(
                messages[:index], tokenize=False, add_generation_prompt=True
            )
            if index
            else ""
        )
        upto = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (full.startswith(upto) and upto.startswith(prefix)):
            raise CheckError("the chat template does not render conversations prefix by prefix")
        start, end = len(prefix), len(upto)
        spans.append((start, end))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = enc["input_ids"]
    labels = [
        tok if any(s <= begin < e for s, e in spans) else IGNORE
        for tok, (begin, _end) in zip(ids, enc["offset_mapping"])
    ]
    truncated = len(ids) > max_length
    return ids[:max_length], labels[:max_length], truncated


class LoRATrainer(Trainer):
    name = "lora"
    description = "LoRA adapters with peft; loss on assistant tokens; seeded plain PyTorch loop"
    Config = LoRAConfig

    def train(self, base: LoadedModel, data: Sequence[Conversation], ctx: TrainContext) -> TrainOutput:
        torch = require("torch")
        peft = require("peft")
        transformers = require("transformers")
        cfg: LoRAConfig = self.config  # type: ignore[assignment]
        started = time.perf_counter()
        random.seed(ctx.seed)
        torch.manual_seed(ctx.seed)

        examples, truncated = [], 0
        for record in data:
            ids, labels, cut = encode(base.tokenizer, record, cfg.max_length)
            truncated += cut
            if any(label != IGNORE for label in labels):
                examples.append((ids, labels))
        if not examples:
            raise CheckError("no training example has an assistant token within max_length")
        notes = []
        if truncated:
            notes.append(f"{truncated} examples truncated to {cfg.max_length} tokens")
        if len(examples) < len(data):
            notes.append(f"{len(data) - len(examples)} examples had no assistant token left")

        lora = peft.LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # peft still calls a transformers API deprecated for v6
            warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
            model = peft.get_peft_model(base.model, lora)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
        per_epoch = math.ceil(len(examples) / cfg.batch_size)
        total = min(cfg.max_steps or per_epoch * cfg.epochs, per_epoch * cfg.epochs)
        scheduler = transformers.get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, total)
        use_bf16 = cfg.precision == "bf16" or (
            cfg.precision == "auto" and base.dtype == "float32" and _native_bf16()
        )
        autocast = (
            torch.autocast(device_type=base.model.device.type, dtype=torch.bfloat16)
            if use_bf16
            else contextlib.nullcontext()
        )
        pad = base.tokenizer.pad_token_id
        generator = random.Random(ctx.seed)
        step, first_loss, last_loss, tokens = 0, float("nan"), float("nan"), 0
        while step < total:
            order = list(range(len(examples)))
            generator.shuffle(order)
            for start in range(0, len(order), cfg.batch_size):
                if step >= total:
                    break
                batch = [examples[i] for i in order[start : start + cfg.batch_size]]
                input_ids, attention, labels = _collate(torch, batch, pad, model.device)
                with autocast:
                    loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
                if not torch.isfinite(loss):
                    raise CheckError(f"training loss is {loss.item()} at step {step + 1}")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                last_loss = float(loss.item())
                first_loss = last_loss if step == 1 else first_loss
                tokens += int((labels != IGNORE).sum())
                ctx.progress(step, total, f"loss {last_loss:.3f}")
                if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                    path = _save(model, ctx.output_dir / f"checkpoint-{step}")
                    ctx.on_checkpoint(CheckpointEvent(self.name, step, total, path, last_loss))
        final = _save(model, ctx.output_dir / "adapter")
        ctx.on_checkpoint(CheckpointEvent(self.name, step, total, final, last_loss, final=True))
        return TrainOutput(
            path=final,
            steps=step,
            examples=len(examples),
            supervised_tokens=tokens,
            first_loss=first_loss,
            last_loss=last_loss,
            seconds=time.perf_counter() - started,
            notes=tuple(notes),
        )


def _native_bf16() -> bool:
    from harness_plugins.backends.hf import native_bf16

    return native_bf16()


def _collate(torch: Any, batch: list[tuple[list[int], list[int]]], pad: int, device: Any):
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, : len(labs)] = torch.tensor(labs)
    return input_ids.to(device), attention.to(device), labels.to(device)


def _save(model: Any, path: Path) -> Path:
    """Save the adapter as safetensors into ``path`` atomically (temp folder, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


@harness.hookimpl
def harness_register_trainers(registrar) -> None:
    registrar.add(LoRATrainer)

"""LoRA fine-tuning with peft, in this process, on the shared training loop.

Conversations are rendered with the model's own chat template; the loss covers the assistant
turns only (their content and end-of-turn token).  bf16 autocast is used where the hardware runs
bf16 natively.  Batching (padding, length grouping or packing), the forgetting mitigations (replay,
multi-task mixing, EWC) and resumable state come from ``harness.lib.training``.  Every ``eval_every``
steps the adapter is saved as a checkpoint and a checkpoint event is emitted; the final adapter is
saved as safetensors, atomically.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

import harness
from harness.plugin.components import TrainContext, Trainer
from harness.errors import require
from harness.lib.models import LoadedModel
from harness.lib.training.config import TrainingConfig
from harness.lib.training.data import prepare
from harness.lib.training.run import train_locally
from harness.types import Conversation, TrainOutput
from harness.plugin.registry import Registrar


class LoRAConfig(TrainingConfig):
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (lora_alpha)")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])

    @field_validator("target_modules")
    @classmethod
    def _as_set(cls, value: list[str]) -> list[str]:
        """A set of module names: sorted, so its order never changes a cache key."""
        return sorted(set(value))


class LoRATrainer(Trainer[LoRAConfig]):
    name = "lora"
    description = "LoRA adapters with peft; loss on assistant tokens; packing, replay, EWC, resumable"
    Config = LoRAConfig

    def train(self, base: LoadedModel, data: Sequence[Conversation], ctx: TrainContext) -> TrainOutput:
        torch = require("torch")
        peft = require("peft")
        cfg = self.config
        started = time.perf_counter()
        random.seed(ctx.seed)
        torch.manual_seed(ctx.seed)
        prepared = prepare(base.tokenizer, data, cfg, ctx)
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
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        return train_locally(
            self, cfg, base, model, prepared, ctx, save_weights=_save_adapter, final_name="adapter", started=started
        )


def _save_adapter(model: Any, folder: Path) -> None:
    model.save_pretrained(str(folder), safe_serialization=True)


@harness.hookimpl
def harness_register_trainers(registrar: Registrar) -> None:
    registrar.add(LoRATrainer)

"""Full fine-tuning on the distributed engines teams already run: PyTorch FSDP2 under ``torchrun``
(``full_fsdp``) and DeepSpeed ZeRO-3 under the ``deepspeed`` launcher (``full_deepspeed``).

Every parameter is trained; parameters, gradients and optimizer states are sharded over the
processes.  The trainers share the loop, batching, mitigations and resumable state of the LoRA
trainer (``harness.lib.training``); they emit the same checkpoint events, and their checkpoints and
final output are plain Hugging Face model folders (safetensors) that the ``hf`` backend loads.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from pydantic import Field, model_validator

import harness
from harness.plugin.components import ComponentConfig, TrainContext, Trainer
from harness.errors import MissingExtraError
from harness.lib.models import LoadedModel
from harness.lib.training.config import TrainingConfig
from harness.lib.training.data import prepare
from harness.lib.training.launch import JobSpec, LaunchConfig, resolve_launch, run_job
from harness.lib.training.run import emitter, finish, resume_digest, train_locally, use_bf16
from harness.types import Conversation, TrainOutput
from harness.plugin.registry import Registrar


class FullConfig(TrainingConfig):
    learning_rate: float = Field(1e-5, gt=0)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)


class ZeroConfig(ComponentConfig):
    offload_optimizer: bool = Field(False, description="keep optimizer states in CPU memory (DeepSpeedCPUAdam)")
    offload_param: bool = Field(False, description="keep parameters in CPU memory between uses")


class DeepSpeedConfig(FullConfig):
    zero: ZeroConfig = Field(default_factory=ZeroConfig)

    @model_validator(mode="after")
    def _no_ewc(self) -> DeepSpeedConfig:
        if self.ewc is not None:
            raise ValueError("ewc is not supported with ZeRO-3 (it owns the gradient partitions); use full_fsdp")
        return self


class FullTrainer(Trainer[FullConfig]):
    """Every parameter, in this process: the single-device baseline of the sharded trainers."""

    name = "full"
    description = "full fine-tuning in this process (one device): every parameter, AdamW, resumable"
    Config = FullConfig

    def train(self, base: LoadedModel, data: Sequence[Conversation], ctx: TrainContext) -> TrainOutput:
        import torch

        cfg = self.config
        started = time.perf_counter()
        random.seed(ctx.seed)
        torch.manual_seed(ctx.seed)
        prepared = prepare(base.tokenizer, data, cfg, ctx)
        model = base.model
        for param in model.parameters():
            param.requires_grad_(True)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return train_locally(
            self,
            cfg,
            base,
            model,
            prepared,
            ctx,
            save_weights=lambda m, folder: _save_model(m, base.tokenizer, folder),
            final_name="model",
            started=started,
        )

def _save_model(model: Any, tokenizer: Any, folder: Any) -> None:
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


_FullConfigT = TypeVar("_FullConfigT", bound=FullConfig, covariant=True)


class _DistributedTrainer(Trainer[_FullConfigT]):
    in_process = False
    engine: ClassVar[str]

    def _extra(self) -> dict[str, Any]:
        return {}

    def _check_ready(self) -> None:
        """Raise when the engine cannot run here."""

    def train(self, base: LoadedModel, data: Sequence[Conversation], ctx: TrainContext) -> TrainOutput:
        cfg = self.config
        self._check_ready()
        started = time.perf_counter()
        prepared = prepare(base.tokenizer, data, cfg, ctx)
        launch = resolve_launch(cfg.launch)
        bf16 = use_bf16(cfg.precision, base)
        spec = JobSpec(
            self.engine,
            launch,
            output_dir=ctx.output_dir,
            model_path=base.ref.path,
            examples=prepared.examples,
            fisher=prepared.fisher,
            config=TrainingConfig.model_validate(cfg.model_dump(include=set(TrainingConfig.model_fields), by_alias=True)).model_dump(mode="json", by_alias=True),
            seed=ctx.seed,
            pad_id=base.tokenizer.pad_token_id,
            config_digest=resume_digest(self, prepared, base.ref.fingerprint, ctx.seed, launch.world_size),
            resume=ctx.resume,
            bf16=bf16,
            extra=self._extra(),
        )
        job = run_job(spec, emitter(self.name, ctx))
        first = job.sharding[0]
        note = (
            f"{self.engine}: {launch.world_size} processes, rank 0 held {first.local_params:,} of "
            f"{first.total_params:,} parameters"
        )
        return finish(job.result, prepared, started, [note])


class FSDPTrainer(_DistributedTrainer[FullConfig]):
    name = "full_fsdp"
    description = "full fine-tuning sharded with PyTorch FSDP2 (fully_shard per decoder layer) under torchrun"
    Config = FullConfig
    engine = "fsdp2"


class DeepSpeedTrainer(_DistributedTrainer[DeepSpeedConfig]):
    name = "full_deepspeed"
    description = "full fine-tuning with DeepSpeed ZeRO-3 under the deepspeed launcher (optional CPU offload)"
    Config = DeepSpeedConfig
    engine = "deepspeed"

    def _extra(self) -> dict[str, Any]:
        cfg = self.config
        return {"deepspeed": cfg.zero.model_dump()}

    def _check_ready(self) -> None:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise MissingExtraError("full_deepspeed needs DeepSpeed: DS_BUILD_OPS=0 pip install 'finetune-harness[deepspeed]'")


@harness.hookimpl
def harness_register_trainers(registrar: Registrar) -> None:
    registrar.add(FullTrainer)
    registrar.add(FSDPTrainer)
    registrar.add(DeepSpeedTrainer)

"""Glue between a trainer component and the shared loop: the resume digest, the events, EWC setup
and the ``TrainOutput``."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.lib.models import LoadedModel
from harness.lib.training.batching import collate, token_loss
from harness.lib.training.config import TrainingConfig
from harness.lib.training.data import TrainingData
from harness.lib.training.events import CheckpointSaved, LoopEvent, Progress
from harness.lib.training.examples import Example
from harness.lib.training.loop import Engine, LoopResult, LoopSetup, TrainLoop
from harness.lib.training.context import TrainContext, TrainerIdentity
from harness.types import CheckpointEvent, TrainOutput


def examples_digest(data: TrainingData) -> str:
    h = hashlib.sha256()
    for example in [*data.examples, *data.fisher]:
        h.update(json.dumps([example.input_ids, example.labels, example.kind, example.weight]).encode())
    return h.hexdigest()


def resume_digest(trainer: TrainerIdentity, data: TrainingData, base_fingerprint: str, seed: int, world: int = 1) -> str:
    """What a resumable state must match to be resumed: trainer and config, data, base, seed."""
    material = {
        "trainer": trainer.cache_material(),
        "data": examples_digest(data),
        "base": base_fingerprint,
        "seed": seed,
        "world_size": world,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def emitter(trainer_name: str, ctx: TrainContext) -> Callable[[LoopEvent], None]:
    """Turn loop events into progress updates and ``CheckpointEvent``s for the runner."""

    def emit(event: LoopEvent) -> None:
        if isinstance(event, Progress):
            ctx.progress(event.step, event.total, f"loss {event.loss:.3f}, grad norm {event.grad_norm:.2f}")
        elif isinstance(event, CheckpointSaved):
            ctx.on_checkpoint(
                CheckpointEvent(trainer_name, event.step, event.total, Path(event.path), event.loss, event.final)
            )

    return emit


def make_ewc(torch: Any, engine: Engine, cfg: TrainingConfig, data: TrainingData, pad_id: int) -> Any:
    return make_ewc_for(torch, engine, cfg, data.fisher, pad_id)


def make_ewc_for(torch: Any, engine: Engine, cfg: TrainingConfig, fisher_set: list[Example], pad_id: int) -> Any:
    """EWC for ``engine``'s model: the Fisher estimated on ``fisher_set`` (the general data) and
    the anchor at the current weights, i.e. the base model's, before the first step.  Under FSDP2
    every rank estimates on the same batches and keeps the Fisher of its own shards."""
    if cfg.ewc is None:
        return None
    from harness.lib.training.ewc import EWCPenalty, estimate_fisher

    size = cfg.ewc.batch_size
    batches = [
        collate(torch, fisher_set, [[i] for i in range(start, min(start + size, len(fisher_set)))], pad_id, engine.device)
        for start in range(0, len(fisher_set), size)
    ]

    def loss_fn(_model: Any, batch: dict[str, Any]) -> Any:
        return token_loss(torch, engine.forward(batch), batch["labels"], batch["loss_weights"])

    named = dict(engine.named_local_parameters())
    fisher = estimate_fisher(torch, engine.model, batches, loss_fn, names=set(named))
    with torch.no_grad():
        anchor = {name: _local(param).detach().clone() for name, param in named.items()}
    return EWCPenalty(torch, fisher, anchor, cfg.ewc.lam)


def _local(tensor: Any) -> Any:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def run_loop(
    trainer: TrainerIdentity,
    engine: Engine,
    cfg: TrainingConfig,
    data: TrainingData,
    base: LoadedModel,
    ctx: TrainContext,
    ewc: Any,
    final_name: str,
) -> LoopResult:
    setup = LoopSetup(
        seed=ctx.seed,
        output_dir=ctx.output_dir,
        pad_id=base.tokenizer.pad_token_id,
        config_digest=resume_digest(trainer, data, base.ref.fingerprint, ctx.seed),
        resume=ctx.resume,
        final_name=final_name,
    )
    loop = TrainLoop(engine, cfg, data.examples, setup, emit=emitter(trainer.name, ctx), ewc=ewc)
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    return loop.run()


def finish(result: LoopResult, data: TrainingData, started: float, notes: list[str] | None = None) -> TrainOutput:
    extra = list(notes or [])
    if result.resumed_from is not None:
        extra.append(f"resumed from the state at step {result.resumed_from}")
    stopped = result.stopped
    if stopped is not None:
        extra.append(f"stopped early at step {result.steps} of {result.total_steps}: {stopped.reason}")
    return TrainOutput(
        path=Path(result.checkpoints[-1].path),
        steps=result.steps,
        examples=data.count("domain"),
        supervised_tokens=result.supervised_tokens,
        first_loss=result.first_loss,
        last_loss=result.last_loss,
        seconds=time.perf_counter() - started,
        notes=tuple(data.notes + extra),
        stopped_step=stopped.step if stopped else None,
        stop_reason=stopped.reason if stopped else "",
    )


def use_bf16(precision: str, base: LoadedModel) -> bool:
    """bf16 autocast when asked, or on ``auto`` where the hardware runs bf16 natively."""
    from harness.lib.device import native_bf16

    return precision == "bf16" or (precision == "auto" and base.dtype == "float32" and native_bf16())


def train_locally(
    trainer: TrainerIdentity,
    cfg: TrainingConfig,
    base: LoadedModel,
    model: Any,
    data: TrainingData,
    ctx: TrainContext,
    *,
    save_weights: Any,
    final_name: str,
    started: float,
) -> TrainOutput:
    """Train ``model``'s trainable parameters in this process on the shared loop."""
    import torch

    from harness.lib.training.local import LocalEngine
    from harness.lib.training.loop import total_steps

    model.train()
    engine = LocalEngine(
        torch,
        model,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        total_steps=total_steps(data.examples, cfg, ctx.seed),
        max_grad_norm=cfg.max_grad_norm,
        bf16=use_bf16(cfg.precision, base),
        save_weights=save_weights,
    )
    ewc = make_ewc(torch, engine, cfg, data, base.tokenizer.pad_token_id)
    result = run_loop(trainer, engine, cfg, data, base, ctx, ewc, final_name=final_name)
    return finish(result, data, started)

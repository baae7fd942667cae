"""The training loop every trainer shares, whatever engine holds the model.

An *engine* owns the model, optimizer and scheduler (peft LoRA in this process, full fine-tuning
sharded by FSDP2 or DeepSpeed ZeRO-3 over several processes); the loop owns everything else:

* the data plan: ``plan_epoch`` is a pure function of (seed, epoch), so the data position of a
  checkpoint is just ``(epoch, batch)``; on a multi-process run each rank takes every
  ``world_size``-th row of the global batch, and the loss is normalised by the supervised tokens of
  the *global* batch, so the gradient does not depend on how many processes share the work;
* the mitigations: replay and multi-task rows come from the plan's ``mix``; EWC adds its penalty's
  gradient after the backward pass;
* resumable state every ``save_every`` steps (``harness.lib.training.checkpoint``: atomic, checksummed,
  with every rank's RNG state), and on start the newest complete state is restored, so a killed run
  resumed ends with the weights of an uninterrupted one, bit for bit on CPU;
* checkpoint events every ``eval_every`` steps (consolidated weights or adapter, for the forgetting
  curve) and the final weights;
* an early stop (``harness.lib.training.stop``): a request written while the loop runs (by the live
  forgetting probes) ends it between two steps; the newest checkpoint is then the final weights
  when it is the current step's, else the current weights are saved as the final ones.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.errors import CheckError
from harness.lib.training import checkpoint
from harness.lib.training.batching import collate, plan_epoch, token_loss
from harness.lib.training.config import TrainingConfig
from harness.lib.training.events import (
    CheckpointSaved,
    EarlyStop,
    LoopEvent,
    PenaltyApplied,
    Progress,
    Resumed,
    Started,
)
from harness.lib.training.examples import IGNORE, Example
from harness.lib.training.stop import StopRequest, read_stop


class Engine(Protocol):
    """What the loop needs from the thing that holds the model."""

    rank: int
    world_size: int
    device: Any
    model: Any

    def forward(self, batch: dict[str, Any]) -> Any:
        """Logits of a collated batch (float), under the engine's precision."""

    def loss(self, batch: dict[str, Any]) -> Any:
        """``token_loss`` of the batch's logits (an engine may compute it without all the logits)."""

    def backward(self, loss: Any) -> None: ...

    def step(self, after_clip: Callable[[], None] | None = None) -> float:
        """Clip the gradients, call ``after_clip`` (EWC adds its penalty's gradient there), then
        the optimizer and scheduler step, and zero the gradients; returns the norm before clipping."""

    def named_local_parameters(self) -> Iterable[tuple[str, Any]]:
        """Trainable parameters as this rank holds them (local shards when sharded)."""

    def all_reduce_sum(self, value: float) -> float: ...

    def barrier(self) -> None: ...

    def save_state(self, folder: Path) -> None:
        """Write model/adapter, optimizer and scheduler state (a collective on every rank)."""

    def load_state(self, folder: Path) -> None: ...

    def save_consolidated(self, path: Path) -> None:
        """Write loadable weights (adapter or full model folder) to ``path`` (collective)."""

    def sharding(self) -> dict[str, int]:
        """``local_params`` and ``total_params`` (trainable parameter counts on this rank) and
        ``world_size``: the fields of ``events.Started`` and ``events.RankSharding``."""


class ProcessGroupEngine:
    """The collectives of an engine whose ranks share the default process group."""

    torch: Any
    dist: Any
    device: Any
    rank: int
    world_size: int
    model_path: Path

    def _join(self, torch: Any, model_path: Path) -> None:
        """This rank's place in the initialised default group, and its device (its GPU, else the CPU)."""
        import os

        import torch.distributed as dist

        self.torch, self.dist, self.model_path = torch, dist, model_path
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")

    def forward(self, batch: dict[str, Any]) -> Any:
        """Logits of a collated batch: the engine's own."""
        raise NotImplementedError

    def loss(self, batch: dict[str, Any]) -> Any:
        return token_loss(self.torch, self.forward(batch), batch["labels"], batch["loss_weights"])

    def all_reduce_sum(self, value: float) -> float:
        tensor = self.torch.tensor([value], dtype=self.torch.float64, device=self.device)
        self.dist.all_reduce(tensor)
        return float(tensor.item())

    def barrier(self) -> None:
        self.dist.barrier()


@dataclass
class LoopResult:
    """What a loop did: its steps, losses and tokens, where it resumed from, the checkpoints it
    reported (the final weights last), and an early stop."""

    steps: int
    total_steps: int
    first_loss: float
    last_loss: float
    supervised_tokens: int
    seconds: float
    resumed_from: int | None
    input_tokens: int = 0
    """Non-padding tokens of the steps this process ran (resumed steps excluded)."""
    checkpoints: list[CheckpointSaved] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    stopped: EarlyStop | None = None
    """The checkpoint that asked for an early stop, and why."""

    def to_json(self) -> dict[str, Any]:
        """``result.json`` of a distributed job (``from_json`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoopResult:
        checkpoints = [CheckpointSaved(**c) for c in data.get("checkpoints", [])]
        stopped = EarlyStop(**data["stopped"]) if data.get("stopped") else None
        return cls(**{**data, "checkpoints": checkpoints, "stopped": stopped})


@dataclass(frozen=True)
class LoopSetup:
    """Where and how a loop runs, beside its engine, config and examples: the seed of the data
    order, the output folder, the padding token, what a resumable state must match
    (``config_digest``), whether to resume from one, and the folder name of the final weights."""

    seed: int
    output_dir: Path
    pad_id: int
    config_digest: str
    resume: bool = True
    final_name: str = "final"


def total_steps(examples: Sequence[Example], cfg: TrainingConfig, seed: int) -> int:
    batches = sum(
        len(plan_epoch(examples, batch_size=cfg.batch_size, max_length=cfg.max_length, strategy=cfg.batching, seed=seed, epoch=epoch, mix=cfg.mix()))
        for epoch in range(cfg.epochs)
    )
    return min(cfg.max_steps or batches, batches)


def _supervised_after_shift(example: Example) -> int:
    return sum(label != IGNORE for label in example.labels[1:])


class TrainLoop:
    """Run ``cfg`` on ``engine``; ``emit(event)`` reports progress and checkpoints
    (``harness.lib.training.events``)."""

    def __init__(
        self,
        engine: Engine,
        cfg: TrainingConfig,
        examples: Sequence[Example],
        setup: LoopSetup,
        *,
        emit: Callable[[LoopEvent], None],
        ewc: Any = None,
    ) -> None:
        self.engine, self.cfg, self.examples = engine, cfg, list(examples)
        self.seed, self.output_dir, self.pad_id = setup.seed, setup.output_dir, setup.pad_id
        self.digest, self.emit, self.ewc, self.resume = setup.config_digest, emit, ewc, setup.resume
        self.final_name = setup.final_name
        import torch

        self.torch = torch

    @property
    def state_root(self) -> Path:
        return self.output_dir / "state"

    def _plan(self, epoch: int) -> list[list[list[int]]]:
        cfg = self.cfg
        return plan_epoch(
            self.examples, batch_size=cfg.batch_size, max_length=cfg.max_length, strategy=cfg.batching,
            seed=self.seed, epoch=epoch, mix=cfg.mix(),
        )

    def _restore(self) -> tuple[int, int, int, dict[str, Any]] | None:
        """(step, epoch, batch index, meta) of the newest complete state, restored into the engine.

        Rank 0 also draws this run's token, which names its temporary checkpoint folders: every
        rank uses the same one, and no other process (another run, a killed earlier one) does."""
        found = None
        if self.engine.rank == 0:
            found = checkpoint.latest(self.state_root, self.digest) if self.resume else None
            token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            info = {"path": str(found.path) if found else None, "token": token}
            (self.output_dir / "resume.json").write_text(json.dumps(info))
        self.engine.barrier()
        info = json.loads((self.output_dir / "resume.json").read_text())
        self.token = str(info["token"])
        self.engine.barrier()
        if info["path"] is None:
            return None
        folder = Path(info["path"])
        meta = json.loads((folder / checkpoint.MANIFEST).read_text())["meta"]
        self.engine.load_state(folder)
        checkpoint.load_rng(folder, self.engine.rank, self.torch)
        return meta["step"], meta["epoch"], meta["batch"], meta

    def _portable(self, event: CheckpointSaved) -> dict[str, Any]:
        """A checkpoint event as saved in the state: its path relative to the output folder, so a
        copied store resumes with paths into the copy (an absolute one is kept as it is)."""
        path = Path(event.path)
        return {**asdict(event), "path": str(path.relative_to(self.output_dir)) if path.is_relative_to(self.output_dir) else str(path)}

    def _save_state(self, step: int, epoch: int, batch: int, meta: dict[str, Any]) -> None:
        staging = checkpoint.staging_dir(self.state_root, step, self.token)
        if self.engine.rank == 0:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.engine.barrier()
        self.engine.save_state(staging)
        checkpoint.save_rng(staging, self.engine.rank, self.torch)
        self.engine.barrier()
        if self.engine.rank == 0:
            full = {**meta, "step": step, "epoch": epoch, "batch": batch, "config_digest": self.digest}
            checkpoint.commit(staging, step, full)
        self.engine.barrier()

    def _stop_requested(self) -> StopRequest | None:
        """The stop request, if one was written; every rank agrees (rank 0 reads, one collective)."""
        found = read_stop(self.output_dir) if self.engine.rank == 0 else None
        if self.engine.world_size == 1:
            return found
        if not self.engine.all_reduce_sum(1.0 if found else 0.0):
            return None
        return found or StopRequest(-1, "stopped by rank 0")

    def run(self) -> LoopResult:
        cfg, engine = self.cfg, self.engine
        started = time.perf_counter()
        total = total_steps(self.examples, cfg, self.seed)
        step, epoch0, batch0 = 0, 0, 0
        self.losses: list[float] = []
        self.tokens, self.input_tokens = 0, 0
        self.events: list[CheckpointSaved] = []
        restored = self._restore()
        if restored is not None:
            step, epoch0, batch0, meta = restored
            self.losses, self.tokens = list(meta["losses"]), int(meta["tokens"])
            self.events = [CheckpointSaved(**{**e, "path": str(self.output_dir / e["path"])}) for e in meta["checkpoints"]]
            self.emit(Resumed(step, total))
            for event in self.events:
                self.emit(event)
        resumed_from = step if restored is not None else None
        self.emit(Started(total, **engine.sharding()))
        stop = self._stop_requested() if self.events else None
        epoch = epoch0
        while step < total and stop is None:
            plan = self._plan(epoch)
            for index in range(batch0 if epoch == epoch0 else 0, len(plan)):
                if step >= total:
                    break
                step = self._step(plan, index, epoch, step, total, started)
                stop = self._stop_requested()
                if stop is not None:
                    break
            epoch += 1
        final = self._finish(step, total, stop)
        last = self.losses[-1] if self.losses else float("nan")
        return LoopResult(
            steps=step, total_steps=total, first_loss=self.losses[0] if self.losses else float("nan"), last_loss=last,
            supervised_tokens=self.tokens, seconds=time.perf_counter() - started, resumed_from=resumed_from,
            checkpoints=[*self.events, final], losses=self.losses, input_tokens=self.input_tokens,
            stopped=None if stop is None else EarlyStop(stop.step, stop.reason),
        )

    def _step(self, plan: list[list[list[int]]], index: int, epoch: int, step: int, total: int, started: float) -> int:
        """Train on ``plan[index]``, report it, write its checkpoint and state when due; the new step."""
        cfg, engine, rows = self.cfg, self.engine, plan[index]
        loss_value, grad_norm = self._train_step(rows, step)
        self.tokens += sum(_supervised_after_shift(self.examples[i]) for row in rows for i in row)
        self.input_tokens += sum(len(self.examples[i]) for row in rows for i in row)
        step += 1
        self.losses.append(loss_value)
        self.emit(Progress(step, total, loss_value, grad_norm, self.input_tokens, time.perf_counter() - started))
        position = (epoch, index + 1) if index + 1 < len(plan) else (epoch + 1, 0)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
            path = self.output_dir / f"checkpoint-{step}"
            engine.save_consolidated(path)
            event = CheckpointSaved(step, total, str(path), loss_value, final=False)
            self.events.append(event)
            self.emit(event)
        if step % cfg.state_every == 0 and step < total:
            meta = {"losses": self.losses, "tokens": self.tokens, "checkpoints": [self._portable(e) for e in self.events]}
            self._save_state(step, *position, meta)
        return step

    def _finish(self, step: int, total: int, stop: StopRequest | None) -> CheckpointSaved:
        """The final weights' event: after a stop at the newest checkpoint's step, that checkpoint
        (already reported); else the current weights, saved and reported as final."""
        if stop is not None and self.events and self.events[-1].step == step:
            return self.events.pop()
        final = self.output_dir / self.final_name
        self.engine.save_consolidated(final)
        last = self.losses[-1] if self.losses else float("nan")
        event = CheckpointSaved(step, total, str(final), last, final=True)
        self.emit(event)
        return event

    def _train_step(self, rows: list[list[int]], step: int) -> tuple[float, float]:
        """One optimizer step on the global batch ``rows``; returns its loss and gradient norm."""
        torch, engine = self.torch, self.engine
        global_tokens = sum(_supervised_after_shift(self.examples[i]) for row in rows for i in row)
        mine = rows[engine.rank :: engine.world_size]
        if not mine:  # fewer rows than ranks in the last batch: a row that weighs nothing keeps the collectives aligned
            mine, scale = [rows[0]], 0.0
        else:
            scale = 1.0
        batch = collate(torch, self.examples, mine, self.pad_id, engine.device)
        local_tokens = int((batch["labels"][:, 1:] != IGNORE).sum())
        loss = engine.loss(batch)
        # token_loss is a mean over this rank's tokens; rescale it to this rank's share of the
        # global sum, times world_size because the engines average gradients over ranks.
        factor = scale * local_tokens * engine.world_size / max(global_tokens, 1)
        scaled = loss * factor
        if not torch.isfinite(loss):
            raise CheckError(f"training loss is {loss.item()} at step {step + 1}")
        engine.backward(scaled)
        penalty: list[float] = []

        def add_ewc() -> None:
            # After clipping: a large penalty on the few parameters the general data relies on
            # must not shrink the data gradient of all the others (clipping is global).
            penalty.append(self.ewc.add_gradients(engine.named_local_parameters()))

        grad_norm = engine.step(add_ewc if self.ewc is not None else None)
        if penalty:
            self.emit(PenaltyApplied(step + 1, engine.all_reduce_sum(penalty[0])))
        value = engine.all_reduce_sum(float(scaled.detach())) / engine.world_size
        if not math.isfinite(value):
            raise CheckError(f"training loss is {value} at step {step + 1}")
        return value, grad_norm

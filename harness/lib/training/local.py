"""The in-process engine: one process, the model in this process's memory (peft LoRA, or every
parameter), torch AdamW, a linear schedule with warmup, bf16 autocast where the hardware runs bf16
natively."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.errors import DataError
from harness.lib.training import checkpoint
from harness.lib.training.batching import model_inputs


def atomic_dir(path: Path, write: Callable[[Path], None]) -> Path:
    """Write a folder with ``write(tmp)`` next to ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def scheduler_state(scheduler: Any) -> str:
    state = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    return json.dumps(state)


def load_scheduler_state(scheduler: Any, text: str) -> None:
    state = json.loads(text)
    state["lr_lambdas"] = [None] * len(scheduler.lr_lambdas)
    scheduler.load_state_dict(state)


class LocalEngine:
    """``model``'s trainable parameters are optimised in this process (rank 0 of 1)."""

    rank, world_size = 0, 1

    def __init__(
        self,
        torch: Any,
        model: Any,
        *,
        learning_rate: float,
        weight_decay: float,
        warmup_steps: int,
        total_steps: int,
        max_grad_norm: float,
        bf16: bool,
        save_weights: Callable[[Any, Path], None],
    ) -> None:
        import transformers

        self.torch, self.model = torch, model
        self.device = next(model.parameters()).device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=learning_rate, weight_decay=weight_decay)
        self.scheduler = transformers.get_linear_schedule_with_warmup(self.optimizer, warmup_steps, total_steps)
        self.max_grad_norm = max_grad_norm
        self.autocast = (
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        )
        self._save_weights = save_weights

    def forward(self, batch: dict[str, Any]) -> Any:
        with self.autocast:
            return self.model(**model_inputs(batch)).logits

    def backward(self, loss: Any) -> None:
        loss.backward()

    def step(self, after_clip: Callable[[], None] | None = None) -> float:
        norm = self.torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        if after_clip is not None:
            after_clip()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def named_local_parameters(self) -> Iterable[tuple[str, Any]]:
        return self.named

    def all_reduce_sum(self, value: float) -> float:
        return value

    def barrier(self) -> None:
        pass

    def sharding(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.params)
        return {"local_params": total, "total_params": total, "world_size": 1}

    def save_state(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({n: p.detach().contiguous() for n, p in self.named}, str(folder / "trainable.safetensors"))
        checkpoint.save_optimizer(folder, self.optimizer.state_dict())
        (folder / "scheduler.json").write_text(scheduler_state(self.scheduler))

    def load_state(self, folder: Path) -> None:
        from safetensors.torch import load_file

        saved = load_file(str(folder / "trainable.safetensors"))
        names = {n for n, _ in self.named}
        if set(saved) != names:
            raise DataError(f"{folder}: the saved parameters are not this model's trainable ones")
        with self.torch.no_grad():
            for name, param in self.named:
                param.copy_(saved[name])
        self.optimizer.load_state_dict(checkpoint.load_optimizer(folder))
        load_scheduler_state(self.scheduler, (folder / "scheduler.json").read_text())

    def save_consolidated(self, path: Path) -> None:
        atomic_dir(path, lambda tmp: self._save_weights(self.model, tmp))

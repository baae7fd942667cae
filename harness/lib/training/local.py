"""The in-process engine: one process, the model in this process's memory (peft LoRA, or every
parameter), torch AdamW, a linear schedule with warmup, bf16 autocast where the hardware runs bf16
natively.

What keeps its step cheap (see ``benchmarks/train_throughput.py`` for the profile behind it):

* the loss is computed on the supervised positions only, with a chunked fused linear
  cross-entropy (``harness.lib.training.loss``), never with the full-vocabulary logits of every
  position; models whose logits are more than ``lm_head(hidden)`` fall back to ``token_loss``;
* AdamW runs as torch's fused kernel (one pass over each parameter, its gradient and moments; the
  same update as the per-parameter loop), where torch has it for the parameters' device and dtype;
* under bf16 autocast, the frozen weights of ``Linear`` layers (a LoRA model's base) are stored
  in bf16 once (``freeze_in_dtype``): autocast would cast each of them to bf16 at every use,
  giving the same values.
"""

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
from harness.lib.training.batching import model_inputs, token_loss
from harness.lib.training.loss import supervised_loss, supports_supervised_loss


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


def adamw(torch: Any, params: list[Any], *, learning_rate: float, weight_decay: float) -> Any:
    """torch's AdamW, fused where torch has the kernel for the parameters (CPU and CUDA floats),
    else its per-parameter loop."""
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=fused or None)


def freeze_in_dtype(torch: Any, model: Any, dtype: Any) -> int:
    """Store the frozen weights (and biases) of ``model``'s ``Linear`` layers in ``dtype``; returns
    how many modules changed.  Only for a model run under autocast to ``dtype``, which casts those
    weights to ``dtype`` at every forward anyway: the outputs stay the same, the casts go.  The
    output head and any weight another module shares (tied embeddings) keep their dtype: an
    embedding is not autocast, and its output feeds the float32 residual stream."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    shared = {
        id(param)
        for module in model.modules()
        if type(module) is not torch.nn.Linear or module is head
        for param in module.parameters(recurse=False)
    }
    changed = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear or module is head:
            continue
        params = list(module.parameters(recurse=False))
        if any(p.requires_grad or id(p) in shared for p in params) or module.weight.dtype == dtype:
            continue
        module.to(dtype)
        changed += 1
    return changed


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
        self.optimizer = adamw(torch, self.params, learning_rate=learning_rate, weight_decay=weight_decay)
        self.scheduler = transformers.get_linear_schedule_with_warmup(self.optimizer, warmup_steps, total_steps)
        self.max_grad_norm = max_grad_norm
        self.bf16 = bf16
        self.autocast = (
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        )
        if bf16:
            freeze_in_dtype(torch, model, torch.bfloat16)
        self.fused_loss = supports_supervised_loss(model)
        self._head_cache: dict[str, Any] = {}
        self._save_weights = save_weights

    def forward(self, batch: dict[str, Any]) -> Any:
        with self.autocast:
            return self.model(**model_inputs(batch)).logits

    def loss(self, batch: dict[str, Any]) -> Any:
        """``token_loss`` of the batch, from the supervised positions' hidden states when the model
        allows it (``harness.lib.training.loss``), else from the full logits."""
        torch = self.torch
        if not self.fused_loss:
            return token_loss(torch, self.forward(batch), batch["labels"], batch["loss_weights"])
        dtype = torch.bfloat16 if self.bf16 else None
        return supervised_loss(torch, self.model, batch, self.autocast, dtype, self._head_cache)

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

"""Full fine-tuning sharded with PyTorch FSDP2 (``torch.distributed.fsdp.fully_shard``).

Runs in every process of a ``torchrun`` job (see ``harness.lib.training.worker``).  Each decoder layer
(the classes the model lists in ``_no_split_modules``) is its own FSDP unit, then the root; every
parameter, gradient and AdamW state is a ``DTensor`` shard, 1/world_size of the whole.  bf16 mixed
precision (``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``) where the hardware runs
bf16 natively, with fp32 master weights and optimizer states; gloo on CPU, NCCL on GPU.

Resumable state is gathered to full tensors (``get_model_state_dict`` / ``get_optimizer_state_dict``
with ``full_state_dict=True``) and written by rank 0 as safetensors; on resume every rank reads the
same files and keeps its shard (``set_*_state_dict``), so a state can even be resumed on another
number of processes.  The consolidated model is a plain Hugging Face folder that loads without
FSDP.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import CheckError
from harness.lib.training import checkpoint
from harness.lib.training.batching import model_inputs
from harness.lib.training.local import atomic_dir, load_scheduler_state, scheduler_state
from harness.lib.training.loop import ProcessGroupEngine

MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def decoder_layers(model: Any) -> list[Any]:
    """The modules to shard one by one: instances of the model's ``_no_split_modules`` classes."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise CheckError(f"{type(model).__name__} names no decoder layer class (_no_split_modules) to shard")
    return layers


def unique_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """Clone tensors that share storage with an earlier one (tied weights): safetensors refuses
    aliased tensors."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if ptr in seen else tensor.contiguous()
        seen.add(ptr)
    return out


def write_model_folder(folder: Path, state: dict[str, Any], source: Path, tied: bool) -> None:
    """A Hugging Face model folder: ``model.safetensors`` plus the source's config and tokenizer."""
    from safetensors.torch import save_file

    weights = {k: v for k, v in state.items() if not (tied and k == "lm_head.weight")}
    save_file(unique_tensors(weights), str(folder / "model.safetensors"), metadata={"format": "pt"})
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)


class FSDPEngine(ProcessGroupEngine):
    """One rank of an FSDP2 full fine-tuning job."""

    def __init__(self, torch: Any, model_path: Path, *, cfg: Any, total_steps: int, bf16: bool) -> None:
        import transformers
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        self._join(torch, model_path)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
        self.tied = bool(getattr(model.config, "tie_word_embeddings", False))
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.to(self.device)
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        kwargs: dict[str, Any] = {"mesh": mesh}
        if bf16:
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for layer in decoder_layers(model):
            fully_shard(layer, **kwargs)
        fully_shard(model, **kwargs)
        model.train()
        self.model = model
        self._check_sharded()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scheduler = transformers.get_linear_schedule_with_warmup(self.optimizer, cfg.warmup_steps, total_steps)
        self.max_grad_norm = cfg.max_grad_norm

    def _check_sharded(self) -> None:
        """Fail loudly unless every parameter is a DTensor shard (never train unsharded)."""
        from torch.distributed.tensor import DTensor

        plain = [n for n, p in self.model.named_parameters() if not isinstance(p, DTensor)]
        if plain:
            raise CheckError(f"FSDP2 left {len(plain)} parameters unsharded, e.g. {plain[0]}")
        counts = self.sharding()
        if self.world_size > 1 and counts["local_params"] >= counts["total_params"]:
            raise CheckError(f"rank {self.rank} holds all {counts['total_params']} parameters: not sharded")

    def sharding(self) -> dict[str, int]:
        sharded: Iterator[Any] = self.model.parameters()  # DTensors under fully_shard
        local = sum(p.to_local().numel() for p in sharded)
        total = sum(p.numel() for p in self.model.parameters())
        return {"local_params": local, "total_params": total, "world_size": self.world_size}

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.model(**model_inputs(batch)).logits

    def backward(self, loss: Any) -> None:
        loss.backward()

    def step(self, after_clip: Callable[[], None] | None = None) -> float:
        norm = self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        if after_clip is not None:
            after_clip()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def named_local_parameters(self) -> Iterable[tuple[str, Any]]:
        """The ``DTensor`` parameters; ``harness.lib.training.ewc`` works on their local shards."""
        return list(self.model.named_parameters())

    def _full_state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def save_state(self, folder: Path) -> None:
        from safetensors.torch import save_file
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        model_state = self._full_state()
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        optim_state = get_optimizer_state_dict(self.model, self.optimizer, options=options)
        if self.rank == 0:
            save_file(unique_tensors(model_state), str(folder / "model.safetensors"))
            checkpoint.save_optimizer(folder, optim_state)
            (folder / "scheduler.json").write_text(scheduler_state(self.scheduler))

    def load_state(self, folder: Path) -> None:
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        weights: dict[str, Any] = load_file(str(folder / "model.safetensors"))
        set_model_state_dict(self.model, weights, options=options)
        set_optimizer_state_dict(self.model, self.optimizer, checkpoint.load_optimizer(folder), options=options)
        load_scheduler_state(self.scheduler, (folder / "scheduler.json").read_text())

    def save_consolidated(self, path: Path) -> None:
        state = self._full_state()
        if self.rank == 0:
            atomic_dir(path, lambda tmp: write_model_folder(tmp, state, self.model_path, self.tied))
        self.barrier()

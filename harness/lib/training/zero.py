"""Full fine-tuning with DeepSpeed ZeRO stage 3 (``deepspeed.initialize``).

Runs in every process of a ``deepspeed`` launcher job (see ``harness.lib.training.worker``).  The model
is built inside ``deepspeed.zero.Init`` (transformers does this itself while an
``HfDeepSpeedConfig`` is alive, and then loads the checkpoint one gathered layer at a time), so no
rank ever holds every parameter: each keeps ``1/world_size`` of every parameter, of its gradient
and of the fp32 master weights and AdamW moments.  The loop gives each rank its own rows (gradient
accumulation 1, ``train_micro_batch_size_per_gpu = ceil(batch_size / world_size)``) and scales each
rank's loss so that the *average over ranks* is the global token mean, which is what ZeRO's
gradient reduce-scatter computes (it divides the sum by the data-parallel world size).

Optimizer: torch ``AdamW``; with ``offload_optimizer`` DeepSpeed builds ``DeepSpeedCPUAdam`` from
the config's ``optimizer`` block (ZeRO-Offload requires it).  The linear warmup schedule is created
by DeepSpeed from a callable on its base optimizer and stepped by ``engine.step()``, once per
optimizer step.

Resumable state is *not* DeepSpeed's ``save_checkpoint``: its files are pickles that DeepSpeed
unpickles in full, with the weights-only guard switched off (``TorchCheckpointEngine.load``,
``stage3._load_universal_checkpoint`` ...), which our checkpoint policy forbids.  Instead every rank
takes part in gathering the full fp32 master weights and AdamW moments per parameter (the
``deepspeed.utils`` tensor-fragment API), rank 0 writes them as safetensors (plus the optimizer
step counter and learning rate as JSON, the scheduler as JSON), and on resume every rank reads the
same files and keeps its own partition (the files do not depend on the number of processes).  A
resumed run continues bit for bit on CPU, with or without ``offload_optimizer`` (tested in
``tests/training/test_zero.py``).  The consolidated model is a plain Hugging Face folder that loads without DeepSpeed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.errors import CheckError, DataError
from harness.lib.training.batching import model_inputs
from harness.lib.training.fsdp import write_model_folder
from harness.lib.training.local import atomic_dir, load_scheduler_state, scheduler_state
from harness.lib.training.loop import ProcessGroupEngine

MOMENTS = ("exp_avg", "exp_avg_sq")
"""AdamW's per-parameter states (torch ``AdamW`` and ``DeepSpeedCPUAdam`` name them alike)."""

BETAS = (0.9, 0.999)
EPS = 1e-8


def ds_config(cfg: Any, world_size: int, *, bf16: bool, options: dict[str, Any]) -> dict[str, Any]:
    """The DeepSpeed configuration of a ZeRO-3 job of ``world_size`` processes."""
    micro = math.ceil(cfg.batch_size / world_size)
    zero: dict[str, Any] = {"stage": 3}
    if options.get("offload_optimizer"):
        zero["offload_optimizer"] = {"device": "cpu"}
    if options.get("offload_param"):
        zero["offload_param"] = {"device": "cpu"}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": 1,
        "train_batch_size": micro * world_size,
        "gradient_clipping": cfg.max_grad_norm,
        "bf16": {"enabled": bool(bf16)},
        "zero_optimization": zero,
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }
    if options.get("offload_optimizer"):
        # ZeRO-Offload steps on the CPU with DeepSpeedCPUAdam, which DeepSpeed builds from this block
        # (AdamW: decoupled weight decay, the same update as torch.optim.AdamW).
        config["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": cfg.learning_rate, "weight_decay": cfg.weight_decay, "betas": list(BETAS), "eps": EPS},
        }
    return config


class ZeroEngine(ProcessGroupEngine):
    """One rank of a DeepSpeed ZeRO-3 full fine-tuning job."""

    def __init__(
        self,
        torch: Any,
        model_path: Path,
        *,
        cfg: Any,
        total_steps: int,
        bf16: bool,
        options: dict[str, Any] | None = None,
    ) -> None:
        import deepspeed
        import transformers
        from transformers.integrations.deepspeed import HfDeepSpeedConfig

        options = dict(options or {})
        unknown = set(options) - {"offload_optimizer", "offload_param"}
        if unknown:
            raise CheckError(f"unknown DeepSpeed options {sorted(unknown)}")
        self._join(torch, model_path)
        self.config = ds_config(cfg, self.world_size, bf16=bf16, options=options)
        # While this object lives, from_pretrained builds the model inside deepspeed.zero.Init
        # (partitioned as it is created) and loads the weights layer by layer into the partitions.
        self._hf_ds_config = HfDeepSpeedConfig(self.config)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
        self.tied = bool(getattr(model.config, "tie_word_embeddings", False))
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()

        def schedule(optimizer: Any) -> Any:
            return transformers.get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, total_steps)

        kwargs: dict[str, Any] = {"model": model, "config": self.config, "lr_scheduler": schedule}
        if options.get("offload_optimizer"):
            kwargs["model_parameters"] = [p for p in model.parameters() if p.requires_grad]
        else:
            kwargs["optimizer"] = torch.optim.AdamW(
                [p for p in model.parameters() if p.requires_grad],
                lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=BETAS, eps=EPS,
            )
        self.ds, _, _, self.scheduler = deepspeed.initialize(**kwargs)
        self.named = [(n, p) for n, p in self.ds.module.named_parameters() if p.requires_grad]
        self._check_sharded()

    # ------------------------------------------------------------------ checks and counts

    def _check_sharded(self) -> None:
        """Fail loudly unless ZeRO stage 3 partitions every parameter (never train unsharded)."""
        stage = self.ds.zero_optimization_stage()
        if stage != 3:
            raise CheckError(f"DeepSpeed runs ZeRO stage {stage}, not 3: parameters would not be sharded")
        plain = [n for n, p in self.ds.module.named_parameters() if not hasattr(p, "ds_tensor")]
        if plain:
            raise CheckError(f"ZeRO-3 left {len(plain)} parameters unpartitioned, e.g. {plain[0]}")
        counts = self.sharding()
        if self.world_size > 1 and counts["local_params"] >= counts["total_params"]:
            raise CheckError(f"rank {self.rank} holds all {counts['total_params']} parameters: not sharded")

    def sharding(self) -> dict[str, int]:
        """This rank's partition of every parameter (``ds_tensor``, padded to equal sizes) and the
        full sizes (``ds_numel``); a tied weight counts once."""
        params = list(self.ds.module.parameters())
        local = sum(p.ds_tensor.numel() for p in params)
        total = sum(p.ds_numel for p in params)
        return {"local_params": local, "total_params": total, "world_size": self.world_size}

    # ------------------------------------------------------------------ training

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.ds(**model_inputs(batch)).logits

    def backward(self, loss: Any) -> None:
        self.ds.backward(loss)

    def step(self, after_clip: Callable[[], None] | None = None) -> float:
        """DeepSpeed's ``engine.step()``, once: clip, optimizer step (fp32 partitions), copy back,
        scheduler step, zero the gradients.  Returns the gradient norm before clipping.  There is
        no point between clipping and the update to call ``after_clip`` at (EWC is refused)."""
        if after_clip is not None:
            raise CheckError("DeepSpeed ZeRO-3 cannot add gradients after clipping (EWC); use full_fsdp")
        skipped = self.ds.skipped_steps
        self.ds.step()
        if self.ds.skipped_steps != skipped:
            raise CheckError("DeepSpeed skipped an optimizer step (non-finite gradient norm)")
        norm = self.ds.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def named_local_parameters(self) -> Iterable[tuple[str, Any]]:
        """Not available: ZeRO-3 reduce-scatters each gradient into its own flat fp32 partition
        buffers during the backward pass (``param.grad`` stays empty), so a penalty added to the
        gradients afterwards (EWC) would never reach the optimizer.  ``full_deepspeed`` rejects
        ``ewc`` in its config; this refuses loudly rather than return an empty list that would
        make EWC a silent no-op."""
        raise CheckError("EWC is not supported with DeepSpeed ZeRO-3 (it owns the gradient partitions); use full_fsdp")

    # ------------------------------------------------------------------ resumable state

    def _optimizer(self) -> tuple[Any, Any]:
        """(ZeRO-3 optimizer, the base optimizer that steps its fp32 partitions)."""
        zero = self.ds.optimizer
        return zero, zero.optimizer

    def _step_count(self) -> float:
        zero, base = self._optimizer()
        steps = {float(base.state[flat]["step"]) for flat in zero.fp32_partitioned_groups_flat if "step" in base.state[flat]}
        if len(steps) > 1:
            raise CheckError(f"the ZeRO-3 optimizer partitions disagree on the step count: {sorted(steps)}")
        return steps.pop() if steps else 0.0

    def save_state(self, folder: Path) -> None:
        """Full fp32 master weights and AdamW moments (gathered by every rank, written by rank 0)
        as safetensors; the step count, learning rates and scheduler as JSON.  Never pickled."""
        from deepspeed.utils import (
            safe_get_full_fp32_param,
            safe_get_full_optimizer_state,
        )
        from safetensors.torch import save_file

        weights: dict[str, Any] = {}
        moments: dict[str, Any] = {}
        for name, param in self.named:
            full = safe_get_full_fp32_param(param)
            if self.rank == 0:
                weights[name] = full.detach().float().cpu().contiguous()
            for key in MOMENTS:
                value = safe_get_full_optimizer_state(param, key)
                if self.rank == 0:
                    moments[f"{name}/{key}"] = value.detach().float().cpu().contiguous()
        step = self._step_count()
        if self.rank != 0:
            return
        _, base = self._optimizer()
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        save_file(moments, str(folder / "optimizer.safetensors"))
        groups = [{"lr": float(g["lr"])} for g in base.param_groups]
        meta = {"engine": "zero3", "step": step, "param_groups": groups, "optimizer": type(base).__name__}
        (folder / "optimizer.json").write_text(json.dumps(meta), encoding="utf-8")
        (folder / "scheduler.json").write_text(scheduler_state(self.scheduler))

    def load_state(self, folder: Path) -> None:
        """Every rank reads the saved full tensors and keeps its partitions (collective)."""
        from deepspeed.utils import (
            safe_set_full_fp32_param,
            safe_set_full_optimizer_state,
        )
        from safetensors import safe_open

        meta = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
        if meta.get("engine") != "zero3":
            raise DataError(f"{folder}: not a ZeRO-3 training state")
        zero, base = self._optimizer()
        if len(meta["param_groups"]) != len(base.param_groups):
            raise DataError(f"{folder}: {len(meta['param_groups'])} optimizer groups saved, {len(base.param_groups)} here")
        self._init_optimizer_state(meta["step"])
        zero._partition_all_parameters()  # as in a step: every parameter released to its partition
        with (
            safe_open(str(folder / "model.safetensors"), framework="pt") as weights,
            safe_open(str(folder / "optimizer.safetensors"), framework="pt") as moments,
        ):
            names = {n for n, _ in self.named}
            if set(weights.keys()) != names:
                raise DataError(f"{folder}: the saved parameters are not this model's")
            for name, param in self.named:
                safe_set_full_fp32_param(param, weights.get_tensor(name).to(self.device))
                for key in MOMENTS:
                    safe_set_full_optimizer_state(param, moments.get_tensor(f"{name}/{key}").to(self.device), key)
        # As the end of a step does: copy the fp32 masters into the (16-bit or aliased) partitions
        # the model computes with, then gather the small persistent parameters again.
        for sub_group in range(len(zero.fp16_groups)):
            zero._reassign_or_swap_out_partitioned_parameters(sub_group)
        if zero.persistent_parameters:
            zero.persistent_parameters[0].all_gather(zero.persistent_parameters)
        for group, saved in zip(base.param_groups, meta["param_groups"], strict=True):
            group["lr"] = saved["lr"]
        load_scheduler_state(self.scheduler, (folder / "scheduler.json").read_text(encoding="utf-8"))
        self.barrier()

    def _init_optimizer_state(self, step: float) -> None:
        """Create the base optimizer's lazily initialised state (as its first step would) with the
        saved step count; the moments are then overwritten from the checkpoint."""
        zero, base = self._optimizer()
        torch = self.torch
        for flat in zero.fp32_partitioned_groups_flat:
            state = base.state[flat]
            for key in MOMENTS:
                if key not in state:
                    state[key] = torch.zeros_like(flat, dtype=torch.float32)
            if type(base).__module__.startswith("torch.optim"):
                # torch Adam/AdamW keep a float32 scalar tensor (on the CPU unless capturable/fused)
                device = flat.device if base.defaults.get("capturable") or base.defaults.get("fused") else "cpu"
                state["step"] = torch.tensor(float(step), dtype=torch.float32, device=device)
            else:  # DeepSpeedCPUAdam counts in a Python int
                state["step"] = int(step)
        if hasattr(base, "ds_opt_adam") and int(step) > 0:
            self._replay_cpu_adam(base, int(step))

    def _replay_cpu_adam(self, base: Any, steps: int) -> None:
        """DeepSpeedCPUAdam's C++ side keeps the bias corrections ``beta**t`` as running float
        products, and after a jump of the step count recomputes them with ``pow`` (a last-bit
        difference).  Advance it one step at a time on empty tensors, as the uninterrupted run did,
        so a resumed run continues bit for bit."""
        empty = self.torch.empty(0, dtype=self.torch.float32)
        group = base.param_groups[0]
        beta1, beta2 = group["betas"]
        for count in range(1, steps + 1):
            base.ds_opt_adam.adam_update(
                base.opt_id, count, group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
                group["bias_correction"], empty, empty, empty, empty,
            )

    # ------------------------------------------------------------------ consolidated weights

    def save_consolidated(self, path: Path) -> None:
        """A Hugging Face model folder on rank 0 from DeepSpeed's gathered "16-bit" state dict: the
        weights the model computes with, bf16 under bf16 (FSDP2 writes its fp32 masters), fp32
        otherwise.  The tied ``lm_head.weight`` is left to ``tie_word_embeddings``."""
        state = self.ds._zero3_consolidated_16bit_state_dict()  # collective: every rank gathers
        if self.rank == 0:
            atomic_dir(path, lambda tmp: write_model_folder(tmp, state, self.model_path, self.tied))
        self.barrier()

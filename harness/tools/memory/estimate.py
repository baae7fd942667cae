"""The memory estimate: the options of a training setting, the per-GPU bytes of each part of a
step's peak (see the package docstring for the counts and their sources), and the smallest
number of GPUs that fits."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rich.console import Console, JustifyMethod
from rich.table import Table

from harness.errors import ConfigError

from .shapes import ModelShape, load_shape

Method = Literal["full", "lora", "qlora"]
Precision = Literal["fp32", "bf16", "mixed"]
Optimizer = Literal["adamw", "adamw8bit", "sgd", "adafactor"]
Attention = Literal["sdpa", "eager"]
Sharding = Literal["zero3", "none"]

METHODS: tuple[str, ...] = ("full", "lora", "qlora")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "mixed")
OPTIMIZERS: tuple[str, ...] = ("adamw", "adamw8bit", "sgd", "adafactor")
ATTENTIONS: tuple[str, ...] = ("sdpa", "eager")
SHARDINGS: tuple[str, ...] = ("zero3", "none")

GB = 10**9
GiB = 2**30

NF4_BYTES_PER_PARAM = 0.5 + (8 / 64 + 32 / (64 * 256)) / 8
"""4-bit NF4 weights plus double-quantized constants (0.127 bit/param, QLoRA paper)."""

OPTIMIZER_BYTES_PER_PARAM: dict[str, float] = {"adamw": 8.0, "adamw8bit": 2.0, "sgd": 4.0}
"""Optimizer state bytes per trainable parameter (adafactor is counted from the shapes)."""

STEP_TEMPORARIES: dict[str, int] = {"adamw": 2, "adamw8bit": 0, "sgd": 0, "adafactor": 2}
"""fp32 copies of the largest trainable tensor alive during one per-tensor optimizer step."""

ADAFACTOR_FACTOR = 1e-3
"""Adafactor's state as a fraction of 4 B/param when only a parameter count is known."""

DEFAULT_RESERVE_FRACTION = 0.10
"""Share of a GPU's memory kept back for the CUDA context, workspaces and fragmentation."""

DEFAULT_LORA_TARGETS: tuple[str, ...] = ("q_proj", "v_proj")
DEFAULT_LORA_R = 8
"""The defaults of the built-in ``lora`` trainer (plugins/trainers/lora.py)."""

MAX_GPUS = 1 << 16




@dataclass(frozen=True)
class PlanOptions:
    """A training setting to plan: method, precision, optimizer, shapes, GPUs."""

    method: Method = "full"
    precision: Precision = "bf16"
    optimizer: Optimizer = "adamw"
    seq_len: int = 2048
    micro_batch: int = 1
    gradient_checkpointing: bool = False
    attention: Attention = "sdpa"
    gpus: int = 1
    sharding: Sharding | None = None
    """``None``: zero3 (full sharding) when gpus > 1."""
    gpu_memory_gib: float = 80.0
    reserve_gib: float | None = None
    """``None``: ``DEFAULT_RESERVE_FRACTION`` of the GPU memory."""
    params: int | None = None
    """Override the parameter count (the shape, when given, still sets the activations)."""
    lora_r: int = DEFAULT_LORA_R
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS

    @property
    def effective_sharding(self) -> Sharding:
        return self.sharding or ("zero3" if self.gpus > 1 else "none")

    @property
    def reserve_bytes(self) -> int:
        gib = self.gpu_memory_gib * DEFAULT_RESERVE_FRACTION if self.reserve_gib is None else self.reserve_gib
        return int(gib * GiB)

    @property
    def usable_bytes(self) -> int:
        return int(self.gpu_memory_gib * GiB) - self.reserve_bytes


@dataclass(frozen=True)
class Plan:
    """Bytes per GPU of one training setting, and whether (and how) it fits."""

    model: str
    params: int
    trainable_params: int
    options: PlanOptions
    weights: int
    master_weights: int
    gradients: int
    optimizer: int
    buffers: int
    step_temporaries: int
    activations_no_checkpointing: int | None
    activations_checkpointing: int | None
    logits: int | None
    fits: bool = False
    min_gpus: int | None = None
    """Smallest GPU count (full sharding) that fits these settings; None when none does."""
    verdict: str = ""
    suggestions: tuple[str, ...] = field(default_factory=tuple)

    @property
    def state_total(self) -> int:
        """Weights, master weights, gradients and optimizer states: the total before activations."""
        return self.weights + self.master_weights + self.gradients + self.optimizer

    @property
    def activations(self) -> int | None:
        if self.options.gradient_checkpointing:
            return self.activations_checkpointing
        return self.activations_no_checkpointing

    @property
    def total(self) -> int:
        """State + buffers + the larger of (activations + logits) and the optimizer step's
        temporaries, which live after the backward pass has freed the activations."""
        working = max((self.activations or 0) + (self.logits or 0), self.step_temporaries)
        return self.state_total + self.buffers + working

    def to_json(self) -> dict[str, Any]:
        o = self.options
        values = {
            "weights": self.weights,
            "master_weights": self.master_weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "state_total": self.state_total,
            "buffers": self.buffers,
            "activations_no_checkpointing": self.activations_no_checkpointing,
            "activations_checkpointing": self.activations_checkpointing,
            "activations": self.activations,
            "logits": self.logits,
            "step_temporaries": self.step_temporaries,
            "total": self.total,
        }
        return {
            "model": self.model,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "method": o.method,
            "precision": o.precision,
            "optimizer": o.optimizer,
            "seq_len": o.seq_len,
            "micro_batch": o.micro_batch,
            "gradient_checkpointing": o.gradient_checkpointing,
            "attention": o.attention,
            "gpus": o.gpus,
            "sharding": o.effective_sharding,
            "gpu_memory_gib": o.gpu_memory_gib,
            "reserve_gib": round(o.reserve_bytes / GiB, 3),
            "usable_bytes": o.usable_bytes,
            "bytes": values,
            "gb": {k: None if v is None else round(v / GB, 3) for k, v in values.items()},
            "fits": self.fits,
            "min_gpus": self.min_gpus,
            "verdict": self.verdict,
            "suggestions": list(self.suggestions),
        }

    def render(self, console: Console) -> None:
        """The components in GB (1e9 bytes) and GiB, one table, then the verdict line."""
        o = self.options
        ckpt = o.gradient_checkpointing
        gpus = "1 GPU" if o.gpus == 1 else f"{o.gpus} GPUs, {o.effective_sharding}"
        table = Table(
            title=f"{self.model}: {o.method}, {o.precision}, {o.optimizer}, seq {o.seq_len} x micro-batch "
            f"{o.micro_batch}, {o.attention}{', checkpointing' if ckpt else ''}, {gpus}"
        )
        columns: tuple[tuple[str, JustifyMethod], ...] = (("component", "left"), ("GB", "right"), ("GiB", "right"), ("note", "left"))
        for column, justify in columns:
            table.add_column(column, justify=justify)

        def row(name: str, value: int | None, note: str = "") -> None:
            if value is None:
                table.add_row(name, "-", "-", "needs --model")
            else:
                table.add_row(name, f"{value / GB:,.2f}", f"{value / GiB:,.2f}", note)

        per = f"{self.trainable_params:,} trainable of {self.params:,} params"
        row("weights", self.weights, per)
        if o.precision == "mixed":
            row("fp32 master weights", self.master_weights)
        row("gradients", self.gradients)
        row("optimizer states", self.optimizer, o.optimizer)
        row("total before activations", self.state_total, f"/ {o.gpus} (zero3)" if o.effective_sharding == "zero3" else "")
        if self.buffers:
            row("buffers", self.buffers, "gathered layers / dequantized weight")
        row("activations", self.activations_no_checkpointing, "" if ckpt else "used")
        row("activations, checkpointed", self.activations_checkpointing, "used" if ckpt else "")
        row("logits and loss", self.logits)
        if self.step_temporaries:
            row("optimizer step temporaries", self.step_temporaries, "max(this, activations + logits)")
        row("total per GPU", self.total, f"usable {o.usable_bytes / GiB:,.1f} GiB of {o.gpu_memory_gib:g}")
        console.print(table)
        console.print(self.verdict, markup=False, soft_wrap=True)


def _bytes(precision: str) -> tuple[int, int, int]:
    """(compute weight bytes, gradient bytes, activation bytes) of a precision mode."""
    return {"fp32": (4, 4, 4), "bf16": (2, 2, 2), "mixed": (2, 4, 2)}[precision]


def layer_activation_bytes(shape: ModelShape, seq_len: int, batch: int, precision: str, attention: str) -> int:
    """Bytes one decoder layer keeps for its backward pass (the package docstring derives it)."""
    s, b, e = seq_len, batch, _bytes(precision)[2]
    sbh = s * b * shape.hidden
    q = s * b * shape.heads * shape.head_dim
    kv = s * b * shape.kv_heads * shape.head_dim
    norm = (4 + (2 if precision == "bf16" else 4) + e) * sbh
    if attention == "eager":
        scores = shape.heads * s * s * b * (4 + (e if e != 4 else 0))
        attn = e * 4 * q + scores
    else:
        attn = e * (q + 2 * kv + q) + 4 * shape.heads * s * b
    mlp = 4 * e * s * b * shape.intermediate
    return 2 * norm + attn + mlp


def activation_bytes(shape: ModelShape, options: PlanOptions, checkpointing: bool) -> int:
    """All decoder layers' activations (or, checkpointed, their inputs plus one layer's
    recomputation) and the final norm; the logits are ``logits_bytes``."""
    s, b, precision = options.seq_len, options.micro_batch, options.precision
    e = _bytes(precision)[2]
    sbh = s * b * shape.hidden
    layer = layer_activation_bytes(shape, s, b, precision, options.attention)
    final_norm = (4 + (2 if precision == "bf16" else 4) + e) * sbh
    layers = shape.layers * e * sbh + layer if checkpointing else shape.layers * layer
    return layers + final_norm


def logits_bytes(shape: ModelShape, options: PlanOptions) -> int:
    """Logits in the compute dtype plus the fp32 log-softmax output, its incoming gradient and
    the logits' gradient: ``b*s*vocab*(e + 12)``."""
    e = _bytes(options.precision)[2]
    return options.micro_batch * options.seq_len * shape.vocab * (e + 12)


def _optimizer_bytes(optimizer: str, trainable: int, adafactor_exact: int | None) -> int:
    if optimizer == "adafactor":
        return adafactor_exact if adafactor_exact is not None else int(4 * trainable * ADAFACTOR_FACTOR)
    return int(trainable * OPTIMIZER_BYTES_PER_PARAM[optimizer])


def _components(shape: ModelShape | None, options: PlanOptions) -> Plan:
    """The byte counts of one setting (no verdict)."""
    o = options
    wb, gb, e = _bytes(o.precision)
    base_b = 4 if o.precision == "fp32" else 2
    params = o.params if o.params is not None else shape.params if shape else 0
    scale = params / shape.params if shape and shape.params else 1.0
    if o.method == "full":
        trainable = params
        adafactor = int(shape.adafactor_state_bytes * scale) if shape else None
        largest = shape.largest_param if shape else 0
        weights = params * wb
        per_param_gathered: float = wb
    else:
        if shape is None:
            raise ConfigError(f"--method {o.method} needs --model (the adapters' size comes from its Linear layers)")
        adapters = shape.adapters(o.lora_targets)
        if not adapters:
            raise ConfigError(f"--lora-targets {','.join(o.lora_targets)}: no Linear layer of {shape.name} matches")
        trainable = sum(o.lora_r * (lin.in_features + lin.out_features) for lin in adapters)
        largest = o.lora_r * max(max(lin.in_features, lin.out_features) for lin in adapters)
        adafactor = sum(4 * (o.lora_r + lin.in_features) + 4 * (lin.out_features + o.lora_r) for lin in adapters)
        if o.method == "lora":
            base = params * base_b
            per_param_gathered = base_b
        else:
            quantized = int(shape.quantizable_params * scale)
            base = int(quantized * NF4_BYTES_PER_PARAM) + (params - quantized) * base_b
            per_param_gathered = NF4_BYTES_PER_PARAM
        weights = base + trainable * wb
    master = trainable * 4 if o.precision == "mixed" else 0
    grads = trainable * gb
    optim = _optimizer_bytes(o.optimizer, trainable, adafactor)
    shards = o.gpus if o.effective_sharding == "zero3" else 1
    buffers = 0
    if shards > 1 and shape is not None:
        gathered = 2 * shape.layer_params * per_param_gathered
        reduce = shape.layer_params * gb if o.method == "full" else 0
        buffers += int(gathered + reduce)
    if o.method == "qlora" and shape is not None and shape.linears:
        buffers += max(lin.in_features * lin.out_features for lin in shape.linears) * e
    return Plan(
        model=shape.name if shape else f"{params / 1e9:g}B params",
        params=params,
        trainable_params=trainable,
        options=o,
        weights=math.ceil(weights / shards),
        master_weights=math.ceil(master / shards),
        gradients=math.ceil(grads / shards),
        optimizer=math.ceil(optim / shards),
        buffers=buffers,
        step_temporaries=math.ceil(STEP_TEMPORARIES[o.optimizer] * 4 * largest / shards),
        activations_no_checkpointing=activation_bytes(shape, o, False) if shape else None,
        activations_checkpointing=activation_bytes(shape, o, True) if shape else None,
        logits=logits_bytes(shape, o) if shape else None,
    )


def _min_gpus(shape: ModelShape | None, options: PlanOptions) -> int | None:
    """Smallest GPU count that fits with full sharding (ZeRO-3 beyond one GPU), or None."""
    usable = options.usable_bytes
    if _components(shape, replace(options, gpus=1, sharding=None)).total <= usable:
        return 1

    def fits(n: int) -> bool:
        return _components(shape, replace(options, gpus=n, sharding="zero3")).total <= usable

    if not fits(MAX_GPUS):  # what sharding does not divide (activations, logits) is too large
        return None
    lo, hi = 2, MAX_GPUS  # the total does not grow with the GPU count beyond 2: bisect
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo


def estimate(shape: ModelShape | None, options: PlanOptions) -> Plan:
    """The plan of one setting: per-GPU bytes, whether it fits, the smallest GPU count that
    does, and what else would make it fit (checkpointing, LoRA, QLoRA).  ``shape`` None (only
    ``options.params``) plans the model state alone."""
    if options.params is None and shape is None:
        raise ConfigError("harness plan: give --model or --params")
    for name, value in (("--seq-len", options.seq_len), ("--micro-batch", options.micro_batch), ("--gpus", options.gpus)):
        if value < 1:
            raise ConfigError(f"harness plan: {name} must be at least 1 (got {value})")
    if options.reserve_gib is not None and options.reserve_gib < 0:
        raise ConfigError(f"harness plan: --reserve-gib must not be negative (got {options.reserve_gib:g})")
    if options.gpu_memory_gib <= 0 or options.usable_bytes <= 0:
        raise ConfigError(
            f"harness plan: --gpu-memory {options.gpu_memory_gib:g} GiB leaves nothing after the "
            f"{options.reserve_bytes / GiB:g} GiB reserve (--reserve-gib)"
        )
    if options.params is not None and options.params < 1:
        raise ConfigError(f"harness plan: --params must be positive (got {options.params})")
    if options.lora_r < 1:
        raise ConfigError(f"harness plan: --lora-r must be at least 1 (got {options.lora_r})")
    plan = _components(shape, options)
    o = options
    fits = plan.total <= o.usable_bytes
    min_gpus = _min_gpus(shape, o)
    gpu = f"{o.gpus} x {o.gpu_memory_gib:g} GiB"
    need = f"{plan.total / GiB:,.1f} GiB of {o.usable_bytes / GiB:,.1f} GiB usable per GPU"
    suggestions: list[str] = []
    if fits:
        verdict = f"fits on {gpu} ({need})"
        if min_gpus is not None and min_gpus < o.gpus:
            suggestions.append(f"also fits on {min_gpus} GPU{'s' if min_gpus > 1 else ''} with full sharding")
    else:
        verdict = f"does not fit on {gpu} ({need})"
        if min_gpus is not None:
            suggestions.append(f"needs >= {min_gpus} GPUs with full sharding")
        else:
            suggestions.append("no GPU count fits: what sharding cannot divide (activations, logits) exceeds one GPU")
        if shape is not None and not o.gradient_checkpointing:
            ckpt = replace(o, gradient_checkpointing=True)
            if _components(shape, ckpt).total <= o.usable_bytes:
                suggestions.append(f"use gradient checkpointing (fits on {gpu})")
            elif (n := _min_gpus(shape, ckpt)) is not None and (min_gpus is None or n < min_gpus):
                suggestions.append(f"with gradient checkpointing needs >= {n} GPUs")
        if shape is not None and o.method != "qlora":
            cheaper: list[Method] = ["lora", "qlora"] if o.method == "full" else ["qlora"]
            fitting = [
                m
                for m in cheaper
                if any(
                    _components(shape, replace(o, method=m, gradient_checkpointing=g)).total <= o.usable_bytes
                    for g in (o.gradient_checkpointing, True)
                )
            ]
            if fitting:
                suggestions.append(f"use {' / '.join(m.replace('qlora', 'QLoRA').replace('lora', 'LoRA') for m in fitting)}")
    if shape is None:
        suggestions.append("model state only: give --model for activations")
    if suggestions:
        verdict += ": " + "; ".join(suggestions)
    return replace(plan, fits=fits, min_gpus=min_gpus, verdict=verdict, suggestions=tuple(suggestions))


def plan(model: str | Path | Mapping[str, Any] | None, options: PlanOptions, base_dir: Path | None = None) -> Plan:
    """``estimate`` for a model given as ``load_config`` takes it (or None with ``options.params``)."""
    shape = load_shape(model, base_dir) if model is not None else None
    return estimate(shape, options)

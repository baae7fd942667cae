"""Training memory planner: will this fine-tune fit, and if not, what would make it fit?

``estimate(shape, options)`` adds up, per GPU, the bytes a training step holds at its peak:

* **model state**: weights, fp32 master weights (``mixed`` only), gradients and optimizer
  states.  Bytes per parameter (trainable ones for gradients and states):

  ============  =======  ======  =====  ====================================================
  precision     weights  master  grads  note
  ============  =======  ======  =====  ====================================================
  ``fp32``      4        -       4      everything in fp32
  ``bf16``      2        -       2      bf16 weights and grads, fp32 optimizer states (the
                                        chapter's convention: 7B full FT = 14 + 14 + 56 =
                                        84 GB before activations)
  ``mixed``     2        4       4      autocast / FSDP ``MixedPrecisionPolicy(param_dtype=
                                        bf16, reduce_dtype=fp32)``: fp32 master weights and
                                        grads (4 + 4 + 8 with AdamW), plus the bf16 copy the
                                        matmuls run on (autocast caches each weight's bf16
                                        cast and autograd keeps it for the backward pass)
  ============  =======  ======  =====  ====================================================

  Optimizer states (fp32 unless 8-bit): ``adamw`` 8 B/param (two moments), ``adamw8bit``
  2 B/param (bitsandbytes block-wise 8-bit moments; the per-2048-block scales are < 0.01
  B/param and left out), ``sgd`` 4 B/param (momentum), ``adafactor`` the factored second
  moment of HF ``Adafactor`` (no first moment): ``4 * (rows + cols)`` bytes for a matrix and
  ``4 * numel`` for a vector, summed exactly from the model's parameter shapes.  That is about
  4 B/param times a factor of 1e-3 or less (4 * 2d / d**2 for a d x d matrix);
  ``ADAFACTOR_FACTOR`` (1e-3) is used when only ``--params`` is known.

* **methods**: ``full`` trains every parameter.  ``lora`` keeps the base frozen in the compute
  precision (4 bytes for fp32, 2 for bf16 and mixed) and trains ``r * (in + out)`` adapter
  parameters per targeted ``nn.Linear`` (counted from the model's own Linear modules), which
  alone get gradients and optimizer states.  ``qlora`` stores the frozen Linear weights
  (every ``nn.Linear`` except the output head, as bitsandbytes does) in 4-bit NF4: 0.5
  byte/param plus the double-quantized block constants of the QLoRA paper, 8/64 + 32/(64*256)
  = 0.127 bit/param; embeddings, norms and the head stay in the compute precision; the
  adapters follow ``precision`` (bf16 weights and grads, fp32 Adam states by default).  Both
  count the full network's activations: the adapters need the gradient to flow through every
  layer.  (A frozen Linear without an adapter does not need to keep its input, so this is an
  upper bound by some 10-20% of the activations.)

* **activations** (``layer_activation_bytes``): Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models", count ``s*b*h*(34 + 5*a*s/h)`` bytes per layer
  for a GPT layer in 16-bit: layer norms 4sbh, attention 11sbh + 5as^2b (Q, K, V, softmax and
  dropout outputs and masks), MLP 19sbh (a 4h-wide GeLU MLP with dropout).  The same count,
  tensor by tensor, for the Llama-style decoder transformers runs (RMSNorm, SwiGLU MLP of
  width ``i`` = intermediate_size, grouped-query attention with ``k`` KV heads of size ``d``,
  no dropout), with ``e`` the activation element size (2 for bf16 and mixed, 4 for fp32):

  - each of the two RMSNorms: its input upcast to fp32 (4sbh; the input itself in fp32), the
    normalised tensor (``n`` = 2 bytes in bf16, 4 in fp32 and under autocast, whose residual
    stream stays fp32) and the output the next Linear keeps (e): ``(4 + n + e) * sbh``;
  - attention, sdpa (flash / memory-efficient kernels, O(s) memory): Q (e*s*b*a*d), K and V at
    their own KV width (2 * e*s*b*k*d, as ``enable_gqa`` passes them), the kernel's output,
    which is also what ``o_proj`` keeps (e*s*b*a*d: the kernels write it in (b, s, a, d) order,
    so transformers' ``transpose(1, 2).contiguous()`` copies nothing), and the fp32
    log-sum-exp (4*a*s*b);
  - attention, eager: Q, K and V repeated to ``a`` heads (``repeat_kv``), the ``o_proj`` input
    (4 * e*s*b*a*d), and the scores term ``a*s^2*b * (4 + e)``: transformers takes the softmax
    in fp32 (kept by softmax's backward) and casts it back to ``e`` for the matmul (one tensor
    when e = 4);
  - MLP: gate output (kept by SiLU), SiLU output and up output (kept by the product), the
    product (kept by ``down_proj``): ``4 * e*s*b*i``.

  RoPE keeps only cos/sin (shared by the layers), dropout is off (no masks).  With
  ``h = a*d``, i = 4h, MHA and e = 2 this gives 56sbh (+ 6as^2b eager) against 34sbh + 5as^2b: the
  SwiGLU MLP keeps four i-wide tensors instead of two and HF's unfused RMSNorm three tensors
  instead of one.  With **gradient checkpointing** (per decoder layer, as
  ``gradient_checkpointing_enable`` does) each layer keeps only its input (e*sbh, Korthikanti's
  2sbh) and one layer's activations are live again during its recomputation.  The final norm
  adds ``(4 + n + e) * sbh`` either way.  (tests/test_memory_plan.py checks this count against the
  tensors autograd saves in a real forward pass.)

* **logits and loss** (``logits_bytes``): ``b*s*vocab * (e + 12)``: the logits in the compute
  dtype (kept in the model output while ``out.loss.backward()`` runs), and in fp32 the
  log-softmax output cross-entropy keeps for its backward, the gradient arriving at it and the
  gradient of the logits it returns (4 + 4 + 4); the fp32 upcast of bf16 logits is freed at the
  end of the forward pass.  (HF ``Trainer`` drops the output before the backward pass, saving
  ``e`` of the ``e + 12``.)

* **optimizer step temporaries** (``STEP_TEMPORARIES``): a per-tensor AdamW step (torch's
  default on CPU) computes ``exp_avg_sq.sqrt() / c`` as two fp32 temporaries the size of the
  parameter it updates, so its peak adds two copies of the largest trainable tensor; Adafactor
  about two (``grad**2`` and the rank-1 reconstruction); bitsandbytes' fused 8-bit AdamW and
  SGD's in-place momentum none.  The step runs after the backward pass has freed the
  activations, so the total counts ``max(activations + logits, step temporaries)``.

* **buffers**: under full sharding, the all-gathered parameters of the layer being computed and
  of the prefetched next one, and the unsharded gradients of one layer for the reduce-scatter;
  for QLoRA the dequantized copy of the largest Linear weight.

* **sharding** over N GPUs (ZeRO-3 / FSDP full sharding, the default when N > 1): weights,
  master weights, gradients and optimizer states divide by N; activations and logits do not
  (``micro_batch`` is per GPU).  ``sharding="none"`` is plain data parallelism (replicas).

The total is model state + buffers + max(activations + logits, step temporaries): gradients,
states and all activations are taken to live together, a conservative peak (with
``zero_grad(set_to_none=True)`` the gradients only build up as activations are freed).  It
assumes a fused or per-tensor optimizer step: torch's ``foreach`` AdamW (its default for CUDA
tensors) allocates a copy of all second moments (+4 B/trainable param) during ``step()``; use
``fused=True`` (HF Trainer's ``adamw_torch_fused``).  A GPU fits the plan when the total is
at most its memory minus a reserve (``DEFAULT_RESERVE_FRACTION``, 10%: the CUDA context and
cuBLAS/NCCL workspaces, 0.5-1.5 GiB, and the caching allocator's fragmentation, which grows
with the memory in use).

``measure_training_peak`` checks the model on CPU: it trains a few real steps in a subprocess
and returns the peak RSS added by training, which ``estimate`` (fp32, AdamW, no reserve)
should match.  Measured: within 2-3% on a 19M-parameter random Llama (4 x 128, eager) and on
SmolLM2-135M (2 x 128, sdpa); where activations are small the measured peak runs 5-11% above
the estimate, memory glibc's allocator keeps in its heap after the first step frees it.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rich.console import Console, JustifyMethod
from rich.table import Table

from harness.errors import CheckError, ConfigError, require

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

_LLAMA2 = {"model_type": "llama", "vocab_size": 32000, "max_position_embeddings": 4096, "tie_word_embeddings": False}
PRESETS: dict[str, dict[str, Any]] = {
    "llama-2-7b": {
        **_LLAMA2,
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
    },
    "llama-2-13b": {
        **_LLAMA2,
        "hidden_size": 5120,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "num_key_value_heads": 40,
        "intermediate_size": 13824,
    },
    "llama-2-70b": {
        **_LLAMA2,
        "hidden_size": 8192,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "intermediate_size": 28672,
    },
    "llama-3-8b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": False,
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "rope_theta": 500000.0,
    },
}
"""Built-in architectures of well-known sizes, so the planner works offline."""

EMBEDDED_NAME = "smollm2-135m-instruct"


# --------------------------------------------------------------------------- model shapes


@dataclass(frozen=True)
class Linear:
    """One ``nn.Linear`` of the model: its qualified name and features."""

    name: str
    in_features: int
    out_features: int

    @property
    def leaf(self) -> str:
        return self.name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs from a model: exact parameter counts and the layer dimensions.

    Counted on an instance built on the meta device (no memory), so tied embeddings count once.
    """

    name: str
    params: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    linears: tuple[Linear, ...] = ()
    """Every ``nn.Linear`` except the output head (what LoRA targets and bitsandbytes quantizes)."""
    largest_param: int = 0
    """Elements of the largest parameter tensor (the optimizer step's temporaries scale with it)."""
    layer_params: int = 0
    """Parameters of the largest decoder layer (what full sharding gathers at a time)."""
    adafactor_state_bytes: int = 0
    """Adafactor's factored state for all parameters (4*(rows+cols) a matrix, 4*numel a vector)."""

    @property
    def quantizable_params(self) -> int:
        return sum(lin.in_features * lin.out_features for lin in self.linears)

    def adapters(self, targets: Sequence[str]) -> tuple[Linear, ...]:
        """The Linear modules a LoRA with these target names adapts (matched on the leaf name)."""
        return tuple(lin for lin in self.linears if lin.leaf in targets or lin.name in targets)


def load_config(model: str | Path | Mapping[str, Any], base_dir: Path | None = None) -> tuple[str, Any]:
    """``(name, transformers config)`` of ``model``: a preset name, the embedded model's name, a
    Hugging Face model folder with config.json, a config.json path, or a config mapping (with
    ``model_type``).  Raises ``ConfigError`` naming what it could not read."""
    transformers = require("transformers")
    if isinstance(model, Mapping):
        kwargs = dict(model)
        model_type = kwargs.pop("model_type", "llama")
        return model_type, transformers.AutoConfig.for_model(model_type, **kwargs)
    text = str(model)
    if text in PRESETS:
        kwargs = dict(PRESETS[text])
        return text, transformers.AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    if text == EMBEDDED_NAME:
        from harness.lib.models import resolve_model

        path = resolve_model(EMBEDDED_NAME, "hf", "auto", base_dir or Path.cwd()).path / "config.json"
    else:
        path = Path(text)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if path.is_dir():
            path = path / "config.json"
            if not path.is_file():
                raise ConfigError(f"--model {text}: no config.json in that folder")
        elif not path.is_file():
            known = ", ".join([*PRESETS, EMBEDDED_NAME])
            raise ConfigError(
                f"--model {text!r}: not a preset or embedded model ({known}), a model folder or a config.json"
            )
    try:
        config = transformers.AutoConfig.from_pretrained(str(path))
    except Exception as exc:  # a broken file: transformers raises OSError, ValueError, KeyError...
        raise ConfigError(f"{path}: not a readable transformers config ({type(exc).__name__}: {exc})") from exc
    return text, config


def load_shape(model: str | Path | Mapping[str, Any], base_dir: Path | None = None) -> ModelShape:
    """The ``ModelShape`` of ``model`` (see ``load_config``), counted on the meta device."""
    name, config = load_config(model, base_dir)
    return shape_from_config(config, name)


def shape_from_config(config: Any, name: str) -> ModelShape:
    """Build the model on the meta device (``AutoModelForCausalLM.from_config``) and count it."""
    torch = require("torch")
    transformers = require("transformers")
    try:
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--model {name}: transformers cannot build a causal LM from it ({exc})") from exc
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    params = 0
    per_layer: dict[str, int] = {}
    adafactor = 0
    largest = 0
    for pname, p in model.named_parameters():  # unique parameters: a tied head counts once
        params += p.numel()
        largest = max(largest, p.numel())
        match = re.search(r"\.layers?\.(\d+)\.", f".{pname}")
        if match:
            per_layer[match.group(1)] = per_layer.get(match.group(1), 0) + p.numel()
        adafactor += 4 * (math.prod(p.shape[:-1]) + p.shape[-1] if p.dim() >= 2 else p.numel())
    head = model.get_output_embeddings()
    linears = tuple(
        Linear(mname, mod.in_features, mod.out_features)
        for mname, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and mod is not head
    )
    heads = int(text.num_attention_heads)
    hidden = int(text.hidden_size)
    return ModelShape(
        name=name,
        params=params,
        hidden=hidden,
        layers=int(text.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or hidden // heads),
        intermediate=int(getattr(text, "intermediate_size", None) or 4 * hidden),
        vocab=int(text.vocab_size),
        linears=linears,
        largest_param=largest,
        layer_params=max(per_layer.values(), default=0),
        adafactor_state_bytes=adafactor,
    )


# --------------------------------------------------------------------------- the estimate


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
    """Bytes one decoder layer keeps for its backward pass (the module docstring derives it)."""
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


# --------------------------------------------------------------------------- measuring on CPU


@dataclass(frozen=True)
class MeasuredPeak:
    """Peak memory a few CPU training steps added to a clean process."""

    peak_bytes: int
    """Peak RSS (ru_maxrss) minus the RSS right before the model was created or loaded."""
    params: int
    rss_before: int
    seconds: float


def measure_training_peak(
    model: Path | Mapping[str, Any],
    *,
    seq_len: int,
    micro_batch: int,
    steps: int = 2,
    attention: str = "sdpa",
    seed: int = 0,
    timeout: float = 600,
) -> MeasuredPeak:
    """Train ``steps`` full fine-tuning steps (fp32, AdamW, random tokens as inputs and labels)
    in a fresh subprocess, and return the peak RSS that the model, its training and the optimizer
    added: the peak (``VmHWM``, reset just before the model is built; ``ru_maxrss`` where it cannot
    be reset) minus the RSS at that moment.

    ``model`` is a model folder (loaded with ``from_pretrained(dtype=float32)``) or a config
    mapping (a randomly initialised model).  The baseline is taken after torch, transformers
    and the model's module are imported (importing the model code alone adds ~140 MB of RSS,
    the Python runtime rather than training)."""
    spec = {
        "model": str(model) if isinstance(model, Path) else dict(model),
        "seq_len": seq_len,
        "micro_batch": micro_batch,
        "steps": steps,
        "attention": attention,
        "seed": seed,
    }
    env = {**os.environ, "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    code = "from harness.tools.memory import _measure_main; _measure_main()"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], check=False, input=json.dumps(spec), capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise CheckError(f"measure_training_peak: no result within {timeout:g} s") from exc
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CheckError(f"measure_training_peak: the training subprocess failed ({proc.returncode}): {tail[0]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return MeasuredPeak(**result)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux ``clear_refs`` 5), so
    the peak read later is the training's, not a transient of the imports before it (compiling a
    fresh venv's bytecode, for one).  False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _measure_main() -> None:  # pragma: no cover - runs in the subprocess of measure_training_peak
    """The subprocess side of ``measure_training_peak``: a JSON spec on stdin, a JSON line out."""
    import gc
    import resource
    import time

    import torch
    import transformers

    spec = json.loads(sys.stdin.read())
    source, attention = spec["model"], spec["attention"]
    torch.manual_seed(spec["seed"])
    if isinstance(source, dict):
        kwargs = dict(source)
        config = transformers.AutoConfig.for_model(kwargs.pop("model_type", "llama"), **kwargs)
    else:
        config = transformers.AutoConfig.from_pretrained(source)
    cls: Any = transformers.MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]  # imports the model's module
    ids = torch.randint(0, config.vocab_size, (spec["micro_batch"], spec["seq_len"]))
    gc.collect()
    reset = _reset_peak_rss()
    before = _rss_bytes()
    started = time.perf_counter()
    if isinstance(source, dict):
        model = cls._from_config(config, attn_implementation=attention, dtype=torch.float32)
    else:
        model = cls.from_pretrained(source, dtype=torch.float32, attn_implementation=attention)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for _ in range(spec["steps"]):
        out = model(input_ids=ids, labels=ids)  # held through backward, as the estimate assumes
        out.loss.backward()
        del out
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    hwm = _peak_rss_bytes() if reset else None
    peak = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    result = {
        "peak_bytes": peak - before,
        "params": sum(p.numel() for p in model.parameters()),
        "rss_before": before,
        "seconds": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(result))

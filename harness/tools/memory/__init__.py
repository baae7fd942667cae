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

from .estimate import (
    ADAFACTOR_FACTOR,
    ATTENTIONS,
    DEFAULT_LORA_R,
    DEFAULT_LORA_TARGETS,
    DEFAULT_RESERVE_FRACTION,
    GB,
    GiB,
    MAX_GPUS,
    METHODS,
    NF4_BYTES_PER_PARAM,
    OPTIMIZER_BYTES_PER_PARAM,
    OPTIMIZERS,
    PRECISIONS,
    SHARDINGS,
    STEP_TEMPORARIES,
    Plan,
    PlanOptions,
    activation_bytes,
    estimate,
    layer_activation_bytes,
    logits_bytes,
    plan,
)
from .measure import MeasuredPeak, measure_training_peak
from .shapes import EMBEDDED_NAME, PRESETS, Linear, ModelShape, load_config, load_shape, shape_from_config

__all__ = [
    "ADAFACTOR_FACTOR",
    "ATTENTIONS",
    "DEFAULT_LORA_R",
    "DEFAULT_LORA_TARGETS",
    "DEFAULT_RESERVE_FRACTION",
    "EMBEDDED_NAME",
    "GB",
    "MAX_GPUS",
    "METHODS",
    "NF4_BYTES_PER_PARAM",
    "OPTIMIZERS",
    "OPTIMIZER_BYTES_PER_PARAM",
    "PRECISIONS",
    "PRESETS",
    "SHARDINGS",
    "STEP_TEMPORARIES",
    "GiB",
    "Linear",
    "MeasuredPeak",
    "ModelShape",
    "Plan",
    "PlanOptions",
    "activation_bytes",
    "estimate",
    "layer_activation_bytes",
    "load_config",
    "load_shape",
    "logits_bytes",
    "measure_training_peak",
    "plan",
    "shape_from_config",
]

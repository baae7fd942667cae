"""The causal LM loss on supervised positions only, without full-vocabulary logits.

``token_loss`` (``harness.lib.training.batching``) takes the logits of *every* position: on a
49k-token vocabulary the ``lm_head`` product, the float32 copy, the log-softmax and their backward
passes over ``B x T x V`` values cost about as much as the rest of a LoRA step on a CPU, and most
positions are padding or prompt, whose loss is thrown away.  ``supervised_loss`` computes the
decoder's hidden states, keeps the rows whose next token is supervised and applies the output
projection to those rows only, in chunks, with a fused linear cross-entropy: each chunk's logits
are made, reduced to the loss and turned into the gradients of the hidden states (and of the
projection, when it is trained) at once, then dropped, so no ``N x V`` tensor outlives its chunk
and the backward pass has nothing left to do for the head but scale.

The math is the one of ``token_loss``: logits in the autocast dtype (bf16 where autocast is on,
rounded like ``lm_head`` under autocast rounds them), then a float32 log-softmax; each token's
loss is multiplied by its ``loss_weights`` and the sum divided by the number of supervised tokens.
On CUDA, Liger-Kernel's fused linear cross-entropy (Triton) is used instead when it is installed
and every supervised token weighs the same.  ``supports_supervised_loss`` says when a model can
take this path (a decoder whose logits are a plain bias-free linear map of its last hidden state);
the callers fall back to ``token_loss`` otherwise.
"""

from __future__ import annotations

from typing import Any

from harness.lib.training.batching import model_inputs
from harness.lib.training.examples import IGNORE

CHUNK_ROWS = 512
"""Supervised positions per chunk: ``512 x 49152`` float32 logits are 100 MB."""

_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling")
"""Config attributes of models whose forward changes the logits after ``lm_head``."""


def _causal_lm(model: Any) -> Any:
    """The ``*ForCausalLM`` inside ``model`` (a peft model wraps it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_supervised_loss(model: Any) -> bool:
    """Whether the logits of ``model`` are ``lm_head(decoder(...).last_hidden_state)`` with a plain
    bias-free ``Linear`` head and no logit transform, so ``supervised_loss`` gives its loss."""
    import torch

    inner = _causal_lm(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    decoder = getattr(inner, "model", None)
    config = getattr(inner, "config", None)
    if type(head) is not torch.nn.Linear or head.bias is not None or decoder is None:
        return False
    return not any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS)


def supervised_rows(torch: Any, labels: Any, loss_weights: Any) -> tuple[Any, Any, Any]:
    """Flat indices (into ``B * T`` positions) of the positions whose next token is supervised,
    that token, and its weight."""
    batch, length = labels.shape
    target = labels[:, 1:]
    keep = target != IGNORE
    rows = torch.arange(batch, device=labels.device).unsqueeze(1) * length
    cols = torch.arange(length - 1, device=labels.device).unsqueeze(0)
    flat = (rows + cols)[keep]
    return flat, target[keep], loss_weights[:, 1:][keep].float()


class LinearCrossEntropy:
    """``sum_i w_i * CE(hidden_i @ weight.T, target_i) * scale`` in row chunks, gradients made in
    the forward pass (see the module docstring); an ``autograd.Function`` built on first use."""

    _function: Any = None

    @classmethod
    def apply(cls, hidden: Any, weight: Any, target: Any, token_weight: Any, scale: float, dtype: Any) -> Any:
        if cls._function is None:
            cls._function = _build_function()
        return cls._function.apply(hidden, weight, target, token_weight, scale, dtype, CHUNK_ROWS)


def _build_function() -> Any:
    import torch

    class _Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, target: Any, token_weight: Any, scale: float, dtype: Any, chunk: int) -> Any:
            h, w = hidden.to(dtype), weight.to(dtype)
            want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grad_h = torch.empty_like(h) if want_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, h.shape[0], chunk):
                hs, ts = h[start : start + chunk], target[start : start + chunk]
                scaled = token_weight[start : start + chunk] * scale
                logp = torch.log_softmax(torch.mm(hs, w.t()).float(), dim=-1)
                picked = logp.gather(1, ts.unsqueeze(1)).squeeze(1)
                total -= (picked * scaled).sum()
                if grad_h is None and grad_w is None:
                    continue
                # d(-w * log_softmax[t]) / d logits = w * (softmax - onehot(t)), cast like autocast's backward
                grad = logp.exp_()
                grad[torch.arange(ts.shape[0], device=ts.device), ts] -= 1
                grad_logits = torch.mul(grad, scaled.unsqueeze(1)).to(dtype)
                if grad_h is not None:
                    torch.mm(grad_logits, w, out=grad_h[start : start + chunk])
                if grad_w is not None:
                    grad_w += torch.mm(grad_logits.t(), hs).float()
            ctx.save_for_backward(*(g for g in (grad_h, grad_w) if g is not None))
            ctx.dtypes = (hidden.dtype, weight.dtype)
            ctx.has = (grad_h is not None, grad_w is not None)
            return total

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> Any:
            saved = list(ctx.saved_tensors)
            grad_h = saved.pop(0).to(ctx.dtypes[0]) * grad_out if ctx.has[0] else None
            grad_w = (saved.pop(0) * grad_out).to(ctx.dtypes[1]) if ctx.has[1] else None
            return grad_h, grad_w, None, None, None, None, None

    return _Function


def _liger(torch: Any, hidden: Any, weight: Any, target: Any, token_weight: Any) -> Any | None:
    """Liger-Kernel's fused linear cross-entropy (sum), on CUDA when installed and the weights are
    uniform; None otherwise."""
    if not hidden.is_cuda or not bool((token_weight == token_weight[0]).all()):
        return None
    try:
        from liger_kernel.transformers.functional import (
            liger_fused_linear_cross_entropy,
        )
    except ImportError:
        return None
    result = liger_fused_linear_cross_entropy(hidden, weight, target, reduction="sum")
    loss = result[0] if isinstance(result, tuple) else result
    return loss.float() * token_weight[0]


def supervised_loss(
    torch: Any, model: Any, batch: dict[str, Any], autocast: Any, compute_dtype: Any, cache: dict[str, Any] | None = None
) -> Any:
    """The loss ``token_loss`` gives on ``model``'s logits of ``batch``, computed on the supervised
    positions only (``supports_supervised_loss(model)`` must hold).  ``autocast`` is the context
    the decoder runs in; ``compute_dtype`` the dtype of the head's product (bf16 under bf16
    autocast, else the weight's).  ``cache``, when given, keeps the head's weight cast to
    ``compute_dtype`` from one call to the next while it is frozen and unchanged (LoRA)."""
    inner = _causal_lm(model)
    flat, target, weight = supervised_rows(torch, batch["labels"], batch["loss_weights"])
    with autocast:
        hidden = inner.model(**model_inputs(batch)).last_hidden_state
    count = max(int(target.numel()), 1)
    if target.numel() == 0:
        return hidden.sum() * 0.0  # no supervised token: 0, still connected to the graph
    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat)
    weight_param = inner.get_output_embeddings().weight
    compute_dtype = compute_dtype or weight_param.dtype
    head = _head_weight(weight_param, compute_dtype, cache)
    fused = _liger(torch, rows.to(compute_dtype), head.to(compute_dtype), target, weight)
    if fused is not None:
        return fused / count
    return LinearCrossEntropy.apply(rows, head, target, weight, 1.0 / count, compute_dtype)


def _head_weight(weight: Any, dtype: Any, cache: dict[str, Any] | None) -> Any:
    """``weight`` itself when it is trained, else its ``dtype`` copy, made once while it is unchanged."""
    if weight.requires_grad or cache is None or weight.dtype == dtype:
        return weight
    key = (weight.data_ptr(), weight._version, dtype)
    if cache.get("key") != key:
        cache["key"], cache["weight"] = key, weight.detach().to(dtype)
    return cache["weight"]

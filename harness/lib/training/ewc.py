"""Elastic Weight Consolidation (Kirkpatrick et al. 2017): a quadratic pull towards the base model.

EWC limits forgetting by penalising, for each parameter element ``i``, the move away from the
weights the model had before fine-tuning (the *anchor*), weighted by how much the old behaviour
depends on that element (the diagonal *Fisher* information ``F``)::

    penalty = lam * sum_i F_i * (p_i - anchor_i) ** 2

Two steps, both here:

1. Before fine-tuning, :func:`estimate_fisher` measures ``F`` on data of the behaviour to keep
   (general text, earlier tasks) and :func:`save_ewc_state` stores it with the anchor weights.
2. During fine-tuning the training loop calls :meth:`EWCPenalty.add_gradients` after
   ``loss.backward()`` and before clipping and the optimizer step.  It adds the penalty's gradient
   ``2 * lam * F * (p - anchor)`` to each ``p.grad`` in place rather than adding a differentiable
   term to the loss.  The penalty is separable per element, so this works unchanged when each rank
   holds only a shard of each parameter (FSDP2 ``DTensor`` parameters): every rank adds the gradient
   of the elements it owns, with no communication.  The returned penalty value is this rank's part;
   the loop all-reduces it for logging only.

Parameters are matched by their ``named_parameters()`` names (peft's
``base_model.model....lora_A.default.weight``, FSDP2 keeps the original names); the caller must
estimate and train on the same module, and can check with :meth:`EWCPenalty.uncovered` that every
Fisher entry was seen.

``torch`` is passed in rather than imported so that this module imports without the ``ml`` extra.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import DataError, require

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

FISHER_PREFIX = "fisher/"
ANCHOR_PREFIX = "anchor/"


def _local(tensor: Any) -> Any:
    """The local shard of a ``DTensor`` (an alias: in-place changes reach the DTensor), else itself."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor


def estimate_fisher(
    torch: Any,
    model: Any,
    batches: Iterable[dict[str, Tensor]],
    loss_fn: Callable[[Any, dict[str, Any]], Tensor],
    *,
    names: Collection[str] | None = None,
    normalize: bool = True,
) -> dict[str, Tensor]:
    """Diagonal empirical Fisher of ``model``: the mean over ``batches`` of the squared batch gradient.

    For each batch, ``loss_fn(model, batch)`` gives the scalar loss; its gradient ``g`` is taken by
    ``loss.backward()`` and ``g ** 2`` (on the detached gradient, in float32) is averaged over the
    batches.  The parameters are the trainable ones (``requires_grad``), or exactly ``names`` when
    given (each must exist and be trainable, else ``ValueError``).  A parameter element that gets
    no gradient (an embedding row of a token absent from the batches, a parameter the loss does not
    reach) has Fisher 0, so EWC leaves it free.

    With ``normalize=True`` (the default) all values are divided by their mean over every selected
    element, so that the mean Fisher value is 1.  The raw scale depends on the loss, the batch size
    and the model size; after normalisation the penalty ``lam * sum F (p - anchor)^2`` weighs a move
    of the average element like ``lam`` times its squared size, so a ``lam`` tuned on one model
    means the same on another.  ``normalize=False`` keeps the raw empirical Fisher.

    The model runs in eval mode (no dropout, so the estimate is deterministic) and every module's
    previous train/eval mode is restored afterwards.  Gradients are reset to ``None`` before each batch and
    at the end, so the caller's ``.grad`` values are discarded and none are left behind.

    Under FSDP2 (``DTensor`` gradients) each rank must run the same number of batches (backward is
    collective), the gradient is that of the loss averaged over the ranks' batches, each rank gets
    the Fisher of its own shard, and normalisation uses the global mean (an all-reduce of the sum
    and element count).

    Returns float32 CPU tensors keyed by ``named_parameters()`` names, shaped like the parameter
    (its local shard under FSDP2).
    """
    params = dict(model.named_parameters())
    selected = _selected(params, names)
    sums, count, sharded = _squared_gradient_sums(torch, model, params, selected, batches, loss_fn)
    fisher: dict[str, Tensor] = {}
    for name, p in selected.items():
        if name in sums:
            fisher[name] = (sums[name] / count).to("cpu", torch.float32)
        else:
            fisher[name] = torch.zeros(_local(p).shape, dtype=torch.float32)
    bad = sorted(name for name, f in fisher.items() if not bool(torch.isfinite(f).all()))
    if bad:
        raise ValueError(f"estimate_fisher: non-finite Fisher values in {', '.join(bad[:5])}")
    if normalize:
        device = next(iter(sums.values())).device if sums else "cpu"
        _normalize(torch, fisher, sharded, device)
    return fisher


def _selected(params: dict[str, Any], names: Collection[str] | None) -> dict[str, Any]:
    """The parameters to estimate: the trainable ones, or exactly ``names`` (each must exist
    and be trainable); none at all is a ``ValueError``."""
    if names is None:
        selected = {name: p for name, p in params.items() if p.requires_grad}
    else:
        unknown = sorted(set(names) - params.keys())
        if unknown:
            raise ValueError(f"estimate_fisher: no parameter named {', '.join(unknown[:5])}")
        frozen = sorted(name for name in names if not params[name].requires_grad)
        if frozen:
            raise ValueError(
                f"estimate_fisher: parameter {', '.join(frozen[:5])} does not require grad"
            )
        selected = {name: params[name] for name in names}
    if not selected:
        raise ValueError("estimate_fisher: no trainable parameter to estimate the Fisher of")
    return selected


def _squared_gradient_sums(
    torch: Any,
    model: Any,
    params: dict[str, Any],
    selected: dict[str, Any],
    batches: Iterable[dict[str, Tensor]],
    loss_fn: Callable[[Any, dict[str, Any]], Tensor],
) -> tuple[dict[str, Tensor], int, bool]:
    """Per selected parameter, the sum over ``batches`` of its squared (local, float32) batch
    gradient; the number of batches; whether any gradient was a sharded ``DTensor``.  The model
    runs in eval mode; every module's mode is restored and all gradients cleared afterwards."""

    def clear_grads() -> None:
        for p in params.values():
            p.grad = None

    sums: dict[str, Tensor] = {}
    count = 0
    sharded = False
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        for batch in batches:
            clear_grads()
            loss = loss_fn(model, batch)
            loss.backward()
            count += 1
            with torch.no_grad():
                for name, p in selected.items():
                    if p.grad is None:
                        continue
                    sharded = sharded or hasattr(p.grad, "to_local")
                    square = _local(p.grad).detach().float().square()
                    if name in sums:
                        sums[name].add_(square)
                    else:
                        sums[name] = square
    finally:
        clear_grads()
        for module, training in modes:  # per module: some may have been in eval on purpose
            module.training = training
    if count == 0:
        raise ValueError("estimate_fisher: no batches")
    return sums, count, sharded


def _normalize(torch: Any, fisher: dict[str, Tensor], sharded: bool, device: Any) -> None:
    """Divide every Fisher value, in place, by the mean over all elements (of every rank when
    sharded: an all-reduce of the sum and the count on ``device``)."""
    # Sum in float64: a float32 sum over billions of elements loses digits.
    total = torch.tensor(
        [sum(float(f.sum(dtype=torch.float64)) for f in fisher.values()),
         float(sum(f.numel() for f in fisher.values()))],
        dtype=torch.float64,
    )
    if sharded and torch.distributed.is_available() and torch.distributed.is_initialized():
        # Replicas (HSDP) scale the sum and the count alike, so the mean stays right.
        reduced = total.to(device)
        torch.distributed.all_reduce(reduced)
        total = reduced.cpu()
    mean = float(total[0] / total[1])
    if mean <= 0.0:
        raise ValueError("estimate_fisher: every gradient is zero, cannot normalize")
    for f in fisher.values():
        f.div_(mean)


def save_ewc_state(
    path: Path, fisher: dict[str, Tensor], anchor: dict[str, Tensor], meta: dict[str, str]
) -> None:
    """Write the Fisher and anchor weights to one safetensors file, atomically.

    Keys are ``fisher/<name>`` and ``anchor/<name>``; ``meta`` (strings only, e.g. the base model
    fingerprint and the data the Fisher was estimated on) becomes the file's metadata.  The file
    is written to a temporary file in the same folder, fsynced and moved into place with
    ``os.replace``, so a crash never leaves a half-written file under ``path``.
    """
    st = require("safetensors.torch")
    if fisher.keys() != anchor.keys():
        only = sorted(fisher.keys() ^ anchor.keys())
        raise ValueError(f"save_ewc_state: fisher and anchor differ in {', '.join(only[:5])}")
    for name, f in fisher.items():
        if tuple(f.shape) != tuple(anchor[name].shape):
            raise ValueError(
                f"save_ewc_state: {name}: fisher shape {tuple(f.shape)} "
                f"!= anchor shape {tuple(anchor[name].shape)}"
            )
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("save_ewc_state: meta keys and values must be strings")
    tensors = {FISHER_PREFIX + n: t.detach().cpu().contiguous() for n, t in fisher.items()}
    tensors.update({ANCHOR_PREFIX + n: t.detach().cpu().contiguous() for n, t in anchor.items()})

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        st.save_file(tensors, tmp, metadata=dict(meta))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms that cannot open a directory
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


def load_ewc_state(path: Path) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, str]]:
    """Read a file written by :func:`save_ewc_state`: ``(fisher, anchor, meta)``.

    Only safetensors is used (never ``torch.load``, which can run code from the file).  A missing,
    truncated or corrupt file, or one that is not an EWC state, raises ``DataError`` naming it.
    """
    st = require("safetensors")
    path = Path(path)
    fisher: dict[str, Tensor] = {}
    anchor: dict[str, Tensor] = {}
    try:
        with st.safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            keys = handle.keys()  # safe_open is not iterable
            for key in keys:
                if key.startswith(FISHER_PREFIX):
                    fisher[key[len(FISHER_PREFIX):]] = handle.get_tensor(key)
                elif key.startswith(ANCHOR_PREFIX):
                    anchor[key[len(ANCHOR_PREFIX):]] = handle.get_tensor(key)
                else:
                    raise DataError(f"{path}: not an EWC state file (unexpected tensor {key!r})")
    except DataError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError, OSError, ...
        raise DataError(f"{path}: cannot read EWC state: {exc}") from exc
    if fisher.keys() != anchor.keys():
        only = sorted(fisher.keys() ^ anchor.keys())
        raise DataError(f"{path}: fisher and anchor entries differ ({', '.join(only[:5])})")
    for name, f in fisher.items():
        if f.shape != anchor[name].shape:
            raise DataError(f"{path}: {name}: fisher and anchor shapes differ")
    return fisher, anchor, meta


class EWCPenalty:
    """The EWC penalty ``lam * sum F * (p - anchor)^2``, applied as a gradient the loop adds.

    ``fisher`` and ``anchor`` map parameter names to tensors of the parameter's shape; for an FSDP2
    ``DTensor`` parameter they are its local shard (plain tensors or ``DTensor``\\ s).  They are
    moved to each parameter's device and dtype on first use and cached there.
    """

    def __init__(
        self, torch: Any, fisher: dict[str, Tensor], anchor: dict[str, Tensor], lam: float
    ) -> None:
        if not math.isfinite(lam) or lam < 0:
            raise ValueError(f"EWCPenalty: lam must be finite and >= 0, got {lam}")
        missing = sorted(fisher.keys() - anchor.keys())
        if missing:
            raise ValueError(f"EWCPenalty: no anchor for {', '.join(missing[:5])}")
        for name, f in fisher.items():
            if tuple(f.shape) != tuple(anchor[name].shape):
                raise ValueError(
                    f"EWCPenalty: {name}: fisher shape {tuple(f.shape)} "
                    f"!= anchor shape {tuple(anchor[name].shape)}"
                )
        self._torch = torch
        self.lam = float(lam)
        self._fisher = dict(fisher)
        self._anchor = {name: anchor[name] for name in fisher}
        self._cache: dict[str, tuple[Any, Any, Any, Any]] = {}
        self.matched: frozenset[str] = frozenset()
        """Names with a Fisher entry seen by the last :meth:`add_gradients` call."""

    @property
    def names(self) -> frozenset[str]:
        """The parameter names the penalty applies to."""
        return frozenset(self._fisher)

    def _entry(self, name: str, p: Any) -> tuple[Any, Any]:
        """Fisher and anchor of ``name`` on ``p``'s device and dtype (cached), shape-checked."""
        cached = self._cache.get(name)
        if cached is not None and cached[0] == p.device and cached[1] == p.dtype:
            return cached[2], cached[3]
        f, a = _local(self._fisher[name]), _local(self._anchor[name])
        if tuple(f.shape) != tuple(p.shape):
            raise ValueError(
                f"EWCPenalty: parameter {name} has shape {tuple(p.shape)} but its Fisher and "
                f"anchor have shape {tuple(f.shape)} (estimated on another model or shard?)"
            )
        f = f.to(device=p.device, dtype=p.dtype)
        a = a.to(device=p.device, dtype=p.dtype)
        self._cache[name] = (p.device, p.dtype, f, a)
        return f, a

    def add_gradients(self, named_params: Iterable[tuple[str, Tensor]]) -> float:
        """Add ``2 * lam * F * (p - anchor)`` to each matched parameter's ``.grad``; return the penalty.

        Call after ``loss.backward()`` and before clipping and the optimizer step.  Parameters
        without a Fisher entry are ignored; the matched names are kept in :attr:`matched` (see
        :meth:`uncovered`).  A missing ``.grad`` is created.  The arithmetic runs under
        ``no_grad`` in the parameter's dtype, on its local shard for a ``DTensor``.  The return
        value is ``lam * sum F * (p - anchor)^2`` over these parameters (summed in float32), as a
        Python float; under FSDP2 it covers this rank's shards only.

        With ``lam == 0`` no gradient is touched (not even a missing one created, because AdamW
        treats a zero gradient differently from none), so training is bit-identical to no EWC.

        Raises ``ValueError`` naming the parameter when its shape differs from its Fisher entry,
        or when a name comes twice.
        """
        torch = self._torch
        matched: set[str] = set()
        totals: dict[Any, Any] = {}
        with torch.no_grad():
            for name, p in named_params:
                if name not in self._fisher:
                    continue
                if name in matched:
                    raise ValueError(f"EWCPenalty: parameter {name} given twice")
                matched.add(name)
                local = _local(p)
                f, a = self._entry(name, local)
                diff = local - a
                weighted = f * diff
                value = (weighted * diff).sum(dtype=torch.float32)
                previous = totals.get(local.device)
                totals[local.device] = value if previous is None else previous + value
                if self.lam == 0.0:
                    continue
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                _local(p.grad).add_(weighted, alpha=2.0 * self.lam)
        self.matched = frozenset(matched)
        return self.lam * sum(float(total) for total in totals.values())

    def uncovered(self) -> list[str]:
        """Fisher entries that the last :meth:`add_gradients` call did not see, sorted.

        Non-empty means the penalty silently skipped parameters: the names differ between the
        module the Fisher was estimated on and the one being trained.
        """
        return sorted(self._fisher.keys() - self.matched)

    def assert_covered(self) -> None:
        """Raise ``ValueError`` listing the Fisher entries the last call did not see."""
        missing = self.uncovered()
        if missing:
            raise ValueError(
                f"EWCPenalty: {len(missing)} Fisher entries matched no parameter, "
                f"e.g. {', '.join(missing[:5])}"
            )

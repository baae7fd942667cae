"""Batch invariance: the same items scored at batch size 1 and at batch size N must give the same
predictions, and log-probabilities within a tolerance.

Batching pads rows to a common length; a model, an attention kernel or a scorer that lets the
padding leak (a wrong attention mask, position ids that count the padding, a reduction whose order
depends on the batch shape in low precision) scores an item differently depending on its
neighbours.  The evaluation is then not a property of the model alone, and a gate compares noise.

The check is :mod:`harness.run.agree` with one backend: the model agrees with itself at two batch
sizes.  Each benchmark is built twice from the suite, with its ``batch_size`` option overridden
(and, where it samples, at ``samples: 1``: k sampled outputs differ by design), and the two
outputs are compared item by item (:func:`harness.run.agree.compare`).  A difference
is an :class:`InvarianceFinding` naming the items: those whose prediction changed, and those whose
prediction held but whose log-probabilities moved by more than the tolerance.

The default tolerance depends on the precision the model was loaded in (``TOLERANCES``), from
SmolLM2-135M-Instruct on CPU, MMLU and HellaSwag, 40 items each, batch sizes 1 and 8: in float32
the largest difference was 7.6e-5 nats (tolerance 1e-3); in bfloat16 it was 0.50 nats on MMLU
with every prediction unchanged (tolerance 1.0, so only a gross leak counts).  See
``docs/statistics.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.lib.model_api import model_api
from harness.lib.models import resolve_model
from harness.plugin.components import Backend, Benchmark, Item
from harness.plugin.registry import Registries
from harness.run.agree import compare, score_items, suite_benchmarks
from harness.suite.config import LoadedSuite
from harness.types import InvarianceFinding

DEFAULT_BATCH_SIZES = (1, 8)
TOLERANCES = {"float32": 1e-3, "bfloat16": 1.0}
"""Largest tolerated log-probability difference (nats) between two batch sizes, by the loaded
model's precision (measured; see the module docstring)."""
DEFAULT_TOLERANCE = TOLERANCES["float32"]
"""For a precision not in ``TOLERANCES``."""


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,8"`` -> ``(1, 8)``: at least two distinct positive sizes, the first is the reference."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"batch sizes {text!r}: expected comma-separated whole numbers, e.g. 1,8") from None
    if len(set(sizes)) < 2 or min(sizes) < 1:
        raise ConfigError(f"batch sizes {text!r}: need at least two distinct sizes of 1 or more")
    return sizes


def check_benchmark(
    label: str,
    builds: Mapping[int, Benchmark],
    model: Any,
    items: Sequence[Item],
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[InvarianceFinding]:
    """Score ``items`` with each build (batch size -> benchmark built at that size) and compare
    every size with the first one."""
    sizes = list(builds)
    outputs = {size: score_items(builds[size], model, items) for size in sizes}
    findings = []
    for size in sizes[1:]:
        pair = {f"batch {sizes[0]}": outputs[sizes[0]], f"batch {size}": outputs[size]}
        agreement = compare(label, items, pair, tolerance)
        findings.append(InvarianceFinding(
            label, (sizes[0], size), agreement.items, tuple(agreement.disagreements),
            tuple(agreement.drifted), agreement.max_logprob_diff, tolerance,
        ))  # fmt: skip
    return findings


def run_invariance(
    loaded: LoadedSuite,
    registries: Registries,
    work_dir: Path,
    benchmarks: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    limit: int | None = None,
    tolerance: float | None = None,
) -> list[InvarianceFinding]:
    """The suite's model (its backend and options) on the suite's benchmarks (or the named ones),
    first ``limit`` items, at each batch size; one finding per benchmark and compared size.
    ``tolerance`` defaults to the one for the loaded model's precision (``TOLERANCES``)."""
    from harness.run.plan import require_batch_size, run_context

    ctx = run_context(loaded, registries, work_dir)
    suite_benchmarks(loaded, registries, ctx, benchmarks)  # unknown labels, bad options: one clear error
    builds: dict[str, dict[int, Benchmark]] = {}
    for label in benchmarks or loaded.suite.evaluate:
        fields = require_batch_size(loaded, registries, label)
        for size in batch_sizes:
            options: dict[str, Any] = {"batch_size": size} | ({"samples": 1} if "samples" in fields else {})
            builds.setdefault(label, {})[size] = suite_benchmarks(loaded, registries, ctx, [label], options)[label]
    spec = loaded.suite.model
    backend = registries.build("backend", spec.backend, dict(spec.backend_options), ctx)
    assert isinstance(backend, Backend)
    model = backend.load(resolve_model(spec.source, spec.backend, spec.dtype, loaded.dir))
    if tolerance is None:
        tolerance = TOLERANCES.get(model.dtype, DEFAULT_TOLERANCE)
    try:
        findings = []
        for label, by_size in builds.items():
            items = next(iter(by_size.values())).items()
            findings += check_benchmark(label, by_size, model, items[:limit] if limit else items, tolerance)
        return findings
    finally:
        model_api(model).close()

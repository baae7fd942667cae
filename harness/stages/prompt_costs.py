"""What a prompting arm costs per request, measured over the items it was asked.

``harness advise`` weighs prompting against training by the tokens a prompt carries: the
examples' tokens and their share of the context window (the chapter's "few-shot examples take
more than 30% of the context" rule) and the input tokens per request (the serving cost).  The
run measures them once per prompt-variant arm, on the conversations its benchmarks send
(``Benchmark.item_messages``), through the inner model's tokenizer and chat template, exactly as
``harness.lib.prompting.prompt_cost`` defines them.

When a run compares prompt variants, the zero-shot arm (the suite's model as it is) is measured
too: its examples take nothing, and its input tokens are what a trained arm is charged for
serving (``harness advise``'s economics).

The measurement is cached in the store under the inner model's fingerprint and backend, the
variant's material (its spec, seed and examples' digest) and each benchmark's config and items,
so a re-run whose evaluations all come from the cache loads no model for it either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from harness.lib.model_api import model_api
from harness.lib.prompting import PromptCost
from harness.plugin.components import Benchmark
from harness.stages.evaluate import Evaluator, PromptVariant

KIND = "prompt_cost"
"""The store's cache kind of a measured prompt cost."""


def cost_material(evaluator: Evaluator, variant: PromptVariant, benchmarks: Mapping[str, Benchmark]) -> dict[str, Any]:
    """What the cost depends on: the inner model and backend, the variant, and the items asked."""
    return {
        "model": evaluator.ref.fingerprint,
        "backend": evaluator.backend.cache_material_for(evaluator.ref),
        "prompt": variant.material(),
        "benchmarks": {
            label: {"benchmark": bench.cache_material(), "items": bench.items_digest()}
            for label, bench in benchmarks.items()
        },
    }


def measure_prompt_cost(evaluator: Evaluator, benchmarks: Mapping[str, Benchmark]) -> PromptCost | None:
    """The prompt cost of ``evaluator``'s arm (its variant's, or the zero-shot prompt's for an arm
    without one) over every item of ``benchmarks`` whose conversation its benchmark states,
    through the cache; ``None`` when none states one.  Raises ``ConfigError`` when an item's
    prompt does not fit the model's context."""
    conversations = [
        messages
        for bench in benchmarks.values()
        for item in bench.items()
        if (messages := bench.item_messages(item)) is not None
    ]
    if not conversations:
        return None
    variant = evaluator.variant or PromptVariant((), (), 0)
    material = cost_material(evaluator, variant, benchmarks)
    if evaluator.use_cache:
        hit = evaluator.store.cache_get(KIND, material)
        if isinstance(hit, dict):
            return PromptCost(**hit)
    inner = evaluator.source() if evaluator.source is not None else evaluator.model()
    cost = variant.cost(model_api(inner), conversations)
    evaluator.store.cache_put(KIND, material, asdict(cost))
    return cost

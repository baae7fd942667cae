"""Sampling parity: does production sample with the parameters the evaluation assumed?

The effective parameters of both pipelines are compared, each with where its value comes from
(set explicitly, taken from the model's ``generation_config.json`` the way vLLM's server does by
default, or the OpenAI API default, which is temperature 1.0, not greedy).  When they differ,
the effect is measured, not guessed: the same requests are answered by the in-process model with
the offline parameters and with production's (several samples each), the answers are scored the
same way (production's parser against the reference, or agreement with the offline answer when
there is no reference), and the paired difference gets a bootstrap confidence interval.
"""

from __future__ import annotations

from typing import Any

from harness.lib.evidence import MAX_IDS, excerpt
from pydantic import Field

import harness
from harness.plugin.components import ComponentConfig
from harness.plugin.parity import CheckOutput, ParityCheck
from harness.plugin.parity import ParityContext
from harness.lib.pipeline import Pipeline
from harness.lib.stats import paired_bootstrap
from harness.types import Finding, Severity
from harness.plugin.registry import Registrar

_SHAPE = ("temperature", "top_p", "top_k", "repetition_penalty")
"""parameters that change which tokens are drawn (max_tokens and stop only cut)"""


class SamplingConfig(ComponentConfig):
    requests: int = Field(24, ge=1, description="requests used to measure the effect")
    samples: int = Field(3, ge=1, description="production samples per request")
    max_tokens: int = Field(32, ge=1, description="generation budget of the measurement")
    alpha: float = Field(0.05, gt=0, lt=0.5)


class SamplingCheck(ParityCheck[SamplingConfig]):
    name = "sampling"
    description = "effective sampling parameters (incl. generation_config defaults) and their measured effect"
    Config = SamplingConfig

    def run(self, ctx: ParityContext) -> CheckOutput:
        cfg = self.config
        off, prod = ctx.offline.sampling, ctx.production.sampling
        diffs = off.differences(prod)
        metrics: dict[str, Any] = {
            "offline": off.values,
            "offline_sources": off.sources,
            "production": prod.values,
            "production_sources": prod.sources,
            "differences": sorted(diffs),
        }
        if not diffs:
            return CheckOutput([], metrics)
        described = {
            k: f"offline {a!r} ({off.sources[k]}) vs production {b!r} ({prod.sources[k]})"
            for k, (a, b) in diffs.items()
        }
        if not any(k in _SHAPE for k in diffs) or (off.greedy and prod.greedy):
            summary = "; ".join(f"{k}: {v}" for k, v in described.items())
            return CheckOutput([Finding(self.name, "generation_limits", "medium", summary, len(ctx.requests), len(ctx.requests), {"parameters": described})], metrics)
        effect = self._measure(ctx, cfg)
        metrics["effect"] = effect
        cmp = effect["comparison"]
        significant_drop = cmp["ci_high"] < 0
        changed_share = effect["changed"] / effect["requests"] if effect["requests"] else 0.0
        severity: Severity = "high" if significant_drop or changed_share >= 0.1 else "medium"
        from_config = [k for k in diffs if prod.sources[k] == "generation_config"]
        summary = (
            "production samples with different parameters ("
            + ", ".join(f"{k} {diffs[k][0]!r} -> {diffs[k][1]!r}" for k in diffs)
            + ")"
            + (f", taken from generation_config.json ({', '.join(from_config)})" if from_config else "")
            + f"; {effect['metric']} {cmp['baseline']:.3f} -> {cmp['candidate']:.3f} "
            f"(diff {cmp['diff']:+.3f}, {100 * (1 - 2 * cfg.alpha):.0f}% CI [{cmp['ci_low']:+.3f}, {cmp['ci_high']:+.3f}]), "
            f"answer changed on {effect['changed']}/{effect['requests']} requests"
        )
        evidence = {
            "parameters": described,
            "effect": {k: v for k, v in effect.items() if k != "changed_ids"},
            "request_ids": effect["changed_ids"][:MAX_IDS],
        }
        return CheckOutput([Finding(self.name, "sampling_params", severity, summary, effect["changed"], effect["requests"], evidence)], metrics)

    def _measure(self, ctx: ParityContext, cfg: SamplingConfig) -> dict[str, Any]:
        with_ref = [r for r in ctx.requests if r.reference is not None]
        pool = with_ref or ctx.requests
        chosen = pool[: cfg.requests]
        greedy = ctx.generate(ctx.offline, chosen, samples=1, max_tokens=cfg.max_tokens)
        sampled = ctx.generate(ctx.offline, chosen, ctx.production.sampling, cfg.samples, max_tokens=cfg.max_tokens)
        judge = ctx.offline  # the evaluation's own scoring: only the sampling differs
        base_scores, cand_scores, changed, examples = [], [], [], list[dict[str, Any]]()
        for req in chosen:
            g = greedy[req.id][0].text
            outs = [s.text for s in sampled[req.id]]
            if req.reference is not None:
                base = float(judge.passes(g, req.reference))
                cand = sum(judge.passes(o, req.reference) for o in outs) / len(outs)
            else:
                base = 1.0
                cand = sum(_answer(judge, o) == _answer(judge, g) for o in outs) / len(outs)
            base_scores.append(base)
            cand_scores.append(cand)
            if any(_answer(judge, o) != _answer(judge, g) for o in outs):
                changed.append(req.id)
                if len(examples) < 3:
                    examples.append({"request": req.id, "offline": excerpt(g), "production_samples": [excerpt(o) for o in outs]})
        cmp = paired_bootstrap(base_scores, cand_scores, cfg.alpha, seed=ctx.seed)
        return {
            "metric": "accuracy (offline parser)" if with_ref else "agreement with the greedy answer",
            "requests": len(chosen),
            "samples": cfg.samples,
            "comparison": {
                "baseline": cmp.baseline, "candidate": cmp.candidate, "diff": cmp.diff,
                "ci_low": cmp.ci_low, "ci_high": cmp.ci_high, "p_value": cmp.p_value,
            },
            "changed": len(changed),
            "changed_ids": changed,
            "examples": examples,
        }


def _answer(pipeline: Pipeline, text: str) -> str:
    """The parsed answer, or the stripped text when the parser rejects it (so that a change of
    wording still counts as a change when nothing parses)."""
    parsed = pipeline.parse(text)
    return parsed.answer if parsed.ok and parsed.answer is not None else text.strip()


@harness.hookimpl
def harness_register_parity_checks(registrar: Registrar) -> None:
    registrar.add(SamplingCheck)

"""Postprocessing parity: would production's parser accept the answers the evaluation passed?

The in-process model answers the requests with the offline pipeline (the outputs the evaluation
scored); each answer is then judged by both pipelines' parsers against the reference.  The
finding is the share of offline passes that production rejects (a lenient evaluation over a
strict production parser, e.g. "contains the label" vs strict JSON with a schema), and the
reverse.  Without references, parse success is compared instead.
"""

from __future__ import annotations

from typing import Any

from harness.lib.evidence import MAX_IDS, excerpt
from pydantic import Field

import harness
from harness.plugin.components import ComponentConfig
from harness.plugin.parity import CheckOutput, ParityCheck
from harness.plugin.parity import ParityContext
from harness.types import Finding
from harness.plugin.registry import Registrar


class PostprocessingConfig(ComponentConfig):
    requests: int = Field(48, ge=1, description="requests answered to compare the parsers")
    max_tokens: int = Field(48, ge=1)


class PostprocessingCheck(ParityCheck[PostprocessingConfig]):
    name = "postprocessing"
    description = "share of offline passes that production's parser rejects, and the reverse"
    Config = PostprocessingConfig

    def run(self, ctx: ParityContext) -> CheckOutput:
        cfg = self.config
        off, prod = ctx.offline, ctx.production
        metrics: dict[str, Any] = {
            "offline_parser": off.spec.postprocess.model_dump(by_alias=True),
            "production_parser": prod.spec.postprocess.model_dump(by_alias=True),
        }
        if off.spec.postprocess == prod.spec.postprocess:
            metrics["identical"] = True
            return CheckOutput([], metrics)
        with_ref = [r for r in ctx.requests if r.reference is not None]
        chosen = (with_ref or ctx.requests)[: cfg.requests]
        outputs = ctx.generate(off, chosen, samples=1, max_tokens=cfg.max_tokens)
        rejected, accepted = [], []
        examples_rej: list[dict[str, Any]] = []
        examples_acc: list[dict[str, Any]] = []
        off_pass = prod_pass = 0
        for req in chosen:
            text = outputs[req.id][0].text
            if req.reference is not None:
                a, b = off.passes(text, req.reference), prod.passes(text, req.reference)
            else:
                a, b = off.parse(text).ok, prod.parse(text).ok
            off_pass += a
            prod_pass += b
            example = {
                "request": req.id,
                "output": excerpt(text),
                "reference": req.reference,
                "production_parse": prod.parse(text).error or "ok",
            }
            if a and not b:
                rejected.append(req.id)
                if len(examples_rej) < 3:
                    examples_rej.append(example)
            elif b and not a:
                accepted.append(req.id)
                if len(examples_acc) < 3:
                    examples_acc.append(example)
        n = len(chosen)
        metrics.update(
            {
                "requests": n,
                "judged_against": "reference" if with_ref else "parse success",
                "offline_pass_rate": off_pass / n if n else 0.0,
                "production_pass_rate": prod_pass / n if n else 0.0,
                "offline_passes_rejected_by_production": len(rejected),
                "production_passes_rejected_offline": len(accepted),
            }
        )
        findings = []
        if rejected:
            share = len(rejected) / max(off_pass, 1)
            findings.append(
                Finding(
                    self.name, "strict_parser", "high" if len(rejected) / n >= 0.05 else "medium",
                    f"production's parser ({prod.spec.postprocess.parser}) rejects {len(rejected)} of the "
                    f"{off_pass} answers the offline parser ({off.spec.postprocess.parser}) passes ({share:.0%}); "
                    f"pass rate {off_pass / n:.3f} offline vs {prod_pass / n:.3f} in production",
                    len(rejected), n, {"examples": examples_rej, "request_ids": rejected[:MAX_IDS]},
                )
            )
        if accepted:
            findings.append(
                Finding(
                    self.name, "lenient_parser", "medium",
                    f"production's parser passes {len(accepted)} answers the offline parser rejects: "
                    "the evaluation under-states production",
                    len(accepted), n, {"examples": examples_acc, "request_ids": accepted[:MAX_IDS]},
                )
            )
        return CheckOutput(findings, metrics)


@harness.hookimpl
def harness_register_parity_checks(registrar: Registrar) -> None:
    registrar.add(PostprocessingCheck)

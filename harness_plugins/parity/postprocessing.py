"""Postprocessing parity: would production's parser accept the answers the evaluation passed?

The in-process model answers the requests with the offline pipeline (the outputs the evaluation
scored); each answer is then judged by both pipelines' parsers against the reference.  The
finding is the share of offline passes that production rejects (a lenient evaluation over a
strict production parser, e.g. "contains the label" vs strict JSON with a schema), and the
reverse.  Without references, parse success is compared instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.lib.evidence import MAX_IDS, excerpt
from pydantic import Field

import harness
from harness.plugin.components import ComponentConfig
from harness.plugin.parity import CheckOutput, ParityCheck
from harness.plugin.parity import ParityContext
from harness.lib.pipeline import Request
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
        """Answer requests with the offline pipeline and judge each answer with both parsers."""
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
        judged = _Judged()
        for req in chosen:
            judged.add(ctx, req, outputs[req.id][0].text)
        n = len(chosen)
        metrics.update(
            {
                "requests": n,
                "judged_against": "reference" if with_ref else "parse success",
                "offline_pass_rate": judged.off_pass / n if n else 0.0,
                "production_pass_rate": judged.prod_pass / n if n else 0.0,
                "offline_passes_rejected_by_production": len(judged.rejected),
                "production_passes_rejected_offline": len(judged.accepted),
            }
        )
        return CheckOutput(self._findings(ctx, judged, n), metrics)

    def _findings(self, ctx: ParityContext, judged: _Judged, n: int) -> list[Finding]:
        """``strict_parser`` when production rejects offline passes; ``lenient_parser`` for the
        reverse."""
        off, prod = ctx.offline.spec.postprocess, ctx.production.spec.postprocess
        rejected, accepted, off_pass, prod_pass = judged.rejected, judged.accepted, judged.off_pass, judged.prod_pass
        findings = []
        if rejected:
            share = len(rejected) / max(off_pass, 1)
            findings.append(
                Finding(
                    self.name, "strict_parser", "high" if len(rejected) / n >= 0.05 else "medium",
                    f"production's parser ({prod.parser}) rejects {len(rejected)} of the "
                    f"{off_pass} answers the offline parser ({off.parser}) passes ({share:.0%}); "
                    f"pass rate {off_pass / n:.3f} offline vs {prod_pass / n:.3f} in production",
                    len(rejected), n, {"examples": judged.examples_rejected, "request_ids": rejected[:MAX_IDS]},
                )
            )
        if accepted:
            findings.append(
                Finding(
                    self.name, "lenient_parser", "medium",
                    f"production's parser passes {len(accepted)} answers the offline parser rejects: "
                    "the evaluation under-states production",
                    len(accepted), n, {"examples": judged.examples_accepted, "request_ids": accepted[:MAX_IDS]},
                )
            )
        return findings


@dataclass
class _Judged:
    """The tally of answers judged by both parsers: the requests only the offline parser passes
    (``rejected`` by production), those only production passes (``accepted``), up to three
    examples of each, and each side's passes."""

    rejected: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    examples_rejected: list[dict[str, Any]] = field(default_factory=list)
    examples_accepted: list[dict[str, Any]] = field(default_factory=list)
    off_pass: int = 0
    prod_pass: int = 0

    def add(self, ctx: ParityContext, req: Request, text: str) -> None:
        """Judge answer ``text`` to ``req``: against its reference, else by parse success."""
        off, prod = ctx.offline, ctx.production
        if req.reference is not None:
            a, b = off.passes(text, req.reference), prod.passes(text, req.reference)
        else:
            a, b = off.parse(text).ok, prod.parse(text).ok
        self.off_pass += a
        self.prod_pass += b
        example = {
            "request": req.id,
            "output": excerpt(text),
            "reference": req.reference,
            "production_parse": prod.parse(text).error or "ok",
        }
        if a and not b:
            self.rejected.append(req.id)
            if len(self.examples_rejected) < 3:
                self.examples_rejected.append(example)
        elif b and not a:
            self.accepted.append(req.id)
            if len(self.examples_accepted) < 3:
                self.examples_accepted.append(example)


@harness.hookimpl
def harness_register_parity_checks(registrar: Registrar) -> None:
    registrar.add(PostprocessingCheck)

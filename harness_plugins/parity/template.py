"""Template parity: do both pipelines build the same prompt from the same conversation?

Each request is rendered by both pipelines with preprocessing and truncation left out (those are
the preprocessing check's), and the text and token ids are compared.  Each difference is
attributed to a cause: the system prompt, BOS added twice or not at all, the generation prompt,
a different chat template, or whitespace alone.  When production is a live endpoint that can
tokenize a chat (vLLM's ``/tokenize``), the server's own rendering is compared with production's
description too, so an undeclared server-side template is found as well.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness.lib.evidence import MAX_IDS, divergence_evidence, text_diff
from pydantic import Field

import harness
from harness.plugin.components import ComponentConfig
from harness.plugin.parity import CheckOutput, ParityCheck
from harness.plugin.parity import ParityContext
from harness.lib.pipeline import Pipeline, Rendered, Request
from harness.types import Finding, Severity
from harness.plugin.registry import Registrar

_SEVERITY: dict[str, Severity] = {
    "system_prompt": "high",
    "double_bos": "high",
    "missing_bos": "high",
    "extra_bos": "high",
    "generation_prompt": "high",
    "chat_template": "high",
    "whitespace": "medium",
    "server_render": "high",
}
_SUMMARY = {
    "system_prompt": "production's system prompt differs from the offline one",
    "double_bos": "production's prompt starts with BOS twice (template and tokenizer both add it)",
    "extra_bos": "production adds a BOS token the offline prompt does not have",
    "missing_bos": "production's prompt lacks the BOS token the offline prompt has",
    "generation_prompt": "the assistant generation prompt is added by one pipeline only",
    "chat_template": "the chat templates render different prompts",
    "whitespace": "the prompts differ in whitespace only",
    "server_render": "the live server renders a different prompt than production's description",
}


class TemplateConfig(ComponentConfig):
    server_requests: int = Field(
        20, ge=0, description="requests whose server-side rendering is checked (0: none)"
    )


def _leading(ids: tuple[int, ...], token: int | None) -> int:
    n = 0
    while token is not None and n < len(ids) and ids[n] == token:
        n += 1
    return n


def _system(r: Rendered) -> str | None:
    return next((content for role, content in r.messages if role == "system"), None)


def causes(offline: Pipeline, production: Pipeline, a: Rendered, b: Rendered) -> list[str]:
    """Why two renderings of one request differ (empty when their token ids are equal)."""
    if a.ids == b.ids:
        return []
    found = []
    if _system(a) != _system(b):
        found.append("system_prompt")
    bos = production.tokenizer.bos_token_id
    na, nb = _leading(a.ids, bos), _leading(b.ids, bos)
    if nb > na:
        found.append("double_bos" if nb >= 2 else "extra_bos")
    elif nb < na:
        found.append("missing_bos")
    if offline.spec.add_generation_prompt != production.spec.add_generation_prompt:
        found.append("generation_prompt")
    if not found or a.ids[na:] != b.ids[nb:]:
        if a.text != b.text and a.text.split() == b.text.split():
            found.append("whitespace")
        elif a.text != b.text and "system_prompt" not in found and "generation_prompt" not in found:
            found.append("chat_template")
    return found or ["chat_template"]


class TemplateCheck(ParityCheck[TemplateConfig]):
    name = "template"
    description = "rendered prompts and token ids: system prompt, BOS/EOS, role tokens, whitespace"
    Config = TemplateConfig

    def run(self, ctx: ParityContext) -> CheckOutput:
        affected: dict[str, list[str]] = defaultdict(list)
        example: dict[str, dict[str, Any]] = {}
        total = len(ctx.requests)
        for i, req in enumerate(ctx.requests):
            a = ctx.offline.render(req, preprocess=False, truncate=False)
            b = ctx.production.render(req, preprocess=False, truncate=False)
            for cause in causes(ctx.offline, ctx.production, a, b):
                affected[cause].append(req.id)
                example.setdefault(cause, self._evidence(ctx, req, a, b))
            ctx.progress(i + 1, total, "rendered")
        metrics: dict[str, Any] = {"requests": total, "identical": total - len({r for v in affected.values() for r in v})}
        server = self._server(ctx, metrics)
        if server is not None:
            ids, ex = server
            affected["server_render"], example["server_render"] = ids, ex
        findings = [
            Finding(
                self.name, cause, _SEVERITY[cause], _SUMMARY[cause], len(ids),
                metrics["server_checked"] if cause == "server_render" else total,
                {**example[cause], "request_ids": ids[:MAX_IDS]},
            )
            for cause, ids in affected.items() if ids
        ]
        return CheckOutput(findings, metrics)

    @staticmethod
    def _evidence(ctx: ParityContext, req: Request, a: Rendered, b: Rendered) -> dict[str, Any]:
        return {
            "example_request": req.id,
            "diff": text_diff(a.text, b.text),
            "offline_system_prompt": _system(a),
            "production_system_prompt": _system(b),
            "offline_first_ids": list(a.ids[:8]),
            "production_first_ids": list(b.ids[:8]),
            **divergence_evidence(ctx.production.tokenizer, a.ids, b.ids),
        }

    def _server(self, ctx: ParityContext, metrics: dict[str, Any]) -> tuple[list[str], dict[str, Any]] | None:
        """Compare the live server's rendering with production's description (when it can say)."""
        cfg = self.config
        client = ctx.endpoint()
        if client is None or cfg.server_requests == 0:
            metrics["server_checked"] = 0
            return None
        differing: list[str] = []
        evidence: dict[str, Any] = {}
        checked = 0
        for req in ctx.requests[: cfg.server_requests]:
            expected = ctx.production.render(req, truncate=False)
            got = client.tokenize(
                ctx.production.messages(req), add_generation_prompt=ctx.production.spec.add_generation_prompt
            )
            if got is None:
                metrics["server_checked"] = 0
                metrics["server_tokenize"] = "not offered by the endpoint"
                return None
            checked += 1
            if tuple(got) != expected.ids:
                differing.append(req.id)
                if not evidence:
                    tok = ctx.production.tokenizer
                    evidence = {
                        "example_request": req.id,
                        "diff": text_diff(expected.text, tok.decode(got), "production (described)", "server"),
                        **divergence_evidence(tok, expected.ids, tuple(got)),
                    }
        metrics["server_checked"] = checked
        metrics["server_identical"] = checked - len(differing)
        return differing, evidence


@harness.hookimpl
def harness_register_parity_checks(registrar: Registrar) -> None:
    registrar.add(TemplateCheck)

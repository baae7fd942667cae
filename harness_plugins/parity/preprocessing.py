"""Preprocessing parity: same tokenizer, same text normalisation, same truncation?

* tokenizer identity: a hash of each pipeline's vocabulary, merges, added tokens and normalizer;
  when they differ, the requests whose text tokenizes differently are counted;
* normalisation and whitespace: the requests whose text the two pipelines change differently;
* truncation: the requests whose prompt one pipeline cuts and the other does not (or cuts
  elsewhere), with what is lost.

Prompts are rendered with production's template for both sides, so that a template difference
(the template check's) does not show up here.
"""

from __future__ import annotations

from typing import Any

from harness.lib.evidence import MAX_IDS, excerpt

import harness
from harness.plugin.components import ComponentConfig
from harness.plugin.parity import CheckOutput, ParityCheck
from harness.plugin.parity import ParityContext
from harness.lib.pipeline import Request
from harness.types import Finding
from harness.plugin.registry import Registrar


class PreprocessingCheck(ParityCheck[ComponentConfig]):
    name = "preprocessing"
    description = "tokenizer identity (vocab/merges hash), unicode normalisation, whitespace, truncation"
    Config = ComponentConfig

    def run(self, ctx: ParityContext) -> CheckOutput:
        """Tokenizer identity, then per request its text and truncation on both sides."""
        off, prod = ctx.offline, ctx.production
        total = len(ctx.requests)
        findings: list[Finding] = []
        metrics: dict[str, Any] = {
            "requests": total,
            "offline_tokenizer": off.tokenizer_digest[:16],
            "production_tokenizer": prod.tokenizer_digest[:16],
        }
        if off.tokenizer_digest != prod.tokenizer_digest:
            findings.append(self._tokenizer(ctx))
        text_changed, trunc = [], []
        text_example: dict[str, Any] = {}
        trunc_example: dict[str, Any] = {}
        lengths = []
        for i, req in enumerate(ctx.requests):
            if (changed := _text_change(ctx, req)) is not None:
                text_changed.append(req.id)
                text_example = text_example or changed
            full_length, cut = _truncation(ctx, req)
            lengths.append(full_length)
            if cut is not None:
                trunc.append(req.id)
                trunc_example = trunc_example or cut
            ctx.progress(i + 1, total, "compared")
        lengths.sort()
        metrics.update(
            {
                "text_changed": len(text_changed),
                "truncated_differently": len(trunc),
                "prompt_tokens_median": lengths[len(lengths) // 2] if lengths else 0,
                "prompt_tokens_max": lengths[-1] if lengths else 0,
                "offline_max_input_tokens": off.spec.preprocess.max_input_tokens,
                "production_max_input_tokens": prod.spec.preprocess.max_input_tokens,
            }
        )
        if text_changed:
            findings.append(self._text_finding(ctx, text_changed, text_example))
        if trunc:
            findings.append(self._truncation_finding(ctx, trunc, trunc_example))
        return CheckOutput(findings, metrics)

    def _text_finding(self, ctx: ParityContext, changed: list[str], example: dict[str, Any]) -> Finding:
        """``normalization`` (or ``whitespace``): the pipelines change request text differently."""
        off, prod = ctx.offline.spec.preprocess, ctx.production.spec.preprocess
        return Finding(
            self.name, "normalization" if off.normalize != prod.normalize else "whitespace", "medium",
            "production changes request text differently before tokenizing "
            f"({off.normalize}/{off.whitespace} offline vs "
            f"{prod.normalize}/{prod.whitespace} in production)",
            len(changed), len(ctx.requests), {**example, "request_ids": changed[:MAX_IDS]},
        )  # fmt: skip

    def _truncation_finding(self, ctx: ParityContext, trunc: list[str], example: dict[str, Any]) -> Finding:
        """``truncation``: production cuts prompts the offline pipeline does not (or elsewhere)."""
        off, prod = ctx.offline.spec.preprocess, ctx.production.spec.preprocess
        total = len(ctx.requests)
        return Finding(
            self.name, "truncation", "high" if len(trunc) / total >= 0.02 else "medium",
            f"production truncates prompts at {prod.max_input_tokens} tokens ({prod.truncation_side}), "
            f"offline at {off.max_input_tokens or 'no limit'}: the model sees less of the request",
            len(trunc), total, {**example, "request_ids": trunc[:MAX_IDS]},
        )  # fmt: skip

    def _tokenizer(self, ctx: ParityContext) -> Finding:
        differing = []
        for req in ctx.requests:
            text = req.text()
            a = ctx.offline.tokenizer(text, add_special_tokens=False)["input_ids"]
            b = ctx.production.tokenizer(text, add_special_tokens=False)["input_ids"]
            if list(a) != list(b):
                differing.append(req.id)
        return Finding(
            self.name, "tokenizer", "high" if differing else "medium",
            "the pipelines use different tokenizers"
            + (f"; {len(differing)} requests tokenize differently" if differing else " (same ids on these requests)"),
            len(differing), len(ctx.requests),
            {
                "offline_tokenizer": ctx.offline.tokenizer_digest,
                "production_tokenizer": ctx.production.tokenizer_digest,
                "request_ids": differing[:MAX_IDS],
            },
        )


def _with_limit(ctx: ParityContext, req: Request) -> tuple[int, ...]:
    """Production's prompt, cut the way the offline pipeline cuts."""
    full = ctx.production.render(req, truncate=False).ids
    pre = ctx.offline.spec.preprocess
    if pre.max_input_tokens is None or len(full) <= pre.max_input_tokens:
        return full
    return full[-pre.max_input_tokens :] if pre.truncation_side == "left" else full[: pre.max_input_tokens]


def _lost(full: tuple[int, ...], kept: tuple[int, ...]) -> tuple[int, ...]:
    if full[: len(kept)] == kept:
        return full[len(kept) :]
    return full[: len(full) - len(kept)]


def _text_change(ctx: ParityContext, req: Request) -> dict[str, Any] | None:
    """The first non-system turn the two pipelines' preprocessing leaves different, as evidence;
    ``None`` when they agree on every turn."""
    off, prod = ctx.offline, ctx.production
    turns_a = [t["content"] for t in off.messages(req) if t["role"] != "system"]
    turns_b = [t["content"] for t in prod.messages(req) if t["role"] != "system"]
    if turns_a == turns_b:
        return None
    j = next(k for k, (x, y) in enumerate(zip(turns_a, turns_b)) if x != y)
    return {
        "example_request": req.id,
        "offline_text": excerpt(turns_a[j]),
        "production_text": excerpt(turns_b[j]),
        "offline_preprocess": off.spec.preprocess.model_dump(exclude={"max_input_tokens", "truncation_side"}),
        "production_preprocess": prod.spec.preprocess.model_dump(exclude={"max_input_tokens", "truncation_side"}),
    }


def _truncation(ctx: ParityContext, req: Request) -> tuple[int, dict[str, Any] | None]:
    """The prompt's full length in tokens (production's template), and evidence when production's
    truncated prompt differs from the offline pipeline's (``None`` when they agree)."""
    prod = ctx.production
    full = prod.render(req, truncate=False)
    cut_prod = prod.render(req)
    cut_off = _with_limit(ctx, req)
    if cut_prod.ids == cut_off:
        return full.full_length, None
    lost = _lost(full.ids, cut_prod.ids)
    return full.full_length, {
        "example_request": req.id,
        "prompt_tokens": full.full_length,
        "production_keeps": len(cut_prod.ids),
        "offline_keeps": len(cut_off),
        "production_side": prod.spec.preprocess.truncation_side,
        "lost_text": excerpt(prod.tokenizer.decode(lost), 300) if lost else "",
    }


@harness.hookimpl
def harness_register_parity_checks(registrar: Registrar) -> None:
    registrar.add(PreprocessingCheck)

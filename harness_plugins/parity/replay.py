"""Replay: send logged production requests to the production endpoint and compare, token by token,
what it answered with what the offline pipeline's model says about the same answer.

Exact text is not expected across backends (different kernels flip near-ties), so the
comparison is teacher-forced: every token the server produced is scored by the in-process model
on the *offline* prompt, and the server's log-probability of that token is compared with the
offline one.  A request agrees when every token is within ``logprob_tolerance`` nats; otherwise
its first divergence (position, both tokens, both log-probabilities) is the evidence, and the
divergence is attributed to a cause another check found for that request (template, truncation,
sampling) where there is one.  The offline greedy answer's agreement with the server's text is
reported beside it.

Every answer is stored as it arrives, so a run stopped by a dead endpoint keeps its answers and a
re-run sends only the rest.  An endpoint that stays down makes this check an ``error``.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass
from typing import Any

from harness.lib.evidence import MAX_IDS, excerpt
from pydantic import Field

import harness
from harness.plugin.components import ComponentConfig
from harness.plugin.parity import CheckOutput, ParityCheck
from harness.errors import CheckError, ConfigError
from harness.plugin.parity import ParityContext
from harness.lib.generate import score_continuations
from harness.lib.pipeline import Request
from harness.types import Finding, Severity
from harness.plugin.registry import Registrar


class ReplayConfig(ComponentConfig):
    max_requests: int | None = Field(None, ge=1, description="replay at most this many requests")
    max_tokens: int = Field(48, ge=1, description="cap on each answer's length")
    logprob_tolerance: float = Field(
        0.25, gt=0, description="largest |Δ log-prob| (nats) of one token that still agrees"
    )
    min_agreement: float = Field(0.9, ge=0, le=1, description="agreement rate below this is high severity")
    prefix_tokens: int = Field(16, ge=1, description="length of the greedy prefix compared as text")


UNEXPLAINED = "unexplained (backend numerics or weights)"


def _job_key(messages: list[dict[str, str]], request_id: str) -> str:
    text = json.dumps([request_id, messages], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ReplayCheck(ParityCheck[ReplayConfig]):
    name = "replay"
    description = "logged requests through the production endpoint and the offline pipeline, token by token"
    Config = ReplayConfig

    def run(self, ctx: ParityContext) -> CheckOutput:
        from harness.lib.endpoint import Completion

        cfg = self.config
        client = ctx.endpoint()
        if client is None:
            raise ConfigError("replay needs parity.production.endpoint (a live OpenAI-compatible server)")
        prod = ctx.production
        chosen = ctx.requests[: cfg.max_requests] if cfg.max_requests else list(ctx.requests)
        params = prod.sampling.request_params()
        params["max_tokens"] = min(int(params.get("max_tokens", cfg.max_tokens)), cfg.max_tokens)
        limit = prod.spec.preprocess.max_input_tokens
        if limit is not None and prod.spec.preprocess.truncation_side == "left":
            params["truncate_prompt_tokens"] = limit  # vLLM's server-side truncation
        material = {"endpoint": client.describe(), "params": params, "format": 1}
        messages = {r.id: prod.messages(r) for r in chosen}
        keys = {r.id: _job_key(messages[r.id], r.id) for r in chosen}
        stored = ctx.store.cached_items("parity_replay", material) if ctx.use_cache else {}
        from_cache = sum(1 for r in chosen if keys[r.id] in stored)
        jobs = [(keys[r.id], messages[r.id], params) for r in chosen if keys[r.id] not in stored]
        done = [from_cache]

        def keep(key: str, completion: Completion) -> None:
            stored[key] = completion.to_json()
            ctx.store.put_items("parity_replay", material, {key: stored[key]})
            done[0] += 1
            ctx.progress(done[0], len(chosen), "answered")

        errors = client.map_chat(jobs, on_result=keep) if jobs else {}
        if errors:
            first = next(iter(errors.values()))
            raise CheckError(
                f"{len(errors)} of {len(chosen)} requests got no answer from {client.describe()['url']} "
                f"(first: {first}); the {len(chosen) - len(errors)} answers received are kept and a re-run sends only the rest"
            )
        answers = {r.id: Completion.from_json(stored[keys[r.id]]) for r in chosen}
        return self._compare(ctx, cfg, chosen, answers, from_cache)

    def _compare(self, ctx: ParityContext, cfg: ReplayConfig, chosen: list[Request], answers: dict[str, Any], from_cache: int) -> CheckOutput:
        """Score each production answer with the offline model and compare it token by token,
        and with the offline pipeline's greedy answer."""
        scorer = _Scorer(ctx, cfg, ctx.loaded_model(), _known_causes(ctx))
        greedy = ctx.generate(ctx.offline, chosen, samples=1, max_tokens=cfg.max_tokens)
        compared: list[_Compared] = []
        for i, req in enumerate(chosen):
            compared.append(scorer.compare(req, answers[req.id], greedy[req.id][0]))
            ctx.progress(i + 1, len(chosen), "compared")
        records = [c.record for c in compared]
        n = len(chosen)
        agree = sum(1 for c in compared if c.at is None)
        rate = agree / n if n else 1.0
        attribution: dict[str, int] = {}
        for r in records:
            if not r["agree"]:
                attribution[r["attribution"]] = attribution.get(r["attribution"], 0) + 1
        deltas_all = [d for c in compared for d in c.deltas]
        metrics = {
            "requests": n,
            "from_cache": from_cache,
            "agreement_rate": rate,
            "logprob_tolerance": cfg.logprob_tolerance,
            "exact_text_match": sum(c.same_text for c in compared) / n if n else 1.0,
            f"greedy_prefix_{cfg.prefix_tokens}_match": sum(c.same_prefix for c in compared) / n if n else 1.0,
            "median_abs_delta": statistics.median(deltas_all) if deltas_all else None,
            "max_abs_delta": max(deltas_all) if deltas_all else None,
            "first_divergence_positions": sorted(c.at for c in compared if c.at is not None),
            "attribution": attribution,
            "per_request": records,
        }
        findings = []
        diverged = [r["request"] for r in records if not r["agree"]]
        if diverged:
            severity: Severity = "high" if rate < cfg.min_agreement else "medium"
            findings.append(
                Finding(
                    self.name, "replay_divergence", severity,
                    f"{len(diverged)} of {n} replayed answers diverge beyond {cfg.logprob_tolerance} nats/token "
                    f"(agreement {rate:.0%}); attributed: " + ", ".join(f"{k} {v}" for k, v in sorted(attribution.items())),
                    len(diverged), n,
                    {"examples": [r for r in records if not r["agree"]][:5], "request_ids": diverged[:MAX_IDS]},
                )
            )
        return CheckOutput(findings, metrics)


@dataclass(frozen=True)
class _Compared:
    """One replayed answer against the offline model: its per-request record, the absolute
    log-probability differences, the first position beyond the tolerance (``None``: agrees),
    and whether the offline greedy answer has the same text and the same first tokens."""

    record: dict[str, Any]
    deltas: list[float]
    at: int | None
    same_text: bool
    same_prefix: bool


@dataclass(frozen=True)
class _Scorer:
    """What comparing one answer needs: the context, the options, the offline model and the
    causes other checks found per request (to attribute a divergence)."""

    ctx: ParityContext
    cfg: ReplayConfig
    model: Any
    causes: dict[str, str]

    def compare(self, req: Request, ans: Any, offline: Any) -> _Compared:
        """Score production's answer ``ans`` to ``req`` with the offline model (its
        log-probability of each token against the server's) and compare it with the
        ``offline`` greedy answer."""
        ctx, cfg, model, causes = self.ctx, self.cfg, self.model, self.causes
        tok = ctx.offline.tokenizer
        cont = list(ans.token_ids) if ans.token_ids is not None else tok(ans.text, add_special_tokens=False)["input_ids"]
        prompt = ctx.offline.render(req).ids
        lp, top_id, top_lp = score_continuations(model, [(prompt, cont)])[0]
        server_lp: list[Any] = list(ans.logprobs) if len(ans.logprobs) == len(cont) else [None] * len(cont)
        deltas = [abs(a - b) for a, b in zip(lp, server_lp) if b is not None]
        at = next((j for j, (a, b) in enumerate(zip(lp, server_lp)) if b is not None and abs(a - b) > cfg.logprob_tolerance), None)
        same_text = offline.text.strip() == ans.text.strip()
        # the server's ids include the EOS it stopped at (scored above); the offline
        # generation's are cut before it
        core = cont[:-1] if cont and cont[-1] in (tok.eos_token_id, tok.pad_token_id) else cont
        same_prefix = list(offline.token_ids)[: cfg.prefix_tokens] == core[: cfg.prefix_tokens]
        record: dict[str, Any] = {
            "request": req.id,
            "agree": at is None,
            "tokens": len(cont),
            "max_abs_delta": round(max(deltas), 4) if deltas else None,
            "production": excerpt(ans.text, 120),
            "offline_greedy": excerpt(offline.text, 120),
            "same_text": same_text,
        }
        if at is not None:
            record["first_divergence"] = {
                "position": at,
                "production_token": {"id": cont[at], "token": tok.convert_ids_to_tokens(cont[at]), "server_logprob": round(server_lp[at], 4), "offline_logprob": round(lp[at], 4)},
                "offline_top_token": {"id": top_id[at], "token": tok.convert_ids_to_tokens(top_id[at]), "offline_logprob": round(top_lp[at], 4)},
            }
            record["attribution"] = causes.get(req.id, UNEXPLAINED)
        return _Compared(record, deltas, at, same_text, same_prefix)


def _known_causes(ctx: ParityContext) -> dict[str, str]:
    """request id -> the first cause another check found for it (``check:cause``)."""
    out: dict[str, str] = {}
    for label, result in ctx.results.items():
        for finding in result.findings:
            for rid in finding.evidence.get("request_ids", []):
                out.setdefault(rid, f"{label}:{finding.cause}")
    return out


@harness.hookimpl
def harness_register_parity_checks(registrar: Registrar) -> None:
    registrar.add(ReplayCheck)

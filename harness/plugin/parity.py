"""What a parity check receives: the requests, both pipelines, the model, and shared, cached work.

Several checks need the same expensive things (the model in memory, the offline pipeline's
completions, the production endpoint's completions); the context computes each once per run and
caches completions in the store, keyed by everything that changes them, so that a re-run or a
resumed run does not recompute them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.plugin.components import Component, ConfigT
from harness.lib.generate import Generation
from harness.lib.pipeline import EffectiveSampling, Pipeline, Request
from harness.types import CheckResult, Finding, ProgressFn

if TYPE_CHECKING:
    from harness.plugin.components import Backend
    from harness.lib.models import LoadedModel, ModelRef
    from harness.lib.endpoint import EndpointClient
    from harness.lib.store import Store


@dataclass
class ParityContext:
    requests: list[Request]
    offline_set: list[Request] | None
    offline: Pipeline
    production: Pipeline
    model: ModelRef
    backend: Backend
    store: Store
    progress: ProgressFn
    seed: int = 0
    use_cache: bool = True
    results: dict[str, CheckResult] = field(default_factory=dict)
    """results of the checks that already ran, by label (replay attributes divergences to them)"""
    _loaded: LoadedModel | None = None
    _client: EndpointClient | None = None

    # ------------------------------------------------------------------------- model

    def loaded_model(self) -> LoadedModel:
        """The model in memory (loaded on first use, once per run)."""
        if self._loaded is None:
            self._loaded = self.backend.load(self.model)
        return self._loaded

    def model_material(self) -> dict[str, Any]:
        return {"model": self.model.fingerprint, "backend": self.backend.cache_material_for(self.model)}

    def generate(
        self,
        pipeline: Pipeline,
        requests: Sequence[Request],
        sampling: EffectiveSampling | None = None,
        samples: int = 1,
        max_tokens: int | None = None,
    ) -> dict[str, list[Generation]]:
        """``samples`` completions per request, by the in-process model, of the prompts as
        ``pipeline`` renders them, with ``sampling`` (default: the pipeline's own).  Cached per
        prompt, so checks that ask for the same completions share them."""
        from harness.lib.generate import generate_ids

        sampling = sampling or pipeline.sampling
        values = dict(sampling.values)
        if max_tokens is not None:
            values["max_tokens"] = min(int(values["max_tokens"]), max_tokens)
        material = {**self.model_material(), "sampling": values, "samples": samples, "seed": self.seed}
        prompts = {r.id: pipeline.render(r).ids for r in requests}
        keys = {rid: _prompt_key(ids) for rid, ids in prompts.items()}
        cached = self.store.cached_items("parity_generation", material) if self.use_cache else {}
        todo = sorted({keys[rid]: ids for rid, ids in prompts.items() if keys[rid] not in cached}.items())
        if todo:
            model = self.loaded_model()
            self.progress(0, len(todo), f"generating {samples} completion(s) per prompt")
            done = 0
            for start in range(0, len(todo), 8):
                chunk = todo[start : start + 8]
                outs = generate_ids(model, [ids for _, ids in chunk], values, samples, self.seed)
                fresh = {key: [[g.text, list(g.token_ids)] for g in out] for (key, _), out in zip(chunk, outs)}
                self.store.put_items("parity_generation", material, fresh)
                cached.update(fresh)
                done += len(chunk)
                self.progress(done, len(todo), "generated")
        return {rid: [Generation(t, tuple(i)) for t, i in cached[keys[rid]]] for rid in prompts}

    # ----------------------------------------------------------------------- endpoint

    def endpoint(self) -> EndpointClient | None:
        """A client for production's live endpoint, or None when production names none."""
        spec = self.production.spec.endpoint
        if spec is None:
            return None
        if self._client is None:
            from harness.lib.endpoint import EndpointClient

            self._client = EndpointClient(spec)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._loaded = None


def _prompt_key(ids: Sequence[int]) -> str:
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()[:32]


@dataclass
class CheckOutput:
    """What a parity check returns: its findings (none when the pipelines agree on what it
    looks at) and its measurements, which reports show even when there is no finding."""

    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


class ParityCheck(Component[ConfigT]):
    """Compares one aspect of the offline pipeline with production (see ``harness.parity``)."""

    kind = "parity_check"

    def run(self, ctx: ParityContext) -> CheckOutput:
        """Look at ``ctx.requests`` through both pipelines; raise on what cannot be checked
        (the stage records it as an ``error``, never as a pass)."""
        raise NotImplementedError

"""The ``perplexity_outliers`` filter: records whose text a reference model finds far more (or far
less) surprising than the rest of the data set.

Garbled records (word salad, mojibake, random character strings, text in the wrong field) have a
much higher perplexity under a small instruction-tuned model than the data around them, while
exact boilerplate has a much lower one.  Neither is caught by rule-based filters, and a fixed
perplexity threshold does not transfer between data sets (customer-support answers sit near
a perplexity of 5, open-ended chat near 20), so this filter estimates the data set's own
distribution and removes its outliers.

**Score.**  Each record is rendered and tokenised exactly as training does (the LoRA trainer's
``encode()``, ``harness_plugins.trainers.lora``); its score is the mean negative log-likelihood
per token (natural log: the log-perplexity) of

* ``scope: response`` (default): the assistant tokens (what training supervises: every
  assistant turn's content and end-of-turn token), each given the whole rendered conversation
  before it;
* ``scope: conversation``: every token of the rendered conversation but the first.

Log-probabilities come from ``hf_scoring.token_logprobs`` (float32 log-softmax, batched by
length).  At most ``max_tokens`` tokens go through the model: the first ``max_tokens`` of the
rendered record (what training keeps), unless the first scored token lies further in than
``max_tokens // 2``; then the window starts ``max_tokens // 2`` tokens before it, so that a long
prompt never leaves nothing to score.  Only the scored tokens inside that window count.  A record
with nothing to score (no assistant token, or a chat template that rejects it) scores NaN and is
kept: ``format_check`` is the filter that removes those.

**Outliers.**  On the log-perplexities ``x`` of the scorable records:

* ``method: mad`` (default): the robust z-score ``(x - median) / (1.4826 * MAD)``; a record is an
  outlier when ``|z| > k`` (``k = 3.5``, Iglewicz and Hoaglin's cut-off).  When more than half of
  the records score the same (MAD = 0) the scale falls back to ``1.2533 * mean |x - median|``;
  when that is zero too, no record is an outlier;
* ``method: iqr``: an outlier lies outside ``[Q1 - k * IQR, Q3 + k * IQR]`` (quartiles by linear
  interpolation).  ``k = 3.5`` is lenient there; Tukey's fences are ``k = 1.5`` (outliers) and
  ``k = 3`` (far out).

``side`` says which outliers are removed: ``high`` (default: garbled text), ``low`` (boilerplate,
memorised text) or ``both``.  Reasons ``perplexity_high`` / ``perplexity_low``, detail e.g.
``"ppl 812.4, robust z 5.1 (median 14.2)"`` (perplexities, i.e. ``exp`` of the log values; with
``iqr`` the crossed fence is added).

A distribution needs records: ``apply`` raises a ``ConfigError`` naming the filter and the count
when fewer than ``MIN_RECORDS`` (20) records are scorable; put this filter where enough data
reaches it, or leave it out for tiny sets.  The model is loaded once per process, on first use.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

import harness
from harness.plugin.components import (
    Filter,
    FilterActionConfig,
    FilterOutcome,
    FilterResult,
    RunContext,
)
from harness.errors import CheckError, ConfigError, require
from harness.types import Conversation
from harness.plugin.registry import Registrar

if TYPE_CHECKING:
    from harness.lib.models import LoadedModel

NAME = "perplexity_outliers"
MIN_RECORDS = 20
"""Fewest scorable records from which the median and spread are estimated."""
MAD_SCALE = 1.4826
"""MAD times this estimates the standard deviation of a normal distribution."""
MEAN_AD_SCALE = 1.2533
"""Mean absolute deviation times this (sqrt(pi / 2)) does the same: the fallback when MAD = 0."""


class PerplexityOutliersConfig(FilterActionConfig):
    model: str = Field(
        "smollm2-135m-instruct",
        description="the reference model: an embedded model or a folder (relative to the suite)",
    )
    scope: Literal["response", "conversation"] = Field(
        "response",
        description="score the assistant tokens given the conversation, or every token",
    )
    method: Literal["mad", "iqr"] = Field(
        "mad", description="robust z-score (median, MAD) or interquartile fences"
    )
    k: float = Field(3.5, gt=0, description="robust z-score cut-off (mad) or fence multiple (iqr)")
    side: Literal["both", "high", "low"] = Field(
        "high", description="remove high-perplexity outliers, low ones, or both"
    )
    max_tokens: int = Field(512, ge=8, description="most tokens of a record run through the model")
    batch_size: int = Field(8, ge=1, description="sequences per forward pass")
    dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32", description="weights' dtype (log-softmax is float32 in any case)"
    )


@lru_cache(maxsize=2)
def load_scorer(folder: str, dtype: str) -> LoadedModel:
    """The reference model in ``folder`` on the ``hf`` backend (found through the plugin
    registry, not imported), loaded once per process."""
    from harness.lib.models import resolve_model
    from harness.plugin.components import Backend
    from harness.plugin.registry import narrow
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries

    ref = resolve_model(folder, "hf", dtype, base_dir=Path(folder))
    registries = Registries.from_plugin_manager(get_plugin_manager(load_entrypoints=False))
    backend = registries.build("backend", "hf", {}, RunContext(Path(folder), Path(folder)))
    loaded: LoadedModel = narrow(backend, Backend).load(ref)
    return loaded


@dataclass(frozen=True)
class Spread:
    """The centre and spread of the log-perplexities, and the bounds outside which a record is an
    outlier (``-inf`` / ``inf`` where nothing can be)."""

    median: float
    scale: float
    """1.4826 * MAD (or the mean-deviation fallback); 0 when every record scores the same."""
    low: float
    high: float

    def z(self, x: float) -> float:
        """The robust z-score of ``x`` (0 when there is no spread and ``x`` is the median)."""
        if self.scale > 0:
            return (x - self.median) / self.scale
        return 0.0 if x == self.median else math.copysign(math.inf, x - self.median)


def spread(values: Sequence[float], method: str, k: float) -> Spread:
    """The outlier bounds of ``values`` (log-perplexities) for ``method`` and ``k``."""
    median = statistics.median(values)
    deviations = [abs(x - median) for x in values]
    scale = MAD_SCALE * statistics.median(deviations)
    if scale == 0:
        scale = MEAN_AD_SCALE * statistics.fmean(deviations)
    if method == "iqr":
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        iqr = q3 - q1
        if iqr == 0:
            return Spread(median, scale, -math.inf, math.inf)
        return Spread(median, scale, q1 - k * iqr, q3 + k * iqr)
    if scale == 0:
        return Spread(median, scale, -math.inf, math.inf)
    return Spread(median, scale, median - k * scale, median + k * scale)


def _ppl(log_ppl: float) -> float:
    return math.exp(min(log_ppl, 700.0))


class PerplexityOutliers(Filter[PerplexityOutliersConfig]):
    name = NAME
    description = (
        "drops records whose perplexity under a reference model is an outlier of the data set's "
        "own distribution (robust z-score or IQR fences): word salad, garbled or random text"
    )
    Config = PerplexityOutliersConfig

    @property
    def cfg(self) -> PerplexityOutliersConfig:
        return self.config

    @cached_property
    def folder(self) -> str:
        """The reference model's folder (an embedded model is converted once, then cached)."""
        from harness.lib.models import model_folder

        return model_folder(self.cfg.model, str(self.ctx.suite_dir))

    @cached_property
    def model(self) -> LoadedModel:
        """The reference model (shared by every filter of the process with the same folder)."""
        return load_scorer(self.folder, self.cfg.dtype)

    def cache_material(self) -> dict[str, Any]:
        """Config and the reference model's fingerprint: another model scores differently."""
        from harness.lib.models import dir_fingerprint

        return {**super().cache_material(), "model_fingerprint": dir_fingerprint(Path(self.folder))}

    # ---------------------------------------------------------------------------- scores

    def _sequence(
        self, record: Conversation, limit: int
    ) -> tuple[list[int], int, list[bool]] | None:
        """``(window tokens, n, scored)``: the tokens run through the model, how many at its end
        get log-probabilities, and which of those count; None when nothing can be scored."""
        from harness.lib.training.examples import IGNORE
        from harness.lib.training.examples import encode_conversation as encode

        jinja2 = require("jinja2")
        try:
            ids, labels, _ = encode(self.model.tokenizer, record, sys.maxsize)
        except (jinja2.TemplateError, CheckError, TypeError, ValueError, KeyError, IndexError):
            return None
        if self.cfg.scope == "conversation":
            counted = [i > 0 for i in range(len(ids))]
        else:
            counted = [label != IGNORE for label in labels]
        first = next((i for i, c in enumerate(counted) if c and i > 0), None)
        if first is None:
            return None
        start = max(0, first - limit // 2)
        window = ids[start : start + limit]
        n = len(window) - (first - start)
        return window, n, counted[first : start + len(window)]

    def scores(self, records: Sequence[Conversation]) -> list[float]:
        """The log-perplexity (mean negative log-likelihood per scored token, natural log) of
        each record, in order; NaN for a record with nothing to score."""
        from harness.lib.model_api import model_api

        api = model_api(self.model)
        limit = min(self.cfg.max_tokens, api.tokenizer_facts().max_length)
        prepared = [self._sequence(record, limit) for record in records]
        todo = [p for p in prepared if p is not None]
        logprobs = iter(
            api.token_logprobs([(tokens, n) for tokens, n, _ in todo], batch_size=self.cfg.batch_size)
        )
        out: list[float] = []
        for item in prepared:
            if item is None:
                out.append(math.nan)
                continue
            picked = [lp for lp, counted in zip(next(logprobs), item[2]) if counted]
            out.append(-math.fsum(picked) / len(picked))
        return out

    # ---------------------------------------------------------------------------- filter

    def _too_few(self, count: int) -> ConfigError:
        return ConfigError(
            f"{self.name}: needs at least {MIN_RECORDS} scorable records to estimate the "
            f"perplexity distribution, got {count}; use it on more data or remove it"
        )

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        if len(records) < MIN_RECORDS:
            raise self._too_few(len(records))
        scores = self.scores(records)
        finite = [x for x in scores if math.isfinite(x)]
        if len(finite) < MIN_RECORDS:
            raise self._too_few(len(finite))
        bounds = spread(finite, self.cfg.method, self.cfg.k)
        outcome = FilterOutcome(self.name, self.cfg.action)
        for record, x in zip(records, scores):
            problem = self._judge(x, bounds)
            if problem is None:
                outcome.keep(record)
            else:
                outcome.remove(record, *problem)
        return outcome.result()

    def _judge(self, x: float, bounds: Spread) -> tuple[str, str] | None:
        """``(reason, detail)`` when the log-perplexity ``x`` is an outlier on a removed side."""
        if not math.isfinite(x):
            return None
        if x > bounds.high and self.cfg.side in ("both", "high"):
            reason, fence = "perplexity_high", bounds.high
        elif x < bounds.low and self.cfg.side in ("both", "low"):
            reason, fence = "perplexity_low", bounds.low
        else:
            return None
        z = bounds.z(x)
        detail = f"ppl {_ppl(x):.1f}, robust z {z:.1f} (median {_ppl(bounds.median):.1f}"
        if self.cfg.method == "iqr":
            which = "upper" if reason == "perplexity_high" else "lower"
            detail += f", {which} fence {_ppl(fence):.1f}"
        return reason, detail + ")"


@harness.hookimpl
def harness_register_filters(registrar: Registrar) -> None:
    registrar.add(PerplexityOutliers)

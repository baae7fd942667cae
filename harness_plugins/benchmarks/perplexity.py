"""Perplexity on held-out general text (WikiText-2 test by default): a forgetting signal that does
not depend on a prompt format or an answer parser.

Items are defined on the characters of the text, not on tokens, so that they are the same for
every model and ``items()`` needs no tokenizer:

* the text is cut only at *cut points*, positions of a space followed by a non-space character.
  Byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM...) never merge across such a point, so a piece
  of text tokenised on its own gives exactly the tokens it has inside the whole text;
* item ``i`` scores the span that starts at the first cut point at or after ``i / windows`` of the
  text and runs ``span_chars`` characters to the next cut point (spread over the whole text, never
  overlapping). It is conditioned on the ``context_chars`` characters before it (again from a cut
  point; the start of the text for the first item). Its id is ``<folder>/<first character>``.

Scoring follows the "perplexity of fixed-length models" method (Hugging Face, lm-eval's rolling
windows): the context and the span are tokenised separately and put end to end, and the span's
tokens are scored in strides of ``stride`` tokens, each in one causal pass over at most ``window``
tokens, so every token sees the ``window - stride`` or more tokens before it (context included)
and no token is scored twice.  An empty context becomes the model's prefix token (BOS, else EOS).
With the defaults (32 spans of 800 characters after 1,200 characters of context; window 512,
stride 256), an item is usually one pass on SmolLM2's tokenizer: about 200 tokens scored after
about 300 tokens of context.

An item's score is its mean log-probability per token (higher is better, so the gate rules work
unchanged) and its weight is its number of tokens; ``summary()`` gives the token-weighted
``perplexity`` = exp(-weighted mean), ``bits_per_token`` and the weighted mean itself.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import PurePosixPath
from typing import Any

from pydantic import Field, model_validator

import harness
from harness.plugin.components import Benchmark, ComponentConfig, Item, item_id, ProgressFn
from harness.errors import DataError
from harness.lib.model_api import ModelAPI
from harness.lib.models import LoadedModel
from harness.types import ItemResult
from harness.plugin.registry import Registrar

_CUT = re.compile(r"(?= \S)")


class PerplexityConfig(ComponentConfig):
    path: str = Field("wikitext2/test.txt", description="UTF-8 text file under the data directory")
    windows: int = Field(32, ge=1, description="items: spans spread evenly over the text")
    span_chars: int = Field(800, ge=1, description="scored characters per item (about 200 tokens)")
    context_chars: int = Field(
        1200, ge=0, description="characters of preceding text each span is conditioned on"
    )
    window: int = Field(512, ge=2, description="most tokens in one causal pass (context included)")
    stride: int = Field(256, ge=1, description="new tokens scored per pass; less than window")
    batch_size: int = Field(8, ge=1, description="passes per forward batch")

    @model_validator(mode="after")
    def _stride_below_window(self) -> PerplexityConfig:
        if self.stride >= self.window:
            raise ValueError(f"stride ({self.stride}) must be less than window ({self.window})")
        return self


class Perplexity(Benchmark[PerplexityConfig]):
    name = "perplexity"
    description = "held-out text (WikiText-2 test): mean log-probability per token, fixed-length windows"
    Config = PerplexityConfig
    needs = ("loglikelihood",)
    metric = "log_prob_per_token"
    chance = None
    proportion = False

    @cached_property
    def docs(self) -> list[dict[str, Any]]:
        cfg = self.config
        path = self.ctx.data_path(cfg.path, "perplexity text")
        text = path.read_text(encoding="utf-8")
        prefix = PurePosixPath(cfg.path).parent.name or PurePosixPath(cfg.path).stem
        spans = text_spans(text, cfg.windows, cfg.span_chars, cfg.context_chars)
        if not spans:
            raise DataError(f"{path}: no text to score")
        return [
            {"id": f"{prefix}/{start}", "context": text[ctx_start:start], "text": text[start:end]}
            for ctx_start, start, end in spans
        ]

    def items(self) -> list[Item]:
        return self.docs

    def evaluate(self, model: LoadedModel, items: Sequence[Item], progress: ProgressFn) -> list[ItemResult]:
        from harness.lib.model_api import model_api

        api = model_api(model)
        cfg = self.config
        window = min(cfg.window, api.tokenizer_facts().max_length)
        if cfg.stride >= window:
            raise DataError(f"perplexity.stride ({cfg.stride}) must be below the window ({window})")
        progress(0, len(items), "log-probability of the held-out text")
        passes: list[tuple[list[int], int]] = []
        owners: list[int] = []
        for i, doc in enumerate(items):
            tokens, n_context = encode(api, doc["context"], doc["text"])
            for sequence in strided_passes(tokens, n_context, window, cfg.stride):
                passes.append(sequence)
                owners.append(i)
        sums, counts = [0.0] * len(items), [0] * len(items)
        for owner, logprobs in zip(owners, api.token_logprobs(passes, batch_size=cfg.batch_size)):
            sums[owner] += sum(logprobs)
            counts[owner] += len(logprobs)
        results = []
        for doc, total, count in zip(items, sums, counts):
            mean = total / count
            results.append(ItemResult(item_id(doc), f"{math.exp(-mean):.4g}", "", mean, float(count)))
        progress(len(items), len(items), "done")
        return results

    def summary(self, results: Sequence[ItemResult]) -> dict[str, float]:
        """Token-weighted figures over all items."""
        tokens = sum(r.weight for r in results)
        if not tokens:
            return {"perplexity": float("nan"), "bits_per_token": float("nan"), self.metric: float("nan")}
        mean = sum(r.score * r.weight for r in results) / tokens
        return {"perplexity": math.exp(-mean), "bits_per_token": -mean / math.log(2), self.metric: mean}


def text_spans(text: str, windows: int, span_chars: int, context_chars: int) -> list[tuple[int, int, int]]:
    """``(context start, start, end)`` character offsets of the items (see the module docstring)."""
    cuts = [m.start() for m in _CUT.finditer(text)]
    starts = sorted(
        {c for k in range(windows) if (c := _next_cut(cuts, k * len(text) // windows)) is not None}
    )
    spans = []
    for k, start in enumerate(starts):
        following = _next_cut(cuts, start + span_chars)
        limit = starts[k + 1] if k + 1 < len(starts) else len(text)
        end = min(limit, len(text) if following is None else following)
        ctx_start = 0 if start <= context_chars else _next_cut(cuts, start - context_chars)
        spans.append((ctx_start or 0, start, end))
    return spans


def _next_cut(cuts: list[int], offset: int) -> int | None:
    """The first cut point at or after ``offset``, if any."""
    i = bisect.bisect_left(cuts, offset)
    return cuts[i] if i < len(cuts) else None


def encode(api: ModelAPI, context: str, text: str) -> tuple[list[int], int]:
    """The tokens of ``context`` then ``text`` (tokenised separately, no special tokens) and the
    number of context tokens; an empty context becomes the prefix token (BOS, else EOS)."""
    ctx = api.encode(context) if context else []
    if not ctx:
        ctx = api.encode("", add_bos=True)
    span = api.encode(text)
    return ctx + span, len(ctx)


def strided_passes(
    tokens: Sequence[int], n_context: int, window: int, stride: int
) -> list[tuple[list[int], int]]:
    """The passes that score ``tokens[n_context:]``: ``(pass tokens, tokens scored at its end)``,
    ``stride`` new tokens each, with as much preceding text as fits in ``window`` tokens."""
    passes = []
    for begin in range(n_context, len(tokens), stride):
        end = min(begin + stride, len(tokens))
        passes.append((list(tokens[max(0, end - window) : end]), end - begin))
    return passes


@harness.hookimpl
def harness_register_benchmarks(registrar: Registrar) -> None:
    registrar.add(Perplexity)

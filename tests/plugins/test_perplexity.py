"""Perplexity: tokenizer-independent items, strided passes that score every token once, scores
equal to a direct forward pass, and token-weighted summary figures."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.plugin.components import ComponentConfig, RunContext
from harness.lib.data import DATA_ENV
from harness.lib.models import LoadedModel, ModelRef
from harness.types import ItemResult
from harness_plugins.backends.hf import HFBackend
from harness_plugins.benchmarks.perplexity import (
    Perplexity,
    PerplexityConfig,
    encode,
    strided_passes,
    text_spans,
)

SENTENCES = [
    "The harbour was quiet before dawn , and the boats rocked gently at their moorings .",
    "A = Section = heading follows , then numbers like 1 @,@ 200 and 3 @.@ 5 appear .",
    "Nobody expected the storm , yet by noon the sky had turned the colour of slate .",
]


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    text = " \n " + " \n \n ".join(SENTENCES * 3) + " \n"
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "test.txt").write_text(text, encoding="utf-8")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    return text


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    return RunContext(tmp_path, tmp_path / "work")


@pytest.fixture(scope="module")
def tiny(harness_tiny_model_dir: Path) -> LoadedModel:
    backend = HFBackend(ComponentConfig(), RunContext(harness_tiny_model_dir, harness_tiny_model_dir))
    return backend.load(ModelRef("baseline", harness_tiny_model_dir, "hf", "float32", None, "t"))


def test_items_are_character_spans_spread_over_the_real_text(ctx: RunContext) -> None:
    bench = Perplexity(PerplexityConfig(windows=8), ctx)
    items = bench.items()
    assert items == Perplexity(PerplexityConfig(windows=8), ctx).items()
    text = (ctx.data_dir / "wikitext2" / "test.txt").read_text(encoding="utf-8")
    starts = [int(item["id"].removeprefix("wikitext2/")) for item in items]
    assert len(items) == 8 and starts == sorted(starts) and starts[-1] > len(text) * 7 // 8
    for item, start in zip(items, starts):
        assert text[start : start + len(item["text"])] == item["text"]
        assert text[start - len(item["context"]) : start] == item["context"]
        assert item["text"].startswith(" ") and not item["text"][1].isspace()  # a cut point
        assert 800 <= len(item["text"]) < 1000 and len(item["context"]) <= 1200


def test_spans_never_overlap_and_the_first_context_is_the_start(corpus: str) -> None:
    spans = text_spans(corpus, windows=50, span_chars=120, context_chars=30)
    assert spans[0][0] == 0
    for (_, _, end), (_, start, _) in itertools.pairwise(spans):
        assert end <= start
    assert all(ctx <= start < end <= len(corpus) for ctx, start, end in spans)


def test_strided_passes_score_every_token_once_within_the_window() -> None:
    tokens = list(range(100))
    passes = strided_passes(tokens, n_context=7, window=20, stride=8)
    scored = [t for seq, n in passes for t in seq[-n:]]
    assert scored == tokens[7:]
    assert all(len(seq) <= 20 and 1 <= n <= 8 and n < len(seq) for seq, n in passes)
    assert passes[0] == (tokens[0:15], 8)  # the first pass keeps all of its context


@pytest.mark.parametrize(("window", "stride"), [(512, 511), (24, 10)])
def test_scores_equal_a_direct_forward_pass(
    corpus: str, ctx: RunContext, tiny: LoadedModel, window: int, stride: int
) -> None:
    import torch

    config = PerplexityConfig(
        path="corpus/test.txt",
        windows=3,
        span_chars=60,
        context_chars=40,
        window=window,
        stride=stride,
        batch_size=2,
    )
    bench = Perplexity(config, ctx)
    items = bench.items()
    results = bench.evaluate(tiny, items, lambda *a: None)
    for item, result in zip(items, results):
        tokens, n_context = encode(tiny.api, item["context"], item["text"])
        direct = []
        for p in range(n_context, len(tokens)):  # each token from the pass that scores it
            end = min(n_context + ((p - n_context) // stride + 1) * stride, len(tokens))
            seq = tokens[max(0, end - window) : p + 1]
            with torch.no_grad():
                logits = tiny.model(torch.tensor([seq])).logits[0, -2].float()
            direct.append(float(logits.log_softmax(-1)[seq[-1]]))
        assert result.item_id == item["id"]
        assert result.weight == len(direct) == len(tokens) - n_context
        assert result.score == pytest.approx(sum(direct) / len(direct), abs=1e-5)


def test_summary_is_token_weighted(ctx: RunContext) -> None:
    results = [ItemResult("a/0", "", "", -2.0, 30.0), ItemResult("a/9", "", "", -1.0, 10.0)]
    summary = Perplexity(PerplexityConfig(), ctx).summary(results)
    mean = (-2.0 * 30 + -1.0 * 10) / 40
    assert summary["log_prob_per_token"] == pytest.approx(mean)
    assert summary["perplexity"] == pytest.approx(math.exp(-mean))
    assert summary["bits_per_token"] == pytest.approx(-mean / math.log(2))


def test_stride_must_be_below_the_window() -> None:
    with pytest.raises(ValidationError, match="stride"):
        PerplexityConfig(window=64, stride=64)

"""support_intent with repeated sampling: k answers per message seeded per item, the score their
share of matches, every answer kept; greedy repeats refused."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from harness.lib.model_api import GenerationConfig, ModelAPI, TokenizerFacts
from harness.lib.models import LoadedModel, ModelRef
from harness.plugin.components import RunContext
from harness.types import ItemResult
from harness_plugins.benchmarks.support_intent import SupportIntent, SupportIntentConfig


class _CoinAnswers(ModelAPI):
    """Answers with the right intent or a wrong one at random, from the seed it is given."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.seeds = answers, []

    def render_chat(self, messages, add_generation_prompt=True) -> str:
        return messages[-1]["content"]

    def generate(self, prompts, config: GenerationConfig) -> list[str]:
        self.seeds.append(config.seed)
        rng = random.Random(config.seed)
        return [f"{self.answers[p]}\n" if rng.random() < 0.5 else "complaint" for p in prompts]

    def choice_loglikelihoods(self, requests, batch_size=8):
        raise NotImplementedError

    def token_logprobs(self, sequences, batch_size=8):
        raise NotImplementedError

    def encode(self, text, add_bos=False):
        raise NotImplementedError

    def tokenizer_facts(self) -> TokenizerFacts:
        raise NotImplementedError


def _bench(tmp_path: Path, seed: int = 0, **options) -> SupportIntent:
    return SupportIntent(SupportIntentConfig(**{"sample": 8, "samples": 4, "temperature": 0.7, **options}), RunContext(tmp_path, tmp_path, seed=seed))


def test_sampled_answers_score_each_message_by_their_share_of_matches(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    items = bench.items()
    api = _CoinAnswers({i["prompt"]: i["intent"] for i in items})
    model = LoadedModel(ModelRef("baseline", tmp_path, "fake", "float32", None, "t"), None, None, "float32", api=api)
    results = bench.evaluate(model, items, lambda *a: None)
    scores = [r.score for r in results]
    assert set(scores) <= {0.0, 0.25, 0.5, 0.75, 1.0} and len(set(scores)) >= 2
    for r, item in zip(results, items):
        assert len(r.samples) == 4 and r.score == sum(s.score for s in r.samples) / 4
        assert r.reference == item["intent"] and r.prediction == r.samples[0].raw.strip()
    assert len(set(api.seeds)) == len(items)
    assert bench.evaluate(model, items[::-1], lambda *a: None) == results[::-1]  # order changes nothing
    assert ItemResult(**results[0].to_json()) == results[0]
    other = _bench(tmp_path, seed=1).evaluate(model, items, lambda *a: None)
    assert [r.samples for r in other] != [r.samples for r in results]
    assert bench.cache_material()["sampling_seed"] == 0


def test_greedy_repeats_are_refused() -> None:
    with pytest.raises(ValueError, match="samples=3 at temperature 0"):
        SupportIntentConfig(samples=3)
    assert SupportIntentConfig().samples == 1


def test_sampled_answers_on_a_real_model_are_reproducible(harness_tiny_model_dir: Path, tmp_path: Path) -> None:
    from harness.lib.models import dir_fingerprint
    from harness.plugin.components import ComponentConfig
    from harness_plugins.backends.hf import HFBackend

    ref = ModelRef("baseline", harness_tiny_model_dir, "hf", "float32", None, dir_fingerprint(harness_tiny_model_dir))
    model = HFBackend(ComponentConfig(), RunContext(tmp_path, tmp_path)).load(ref)
    bench = _bench(tmp_path, sample=3, samples=3, temperature=1.0, max_new_tokens=6)
    items = bench.items()
    first = bench.evaluate(model, items, lambda *a: None)
    assert [len(r.samples) for r in first] == [3, 3, 3] and len({s.raw for r in first for s in r.samples}) > 3
    assert bench.evaluate(model, items[1:], lambda *a: None) == first[1:]

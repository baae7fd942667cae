"""HumanEval: pass@k, seeded problem subsets, and completions judged only inside the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.lib.model_api import GenerationConfig, ModelAPI
from harness.lib.models import LoadedModel, ModelRef
from harness.plugin.components import RunContext
from harness.types import ItemResult
from harness_plugins.benchmarks import humaneval as he
from harness_plugins.benchmarks.humaneval import HumanEval, HumanEvalConfig, pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(5, 2, 1, 0.4), (5, 0, 1, 0.0), (5, 5, 1, 1.0), (10, 3, 5, 1 - 21 / 252), (1, 1, 1, 1.0), (4, 1, 4, 1.0)],
)
def test_pass_at_k_known_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


class _ScriptedGeneration(ModelAPI):
    """A fake backend's model: generation from a script, nothing else."""

    def __init__(self, script) -> None:
        self.script = script

    def generate(self, prompts, config: GenerationConfig) -> list[str]:
        return self.script(None, prompts, config)

    def choice_loglikelihoods(self, requests, batch_size=8):
        raise NotImplementedError

    def token_logprobs(self, sequences, batch_size=8):
        raise NotImplementedError

    def render_chat(self, messages, add_generation_prompt=True):
        raise NotImplementedError

    def encode(self, text, add_bos=False):
        raise NotImplementedError

    def tokenizer_facts(self):
        raise NotImplementedError


def _bench(tmp_path: Path, **options) -> HumanEval:
    return HumanEval(HumanEvalConfig(**options), RunContext(tmp_path, tmp_path))


def test_items_are_all_164_problems_or_a_seeded_subset(tmp_path: Path) -> None:
    everything = _bench(tmp_path).items()
    assert len(everything) == 164 and everything[0]["id"] == "HumanEval/0" and everything[-1]["id"] == "HumanEval/163"
    subset = [i["id"] for i in _bench(tmp_path, problems=10, seed=1).items()]
    assert len(subset) == 10 and subset == [i["id"] for i in _bench(tmp_path, problems=10, seed=1).items()]
    assert subset != [i["id"] for i in _bench(tmp_path, problems=10, seed=2).items()]
    with pytest.raises(ValueError, match="k=3 needs at least as many samples"):
        HumanEvalConfig(samples=2, k=3)


def test_completions_are_scored_by_running_them_in_the_sandbox(tmp_path: Path) -> None:
    """Canonical solutions pass, a wrong one and a hostile one fail, per sample, into pass@k."""
    bench = _bench(tmp_path, problems=3, seed=0, samples=2, k=1)
    items = bench.items()
    canonical = {i["id"]: bench.problems[i["id"]]["canonical_solution"] for i in items}
    hostile = "    import os\n    os._exit(0)\n"

    by_prompt = {i["prompt"]: i for i in items}

    def fake_generate(model, prompts, config):
        assert config.temperature > 0 and len(prompts) == 2 and len(set(prompts)) == 1  # one item's samples
        out = []
        for index, prompt in enumerate(prompts):
            item = by_prompt[prompt]
            first = index == 0
            if item is items[0]:
                out.append(canonical[item["id"]])  # both samples right
            elif item is items[1]:
                out.append(canonical[item["id"]] if first else "    return None\n")  # one of two
            else:
                out.append(hostile)  # exits 0 before any test runs: must not pass
        return out

    model = LoadedModel(ModelRef("baseline", tmp_path, "fake", "float32", None, "t"), None, None, "float32")
    model.api = _ScriptedGeneration(fake_generate)
    results: list[ItemResult] = bench.evaluate(model, items, lambda *a: None)
    assert [r.score for r in results] == [1.0, 0.5, 0.0]
    assert results[0].reference == "2/2 passed" and results[2].reference == "0/2 passed"
    assert results[2].prediction.startswith("[failed:")
    assert he.STOP[0] == "\ndef "


@pytest.mark.integration
def test_smollm2_greedy_completions_run_in_the_sandbox(harness_embedded_model_dir: Path, tmp_path: Path) -> None:
    from harness.plugin.components import ComponentConfig
    from harness.lib.models import ModelRef, dir_fingerprint
    from harness_plugins.backends.hf import HFBackend

    ref = ModelRef("baseline", harness_embedded_model_dir, "hf", "auto", None, dir_fingerprint(harness_embedded_model_dir))
    model = HFBackend(ComponentConfig(), RunContext(tmp_path, tmp_path)).load(ref)
    bench = _bench(tmp_path, problems=2, max_new_tokens=48)
    results = bench.evaluate(model, bench.items(), lambda *a: None)
    assert [r.item_id for r in results] == [i["id"] for i in bench.items()]
    for r in results:
        assert r.score in (0.0, 1.0)
        assert r.prediction.split(":")[0] in ("[passed", "[failed", "[timeout", "[error")


def _sampled(tmp_path: Path, seed: int = 0, **options) -> HumanEval:
    config = HumanEvalConfig(**{"problems": 5, "samples": 4, "temperature": 0.8, **options})
    return HumanEval(config, RunContext(tmp_path, tmp_path, seed=seed))


def test_repeated_sampling_scores_each_problem_by_the_mean_of_its_samples(tmp_path: Path) -> None:
    """k=4 samples, right or wrong at random from the seed the model is given: scores are quarters,
    each the mean of its kept samples, and a re-run draws the same samples."""
    import random

    bench = _sampled(tmp_path)
    items = bench.items()
    by_prompt = {i["prompt"]: bench.problems[i["id"]]["canonical_solution"] for i in items}
    seeds: list[int] = []

    def coin_generate(model, prompts, config):
        seeds.append(config.seed)
        rng = random.Random(config.seed)
        return [by_prompt[p] if rng.random() < 0.5 else "    return None\n" for p in prompts]

    model = LoadedModel(ModelRef("baseline", tmp_path, "fake", "float32", None, "t"), None, None, "float32")
    model.api = _ScriptedGeneration(coin_generate)
    results = bench.evaluate(model, items, lambda *a: None)
    scores = [r.score for r in results]
    assert set(scores) <= {0.0, 0.25, 0.5, 0.75, 1.0} and len(set(scores)) >= 2
    for r in results:
        assert len(r.samples) == 4 and r.score == sum(s.score for s in r.samples) / 4
        assert r.reference == f"{int(r.score * 4)}/4 passed" and r.raw == r.samples[0].raw
    assert len(set(seeds)) == len(items)  # one seed per problem
    again = bench.evaluate(model, items, lambda *a: None)
    assert again == results
    assert ItemResult(**results[0].to_json()) == results[0]  # the evaluation cache's round trip


def test_samples_depend_on_the_suite_seed_and_the_item_only(tmp_path: Path) -> None:
    calls: list[tuple[list[str], int]] = []

    def record(model, prompts, config):
        calls.append((list(prompts), config.seed))
        return [f"{config.seed}:{i}" for i in range(len(prompts))]

    model = LoadedModel(ModelRef("baseline", tmp_path, "fake", "float32", None, "t"), None, None, "float32")
    model.api = _ScriptedGeneration(record)
    bench = _sampled(tmp_path, seed=7)
    items = bench.items()
    whole = bench._complete(model, items)
    split = bench._complete(model, items[3:]) + bench._complete(model, items[:3])
    assert whole == split[2:] + split[:2]  # chunks and order change nothing
    assert whole != _sampled(tmp_path, seed=8)._complete(model, items)
    assert bench.cache_material()["sampling_seed"] == 7
    assert "sampling_seed" not in _bench(tmp_path).cache_material()  # greedy: the seed plays no part


def test_sampling_at_temperature_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="samples=4 at temperature 0 repeats one greedy completion"):
        HumanEvalConfig(samples=4, temperature=0)
    assert HumanEvalConfig(samples=1, temperature=0).samples == 1


def test_sampled_completions_on_a_real_model_are_reproducible(harness_tiny_model_dir: Path, tmp_path: Path) -> None:
    from harness.plugin.components import ComponentConfig
    from harness.lib.models import dir_fingerprint
    from harness_plugins.backends.hf import HFBackend

    ref = ModelRef("baseline", harness_tiny_model_dir, "hf", "float32", None, dir_fingerprint(harness_tiny_model_dir))
    model = HFBackend(ComponentConfig(), RunContext(tmp_path, tmp_path)).load(ref)
    bench = _sampled(tmp_path, problems=3, max_new_tokens=8, temperature=1.0)
    items = bench.items()
    first = bench._complete(model, items)
    assert [len(drawn) for drawn in first] == [4, 4, 4] and len({t for drawn in first for t in drawn}) > 3
    assert bench._complete(model, items[1:]) == first[1:]


def test_validate_names_the_line_of_a_greedy_repeat(harness_write_suite, harness_fake_model_dir: Path, capsys) -> None:
    from harness.cli import main

    suite = {
        "name": "sampled",
        "model": {"source": str(harness_fake_model_dir), "dtype": "float32"},
        "evaluate": {"code": {"name": "humaneval", "problems": 2, "samples": 4, "temperature": 0}},
        "report": ["json"],
    }
    assert main(["validate", str(harness_write_suite(suite))]) == 2
    err = capsys.readouterr().err
    assert "suite.yaml:" in err and "evaluate.code" in err and "repeats one greedy completion 4 times" in err


def test_a_sampled_run_is_identical_when_rerun_with_or_without_the_cache(harness_run_suite, harness_fake_model_dir: Path, tmp_path: Path) -> None:
    suite = {
        "name": "sampled",
        "seed": 3,
        "model": {"source": str(harness_fake_model_dir), "backend": "fake"},
        "evaluate": {"code": {"name": "humaneval", "problems": 2, "samples": 3, "temperature": 1.0, "max_new_tokens": 8}},
        "report": ["json"],
    }

    def items(**kwargs) -> tuple:
        result = harness_run_suite(suite, **kwargs)
        res = result.benchmarks["code"]["baseline"]
        return res.from_cache, res.items

    cached_first, first = items(use_cache=True)
    cached_again, again = items(use_cache=True)
    fresh = items(use_cache=False)[1]
    assert (cached_first, cached_again) == (False, True)
    assert [len(i.samples) for i in first] == [3, 3] and len({s.raw for i in first for s in i.samples}) > 1
    assert again == first and fresh == first

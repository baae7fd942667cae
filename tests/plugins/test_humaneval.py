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

    def fake_generate(model, prompts, config):
        assert config.temperature > 0 and len(prompts) == 6
        out = []
        for index, prompt in enumerate(prompts):
            item = items[index // 2]
            first = index % 2 == 0
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

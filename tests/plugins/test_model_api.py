"""The model API: the hf backend's implementation, the generic lm-eval adapter any backend gets,
rolling log-likelihood, capabilities and the error for a model without the API."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.lib.lmeval import model_api_lm
from harness.lib.model_api import Capabilities, model_api
from harness.lib.models import LoadedModel, ModelRef, dir_fingerprint
from harness.plugin.components import ComponentConfig, RunContext
from harness_plugins.backends.hf import HFBackend
from harness.lib.hf.model import HFModel
from harness_plugins.benchmarks.mmlu import MMLU, MMLUConfig


@pytest.fixture(scope="module")
def tiny(harness_tiny_model_dir: Path) -> LoadedModel:
    ctx = RunContext(harness_tiny_model_dir, harness_tiny_model_dir)
    ref = ModelRef("baseline", harness_tiny_model_dir, "hf", "float32", None, dir_fingerprint(harness_tiny_model_dir))
    return HFBackend(ComponentConfig(), ctx).load(ref)


class _GenericLM(HFModel):
    """The hf model as a backend without a native lm-eval model would present it."""

    def lm_eval_model(self, batch_size: int):
        return model_api_lm(self, batch_size)


def test_generic_lm_eval_adapter_scores_like_hflm(tiny: LoadedModel, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    bench = MMLU(MMLUConfig(subjects=["abstract_algebra"], per_subject=4, engine="lm_eval"), RunContext(tmp_path, tmp_path))
    items = bench.items()
    native = bench.loglikelihoods(tiny, items)
    generic = LoadedModel(tiny.ref, tiny.model, tiny.tokenizer, tiny.dtype, api=_GenericLM(tiny))
    adapted = bench.loglikelihoods(generic, items)
    assert len(adapted) == len(items) == 4
    for a, b in zip(native, adapted):
        assert a == pytest.approx(b, abs=1e-4)


def test_rolling_loglikelihood_matches_hflm(tiny: LoadedModel) -> None:
    from lm_eval.api.instance import Instance

    texts = ["The quick brown fox jumps over the lazy dog.", "Hello"]
    hflm = tiny.api.lm_eval_model(batch_size=2)
    requests = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    expected = hflm.loglikelihood_rolling(requests, disable_tqdm=True)
    got = tiny.api.loglikelihood_rolling(texts)
    assert got == pytest.approx(expected, abs=1e-4)
    assert all(x < 0 for x in got)


def test_single_loglikelihood_is_the_grouped_one(tiny: LoadedModel) -> None:
    api = model_api(tiny)
    pairs = [("Question: 2+2=\nAnswer:", " 4"), ("Question: 2+2=\nAnswer:", " 5")]
    grouped = api.choice_loglikelihoods([("Question: 2+2=\nAnswer:", [" 4", " 5"])])[0]
    assert api.loglikelihood(pairs) == grouped
    facts = api.tokenizer_facts()
    assert facts.max_length > 0 and facts.eos_token == tiny.tokenizer.eos_token
    assert api.render_chat([{"role": "user", "content": "hi"}]).rstrip().endswith("assistant")


def test_capabilities_name_what_is_missing() -> None:
    caps = Capabilities(loglikelihood=False)
    assert caps.missing(["loglikelihood", "generate"]) == ["loglikelihood"]
    assert Capabilities().missing(["loglikelihood", "teleport"]) == ["teleport"]


def test_a_model_without_the_api_is_a_clear_error(tmp_path: Path) -> None:
    bare = LoadedModel(ModelRef("baseline", tmp_path, "mine", "float32", None, "t"), None, None, "float32")
    with pytest.raises(TypeError, match="backend 'mine' returned a model without the model API"):
        model_api(bare)

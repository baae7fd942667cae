"""The native scorer: the same log-likelihoods and greedy flags as lm-eval's HFLM, batched or not."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.plugin.components import ComponentConfig, RunContext
from harness.lib.models import LoadedModel, ModelRef
from harness_plugins.backends.hf import HFBackend
from harness.lib.hf.scoring import Request, choice_logprobs, token_logprobs

REQUESTS: list[Request] = [
    ("Question: what is 2+2?\nAnswer:", [" 4", " four", " five or so", " A"]),
    ("The cat sat on the ", ["mat.", "hat", "dog and the quick brown fox"]),  # trailing space moves
    ("", ["Hello world", "Hi"]),  # empty context: the prefix token
    ("A man is sitting on a roof. He", [" is using wrap to wrap skis.", " starts pulling up roofing."]),
    ("x " * 600, [" y", " z z"]),  # longer than the model: truncated on the left
    ("Same, same:", [" twice", " twice"]),
]


def load(path: Path, dtype: str = "float32") -> LoadedModel:
    backend = HFBackend(ComponentConfig(), RunContext(path, path))
    return backend.load(ModelRef("baseline", path, "hf", dtype, None, "test"))


def lmeval_scores(model: LoadedModel, requests: Sequence[Request]) -> list[list[tuple[float, bool]]]:
    """What lm-eval's own HFLM returns for the same requests."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model.model, tokenizer=model.tokenizer, batch_size=4, device="cpu")
    pairs = [(context, cont) for context, conts in requests for cont in conts]
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)
    ]
    flat = iter(lm.loglikelihood(instances, disable_tqdm=True))
    return [[next(flat) for _ in conts] for _, conts in requests]


def assert_same(ours: list[list[tuple[float, bool]]], theirs: list[list[tuple[float, bool]]]) -> None:
    assert [len(row) for row in ours] == [len(row) for row in theirs]
    for mine, ref in zip(ours, theirs):
        for (lp, greedy), (ref_lp, ref_greedy) in zip(mine, ref):
            assert lp == pytest.approx(ref_lp, abs=1e-4)
            assert greedy == ref_greedy


@pytest.fixture(scope="module")
def tiny(harness_tiny_model_dir: Path) -> LoadedModel:
    return load(harness_tiny_model_dir)


def test_matches_lmeval_on_tricky_requests_at_any_batch_size(tiny: LoadedModel) -> None:
    reference = lmeval_scores(tiny, REQUESTS)
    for batch_size in (1, 4):
        assert_same(choice_logprobs(tiny, REQUESTS, batch_size=batch_size), reference)


def test_token_logprobs_match_a_plain_forward_pass(tiny: LoadedModel) -> None:
    import torch

    sequences = [(list(range(100, 140)), 10), (list(range(300, 312)), 11), (list(range(5, 25)), 1)]
    ours = token_logprobs(tiny, sequences, batch_size=2)
    for (tokens, n), got in zip(sequences, ours):
        with torch.no_grad():
            logits = tiny.model(torch.tensor([tokens])).logits[0].float()
        expected = logits.log_softmax(-1)[:-1].gather(-1, torch.tensor(tokens[1:])[:, None])[-n:, 0]
        assert got == pytest.approx(expected.tolist(), abs=1e-4)
    with pytest.raises(ValueError, match="cannot score"):
        token_logprobs(tiny, [([1, 2, 3], 3)])


def test_matches_lmeval_on_real_items_with_smollm2(harness_embedded_model_dir: Path) -> None:
    from harness_plugins.benchmarks.hellaswag import HellaSwag, HellaSwagConfig
    from harness_plugins.benchmarks.mmlu import LETTERS, MMLU, MMLUConfig, prompt

    ctx = RunContext(harness_embedded_model_dir, harness_embedded_model_dir)
    mmlu = MMLU(MMLUConfig(per_subject=1, subjects=["astronomy"]), ctx).items()
    hellaswag = HellaSwag(HellaSwagConfig(sample=1), ctx).items()
    requests: list[Request] = [(prompt(d), [f" {x}" for x in LETTERS]) for d in mmlu]
    requests += [(d["query"], [f" {c}" for c in d["choices"]]) for d in hellaswag]
    requests.append(("The capital of France is", [" Paris", " Lyon"]))  # a greedy continuation
    model = load(harness_embedded_model_dir)
    ours = choice_logprobs(model, requests, batch_size=8)
    assert_same(ours, lmeval_scores(model, requests))
    assert ours[-1][0][1] and not ours[-1][1][1]


def test_native_engines_render_lmevals_prompts(tmp_path: Path) -> None:
    from lm_eval.utils import apply_template

    from harness_plugins.benchmarks import hellaswag, mmlu

    ctx = RunContext(tmp_path, tmp_path)
    for doc in mmlu.MMLU(mmlu.MMLUConfig(per_subject=1), ctx).items():
        assert mmlu.prompt(doc) == apply_template(mmlu.LMEVAL_TASK["doc_to_text"], doc)
    for doc in hellaswag.HellaSwag(hellaswag.HellaSwagConfig(sample=20), ctx).items():
        assert doc["query"] == apply_template(hellaswag.LMEVAL_TASK["doc_to_text"], doc)

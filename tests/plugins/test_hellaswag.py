"""HellaSwag: seeded items on the real validation file, lm-eval's query, acc and acc_norm, and the
two engines agreeing item by item."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.plugin.components import ComponentConfig, RunContext
from harness.lib.models import LoadedModel, ModelRef
from harness.types import ItemResult
from harness_plugins.backends.hf import HFBackend
from harness_plugins.benchmarks.hellaswag import (
    HellaSwag,
    HellaSwagConfig,
    capitalize_unfinished,
    predictions,
    preprocess,
)


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    return RunContext(tmp_path, tmp_path / "work")


def test_items_are_a_seeded_sample_with_stable_ids(ctx: RunContext) -> None:
    first = HellaSwag(HellaSwagConfig(sample=20, seed=3), ctx).items()
    again = HellaSwag(HellaSwagConfig(sample=20, seed=3), ctx).items()
    other = HellaSwag(HellaSwagConfig(sample=20, seed=4), ctx).items()
    assert first == again and first != other
    indices = [int(item["id"].removeprefix("hellaswag/")) for item in first]
    assert len(indices) == 20 and indices == sorted(indices) and len(set(indices)) == 20
    assert all(len(item["choices"]) == 4 and item["label"] in range(4) for item in first)
    larger = HellaSwag(HellaSwagConfig(sample=40, seed=3), ctx).items()
    assert all(item in larger for item in first)  # a larger sample extends a smaller one


def test_query_is_rebuilt_as_lmeval_builds_it() -> None:
    assert capitalize_unfinished("A man is sitting on a roof. he") == "A man is sitting on a roof. He"
    assert (
        capitalize_unfinished("She bends down and grabs the pole. the lady")
        == "She bends down and grabs the pole. The lady"
    )
    assert capitalize_unfinished("Rinse the brush. Let it dry.") == "Rinse the brush. Let it dry."
    assert (
        capitalize_unfinished("the man in the Red shirt") == "The man in the red shirt"
    )  # as str.capitalize
    assert preprocess(" See [find a good attorney | how] today.  Then [title] go ") == "See today. Then. go"


def test_metric_picks_the_score_and_summary_reports_both(ctx: RunContext) -> None:
    items = HellaSwag(HellaSwagConfig(sample=2), ctx).items()
    label0, label1 = items[0]["label"], items[1]["label"]
    # Item 0: the raw log-likelihood favours the gold ending, per character another one does not.
    lengths0 = [len(c) for c in items[0]["choices"]]
    logliks0 = [-1.0 * n for n in lengths0]
    logliks0[label0] = -0.5 * lengths0[label0]  # best per character
    logliks1 = [-10.0] * 4
    logliks1[(label1 + 1) % 4] = -1.0  # both accuracies miss item 1
    results = {}
    for metric in ("acc", "acc_norm"):
        bench = HellaSwag(HellaSwagConfig(sample=2, metric=metric), ctx)
        bench.loglikelihoods = lambda model, docs: [logliks0, logliks1]
        results[metric] = bench.evaluate(None, items, lambda *a: None)
        assert bench.metric == metric
    picks = predictions(logliks0, items[0]["choices"])
    assert picks["acc_norm"] == label0
    assert [r.score for r in results["acc_norm"]] == [1.0, 0.0]
    assert [r.score for r in results["acc"]] == [float(picks["acc"] == label0), 0.0]
    summary = HellaSwag(HellaSwagConfig(), ctx).summary(results["acc"])
    assert summary == {"acc_norm": 0.5, "acc": float(picks["acc"] == label0) / 2}


def test_predictions_break_ties_like_argmax() -> None:
    assert predictions([-2.0, -1.0, -1.0, -3.0], ["a", "bb", "c", "d"]) == {"acc": 1, "acc_norm": 1}


def test_engines_agree_and_match_lmevals_own_metrics(
    harness_tiny_model_dir: Path, ctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    import lm_eval.evaluator

    from harness.lib import lmeval as _lmeval

    # The inline task needs none of lm-eval's ~14k built-in task files, which it indexes per call.
    manager = functools.partial(lm_eval.evaluator.TaskManager, include_defaults=False)
    monkeypatch.setattr(lm_eval.evaluator, "TaskManager", manager)
    samples: list[dict] = []
    run_task = _lmeval.run_task
    monkeypatch.setattr(_lmeval, "run_task", lambda *a, **kw: samples.extend(run_task(*a, **kw)) or samples)
    backend = HFBackend(ComponentConfig(), ctx)
    model: LoadedModel = backend.load(ModelRef("baseline", harness_tiny_model_dir, "hf", "float32", None, "t"))
    native = HellaSwag(HellaSwagConfig(sample=4, engine="native"), ctx)
    reference = HellaSwag(HellaSwagConfig(sample=4, engine="lm_eval"), ctx)
    items = native.items()
    results: list[ItemResult] = native.evaluate(model, items, lambda *a: None)
    assert results == reference.evaluate(model, items, lambda *a: None)  # one lm-eval run
    assert [r.item_id for r in results] == [d["id"] for d in items]
    for doc, row, sample in zip(items, native.loglikelihoods(model, items), samples):
        assert [tuple(a) for a in sample["arguments"]] == [(doc["query"], f" {c}") for c in doc["choices"]]
        assert row == pytest.approx([resp[0] for resp in sample["filtered_resps"]], abs=1e-4)
        picks = predictions(row, doc["choices"])
        assert float(picks["acc"] == doc["label"]) == sample["acc"]
        assert float(picks["acc_norm"] == doc["label"]) == sample["acc_norm"]

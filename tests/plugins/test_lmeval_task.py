"""A suite-declared lm-eval task over a local file: items with stable ids, per-item scores that
agree with an independent computation, and clear errors for bad configs and data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.plugin.components import ComponentConfig, RunContext
from harness.errors import DataError
from harness.lib.models import ModelRef, dir_fingerprint
from harness_plugins.benchmarks.lmeval_task import LmEvalTask, LmEvalTaskConfig

TASK = {
    "output_type": "multiple_choice",
    "doc_to_text": "Question: {{question}}\nAnswer:",
    "doc_to_choice": "{{choices}}",
    "doc_to_target": "answer",
    "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
}
ROWS = [
    {"qid": f"q{i}", "question": f"What is {i} plus {i}?", "choices": [str(2 * i), str(2 * i + 1), "blue"], "answer": i % 3}
    for i in range(6)
]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "task.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _bench(tmp_path: Path, **options) -> LmEvalTask:
    return LmEvalTask(LmEvalTaskConfig(task=TASK, **options), RunContext(tmp_path, tmp_path))


def test_items_come_from_the_file_with_stable_ids(tmp_path: Path, data_file: Path) -> None:
    assert [i["id"] for i in _bench(tmp_path, data_file="task.jsonl", id_field="qid").items()] == [r["qid"] for r in ROWS]
    by_line = _bench(tmp_path, data_file=str(data_file)).items()
    assert [i["id"] for i in by_line] == [f"task.jsonl:{n}" for n in range(1, 7)]
    sample = [i["id"] for i in _bench(tmp_path, data_file="task.jsonl", id_field="qid", sample=3, seed=1).items()]
    assert len(sample) == 3 and sample == [i["id"] for i in _bench(tmp_path, data_file="task.jsonl", id_field="qid", sample=3, seed=1).items()]


def test_bad_configs_and_data_are_clear_errors(tmp_path: Path, data_file: Path) -> None:
    with pytest.raises(ValidationError, match="sets \\['dataset_path'\\] itself"):
        LmEvalTaskConfig(task={**TASK, "dataset_path": "json"}, data_file="x.jsonl")
    with pytest.raises(ValidationError, match="needs an output_type"):
        LmEvalTaskConfig(task={"doc_to_text": "x"}, data_file="x.jsonl")
    with pytest.raises(DataError, match="data file not found"):
        _bench(tmp_path, data_file="missing.jsonl").items()
    with pytest.raises(DataError, match="task.jsonl:1: no field 'nope'"):
        _bench(tmp_path, data_file="task.jsonl", id_field="nope").items()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a"}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl:2: invalid JSON"):
        _bench(tmp_path, data_file="bad.jsonl").items()


def test_per_item_scores_match_an_independent_scorer(
    tmp_path: Path, data_file: Path, harness_tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from harness_plugins.backends.hf import HFBackend
    from harness.lib.hf.scoring import choice_logprobs

    monkeypatch.chdir(tmp_path)  # outside a git checkout: lm-eval's git lookup must stay quiet

    ctx = RunContext(tmp_path, tmp_path)
    ref = ModelRef("baseline", harness_tiny_model_dir, "hf", "float32", None, dir_fingerprint(harness_tiny_model_dir))
    model = HFBackend(ComponentConfig(), ctx).load(ref)
    bench = _bench(tmp_path, data_file="task.jsonl", id_field="qid")
    results = bench.evaluate(model, bench.items(), lambda *a: None)
    assert "not a git repository" not in capfd.readouterr().err
    requests = [(f"Question: {r['question']}\nAnswer:", [" " + c for c in r["choices"]]) for r in ROWS]
    scored = choice_logprobs(model, requests)
    expected = [float(max(range(3), key=lambda k: s[k][0]) == r["answer"]) for s, r in zip(scored, ROWS)]
    assert [r.item_id for r in results] == [r["qid"] for r in ROWS]
    assert [r.score for r in results] == expected
    assert bench.metric == "acc"

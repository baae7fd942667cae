"""``harness failures``: the items a stored run's candidate got wrong, grouped by category (the
intent) or by MiniLM topic, written as a work list that ``harness curate`` reads back."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import DataError
from harness.tools.failures import collect_failures, group_failures, work_records

CSV = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
PROMPT = "Intent of: {instruction}"


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory, harness_tiny_model_dir: Path) -> tuple[Path, dict]:
    """A tiny-model run with support_intent (a random model gets every intent wrong)."""
    import yaml

    tmp = tmp_path_factory.mktemp("failures")
    suite = {
        "name": "failures",
        "seed": 2,
        "model": {"source": str(harness_tiny_model_dir), "dtype": "float32"},
        "data": [{"path": CSV, "format": "csv", "split": "train", "sample": 8, "user": PROMPT, "assistant": "{intent}"}],
        "train": {"name": "lora", "max_steps": 1, "batch_size": 4, "max_length": 48},
        "evaluate": {"intent": {"name": "support_intent", "prompt": PROMPT, "sample": 16, "max_new_tokens": 3}},
        "report": ["json"],
    }
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert main(["run", str(path), "--store", str(tmp / "store"), "--reports", str(tmp / "reports")]) in (0, 1)
    (report,) = (tmp / "reports").glob("*/result.json")
    return tmp, json.loads(report.read_text())


def test_failures_are_counted_by_intent_and_read_back_through_curate(stored_run, capsys) -> None:
    tmp, doc = stored_run
    out = tmp / "work" / "failures.jsonl"
    assert main(["failures", "latest", "--store", str(tmp / "store"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    wrong = [i for i in doc["benchmarks"]["intent"]["candidate"]["items"] if i["score"] < 1]
    assert wrong, "a random model should get some intents wrong"
    expected = Counter(i["reference"] for i in wrong)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert Counter(r["failure"]["group"] for r in records) == expected
    assert all(r["failure"]["category"] == r["failure"]["reference"] == r["messages"][1]["content"] for r in records)
    assert all(r["messages"][0]["content"].startswith("Intent of: ") for r in records)
    sizes = [expected[r["failure"]["group"]] for r in records]
    assert sizes == sorted(sizes, reverse=True)  # largest group first
    top, count = expected.most_common(1)[0]
    assert f"{len(wrong)} in {len(expected)} group(s)" in printed and top in printed

    curated = tmp / "curated"
    assert main(["curate", str(out), "--format", "messages", "--filters", "exact_dedup", "--out", str(curated)]) == 0
    ledger = json.loads((curated / "ledger.json").read_text())
    first = ledger["stages"][0]
    assert first["in"] == len(records) and first["quarantined"] == 0
    assert all(s["in"] == s["kept"] + s["dropped"] + s["quarantined"] for s in ledger["stages"])


def test_failures_without_a_category_are_clustered_by_topic() -> None:
    pets = ["How do I feed my cat?", "What food is best for a kitten?", "My cat will not eat its food"]
    money = ["How do I pay my credit card bill?", "Where can I see my bank balance?", "Transfer money to my savings account"]
    items = [
        {"item_id": f"i{n}", "prompt": text, "reference": "x", "prediction": "y", "score": 0}
        for n, text in enumerate(pets + money)
    ]
    doc = {"run_id": "r", "benchmarks": {"qa": {"candidate": {"items": items}}}}
    groups = group_failures(collect_failures(doc), clusters=2)
    members = sorted(sorted(f.prompt for f in group) for group in groups.values())
    assert members == sorted([sorted(pets), sorted(money)])
    assert all(name.startswith("cluster ") for name in groups)
    assert len(work_records("r", groups)) == 6


def test_a_named_benchmark_must_have_0_1_scores() -> None:
    doc = {"run_id": "r", "benchmarks": {"ppl": {"candidate": {"items": [
        {"item_id": "a", "prompt": "p", "reference": "", "prediction": "", "score": -2.5}]}}}}
    assert collect_failures(doc) == []
    with pytest.raises(DataError, match="'ppl' scores are not 0/1"):
        collect_failures(doc, ["ppl"])
    with pytest.raises(DataError, match="no 'mmlu' results"):
        collect_failures(doc, ["mmlu"])

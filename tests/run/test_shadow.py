"""Shadow test: logged production requests through two models, agreement, accuracy where the log
has references, the disagreements as examples; on a log built from real support data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import ConfigError
from harness.run.shadow import ShadowModel, compare_answers, read_requests
from harness.types import Conversation, Message


def _conv(source: str, question: str, reference: str | None = None) -> Conversation:
    turns = [Message("user", question)] + ([Message("assistant", reference)] if reference is not None else [])
    return Conversation(tuple(turns), source)


def test_agreement_accuracy_and_disagreements() -> None:
    requests = [_conv("log:1", "q1", "REFUND"), _conv("log:2", "q2", "ORDER"), _conv("log:3", "q3"), _conv("log:4", "q4", "PAYMENT")]
    answers = {"prod": [" refund", "ORDER", "x", "card"], "new": ["Refund ", "ACCOUNT", "X", "PAYMENT"]}
    result = compare_answers(requests, answers)
    assert (result.requests, result.agree, result.with_reference) == (4, 2, 3)  # case and spaces do not count
    assert result.correct == {"prod": 2, "new": 2} and result.accuracy("new") == pytest.approx(2 / 3)
    assert [(e.request, e.prompt, e.reference, e.answers["new"]) for e in result.disagreements] == [
        ("log:2", "q2", "ORDER", "ACCOUNT"), ("log:4", "q4", "PAYMENT", "PAYMENT")
    ]
    loose = compare_answers(requests, {"prod": ["It is a refund.", "o", "", ""], "new": ["", "", "", "PAYMENT please"]}, "contains")
    assert loose.correct == {"prod": 1, "new": 1}
    assert json.loads(json.dumps(result.to_json()))["accuracy"] == {"prod": pytest.approx(2 / 3), "new": pytest.approx(2 / 3)}
    no_refs = compare_answers([_conv("log:1", "q")], {"a": ["x"], "b": ["x"]})
    assert no_refs.accuracy("a") is None and no_refs.agreement == 1.0


def test_the_log_is_read_with_unreadable_lines_counted(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    rows = [{"request": {"messages": [{"role": "user", "content": f"q{i}"}]}, "reference": "A"} for i in range(3)]
    log.write_text("\n".join([json.dumps(rows[0]), "{not json", json.dumps(rows[1]), json.dumps({"messages": []}), json.dumps(rows[2])]))
    requests, unreadable = read_requests(log)
    assert [r.source_id for r in requests] == ["log.jsonl:1", "log.jsonl:3", "log.jsonl:5"] and unreadable == 2
    assert len(read_requests(log, limit=2)[0]) == 2
    with pytest.raises(ConfigError, match="no such request log"):
        read_requests(tmp_path / "missing.jsonl")


def test_model_specs(tmp_path: Path) -> None:
    assert ShadowModel.parse("baseline", "smollm2-135m-instruct", tmp_path).spec.source == "smollm2-135m-instruct"
    model = ShadowModel.parse("candidate", "{source: base, dtype: float32, adapter: out/adapter}", tmp_path)
    assert (model.spec.dtype, model.adapter) == ("float32", (tmp_path / "out" / "adapter").resolve())
    with pytest.raises(ConfigError, match=r"--baseline .*bakend"):
        ShadowModel.parse("baseline", "{source: x, bakend: hf}", tmp_path)


@pytest.fixture(scope="module")
def support_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six logged requests from the real customer-support data, with their category as reference."""
    from harness.lib.data import data_dir

    path = data_dir() / "bitext_customer_support" / "Bitext_Sample_Customer_Support_Training_Dataset.csv"
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = [row for _, row in zip(range(6), csv.DictReader(fh))]
    log = tmp_path_factory.mktemp("shadow") / "requests.jsonl"
    lines = [{"request": {"model": "support", "messages": [{"role": "user", "content": r["instruction"]}]}, "reference": r["category"]} for r in rows]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return log


def test_shadow_command_replays_a_log_against_two_models(tmp_path: Path, support_log: Path, harness_tiny_model_dir: Path, capsys) -> None:
    """The tiny random model (it answers blank lines) against itself, then against SmolLM2."""
    same = tmp_path / "same.json"
    spec = f"{{source: {harness_tiny_model_dir}, dtype: float32}}"
    args = ["shadow", "--requests", str(support_log), "--max-tokens", "6"]
    assert main([*args, "--baseline", spec, "--candidate", spec, "--json", str(same)]) == 0
    result = json.loads(same.read_text())
    assert (result["requests"], result["agree"], result["with_reference"], result["disagreements"]) == (6, 6, 6, [])

    differ = tmp_path / "differ.json"
    code = main([*args, "--baseline", spec, "--candidate", "{source: smollm2-135m-instruct, dtype: float32}", "--json", str(differ), "--min-agreement", "1"])
    result = json.loads(differ.read_text())
    assert code == 1 and result["agree"] < 6 and len(result["disagreements"]) == 6 - result["agree"]
    example = result["disagreements"][0]
    assert example["reference"] in {"ORDER", "ACCOUNT", "REFUND", "DELIVERY", "INVOICE", "FEEDBACK", "PAYMENT", "CONTACT", "SHIPPING_ADDRESS", "CANCELLATION_FEE", "NEWSLETTER"}
    assert example["answers"]["baseline"] != example["answers"]["candidate"]
    out = capsys.readouterr().out
    assert "shadow test: 6 requests" in out and f"agreement: {result['agree']}/6" in out and "disagreements" in out

"""File reporters: result.json (+ quarantine.jsonl) and junit.xml."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.components import ComponentConfig, RunContext
from harness.types import (
    BenchmarkResult,
    Comparison,
    Decision,
    Dropped,
    EvalError,
    ItemResult,
    Ledger,
    Quarantined,
    RunResult,
    StageLedger,
    Verdict,
)
from harness_plugins.reporters.files import RESULT_SCHEMA, JsonReporter, JUnitReporter


@pytest.fixture
def ctx(tmp_path):
    return RunContext(tmp_path, tmp_path / "work")


@pytest.fixture
def out_dir(tmp_path) -> Path:
    path = tmp_path / "report"
    path.mkdir()
    return path


def bench(model: str, scores: list[float]) -> BenchmarkResult:
    items = tuple(ItemResult(f"q{i}", "A", "A" if s else "B", s) for i, s in enumerate(scores))
    return BenchmarkResult("support_intent", model, "exact_match", items, cache_key=f"key-{model}")


COMPARISON = Comparison("mcnemar", 4, 0.5, 0.75, 0.25, -0.2, 0.6, 1.0, 0.7, 0.05, {"lost": 0.0, "won": 1.0})


def decision(gate: str, verdict: Verdict, blocking: bool = True) -> Decision:
    return Decision(gate, "intent", "superior(margin=0)", verdict, f"reason for {gate}", blocking, COMPARISON)


def make_result(decisions=(), quarantined=(), inconclusive_fails: bool = True) -> RunResult:
    ledger = Ledger(
        stages=[StageLedger("read d.jsonl", n_in=5, kept=5 - len(quarantined), quarantined=len(quarantined))],
        dropped=[Dropped("d.jsonl:2", "exact_dedup", "duplicate", "same as d.jsonl:1")],
        quarantined=list(quarantined),
    )
    return RunResult(
        run_id="run-1",
        suite_name="demo",
        suite_path=Path("suites/demo.yaml"),
        started_at=1_700_000_000.0,
        duration_s=12.3456,
        models={"baseline": "smollm2", "candidate": "smollm2 + lora"},
        ledger=ledger,
        benchmarks={"intent": {"baseline": bench("baseline", [1, 0, 1, 0]), "candidate": bench("candidate", [1, 1, 1, 0])}},
        eval_errors=[EvalError("mmlu", "candidate", "RuntimeError: boom")],
        decisions=list(decisions),
        inconclusive_fails=inconclusive_fails,
        exit_code=1,
    )


QUARANTINED = [
    Quarantined("d.jsonl:4", "invalid JSON: Expecting value (column 1)", "{oops"),
    Quarantined("d.jsonl:7", "no assistant turn", '{"conversations": [{"from": "human", "value": "héllo"}]}'),
]


# ------------------------------------------------------------------------------- json


def test_json_reporter_writes_result(ctx, out_dir):
    result = make_result([decision("intent", Verdict.INCONCLUSIVE)], QUARANTINED)
    written = JsonReporter(ComponentConfig(), ctx).report(result, out_dir)

    assert written == [out_dir / "result.json", out_dir / "quarantine.jsonl"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["quarantine.jsonl", "result.json"]  # no temp files
    data = json.loads((out_dir / "result.json").read_text(encoding="utf-8"))

    assert data["schema"] == RESULT_SCHEMA == "finetune-harness/result/v1"
    assert data["run_id"] == "run-1"
    assert data["suite"] == {"name": "demo", "path": "suites/demo.yaml"}
    assert data["started_at"] == "2023-11-14T22:13:20+00:00"
    assert data["duration_s"] == 12.346
    assert data["exit_code"] == 1

    candidate = data["benchmarks"]["intent"]["candidate"]
    assert candidate["score"] == 0.75 and candidate["n"] == 4
    assert candidate["items"][1] == {"item_id": "q1", "prediction": "A", "reference": "A", "score": 1, "weight": 1.0}
    assert data["benchmarks"]["intent"]["baseline"]["score"] == 0.5
    assert data["eval_errors"] == [{"benchmark": "mmlu", "model": "candidate", "message": "RuntimeError: boom"}]

    assert data["ledger"]["balanced"] is True
    assert data["ledger"]["dropped"][0]["detail"] == "same as d.jsonl:1"
    assert [q["source_id"] for q in data["ledger"]["quarantined"]] == ["d.jsonl:4", "d.jsonl:7"]
    assert data["decisions"] == [
        {
            "gate": "intent",
            "benchmark": "intent",
            "rule": "superior(margin=0)",
            "verdict": "inconclusive",
            "reason": "reason for intent",
            "blocking": True,
            "comparison": {
                "test": "mcnemar", "n": 4, "baseline": 0.5, "candidate": 0.75, "diff": 0.25,
                "ci_low": -0.2, "ci_high": 0.6, "p_value": 1.0, "mde": 0.7, "alpha": 0.05,
                "detail": {"lost": 0.0, "won": 1.0},
            },
        }
    ]

    lines = (out_dir / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [q.__dict__ for q in QUARANTINED]
    assert "héllo" in lines[1]  # written as UTF-8, not escaped


def test_json_reporter_without_quarantine(ctx, out_dir):
    written = JsonReporter(ComponentConfig(), ctx).report(make_result(), out_dir)
    assert written == [out_dir / "result.json"]
    assert not (out_dir / "quarantine.jsonl").exists()


def test_json_reporter_overwrites_atomically(ctx, out_dir):
    (out_dir / "result.json").write_text("stale")
    JsonReporter(ComponentConfig(), ctx).report(make_result(), out_dir)
    assert json.loads((out_dir / "result.json").read_text())["run_id"] == "run-1"


# ------------------------------------------------------------------------------ junit


DECISIONS = [
    decision("passes", Verdict.PASS),
    decision("fails", Verdict.FAIL),
    decision("errors", Verdict.ERROR),
    decision("unsure", Verdict.INCONCLUSIVE),
    decision("advisory_fail", Verdict.FAIL, blocking=False),
    decision("advisory_error", Verdict.ERROR, blocking=False),
    decision("advisory_pass", Verdict.PASS, blocking=False),
]


def junit(ctx, out_dir, inconclusive_fails: bool) -> ET.Element:
    result = make_result(DECISIONS, inconclusive_fails=inconclusive_fails)
    (path,) = JUnitReporter(ComponentConfig(), ctx).report(result, out_dir)
    assert path == out_dir / "junit.xml"
    return ET.parse(path).getroot()


def outcomes(root: ET.Element) -> dict[str, str]:
    """gate -> the tag of its outcome element (failure, error, skipped, or system-out on pass)."""
    return {case.get("name"): case[0].tag for case in root.iter("testcase")}


@pytest.mark.parametrize(
    "inconclusive_fails, unsure, failures, skipped",
    [(True, "failure", 2, 2), (False, "skipped", 1, 3)],
)
def test_junit_one_case_per_gate(ctx, out_dir, inconclusive_fails, unsure, failures, skipped):
    root = junit(ctx, out_dir, inconclusive_fails)

    assert root.tag == "testsuite"
    assert root.get("name") == "harness.demo"
    assert outcomes(root) == {
        "passes": "system-out",
        "fails": "failure",
        "errors": "error",
        "unsure": unsure,
        "advisory_fail": "skipped",
        "advisory_error": "skipped",
        "advisory_pass": "system-out",
    }
    counts = {key: int(root.get(key)) for key in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": 7, "failures": failures, "errors": 1, "skipped": skipped}
    assert root.get("time") == "12.346"


def test_junit_messages_carry_verdict_rule_and_reason(ctx, out_dir):
    root = junit(ctx, out_dir, inconclusive_fails=True)
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert cases["fails"].get("classname") == "gates.intent"
    assert cases["fails"][0].get("message") == "fail: superior(margin=0): reason for fails"
    assert cases["errors"][0].get("message") == "error: superior(margin=0): reason for errors"
    assert cases["advisory_fail"][0].get("message").startswith("advisory gate, fail:")
    assert cases["passes"][0].text == "pass: superior(margin=0): reason for passes"


def test_junit_without_gates(ctx, out_dir):
    (path,) = JUnitReporter(ComponentConfig(), ctx).report(make_result(), out_dir)
    root = ET.parse(path).getroot()
    assert list(root.iter("testcase")) == []
    assert root.get("tests") == "0" and root.get("failures") == "0"

"""Reporters: result.json (+ quarantine.jsonl), junit.xml, and the compared trainings in result.json, the terminal and forgetting.svg."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from harness_plugins.reporters.curve import CurveReporter
from harness_plugins.reporters.files import JsonReporter, JUnitReporter
from harness_plugins.reporters.terminal import TerminalReporter
from rich.console import Console

from harness.lib.resultdoc import RESULT_SCHEMA
from harness.plugin.components import ComponentConfig, RunContext
from harness.types import CurvePoint, ForgettingResult
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
    TrainOutput,
    Verdict,
)


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

    assert data["schema"] == RESULT_SCHEMA == "finetune-harness/result/v2"
    assert data["gating"] == {"inconclusive": "fail"}
    assert data["history"] == [] and data["provenance"] == {}
    assert data["run_id"] == "run-1"
    assert data["suite"] == {"name": "demo", "path": "suites/demo.yaml"}
    assert data["started_at"] == "2023-11-14T22:13:20+00:00"
    assert data["duration_s"] == 12.346
    assert data["exit_code"] == 1

    candidate = data["benchmarks"]["intent"]["candidate"]
    assert candidate["score"] == 0.75 and candidate["n"] == 4
    assert candidate["items"][1] == {
        "item_id": "q1", "prediction": "A", "reference": "A", "score": 1, "weight": 1.0, "raw": "", "prompt": "", "category": "",
    }
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
            "underpowered": False,
            "baseline_arm": "baseline",
            "candidate_arm": "candidate",
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


# ------------------------------------------------- compared trainings (forgetting.compare)

GENERAL = "mmlu[stem]"  # markup-like on purpose: it must be shown as written


def curve(domain: dict[int, float], general: dict[int, tuple[float, float, float, float]], errors=()) -> ForgettingResult:
    """A curve by hand: ``general[step] = (score, diff, ci_low, ci_high)``; step 0 is the base."""
    def cmp(base: float, score: float, diff: float, lo: float, hi: float) -> Comparison:
        return Comparison("paired_bootstrap", 50, base, score, diff, lo, hi, 0.01, 0.1, 0.05)

    base_d, (base_g, *_rest) = domain[0], general[0]
    result = ForgettingResult(domain="domain", bounds={GENERAL: 0.05}, selection="non_inferior", steps=sorted(domain))
    result.series["domain"] = [
        CurvePoint(s, v, {}, cmp(base_d, v, v - base_d, v - base_d - 0.1, v - base_d + 0.1) if s else None)
        for s, v in sorted(domain.items())
    ]
    result.series[GENERAL] = [
        CurvePoint(s, v, {}, cmp(base_g, v, d, lo, hi) if s else None, (lo > -0.05) if s else None)
        for s, (v, d, lo, hi) in sorted(general.items())
    ]
    result.errors = list(errors)
    return result


def train_output(steps: int, last_loss: float) -> TrainOutput:
    return TrainOutput(Path(f"/tmp/adapter-{steps}"), steps, 100, 5000, 2.5, last_loss, 12.0)


def compare_result() -> RunResult:
    result = make_result()
    result.train = train_output(6, 0.812)
    result.forgetting = curve(
        {0: 0.2, 2: 0.5, 4: 0.7, 6: 0.9},
        {0: (0.6, 0, 0, 0), 2: (0.58, -0.02, -0.04, 0.0), 4: (0.4, -0.2, -0.3, -0.1), 6: (0.1, -0.5, -0.7, -0.3)},
    )
    result.forgetting.selected_step = 2
    result.forgetting_compare = {
        "replay": curve(
            {0: 0.2, 3: 0.6, 9: 0.85},
            {0: (0.6, 0, 0, 0), 3: (0.59, -0.01, -0.03, 0.01), 9: (0.5, -0.1, -0.2, 0.02)},
        ),
        "ewc": curve(
            {0: 0.2, 8: 0.8},
            {0: (0.6, 0, 0, 0), 8: (0.6, 0.0, -0.04, 0.04)},
            errors=["domain at step 4: RuntimeError: probe broke"],
        ),
    }
    result.compare_train = {
        "replay": train_output(9, 0.934),
        "ewc": train_output(8, 0.877),
        "lwf": "RuntimeError: CUDA out of memory",
    }
    return result


def test_json_reporter_writes_compared_curves_and_trainings(ctx, out_dir):
    JsonReporter(ComponentConfig(), ctx).report(compare_result(), out_dir)
    data = json.loads((out_dir / "result.json").read_text(encoding="utf-8"))

    assert data["forgetting"]["steps"] == [0, 2, 4, 6]  # the main curve, unchanged
    assert list(data["forgetting_compare"]) == ["replay", "ewc"]
    replay = data["forgetting_compare"]["replay"]
    assert replay["steps"] == [0, 3, 9]
    assert [p["score"] for p in replay["series"][GENERAL]] == [0.6, 0.59, 0.5]
    assert replay["series"][GENERAL][2]["comparison"]["diff"] == -0.1
    assert data["forgetting_compare"]["ewc"]["errors"] == ["domain at step 4: RuntimeError: probe broke"]
    assert [p["step"] for p in data["forgetting_compare"]["ewc"]["series"]["domain"]] == [0, 8]

    assert list(data["compare_train"]) == ["replay", "ewc", "lwf"]
    assert data["compare_train"]["replay"]["steps"] == 9
    assert data["compare_train"]["replay"]["last_loss"] == 0.934
    assert data["compare_train"]["replay"]["path"] == "/tmp/adapter-9"
    assert data["compare_train"]["lwf"] == {"error": "RuntimeError: CUDA out of memory"}


def test_json_reporter_without_comparison(ctx, out_dir):
    JsonReporter(ComponentConfig(), ctx).report(make_result(), out_dir)
    data = json.loads((out_dir / "result.json").read_text(encoding="utf-8"))
    assert data["forgetting_compare"] == {} and data["compare_train"] == {}


def terminal_text(ctx, out_dir, result: RunResult) -> str:
    console = Console(record=True, width=260, file=io.StringIO(), highlight=False)
    TerminalReporter(ComponentConfig(), ctx, console=console).report(result, out_dir)
    return console.export_text()


def cells(text: str, title: str, first: str) -> list[str]:
    """The cells of the row starting with ``first`` in the table titled ``title``."""
    table = text[text.index(title):]
    row = next(line for line in table.splitlines() if line.startswith("│ " + first))
    return [cell.strip() for cell in row.strip("│").split("│")]


def test_terminal_benchmark_row_shows_the_baseline_candidate_gate_not_another_arm_pair(ctx, out_dir):
    """A second gate on the same benchmark between other arms (here a prompt variant against the
    candidate) must not replace the baseline-vs-candidate difference in the benchmarks table."""
    other = Comparison("mcnemar", 4, 1.0, 0.75, -0.25, -0.6, 0.1, 1.0, 0.7, 0.05, {"lost": 1.0, "won": 0.0})
    result = make_result([
        decision("intent", Verdict.PASS),
        Decision("lora_vs_few8", "intent", "non_inferior(margin=0.02)", Verdict.FAIL, "worse", False, other,
                 baseline_arm="few8", candidate_arm="candidate"),
    ])
    result.benchmarks["intent"]["few8"] = bench("few8", [1, 1, 1, 1])
    row = cells(terminal_text(ctx, out_dir, result), "Benchmarks: candidate vs baseline", "intent")
    assert row[3:8] == ["0.500", "0.750", "+0.250", "[-0.200, +0.600] (90%)", "1"]


def test_terminal_reporter_shows_trainings_side_by_side(ctx, out_dir):
    text = terminal_text(ctx, out_dir, compare_result())
    title = "Forgetting by training: change vs the base model at the last checkpoint"
    assert text.index("Forgetting curve: probe score") < text.index(title)  # after the main table

    table = text[text.index(title):]
    header = next(line for line in table.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.strip("┃").split("┃")] == [
        "probe", "main (step 6)", "replay (step 9)", "ewc (step 8)", "lwf",
    ]
    assert cells(text, title, GENERAL) == [
        f"{GENERAL} (bound -0.05)",
        "0.100 (-0.500 [-0.700, -0.300]) out",
        "0.500 (-0.100 [-0.200, +0.020]) out",
        "0.600 (+0.000 [-0.040, +0.040])",
        "-",
    ]
    assert cells(text, title, "domain") == [
        "domain (domain)",
        "0.900 (+0.700 [+0.600, +0.800])",
        "0.850 (+0.650 [+0.550, +0.750])",
        "0.800 (+0.600 [+0.500, +0.700])",
        "-",
    ]
    assert cells(text, title, "training") == [
        "training", "loss 0.812, 6 steps", "loss 0.934, 9 steps", "loss 0.877, 8 steps", "error",
    ]
    assert "error training lwf: RuntimeError: CUDA out of memory" in text
    assert "error ewc curve: domain at step 4: RuntimeError: probe broke" in text


def test_terminal_reporter_without_comparison_prints_no_comparison_table(ctx, out_dir):
    result = compare_result()
    result.forgetting_compare, result.compare_train = {}, {}
    text = terminal_text(ctx, out_dir, result)
    assert "Forgetting curve: probe score" in text and f"{GENERAL} (bound -0.05)" in text
    assert "Forgetting by training" not in text


def panels(svg: str) -> dict[str, str]:
    return dict(re.findall(r'<g data-probe="([^"]*)">(.*?)</g>', svg, flags=re.DOTALL))


def test_curve_reporter_draws_each_training_in_every_panel(ctx, out_dir):
    (path,) = CurveReporter(ComponentConfig(), ctx).report(compare_result(), out_dir)
    svg = path.read_text(encoding="utf-8")
    ET.fromstring(svg)  # well-formed, user text escaped

    by_probe = panels(svg)
    assert list(by_probe) == ["domain", GENERAL]
    for body in by_probe.values():
        trainings = re.findall(r'<polyline [^>]*data-training="([^"]*)"', body)
        assert sorted(trainings) == ["ewc", "main", "replay"]
        colours = re.findall(r'<polyline [^>]*stroke="([^"]*)"', body)
        assert len(set(colours)) == 3
    assert svg.count("<polyline") == 6
    # the legend names every curve, before the panels
    legend = svg[: svg.index("<g data-probe")]
    for label in ("main", "replay", "ewc"):
        assert f">{label}" in legend

    # one x axis for all: it spans the union of the steps (0..9), so step 6 is not the right edge
    general = by_probe[GENERAL]
    ticks = {int(t): float(x) for x, t in re.findall(r'<text x="([\d.]+)" y="[\d.]+" font-size="10" text-anchor="middle">(\d+)</text>', general)}
    assert set(ticks) == {0, 2, 3, 4, 6, 8, 9}
    assert ticks[0] < ticks[6] < ticks[9]
    replay_line = re.search(r'<polyline points="([^"]*)"[^>]*data-training="replay"', general).group(1)
    main_line = re.search(r'<polyline points="([^"]*)"[^>]*data-training="main"', general).group(1)
    assert float(replay_line.split()[-1].split(",")[0]) == pytest.approx(ticks[9])
    assert float(main_line.split()[-1].split(",")[0]) == pytest.approx(ticks[6])
    assert "bound -0.05" in general and "<polygon" in general  # the main one's band and bound stay


def test_curve_reporter_without_comparison_is_unchanged(ctx, out_dir):
    result = compare_result()
    result.forgetting_compare = {}
    (path,) = CurveReporter(ComponentConfig(), ctx).report(result, out_dir)
    svg = path.read_text(encoding="utf-8")
    assert svg.count("<polyline") == 2 and "data-training" not in svg
    assert "replay" not in svg

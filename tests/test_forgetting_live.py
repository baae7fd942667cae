"""Forgetting caught while training, on a tiny random model: the probes are scored on each
checkpoint as the trainer writes it, and ``forgetting.stop`` ends a training whose learning rate
is high enough to forget (naming the step, still gating the best eligible checkpoint), while a
safe learning rate runs to the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.stages.forgetting_live import Exceeded, sparkline, stop_reason
from harness.suite.config import StopSpec

CSV = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"
PROMPT = "Intent of: {instruction}"


def _suite(model: Path, learning_rate: float, when: str = "bound_exceeded", report: tuple = ("json",)) -> dict:
    return {
        "name": "live",
        "seed": 3,
        "model": {"source": str(model), "dtype": "float32"},
        "data": [{"path": CSV, "format": "csv", "split": "train", "sample": 48, "user": PROMPT, "assistant": "{intent}"}],
        "train": {"name": "full", "learning_rate": learning_rate, "max_steps": 8, "batch_size": 4,
                  "max_length": 48, "eval_every": 2, "warmup_steps": 0},
        "forgetting": {
            "domain": "domain",
            "probes": {
                "domain": {"name": "support_intent", "prompt": PROMPT, "sample": 6, "max_new_tokens": 4},
                "wikitext": {"name": "perplexity", "path": "wikitext2/valid.txt", "windows": 8, "span_chars": 200},
            },
            "bounds": {"wikitext": 0.25},
            "stop": {"when": when},
        },
        "evaluate": {"wikitext_full": {"name": "perplexity", "path": "wikitext2/valid.txt", "windows": 8, "span_chars": 200}},
        "gates": {"wikitext_full": {"rule": "no_regression(margin=0.25)", "blocking": False}},
        "report": list(report),
    }


def _run(tmp_path: Path, harness_write_suite, suite: dict) -> tuple[int, dict, Path]:
    path = harness_write_suite(suite)
    code = main(["run", str(path), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "reports")])
    (report,) = (tmp_path / "reports").glob("*/result.json")
    return code, json.loads(report.read_text()), report.parent


def test_a_forgetting_learning_rate_stops_early_and_still_gates_the_best_eligible(
    tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path, capsys
) -> None:
    code, result, folder = _run(tmp_path, harness_write_suite, _suite(harness_tiny_model_dir, 0.05, report=("json", "markdown", "html", "terminal")))
    out = capsys.readouterr().out
    f, train = result["forgetting"], result["train"]
    assert f["stop_when"] == "bound_exceeded" and f["stopped_step"] is not None
    step = f["stopped_step"]
    assert step < 8 and train["steps"] == step and train["stopped_step"] == step
    assert "wikitext dropped beyond its bound 0.25" in f["stop_reason"]
    assert f["steps"][-1] == step  # no checkpoint after the one that stopped it
    wikitext = {p["step"]: p for p in f["series"]["wikitext"]}
    assert wikitext[step]["within_bound"] is False
    # the curve grew on the terminal, one line per point, before the stop
    assert out.index("curve step 0") < out.index("training: 1/8") and f"curve step {step}/8" in out and "beyond bound" in out
    assert f"stopping the training at step {step}" in out
    # selection still ran: an eligible earlier checkpoint is gated, else the stopped one is named
    eligible = [s for s in f["steps"][1:] if f["reasons"][str(s)].startswith("selected")]
    assert f["selected_step"] == (eligible[0] if eligible else None)
    for shown in ((folder / "report.md").read_text(), (folder / "report.html").read_text(), out):
        assert f"topped at step {step}" in shown
    assert code in (0, 1)


def test_a_safe_learning_rate_runs_to_the_end(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> None:
    code, result, _ = _run(tmp_path, harness_write_suite, _suite(harness_tiny_model_dir, 1e-7))
    f = result["forgetting"]
    assert f["stopped_step"] is None and f["stop_reason"] == ""
    assert result["train"]["steps"] == 8 and f["steps"] == [0, 2, 4, 6, 8]
    assert f["selected_step"] is not None
    assert code == 0


def _exceeded() -> list[Exceeded]:
    return [Exceeded("mmlu", 0.05, "regressed by more than 0.05")]


def test_the_stop_rules() -> None:
    assert stop_reason(StopSpec(when="bound_exceeded"), [], [0.1, 0.2]) is None
    assert "mmlu dropped beyond its bound 0.05" in stop_reason(StopSpec(when="bound_exceeded"), _exceeded(), [0.1, 0.9, 0.9])
    before = StopSpec(when="bound_exceeded_before_domain_converged", min_domain_gain=0.02)
    assert "first checkpoint" in stop_reason(before, _exceeded(), [0.1, 0.5])
    assert "still improving (+0.200" in stop_reason(before, _exceeded(), [0.1, 0.5, 0.7])
    assert stop_reason(before, _exceeded(), [0.1, 0.5, 0.51]) is None  # converged: keep going, select later


def test_sparkline_scales_between_min_and_max() -> None:
    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█"
    assert sparkline([]) == ""


def test_stop_needs_live(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path, capsys) -> None:
    suite = _suite(harness_tiny_model_dir, 0.05)
    suite["forgetting"]["live"] = False
    code = main(["validate", str(harness_write_suite(suite))])
    assert code == 2 and "stop needs live: true" in capsys.readouterr().err

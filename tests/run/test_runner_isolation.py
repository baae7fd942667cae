"""A broken reporter or lifecycle hook is recorded with its plugin's name and never stops the
run, the other reporters or a verdict; it never turns a verdict into a pass (exit 3 instead of 0,
and a failed gate stays exit 1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import harness
from harness.lib.console import RunConsole
from harness.plugin.components import Benchmark, Reporter, Trainer
from harness.plugin.manager import get_plugin_manager
from harness.plugin.registry import Registries
from harness.run.runner import Runner, RunOptions
from harness.suite.config import load_suite
from harness.types import ItemResult, TrainOutput


class _SameWeights(Trainer):
    """'Trains' by handing back the base model itself: the candidate equals the baseline."""

    name = "same_weights"

    def train(self, base: Any, data: Any, ctx: Any) -> TrainOutput:
        return TrainOutput(base.ref.path, 0, len(data), 0, 0.0, 0.0, 0.0)


class _Scores(Benchmark):
    name = "scores"

    def items(self) -> list[dict[str, Any]]:
        return [{"id": str(i)} for i in range(30)]

    def evaluate(self, model: Any, items: Any, progress: Any) -> list[ItemResult]:
        return [ItemResult(item["id"], "x", "x", float(int(item["id"]) % 2)) for item in items]  # not all 1: a ceiling is inconclusive


class _BrokenReporter(Reporter):
    name = "broken_reporter"

    def report(self, result: Any, out_dir: Path) -> list[Path]:
        raise OSError("disk full")


class _Plugin:
    @harness.hookimpl
    def harness_register_trainers(self, registrar: Any) -> None:
        registrar.add(_SameWeights)

    @harness.hookimpl
    def harness_register_benchmarks(self, registrar: Any) -> None:
        registrar.add(_Scores)

    @harness.hookimpl
    def harness_register_reporters(self, registrar: Any) -> None:
        registrar.add(_BrokenReporter)


class _BrokenHook:
    @harness.hookimpl
    def harness_on_stage_end(self, event: Any) -> None:
        if event.stage == "evaluate":
            raise RuntimeError("notifier is down")


def _run(tmp_path: Path, harness_write_suite: Any, harness_tiny_model_dir: Path, rule: str, report: list[str], extra: tuple = ()) -> Runner:
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    suite = harness_write_suite(
        {
            "name": "isolation",
            "model": str(harness_tiny_model_dir),
            "data": [{"path": str(data), "format": "alpaca"}],
            "train": "same_weights",
            "evaluate": {"scores": "scores"},
            "gates": {"scores": rule},
            "report": report,
        }
    )
    pm = get_plugin_manager(load_entrypoints=False, plugins=[("test", _Plugin()), *extra])
    runner = Runner(load_suite(suite), pm, Registries.from_plugin_manager(pm), RunConsole(),
                    RunOptions(reports_root=tmp_path / "reports", store_dir=tmp_path / "store"))
    runner.run()
    return runner


def test_a_broken_reporter_is_recorded_and_the_others_still_write(tmp_path, harness_write_suite, harness_tiny_model_dir):
    runner = _run(tmp_path, harness_write_suite, harness_tiny_model_dir, "no_regression()", ["broken_reporter", "json", "junit"])
    result = runner.result
    assert [d.verdict.value for d in result.decisions] == ["pass"]
    assert result.exit_code == 3  # the gates passed, but the job did not do all it was asked to
    assert len(result.plugin_errors) == 1
    assert "reporter 'broken_reporter' from test (given in-process): OSError: disk full" in result.plugin_errors[0]
    written = json.loads((runner.report_dir / "result.json").read_text())
    assert written["decisions"][0]["verdict"] == "pass"
    assert written["plugin_errors"] == result.plugin_errors  # the JSON, written after it, says so
    assert (runner.report_dir / "junit.xml").is_file()


def test_a_failed_gate_stays_exit_1_whatever_broke_beside_it(tmp_path, harness_write_suite, harness_tiny_model_dir):
    runner = _run(tmp_path, harness_write_suite, harness_tiny_model_dir, "superior(margin=0.5)", ["broken_reporter", "json"])
    assert [d.verdict.value for d in runner.result.decisions] == ["fail"]
    assert runner.result.exit_code == 1 and runner.result.plugin_errors


def test_a_broken_lifecycle_hook_is_recorded_and_the_run_goes_on(tmp_path, harness_write_suite, harness_tiny_model_dir):
    runner = _run(tmp_path, harness_write_suite, harness_tiny_model_dir, "no_regression()", ["json"], (("notifier", _BrokenHook()),))
    result = runner.result
    assert [s.stage for s in result.stages][-1] == "report"  # every stage ran
    assert result.exit_code == 3
    assert result.plugin_errors == [
        "plugin 'notifier' (given in-process) in harness_on_stage_end: RuntimeError: notifier is down"
    ]

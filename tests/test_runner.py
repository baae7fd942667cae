"""``harness run`` turns bad input into exit code 2 and one line naming the place, before any
model is loaded or trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main

CSV = "${data}/bitext_customer_support/Bitext_Sample_Customer_Support_Training_Dataset.csv"


def _suite(tmp_path: Path, **overrides) -> dict:
    suite = {
        "name": "bad",
        "model": "smollm2-135m-instruct",
        "data": [{"path": CSV, "format": "csv", "user": "{instruction}", "assistant": "{intent}"}],
        "train": {"name": "lora", "max_steps": 1},
        "evaluate": {"mmlu": {"name": "mmlu", "per_subject": 1}},
        "gates": {"mmlu": "no_regression()"},
    }
    suite.update(overrides)
    return suite


def _run(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["run", str(path), "--reports", str(tmp_path / "reports"), "--store", str(tmp_path / "store")])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"evaluate": {"mmlu": {"name": "mmlu", "path": "no-such-folder"}}}, r"suite.yaml:\d+: evaluate.mmlu: MMLU data not found"),
        ({"evaluate": {"mmlu": {"name": "mmlu", "subjects": ["astrology"]}}}, r"evaluate.mmlu: unknown MMLU subject\(s\) \['astrology'\]"),
        ({"evaluate": {"mmlu": {"name": "mmlu_pro"}}}, r"suite.yaml:\d+: unknown benchmark 'mmlu_pro'; available: [a-z_, ]*\bmmlu, [a-z_, ]*support_intent"),
        ({"train": {"name": "lora", "rank": 8}}, r"suite.yaml:\d+: train.rank: unknown key"),
        ({"data": [{"path": "missing.jsonl", "format": "alpaca"}]}, r"suite.yaml:\d+: data file .*missing.jsonl does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, harness_write_suite, capsys, overrides, expected) -> None:
    code, err = _run(harness_write_suite(_suite(tmp_path, **overrides)), tmp_path, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("harness: error: ")
    assert __import__("re").search(expected, err), err


def test_empty_data_set_is_a_clear_error(tmp_path: Path, harness_write_suite, capsys) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    code, err = _run(harness_write_suite(_suite(tmp_path, data=[{"path": str(empty), "format": "alpaca"}])), tmp_path, capsys)
    assert code == 2
    assert "is empty" in err and "empty.jsonl" in err


def test_all_malformed_data_fails_with_the_first_bad_line(tmp_path: Path, harness_write_suite, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\nnot json\n{"oops": 1}\n')
    code, err = _run(harness_write_suite(_suite(tmp_path, data=[{"path": str(bad), "format": "alpaca"}])), tmp_path, capsys)
    assert code == 2
    assert "bad.jsonl:2" in err and "2 of 3 records are malformed" in err


# --------------------------------------------------------- a check that errors is never a pass

import harness  # noqa: E402
from harness.plugin.components import Benchmark, Trainer  # noqa: E402
from harness.types import ItemResult  # noqa: E402


class _BrokenTrainer(Trainer):
    name = "broken"

    def train(self, base, data, ctx):
        raise RuntimeError("out of memory")


class _ConstBenchmark(Benchmark):
    name = "const"

    def items(self):
        return [{"id": str(i)} for i in range(5)]

    def evaluate(self, model, items, progress):
        return [ItemResult(item["id"], "x", "x", 1.0) for item in items]


class _TestPlugin:
    @harness.hookimpl
    def harness_register_trainers(self, registrar) -> None:
        registrar.add(_BrokenTrainer)

    @harness.hookimpl
    def harness_register_benchmarks(self, registrar) -> None:
        registrar.add(_ConstBenchmark)


def test_failed_training_makes_its_gates_error_and_exit_3(tmp_path: Path, harness_write_suite, harness_tiny_model_dir: Path) -> None:
    import json

    from harness.suite.config import load_suite
    from harness.lib.console import RunConsole
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries
    from harness.run.runner import Runner, RunOptions

    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    suite = harness_write_suite(
        {
            "name": "broken",
            "model": str(harness_tiny_model_dir),
            "data": [{"path": str(data), "format": "alpaca"}],
            "train": "broken",
            "evaluate": {"const": "const"},
            "gates": {"const": "no_regression()"},
            "report": ["json", "junit"],
        }
    )
    pm = get_plugin_manager(load_entrypoints=False, plugins=[("test", _TestPlugin())])
    runner = Runner(load_suite(suite), pm, Registries.from_plugin_manager(pm), RunConsole(),
                    RunOptions(reports_root=tmp_path / "reports", store_dir=tmp_path / "store"))
    result = runner.run()
    assert result.exit_code == 3
    [decision] = result.decisions
    assert decision.verdict.value == "error" and "out of memory" in decision.reason
    written = json.loads((runner.report_dir / "result.json").read_text())
    assert written["train_error"] == "training failed: RuntimeError: out of memory"
    assert written["benchmarks"]["const"]["baseline"]["n"] == 5  # the baseline was still scored
    assert (runner.report_dir / "junit.xml").read_text().count("<error") == 1

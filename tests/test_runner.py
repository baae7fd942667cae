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
        ({"evaluate": {"mmlu": {"name": "mmlu_pro"}}}, r"suite.yaml:\d+: unknown benchmark 'mmlu_pro'; available: mmlu, support_intent"),
        ({"train": {"name": "lora", "rank": 8}}, r"suite.yaml:\d+: train.rank: unknown key"),
        ({"data": [{"path": "missing.jsonl", "format": "alpaca"}]}, r"suite.yaml:\d+: data file not found: .*missing.jsonl"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, write_suite, capsys, overrides, expected) -> None:
    code, err = _run(write_suite(_suite(tmp_path, **overrides)), tmp_path, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("harness: error: ")
    assert __import__("re").search(expected, err), err


def test_empty_data_set_is_a_clear_error(tmp_path: Path, write_suite, capsys) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    code, err = _run(write_suite(_suite(tmp_path, data=[{"path": str(empty), "format": "alpaca"}])), tmp_path, capsys)
    assert code == 2
    assert "data set is empty" in err and "empty.jsonl" in err


def test_all_malformed_data_fails_with_the_first_bad_line(tmp_path: Path, write_suite, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\nnot json\n{"oops": 1}\n')
    code, err = _run(write_suite(_suite(tmp_path, data=[{"path": str(bad), "format": "alpaca"}])), tmp_path, capsys)
    assert code == 2
    assert "bad.jsonl:2" in err and "2 of 3 records are malformed" in err

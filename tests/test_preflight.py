"""The preflight checks: each bad input of the CI probes gives one problem, at the suite's line,
with a one-line message that names the path; good input gives none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.suite.preflight import (
    Problem,
    check_data_dir,
    check_data_path,
    check_env_var,
    check_model_reference,
    check_sample_size,
    check_store,
    check_writable_dir,
    errors,
)

WHERE = "suite.yaml:7"


def _one(problems: list[Problem], *needles: str) -> Problem:
    assert len(problems) == 1, problems
    (problem,) = problems
    assert problem.where == WHERE and "\n" not in problem.message
    for needle in needles:
        assert needle in str(problem), (needle, str(problem))
    return problem


# ------------------------------------------------------------------------------- data paths


def test_a_good_utf8_file_passes(tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_text("a,b\nnaïve,café\n", encoding="utf-8")
    assert check_data_path(path, where=WHERE) == []


def test_missing_file(tmp_path: Path) -> None:
    _one(check_data_path(tmp_path / "nope.jsonl", where=WHERE), "nope.jsonl", "does not exist")


def test_missing_file_under_the_data_folder_hints_at_the_variable(tmp_path: Path) -> None:
    _one(check_data_path(tmp_path / "x.csv", where=WHERE, raw="${data}/x.csv"), "HARNESS_DATA_DIR")


def test_a_folder_given_as_a_file(tmp_path: Path) -> None:
    _one(check_data_path(tmp_path, where=WHERE), "is a folder, not a file")


def test_a_symlink_loop(tmp_path: Path) -> None:
    loop = tmp_path / "loop.jsonl"
    os.symlink(loop, loop)
    _one(check_data_path(loop, where=WHERE), "loop.jsonl", "symbolic link loop")


def test_a_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link.jsonl"
    os.symlink(tmp_path / "gone.jsonl", link)
    _one(check_data_path(link, where=WHERE), "broken symbolic link")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_an_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    _one(check_data_path(path, where=WHERE), "empty.jsonl", "is empty")


def test_a_latin1_csv_names_the_line_of_the_first_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("a,b\nok,fine\ncaf\u00e9,x\n".encode("latin-1"))
    _one(check_data_path(path, where=WHERE), "latin.csv:3", "not utf-8 text", "0xe9")
    assert check_data_path(path, "latin-1", where=WHERE) == []


def test_a_character_cut_by_the_probe_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.suite import preflight

    path = tmp_path / "long.txt"
    path.write_text("é" * 10, encoding="utf-8")  # 20 bytes; the probe reads 5 and cuts an é
    monkeypatch.setattr(preflight, "ENCODING_PROBE_BYTES", 5)
    assert check_data_path(path, where=WHERE) == []


def test_an_unknown_encoding(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("x")
    _one(check_data_path(path, "klingon", where=WHERE), "unknown encoding 'klingon'")


def test_a_data_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    _one(check_data_path(folder, where=WHERE, kind="folder"), "is empty")
    (folder / "part-0.arrow").write_bytes(b"x")
    assert check_data_path(folder, where=WHERE, kind="folder") == []
    _one(check_data_path(folder / "part-0.arrow", where=WHERE, kind="folder"), "is not a folder")


# ---------------------------------------------------------------------------- sample sizes


def test_sample_larger_than_the_data() -> None:
    _one(check_sample_size(500, 48, where=WHERE, path="d.csv", split="train"), "sample: 500", "only 48 records in the train split", "sample: all")
    assert check_sample_size(48, 48, where=WHERE, path="d.csv") == []
    assert check_sample_size("all", 3, where=WHERE, path="d.csv") == []
    assert check_sample_size(None, 0, where=WHERE, path="d.csv") == []


# ------------------------------------------------------------------------- model, data dir


def test_model_reference(tmp_path: Path, harness_tiny_model_dir: Path) -> None:
    assert check_model_reference(str(harness_tiny_model_dir), tmp_path, where=WHERE) == []
    assert check_model_reference("smollm2-135m-instruct", tmp_path, where=WHERE) == []
    _one(check_model_reference("/nonexistent", tmp_path, where=WHERE), "/nonexistent", "does not exist", "smollm2-135m-instruct")
    _one(check_model_reference("tiny", tmp_path, where=WHERE, embedded={"tiny": "no_such_package_xyz"}), "no_such_package_xyz", "not installed")
    (tmp_path / "m").mkdir()
    _one(check_model_reference("m", tmp_path, where=WHERE), "has no config.json")
    (tmp_path / "m" / "config.json").write_text("{}")
    _one(check_model_reference("m", tmp_path, where=WHERE), "no *.safetensors")


def test_data_dir(tmp_path: Path) -> None:
    assert check_data_dir(str(tmp_path), where=WHERE) == []
    _one(check_data_dir(None, where=WHERE), "HARNESS_DATA_DIR is not set")
    _one(check_data_dir(str(tmp_path / "nope"), where=WHERE), "does not exist")
    (tmp_path / "f").write_text("x")
    _one(check_data_dir(str(tmp_path / "f"), where=WHERE), "is not a folder")


# ------------------------------------------------------------------------------ environment


def test_env_var() -> None:
    purpose = "the production endpoint's API key"
    assert check_env_var("KEY", where=WHERE, purpose=purpose, environ={"KEY": "sk-1"}) == []
    _one(check_env_var("KEY", where=WHERE, purpose=purpose, environ={}), "KEY is not set", purpose)
    _one(check_env_var("KEY", where=WHERE, purpose=purpose, environ={"KEY": " "}), "set but empty")


def test_writable_dir(tmp_path: Path) -> None:
    assert check_writable_dir(tmp_path / "new" / "reports", where=WHERE, what="reports folder") == []
    assert not (tmp_path / "new").exists()  # nothing is created
    assert list(tmp_path.iterdir()) == []  # and the probe file is gone
    (tmp_path / "file").write_text("x")
    _one(check_writable_dir(tmp_path / "file" / "reports", where=WHERE, what="reports folder"), "is a file, not a folder")


def test_unwritable_dir(harness_readonly_folder: Path, harness_unprivileged_python) -> None:
    code = (
        "from pathlib import Path; from harness.suite.preflight import check_writable_dir; "
        f"print(*check_writable_dir(Path({str(harness_readonly_folder)!r}) / 'reports', where='s.yaml:3', what='reports folder'))"
    )
    done = harness_unprivileged_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("s.yaml:3: reports folder") and "is not writable (permission denied)" in done.stdout, done.stdout


def test_store_file(tmp_path: Path) -> None:
    assert check_store(tmp_path / "store", where=WHERE) == []
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "store.sqlite").write_bytes(b"")
    problem = _one(check_store(tmp_path / "store", where=WHERE), "is empty (0 bytes)")
    assert problem.severity == "warning" and errors([problem]) == []
    (tmp_path / "store" / "store.sqlite").write_bytes(b"garbage" * 20)
    _one(check_store(tmp_path / "store", where=WHERE), "store.sqlite is corrupted", "harness store repair")

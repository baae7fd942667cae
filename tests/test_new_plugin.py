"""``harness new-plugin``: each kind of generated package installs with pip into a fresh
environment, registers through its entry point, and changes what a suite run produces."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.tools.scaffold import KINDS

ROOT = Path(__file__).resolve().parents[1]
REQUEST = {"request": {"messages": [{"role": "user", "content": "Where is my parcel?"}]}}


@pytest.fixture(scope="module")
def throwaway_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new environment that sees this interpreter's packages (a ``.pth`` file; a venv made from a
    venv would only see the base interpreter's) and this checkout first, so installing into it is
    fast and offline."""
    folder = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(folder)
    python = folder / "bin" / "python"
    target = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    Path(target, "_harness_parent.pth").write_text("\n".join([str(ROOT), *site.getsitepackages()]) + "\n")
    return python


def _install(python: Path, package: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--disable-pip-version-check", str(package)],
        check=True, cwd=package.parent,
    )


def _harness(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250", "CI": ""}
    return subprocess.run([python, "-m", "harness.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _result(folder: Path) -> dict[str, Any]:
    [path] = folder.glob("reports/*/result.json")
    return json.loads(path.read_text())


# What each kind's suite is and how its effect shows: (suite, command, check(run, folder)).
def _filter_suite(model: str, folder: Path) -> dict[str, Any]:
    (folder / "chat.jsonl").write_text('{"instruction": "a lorem ipsum text", "output": "x"}\n{"instruction": "fine", "output": "y"}\n')
    return {"model": model, "data": [{"path": "chat.jsonl", "format": "alpaca"}], "curate": {"filters": ["my_filter"]}}


def _check_filter(run: subprocess.CompletedProcess[str], folder: Path) -> None:
    assert "filter my_filter: in 2 = kept 1 + dropped 1 + quarantined 0 (listed_word: 1)" in run.stdout
    assert len((folder / "curated" / "curated.jsonl").read_text().splitlines()) == 1


def _check_benchmark(run: subprocess.CompletedProcess[str], folder: Path) -> None:
    bench = _result(folder)["benchmarks"]["quiz"]["baseline"]
    assert bench["n"] == 3 and bench["metric"] == "accuracy"


def _check_trainer(run: subprocess.CompletedProcess[str], folder: Path) -> None:
    train = _result(folder)["train"]
    assert train["steps"] == 2 and train["notes"] == ["my_trainer: 2 steps at learning rate 0.0001"]


def _check_reporter(run: subprocess.CompletedProcess[str], folder: Path) -> None:
    [sheet] = folder.glob("reports/*/verdicts.txt")
    assert "benchmark intent: baseline" in sheet.read_text()


def _check_parity(run: subprocess.CompletedProcess[str], folder: Path) -> None:
    [check] = _result(folder)["parity"]["checks"]
    assert check["component"] == "my_parity" and [f["cause"] for f in check["findings"]] == ["prompt_length"]


def _check_backend(run: subprocess.CompletedProcess[str], folder: Path) -> None:
    assert len(_result(folder)["benchmarks"]["intent"]["baseline"]["items"]) == 2


INTENT = {"intent": {"name": "support_intent", "sample": 2}}
CASES: dict[str, tuple[Callable[[str, Path], dict[str, Any]], str, Callable[..., None]]] = {
    "filter": (_filter_suite, "curate", _check_filter),
    "benchmark": (lambda model, folder: {"model": model, "evaluate": {"quiz": "my_benchmark"}}, "run", _check_benchmark),
    "trainer": (lambda model, folder: {**_filter_suite(model, folder), "curate": {"filters": []},
                                       "train": {"name": "my_trainer", "steps": 2}}, "run", _check_trainer),
    "reporter": (lambda model, folder: {"model": model, "evaluate": INTENT, "report": ["json", "my_reporter"]}, "run", _check_reporter),
    "parity": (lambda model, folder: {"model": model, "parity": {
        "requests": {"path": "requests.jsonl", "format": "openai_requests"},
        "production": {"system_prompt": "Be brief."}, "checks": {"length": "my_parity"}}}, "parity", _check_parity),
    "backend": (lambda model, folder: {"model": {"source": model, "backend": "my_backend"}, "evaluate": INTENT}, "run", _check_backend),
}


def test_every_kind_has_a_case() -> None:
    assert set(CASES) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_generated_plugin_installs_passes_its_tests_and_changes_a_run(
    kind: str, tmp_path: Path, throwaway_python: Path, harness_fake_model_dir: Path
) -> None:
    assert main(["new-plugin", f"harness-my-{kind}", "--kind", kind, "--dir", str(tmp_path)]) == 0
    _install(throwaway_python, tmp_path / f"harness-my-{kind}")
    listing = _harness(throwaway_python, "plugins", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if f" my_{kind} " in line)
    assert "harness-my-" + kind in row and "0.1.0" in row
    own = subprocess.run([throwaway_python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], capture_output=True, text=True,
                         cwd=tmp_path / f"harness-my-{kind}", env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert own.returncode == 0 and " passed" in own.stdout, own.stdout[-3000:] + own.stderr[-2000:]  # its own tests, as generated

    make_suite, command, check = CASES[kind]
    (tmp_path / "requests.jsonl").write_text((json.dumps(REQUEST) + "\n") * 2)
    suite = {"name": f"uses-{kind}", **make_suite(str(harness_fake_model_dir), tmp_path)}
    (tmp_path / "suite.yaml").write_text(json.dumps(suite))
    where = ["--out", "curated"] if command == "curate" else ["--reports", "reports", "--store", "store"]
    run = _harness(throwaway_python, command, "suite.yaml", *where, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    check(run, tmp_path)


def test_new_plugin_refuses_a_bad_name_or_an_existing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-plugin", "Bad Name", "--kind", "filter", "--dir", str(tmp_path)]) == 2
    assert "'Bad Name' is not a package name" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert main(["new-plugin", "taken", "--kind", "filter", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err

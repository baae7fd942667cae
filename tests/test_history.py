"""Run history: the store keeps each run's result document; ``harness runs`` lists runs,
``harness report`` renders a stored run again byte for byte, ``harness compare`` shows what
changed between two runs, and the HTML report charts the suite's earlier runs (scripted
components, no model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))

from scripted_plugin import Plugin, write_scripted_suite  # noqa: E402

EVALUATE = {"s": {"name": "scripted", "baseline": "10", "candidate": "1", "seed_flips": True, "n": 30}}


def _run(folder: Path, seed: int):
    from harness.lib.console import RunConsole
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries
    from harness.run.runner import Runner, RunOptions
    from harness.suite.config import load_suite

    suite = write_scripted_suite(folder, EVALUATE, {"s": "superior()"}, seed=seed)
    pm = get_plugin_manager(load_entrypoints=False, plugins=[("scripted", Plugin())])
    options = RunOptions(reports_root=folder / "reports", store_dir=folder / "store")
    runner = Runner(load_suite(suite), pm, Registries.from_plugin_manager(pm), RunConsole(), options)
    try:
        return runner.run(), runner.report_dir
    finally:
        runner.store.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("history")
    first, second = _run(folder, seed=1), _run(folder, seed=2)
    return folder, first, second


def test_runs_lists_both_runs_with_their_documents(runs, capsys) -> None:
    folder, (a, _), (b, _) = runs
    assert main(["runs", "--store", str(folder / "store")]) == 0
    out = capsys.readouterr().out
    assert a.run_id in out and b.run_id in out and out.count("yes") == 2


def test_report_renders_a_stored_run_byte_for_byte(runs, tmp_path: Path, capsys) -> None:
    folder, _, (b, report_dir) = runs
    args = ["report", b.run_id[-6:], "--store", str(folder / "store"), "--out", str(tmp_path)]
    assert main([*args, "--format", "html", "--format", "md", "--format", "json", "--format", "junit"]) == 0
    for name in ("report.html", "report.md", "result.json", "junit.xml"):
        assert (tmp_path / name).read_bytes() == (report_dir / name).read_bytes(), name


def test_the_history_holds_the_earlier_run(runs) -> None:
    folder, (a, first_dir), (b, report_dir) = runs
    first = json.loads((first_dir / "result.json").read_text())
    second = json.loads((report_dir / "result.json").read_text())
    assert first["history"] == []
    assert [h["run_id"] for h in second["history"]] == [a.run_id]
    assert second["history"][0]["scores"] == {"s": {"baseline": 0.5, "candidate": first["benchmarks"]["s"]["candidate"]["score"]}}
    assert 'id="chart-history"' in (report_dir / "report.html").read_text() and 'id="chart-history"' not in (first_dir / "report.html").read_text()
    assert second["provenance"]["seed"] == 2 and len(second["provenance"]["suite_sha256"]) == 64


def test_compare_lists_the_items_that_flipped(runs, capsys) -> None:
    folder, (a, _), (b, _) = runs
    assert main(["compare", a.run_id, b.run_id, "--store", str(folder / "store"), "--limit", "0"]) == 0
    out = capsys.readouterr().out
    # the scripted candidate flips items where (i + seed) % 7 == 0: seed 1 and seed 2 differ on these
    flipped = [i for i in range(30) if ((i + 1) % 7 == 0) != ((i + 2) % 7 == 0)]
    assert f"Items that flipped: {len(flipped)}" in out
    for i in flipped:
        assert f"item-{i:03d}" in out
    assert "item-000 " not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "no-such-run"], "no run 'no-such-run'"),
        (["report", "latest", "--format", "terminal"], "reporter 'terminal' cannot render a stored run"),
        (["report", "latest", "--format", "pdf"], "--format pdf: unknown reporter 'pdf'"),
        (["compare", "latest", "nope"], "no run 'nope'"),
    ],
)
def test_bad_requests_are_one_line_errors(runs, capsys, argv, message) -> None:
    folder, _, _ = runs
    assert main([*argv, "--store", str(folder / "store")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_missing_store_is_an_error_not_a_new_store(tmp_path: Path, capsys) -> None:
    assert main(["runs", "--store", str(tmp_path / "none")]) == 2
    assert "no harness store here" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()

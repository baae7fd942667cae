"""The GitHub Action (``action.yml``) and the example workflow pass actionlint.

actionlint checks workflows; it checks a local action's inputs when a workflow in a project uses
it (``uses: ./``).  So the test lays out a small project (git repository, the example as its
workflow, ``action.yml`` at its root) and lints: the example against the action's inputs, and the
action's own steps as the job of a reusable workflow with the same inputs (expressions, contexts,
shell scripts through shellcheck when it is installed).  A misspelled input shows the check bites."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACTIONLINT = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")


def _lint(project: Path, workflow: str) -> subprocess.CompletedProcess[str]:
    if not Path(ACTIONLINT).exists():
        pytest.fail("actionlint is not installed: pip install -e '.[dev]'", pytrace=False)
    return subprocess.run([ACTIONLINT, "-pyflakes=", workflow], cwd=project, capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(ROOT / "action.yml", tmp_path / "action.yml")
    return tmp_path


def test_example_workflow_passes_actionlint(project: Path) -> None:
    shutil.copy(ROOT / "examples" / "github-workflow.yml", project / ".github" / "workflows" / "gate.yml")
    proc = _lint(project, ".github/workflows/gate.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_action_steps_pass_actionlint(project: Path) -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    inputs = {name: {"type": "string", "required": False, "description": spec["description"]} for name, spec in action["inputs"].items()}
    workflow = {
        "name": "the action's steps",
        "on": {"workflow_call": {"inputs": inputs}},
        "jobs": {"action": {"runs-on": "ubuntu-latest", "steps": action["runs"]["steps"]}},
    }
    (project / ".github" / "workflows" / "action.yml").write_text(yaml.safe_dump(workflow, sort_keys=False))
    proc = _lint(project, ".github/workflows/action.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_misspelled_input(project: Path) -> None:
    text = (ROOT / "examples" / "github-workflow.yml").read_text().replace("suite: suites/demo.yaml", "suit: suites/demo.yaml")
    (project / ".github" / "workflows" / "gate.yml").write_text(text)
    proc = _lint(project, ".github/workflows/gate.yml")
    assert proc.returncode == 1
    assert 'missing input "suite"' in proc.stdout and 'input "suit" is not defined' in proc.stdout


def test_the_comment_is_found_again_by_the_report_marker() -> None:
    """The action finds its comment by the report's first line, which names the suite."""
    from harness_plugins.reporters.markdown import MARKER, render_markdown

    from harness.lib.resultdoc import result_document
    from harness.testing import synthetic_run

    script = next(s for s in yaml.safe_load((ROOT / "action.yml").read_text())["runs"]["steps"] if s.get("uses", "").startswith("actions/github-script"))
    assert 'body.split("\\n", 1)[0]' in script["with"]["script"] and "startsWith(marker)" in script["with"]["script"]
    first = render_markdown(result_document(synthetic_run(items=10, gates=2))).split("\n", 1)[0]
    assert first == MARKER.format(suite="synthetic") and first.startswith("<!--") and first.endswith("-->")

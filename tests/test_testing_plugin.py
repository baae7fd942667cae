"""``harness.testing``, the pytest plugin for plugin authors: documented, prefixed fixtures; the
fake model and backend; ``run_suite``."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import harness.testing
from harness.testing import run_suite
from harness.testing.fake_model import fake_model

ROOT = Path(__file__).resolve().parents[1]


def _declared_fixtures() -> set[str]:
    tree = ast.parse(Path(harness.testing.__file__).read_text())
    return {
        node.name for node in tree.body
        if isinstance(node, ast.FunctionDef) and any("fixture" in ast.unparse(d) for d in node.decorator_list)
    }


def test_pytest_fixtures_shows_a_docstring_for_every_harness_fixture(tmp_path: Path) -> None:
    (tmp_path / "test_empty.py").write_text("def test_nothing():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout
    section = out.split("fixtures defined from harness.testing", 1)[1]
    shown = dict(re.findall(r"^(\w+)(?: \[.*?\])? -- .*\n((?:    .*\n)+)", section, flags=re.M))
    declared = _declared_fixtures()
    assert declared and set(shown) == declared
    assert all(name.startswith("harness_") for name in declared)
    for name, doc in shown.items():
        assert "no docstring available" not in doc and len(doc.split()) >= 5, name


def test_the_fake_model_is_deterministic_and_generates() -> None:
    from harness.lib.generate import generate_ids, score_continuations

    a, b = fake_model(), fake_model()
    ids = a.tokenizer("Where is my parcel?", add_special_tokens=False)["input_ids"]
    assert score_continuations(a, [(ids[:3], ids[3:])]) == score_continuations(b, [(ids[:3], ids[3:])])
    assert score_continuations(fake_model(seed=1), [(ids[:3], ids[3:])]) != score_continuations(a, [(ids[:3], ids[3:])])
    [[generation]] = generate_ids(a, [ids], {"temperature": 0, "max_tokens": 4})
    assert 0 < len(generation.token_ids) <= 4


def test_run_suite_runs_a_suite_on_the_fake_backend(tmp_path: Path, harness_fake_model_dir: Path) -> None:
    suite = {"name": "fake", "model": {"source": str(harness_fake_model_dir), "backend": "fake"},
             "evaluate": {"mmlu": {"name": "mmlu", "per_subject": 1, "subjects": ["anatomy", "virology", "astronomy"]}}, "report": ["json"]}
    result = run_suite(suite, work_dir=tmp_path)
    assert result.exit_code == 0
    assert len(result.benchmarks["mmlu"]["baseline"].items) == 3
    assert list(tmp_path.glob("reports/*/result.json"))


def test_harness_register_plugin_adds_the_plugin_under_test(harness_register_plugin, harness_registries) -> None:
    from harness.testing import fake_model as module

    assert "fake" not in harness_registries["backend"]
    assert harness_register_plugin(module).get("backend", "fake").plugin == "harness.testing.fake_model"

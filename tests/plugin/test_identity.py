"""A component's code is part of every cache key (``harness.plugin.identity``): a plugin
installed in place whose scoring function is fixed serves fresh scores, not the cached ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.plugin.identity import code_identity

PLUGIN = '''
import harness
from harness.plugin.components import Benchmark
from harness.types import ItemResult

SCORE = {score}


class Constant(Benchmark):
    name = "constant"

    def items(self):
        return [{{"id": str(i)}} for i in range(3)]

    def evaluate(self, model, items, progress):
        return [ItemResult(item["id"], "x", "x", SCORE) for item in items]


@harness.hookimpl
def harness_register_benchmarks(registrar):
    registrar.add(Constant)
'''


def _install_in_place(site: Path, score: float) -> None:
    """A plugin on ``PYTHONPATH`` with its own dist-info, as ``pip install -e`` leaves one."""
    (site / "constant_plugin").mkdir(parents=True, exist_ok=True)
    (site / "constant_plugin" / "__init__.py").write_text(PLUGIN.format(score=score))
    info = site / "constant_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: constant-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness]\nconstant = constant_plugin\n")
    (info / "top_level.txt").write_text("constant_plugin\n")


def _run(site: Path, suite: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path]), "COLUMNS": "200"}
    args = ["run", str(suite), "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "reports")]
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env)


def test_editing_a_plugins_scoring_function_misses_the_cache(tmp_path, harness_write_suite, harness_tiny_model_dir):
    site = tmp_path / "site"
    _install_in_place(site, 0.0)
    suite = harness_write_suite({"name": "code-key", "model": str(harness_tiny_model_dir), "evaluate": {"c": "constant"}})

    first = _run(site, suite, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "c / baseline: accuracy 0.000 on 3 items\n" in first.stdout
    again = _run(site, suite, tmp_path)
    assert "accuracy 0.000 on 3 items (from cache)" in again.stdout

    _install_in_place(site, 1.0)  # the bug fix
    fixed = _run(site, suite, tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert "c / baseline: accuracy 1.000 on 3 items\n" in fixed.stdout  # scored again, not cached


def test_a_release_is_identified_by_its_version_and_a_checkout_by_its_source():
    release = code_identity("pluggy")
    assert release["distribution"] == "pluggy" and release["version"] and release["source"] is None
    builtin = code_identity("harness_plugins.benchmarks.mmlu")
    assert builtin["distribution"] == "finetune-harness"
    assert builtin["source"] is not None and len(builtin["source"]) == 64  # a checkout: its files count

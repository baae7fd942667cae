"""``run_suite``: run a suite in-process, as ``harness run`` would, and return its result."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from harness.types import RunResult


def write_suite_file(suite: Mapping[str, Any] | str, folder: Path, name: str = "suite.yaml") -> Path:
    """Write ``suite`` (a dict, or YAML text) as ``folder/name`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    text = suite if isinstance(suite, str) else yaml.safe_dump(dict(suite), sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def run_suite(
    suite: Mapping[str, Any] | str | Path,
    *,
    plugins: Iterable[tuple[str, object]] = (),
    work_dir: Path | None = None,
    use_cache: bool = False,
) -> RunResult:
    """Run ``suite`` (a path, a dict, or YAML text) with the built-ins, the fake backend
    (``model.backend: fake``) and ``plugins`` (``(name, module or object)`` pairs, e.g. the
    plugin under test), without installed entry points, so the test sees exactly what it names.

    Reports and the store go under ``work_dir`` (a new temporary folder by default); a dict or
    text suite is written there first, so relative paths in it are relative to ``work_dir``.
    Returns the ``RunResult``; its ``exit_code`` is the verdict (0 pass, 1 a gate failed, 3 a
    check errored).  Configuration errors raise the ``HarnessError`` the CLI would print.
    """
    from harness.lib.console import RunConsole
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries
    from harness.run.runner import Runner, RunOptions
    from harness.suite.config import load_suite
    from harness.testing import fake_model

    work = work_dir or Path(tempfile.mkdtemp(prefix="harness-run-"))
    path = Path(suite) if isinstance(suite, Path) else write_suite_file(suite, work)
    given = [("harness.testing.fake_model", fake_model), *plugins]
    pm = get_plugin_manager(load_entrypoints=False, plugins=given)
    options = RunOptions(reports_root=work / "reports", store_dir=work / "store", use_cache=use_cache)
    runner = Runner(load_suite(path), pm, Registries.from_plugin_manager(pm), RunConsole(), options)
    return runner.run()

"""Gates as pytest items: ``pytest --harness-suite suites/demo.yaml`` runs the suite once and
reports each gate as a test, so the gates land in a team's existing JUnit files and dashboards.

* ``pass`` passes; ``fail`` fails; ``error`` (the check could not run, or the run itself stopped
  on bad input) is a pytest error; ``inconclusive`` fails or passes as the suite's
  ``gating.inconclusive`` says; an advisory gate (``blocking: false``) that does not pass is
  skipped with its verdict, as in the harness's own ``junit.xml``.
* Items are collected from the suite file (its gates, and one per parity check when parity is
  gated), so ``--collect-only`` and ``-k`` cost nothing; the suite runs at the first item that
  needs it, once per session.  Each item carries ``verdict``, ``rule`` and ``run_id`` as JUnit
  properties.
* Items are marked ``harness_gate``: ``-m harness_gate`` selects only the gates.
* ``--harness-reports`` and ``--harness-store`` are ``harness run``'s ``--reports`` and ``--store``.
  A conftest may add harness plugins (e.g. benchmarks kept in the repository) by implementing the
  ``pytest_harness_plugins(config)`` hook, which returns ``(name, plugin)`` pairs.

Registered through ``harness.testing`` (the ``pytest11`` entry point).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.types import Decision, RunResult


class HarnessGateHooks:
    """Hooks this plugin adds to pytest."""

    @staticmethod
    @pytest.hookspec
    def pytest_harness_plugins(config: pytest.Config) -> list[tuple[str, object]]:
        """Harness plugins (``(name, plugin)`` pairs) to register for ``--harness-suite`` runs,
        besides the built-ins and installed entry points."""
        raise NotImplementedError  # a specification: pytest calls the implementations


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(HarnessGateHooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "finetune-harness gates")
    group.addoption("--harness-suite", action="append", default=[], metavar="SUITE",
                    help="run this harness suite once and collect each of its gates as a test (repeatable)")
    group.addoption("--harness-reports", default="reports", metavar="DIR", help="report root of the suite runs")
    group.addoption("--harness-store", default=None, metavar="DIR", help="store folder (default: the suite's)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "harness_gate: a gate of a --harness-suite run (-m harness_gate: only the gates)")


class SuiteFile(pytest.File):
    """A suite file whose gates are the items; runs the suite once, when first needed."""

    _outcome: RunResult | BaseException | None = None

    def collect(self) -> Iterator[GateItem]:
        from harness.suite.config import load_suite

        suite = load_suite(self.path).suite
        names = list(suite.gates)
        if suite.parity is not None and suite.parity.gate is not None:
            names += [f"parity.{label}" for label in suite.parity.checks]
        for name in names:
            item = GateItem.from_parent(self, name=name)
            item.add_marker("harness_gate")
            yield item

    def run_once(self) -> RunResult:
        if self._outcome is None:
            try:
                self._outcome = self._run()
            except Exception as exc:  # every gate of the suite reports it
                self._outcome = exc
        if isinstance(self._outcome, BaseException):
            pytest.fail(f"the suite did not run: {self._outcome}", pytrace=False)
        return self._outcome

    def _run(self) -> RunResult:
        from harness.lib.console import RunConsole, make_console
        from harness.plugin.manager import get_plugin_manager
        from harness.plugin.registry import Registries
        from harness.run.runner import Runner, RunOptions
        from harness.suite.config import load_suite

        config = self.config
        extra = [pair for pairs in config.hook.pytest_harness_plugins(config=config) for pair in pairs or ()]
        pm = get_plugin_manager(plugins=extra)
        store = config.getoption("harness_store")
        options = RunOptions(reports_root=Path(config.getoption("harness_reports")), store_dir=Path(store) if store else None)
        runner = Runner(load_suite(self.path), pm, Registries.from_plugin_manager(pm), RunConsole(make_console()), options)
        try:
            return runner.run()
        finally:
            runner.store.close()


class GateItem(pytest.Item):
    """One gate of a suite; its outcome is the gate's verdict."""

    parent: SuiteFile

    def setup(self) -> None:
        result = self.parent.run_once()
        decision = next((d for d in result.decisions if d.gate == self.name), None)
        if decision is None:
            pytest.fail(f"the run {result.run_id} made no decision for gate {self.name!r}", pytrace=False)
        self.decision: Decision = decision
        self.user_properties += [("verdict", decision.verdict.value), ("rule", decision.rule), ("run_id", result.run_id)]
        if decision.verdict.value == "error" and decision.blocking:
            # a failure while setting up is a pytest error, as the gate's verdict is
            pytest.fail(f"error: {decision.rule}: {decision.reason}", pytrace=False)

    def runtest(self) -> None:
        d, result = self.decision, self.parent.run_once()
        message = f"{d.verdict.value}: {d.rule}: {d.reason}"
        if d.verdict.value == "pass":
            return
        if not d.blocking:
            pytest.skip(f"advisory gate, {message}")
        if d.verdict.value == "fail" or result.inconclusive_fails:
            pytest.fail(message, pytrace=False)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"gate {self.name}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Add the gates of every ``--harness-suite`` before ``-k`` and ``-m`` select among items."""
    for suite in config.getoption("harness_suite"):
        path = Path(suite).resolve()
        if not path.is_file():
            raise pytest.UsageError(f"--harness-suite {suite}: no such file")
        suite_file = SuiteFile.from_parent(session, path=path)
        try:
            gates = list(suite_file.collect())
        except HarnessError as exc:
            raise pytest.UsageError(f"--harness-suite {suite}: {exc}") from None
        # reported like any collected file, so the terminal's counts include the gates
        config.hook.pytest_collectreport(report=pytest.CollectReport(suite_file.nodeid, "passed", None, [*gates]))
        items.extend(gates)

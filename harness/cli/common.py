"""What several subcommands share: building the plugin manager and registries, loading a suite."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.plugin.manager import HarnessPluginManager
    from harness.plugin.registry import Registries
    from harness.suite.config import LoadedSuite


def registries() -> Registries:
    """The registries of every installed plugin (built-ins and entry points)."""
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries

    return Registries.from_plugin_manager(get_plugin_manager())


def load(suite_path: Path) -> tuple[LoadedSuite, HarnessPluginManager, Registries]:
    """A suite with the plugin manager and registries it runs with."""
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries
    from harness.suite.config import load_suite

    pm = get_plugin_manager()
    registries = Registries.from_plugin_manager(pm)
    return load_suite(suite_path), pm, registries

"""What several subcommands share: building the plugin manager and registries, loading a suite.

Whether a broken third-party plugin stops a command is decided once per process by ``main``
(``--strict-plugins``, the default when the ``CI`` environment variable is set): a skipped
plugin is printed as one warning line naming it and its distribution.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.lib.store import Store
    from harness.plugin.manager import HarnessPluginManager
    from harness.plugin.registry import Registries
    from harness.suite.config import LoadedSuite

_STRICT: list[bool] = []


def set_strict_plugins(value: bool | None) -> bool:
    """``--strict-plugins`` / ``--no-strict-plugins``, else strict in CI (``CI`` set and not
    ``false``/``0``); returns the setting."""
    if value is None:
        value = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    _STRICT[:] = [value]
    return value


def strict_plugins() -> bool:
    return _STRICT[0] if _STRICT else set_strict_plugins(None)


def plugin_manager() -> HarnessPluginManager:
    """The plugin manager of every installed plugin; skipped plugins are warned about."""
    from harness.plugin.manager import get_plugin_manager

    return get_plugin_manager(strict=strict_plugins())


def _warn_skipped(pm: HarnessPluginManager) -> None:
    from harness.lib.console import screen_stderr

    for line in pm.skipped:
        print(f"harness: warning: {line}", file=screen_stderr())
    pm.skipped.clear()


def registries() -> Registries:
    """The registries of every installed plugin (built-ins and entry points)."""
    return load_plugins()[1]


def load_plugins() -> tuple[HarnessPluginManager, Registries]:
    from harness.plugin.registry import Registries

    pm = plugin_manager()
    registries = Registries.from_plugin_manager(pm)
    _warn_skipped(pm)
    return pm, registries


def load(suite_path: Path) -> tuple[LoadedSuite, HarnessPluginManager, Registries]:
    """A suite with the plugin manager and registries it runs with."""
    from harness.suite.config import load_suite

    pm, registries = load_plugins()
    return load_suite(suite_path), pm, registries


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """``--store DIR`` or ``--suite SUITE``: which store holds the runs (history commands)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--store", type=Path, help="store folder (a suite's '.harness' folder by default)")
    group.add_argument("--suite", type=Path, help="the suite whose store to read (its 'store:' key, else '.harness' beside it)")


def open_store(args: argparse.Namespace) -> Store:
    """The existing store that ``--store`` or ``--suite`` names (``./.harness`` when neither);
    a one-line error when there is none, rather than an empty new one."""
    from harness.errors import ConfigError
    from harness.lib.store import Store
    from harness.suite.config import load_suite

    if args.store is not None:
        root = args.store
    elif args.suite is not None:
        loaded = load_suite(args.suite)
        root = loaded.dir / (loaded.suite.store or ".harness")
    else:
        root = Path(".harness")
    if not (root / "store.sqlite").is_file():
        raise ConfigError(f"{root}: no harness store here; name one with --store DIR or --suite SUITE")
    return Store(root)

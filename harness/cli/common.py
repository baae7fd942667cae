"""What several subcommands share: building the plugin manager and registries, loading a suite."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.lib.store import Store
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

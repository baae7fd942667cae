"""``harness plugins``: every registered component with its kind and origin."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

NAME = "plugins"
HELP = "list every component with its kind and origin"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.cli.common import registries

    table = Table(title="Components")
    for column in ("kind", "name", "plugin", "distribution", "description"):
        table.add_column(column)
    for info in registries().all():
        table.add_row(info.kind, info.name, info.plugin, info.distribution, info.cls.description)
    console.print(table)
    return 0

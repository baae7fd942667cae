"""``harness new-plugin NAME --kind KIND``: generate a plugin package to start from.

The package installs with pip, registers its component through the ``harness`` entry-point
group, and passes its own tests as generated: a module with the hook implementation and a typed
config, ``tests/`` using the ``harness.testing`` fixtures and contract checks, a README and a
``pyproject.toml`` (see ``harness.tools.scaffold``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from harness.tools.scaffold import KINDS, generate

NAME = "new-plugin"
HELP = "generate a plugin package (filter, benchmark, trainer, reporter, parity, backend) to start from"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the package's name, e.g. 'harness-banned-words' (lower case, digits, - or _)")
    parser.add_argument("--kind", required=True, choices=sorted(KINDS), help="the component the package starts with")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where to create the package's folder (default: here)")


def run(args: argparse.Namespace, console: Console) -> int:
    folder = generate(args.name, args.kind, args.dir)
    console.print(f"created {folder} ({args.kind} plugin); next: pip install -e {folder} && pytest {folder}")
    return 0

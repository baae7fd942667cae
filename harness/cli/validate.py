"""``harness validate SUITE``: the run plan, without running anything.

Every component is built and every check that needs no work runs (the same ``plan_run`` that
``harness run`` executes), so a suite that validates fails later only on what needs work to know.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

NAME = "validate"
HELP = "check a suite and its components without running"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", type=Path)


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.cli.common import load
    from harness.run.plan import plan_run

    loaded, _pm, registries = load(args.suite)
    plan = plan_run(loaded, registries, loaded.dir / ".harness" / "work")
    for note in plan.notes:
        console.print(f"{args.suite}: warning: {note}", markup=False)
    console.print(f"{args.suite}: valid", markup=False)
    return 0

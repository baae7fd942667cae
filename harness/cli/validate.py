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
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="report root folder the run would write")
    parser.add_argument("--store", type=Path, help="store folder the run would use (default: the suite's)")


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.cli.common import load
    from harness.cli.power import report_power
    from harness.run.plan import plan_run
    from harness.run.power import gate_power

    loaded, _pm, registries = load(args.suite)
    store = args.store or loaded.dir / (loaded.suite.store or ".harness")
    plan = plan_run(loaded, registries, store / "work", reports_dir=args.reports, store_dir=store)
    for note in plan.notes:
        console.print(f"{args.suite}: warning: {note}", markup=False)
    code = report_power(args.suite, gate_power(loaded, plan, store), loaded.suite.gating.require_power, console)
    if code:
        return code
    console.print(f"{args.suite}: valid", markup=False)
    return 0

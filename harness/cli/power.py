"""``harness power SUITE``: per gate, the smallest detectable effect at its sample size and the
sample size 80% power at its margin needs (see ``harness.run.power``); nothing is run."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from harness.errors import EXIT_BAD_INPUT
from harness.run.power import GatePower

NAME = "power"
HELP = "what each gate can detect at its sample size, and the size its margin needs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", type=Path)
    parser.add_argument("--store", type=Path, help="store whose cached baseline scores to use (default: the suite's)")


def report_power(suite: Path, rows: Sequence[GatePower], require_power: bool, console: Console) -> int:
    """Print one line per gate and a warning (an error under ``require_power``) for each
    blocking gate that cannot reach its margin; the exit code (0, or 2 under ``require_power``)."""
    short = [r for r in rows if r.blocking and not r.reaches_margin]
    for row in rows:
        console.print(f"{suite}: power: {row.line()}", markup=False)
    level = "error" if require_power else "warning"
    for row in short:
        console.print(
            f"{suite}: {level}: blocking gate {row.gate!r} cannot reach its margin {row.margin:g} on {row.n} items "
            f"(detects >= {row.detectable:.3f}); it needs "
            + (f"{row.needed} items" if row.needed is not None else "a baseline off the floor/ceiling or a margin above 0"),
            markup=False,
        )
    return EXIT_BAD_INPUT if short and require_power else 0


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.cli.common import load
    from harness.run.plan import plan_run
    from harness.run.power import gate_power

    loaded, _pm, registries = load(args.suite)
    store = args.store or loaded.dir / (loaded.suite.store or ".harness")
    plan = plan_run(loaded, registries, store / "work", store_dir=store)
    return report_power(args.suite, gate_power(loaded, plan, store), loaded.suite.gating.require_power, console)

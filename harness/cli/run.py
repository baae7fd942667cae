"""``harness run SUITE``: curate, train, evaluate, check parity, gate and report a suite."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

NAME = "run"
HELP = "curate, train, evaluate, check parity, gate and report a suite"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", type=Path)
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="report root folder")
    parser.add_argument("--store", type=Path, help="store folder (default: the suite's)")
    parser.add_argument("--no-cache", action="store_true", help="recompute everything")


def run(args: argparse.Namespace, console: Console, only_parity: bool = False) -> int:
    from harness.cli.common import load
    from harness.lib.console import RunConsole, library_output_to
    from harness.lib.interrupt import recording
    from harness.run.runner import Runner, RunOptions

    loaded, pm, registries = load(args.suite)
    options = RunOptions(
        reports_root=args.reports,
        store_dir=args.store,
        use_cache=not args.no_cache,
        only_parity=only_parity,
    )
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    runner = Runner(loaded, pm, registries, RunConsole(console, quiet=quiet), options)
    try:
        with recording(runner.store, runner.run_id):
            if verbose:
                return runner.run().exit_code
            with library_output_to(runner.report_dir / "run.log", console) as log:
                code = runner.run().exit_code
            if log is not None and not quiet:
                runner.console.stage("log", f"library output: {log}")
            return code
    finally:
        runner.store.close()

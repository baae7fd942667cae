"""``harness run SUITE``: curate, train, evaluate, check parity, gate and report a suite.

``--shard i/N`` evaluates only item shard ``i`` of ``N`` into the store and stops (no gates, no
reports); ``--shards N`` launches ``N`` such workers on this machine (one per GPU where there are
GPUs), waits for them, and then runs the suite, which reuses every item they scored and gates.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from harness.lib.shards import Shard

NAME = "run"
HELP = "curate, train, evaluate, check parity, gate and report a suite"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", type=Path)
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="report root folder")
    parser.add_argument("--store", type=Path, help="store folder (default: the suite's)")
    parser.add_argument("--no-cache", action="store_true", help="recompute everything")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    shards = parser.add_mutually_exclusive_group()
    shards.add_argument(
        "--shard", metavar="I/N",
        help="evaluate only item shard I of N (numbered from 0) into the store, then stop without gating; "
        "a later run without --shard reuses the items and gates",
    )  # fmt: skip
    shards.add_argument(
        "--shards", type=int, metavar="N",
        help="launch N local --shard workers (one per visible GPU), wait for them, then gate",
    )  # fmt: skip


def run(args: argparse.Namespace, console: Console, only_parity: bool = False) -> int:
    from harness.errors import ConfigError

    shards = getattr(args, "shards", None)
    if shards is not None:
        if shards < 1:
            raise ConfigError(f"--shards {shards}: expected 1 or more workers")
        _launch_shards(args, console, shards)
        args.no_cache = False  # the workers just scored the items: gather them, do not redo them
    shard = getattr(args, "shard", None)
    return _run_suite(args, console, only_parity, Shard.parse(shard) if shard else None)


def _launch_shards(args: argparse.Namespace, console: Console, count: int) -> None:
    """Run ``count`` shard workers to the end; a worker that fails is reported with its log, and
    the gathering run then scores whatever that shard left (nothing is lost, only parallelism)."""
    from harness.lib.console import RunConsole
    from harness.run.shards import WorkerExit, plan_workers, run_workers, self_command

    lines = RunConsole(console, quiet=getattr(args, "quiet", False))

    run_args = ["run", str(args.suite), "--reports", str(args.reports)]
    run_args += ["--store", str(args.store)] if args.store is not None else []
    run_args += ["--no-cache"] if args.no_cache else []
    log_dir = args.reports / f"shards-{time.strftime('%Y%m%d-%H%M%S')}"
    workers = plan_workers(self_command(getattr(args, "argv", [])), run_args, count, log_dir)
    pins = ", ".join(f"{w.shard}: {k}={v}" for w in workers for k, v in w.env.items())
    lines.stage("shards", f"{count} workers{f' ({pins})' if pins else ''}; logs in {log_dir}")

    def ended(done: WorkerExit) -> None:
        ok = done.exit_code == 0
        tail = "" if ok else f"; see {done.worker.log}"
        lines.stage("shards", f"{done.worker.shard}: exit {done.exit_code} after {done.seconds:.0f} s{tail}", "" if ok else "red")

    exits = run_workers(workers, ended)
    failed = [e for e in exits if e.exit_code != 0]
    if failed:
        lines.stage("shards", f"{len(failed)} of {count} workers failed: this run scores what they left", "yellow")


def _run_suite(args: argparse.Namespace, console: Console, only_parity: bool, shard: Shard | None) -> int:
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
        shard=shard,
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

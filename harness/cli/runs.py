"""``harness runs``: the runs a store holds, oldest first, with their exit codes and reports."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

NAME = "runs"
HELP = "list past runs from the store (for harness report and harness compare)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.cli.common import add_store_arguments

    add_store_arguments(parser)
    parser.add_argument("--name", help="only runs of the suite with this name")
    parser.add_argument("--last", type=int, default=20, help="show the last N runs (0: all)")


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S") if timestamp else "-"


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.cli.common import open_store

    store = open_store(args)
    try:
        runs = store.list_runs(args.name)
    finally:
        store.close()
    shown = runs[-args.last :] if args.last else runs
    table = Table(title=f"Runs in {store.root} ({len(shown)} of {len(runs)})")
    for column in ("run", "suite", "started (UTC)", "duration", "exit", "stored report", "report folder"):
        table.add_column(column)
    for r in shown:
        duration = f"{r['finished'] - r['started']:.0f}s" if r["finished"] else "-"
        exit_code = "-" if r["exit_code"] is None else str(r["exit_code"])
        table.add_row(
            r["run_id"], escape(r["suite"]), _when(r["started"]), duration, exit_code,
            "yes" if r["has_result"] else "no", escape(r["report_dir"] or "-"),
        )
    console.print(table)
    return 0

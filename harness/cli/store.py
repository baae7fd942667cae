"""``harness store check|repair PATH``: check a store, or set a broken one aside and start anew.

``PATH`` is a store folder (what ``--store`` names), its ``store.sqlite``, or a suite file (its
store).  ``check`` exits 0 when the store is usable and 2 when it is not (each problem on a line,
then the fix); ``repair`` moves the file aside with a timestamp, starts a new one and keeps what
still verifies (see ``harness.lib.storehealth``).  Run either one while no run uses the store.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from harness.errors import EXIT_BAD_INPUT, EXIT_OK

NAME = "store"
HELP = "check a store, or repair a broken one (keeping what still verifies)"
DESCRIPTION = (
    "check: read the store (integrity, tables, the trainings it names) and exit 0 if it is usable, "
    "2 if not. repair: move store.sqlite aside as store.sqlite.corrupt-<time>, start a new one and "
    "keep the rows and trainings that still verify, so the next run reuses them. PATH is a store "
    "folder, its store.sqlite, or a suite file. Run either while no run uses the store."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("check", "repair"), help="check: read only; repair: set the file aside, start anew")
    parser.add_argument("path", type=Path, help="store folder, its store.sqlite, or a suite file")


def store_root(path: Path) -> Path:
    """The store folder ``path`` names (a folder, its ``store.sqlite``, or a suite's store)."""
    from harness.lib.store import DB_NAME

    if path.name == DB_NAME or path.name.startswith(f"{DB_NAME}.corrupt-"):
        return path.parent
    if path.suffix.lower() in {".yaml", ".yml"} and path.is_file():
        from harness.suite.config import load_suite

        loaded = load_suite(path)
        return loaded.dir / loaded.suite.store if loaded.suite.store else loaded.dir / ".harness"
    return path


def run(args: argparse.Namespace, console: Console) -> int:
    root = store_root(args.path)
    return _repair(root, console) if args.action == "repair" else _check(root, console)


def _check(root: Path, console: Console) -> int:
    from harness.lib.store import repair_hint
    from harness.lib.storehealth import check

    health = check(root)
    for line in health.stale:
        console.print(f"{escape(str(health.path))}: note: {escape(line)}")
    if health.ok:
        counts = ", ".join(f"{n} {table}" for table, n in health.counts.items())
        console.print(f"{escape(str(health.path))}: ok ({counts})")
        return EXIT_OK
    for problem in health.problems:
        console.print(f"{escape(str(health.path))}: {escape(problem)}")
    console.print(f"fix: {escape(repair_hint(root.resolve()))}")
    return EXIT_BAD_INPUT


def _repair(root: Path, console: Console) -> int:
    from harness.lib.storehealth import repair

    report = repair(root)
    if report.moved_to is not None:
        console.print(f"{escape(str(report.path))}: moved aside to {escape(report.moved_to.name)}")
    kept = ", ".join(f"{n} {table}" for table, n in report.kept.items() if n)
    console.print(
        f"{escape(str(report.path))}: new store; kept {kept or 'no rows'} from the old file"
        f" and {report.reindexed} training{'s' if report.reindexed != 1 else ''} from their artifacts"
    )
    return EXIT_OK

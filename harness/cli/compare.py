"""``harness compare RUN_A RUN_B``: what changed from one stored run to another: gate verdicts,
benchmark scores, and the items whose score flipped (same benchmark, same model, same item)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

NAME = "compare"
HELP = "what changed between two stored runs: verdicts, scores, items that flipped"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.cli.common import add_store_arguments

    parser.add_argument("run_a", help="the earlier run (id, unique prefix or suffix, or 'latest')")
    parser.add_argument("run_b", help="the later run")
    parser.add_argument("--limit", type=int, default=50, help="flipped items shown (0: all)")
    add_store_arguments(parser)


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _answer(item: dict[str, Any]) -> str:
    return escape(f"{' '.join(str(item['prediction']).split())[:60]} ({item['score']:.3g})")


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.cli.common import open_store
    from harness.lib.reportview import compare_runs

    store = open_store(args)
    try:
        from harness.lib.resultdoc import load_document

        a, b = load_document(store, args.run_a), load_document(store, args.run_b)
    finally:
        store.close()
    diff = compare_runs(a, b)
    console.print(f"A: {a['run_id']} (exit {a['exit_code']})\nB: {b['run_id']} (exit {b['exit_code']})")
    table = Table(title="Gate verdicts")
    for column in ("gate", "A", "B", ""):
        table.add_column(column)
    for gate, va, vb in diff.decisions:
        table.add_row(escape(gate), va or "-", vb or "-", "[bold]changed[/]" if va != vb else "")
    console.print(table)
    table = Table(title="Scores")
    for column in ("benchmark", "model", "A", "B", "B - A"):
        table.add_column(column)
    for label, model, sa, sb in diff.scores:
        delta = f"{sb - sa:+.4f}" if sa is not None and sb is not None else "-"
        table.add_row(escape(label), model, _score(sa), _score(sb), delta)
    console.print(table)
    shown = diff.flips[: args.limit] if args.limit else diff.flips
    table = Table(title=f"Items that flipped: {len(diff.flips)}" + (f" (first {len(shown)})" if len(shown) < len(diff.flips) else ""))
    for column in ("benchmark", "model", "item", "reference", "A", "B"):
        table.add_column(column)
    for f in shown:
        table.add_row(escape(f.benchmark), f.model, escape(f.item_id), escape(f.reference[:40]), _answer(f.a), _answer(f.b))
    console.print(table)
    for (label, model), n in diff.unpaired.items():
        console.print(f"{label} / {model}: {n} items are in only one of the runs (not compared)")
    return 0

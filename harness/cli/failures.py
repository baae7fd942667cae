"""``harness failures RUN``: the held-out items a stored run's candidate got wrong, grouped by
category (or MiniLM topic), with counts and examples, written as a work list in the training
format for annotation and ``harness curate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

NAME = "failures"
HELP = "export the held-out items a stored run's candidate got wrong, grouped, as a training-format work list"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.cli.common import add_store_arguments

    parser.add_argument("run", help="run id (or a unique prefix or suffix, or 'latest'); see harness runs")
    parser.add_argument(
        "--benchmark", action="append", dest="benchmarks", metavar="LABEL", default=[],
        help="only this benchmark (repeatable; default: every benchmark with 0/1 item scores)",
    )
    parser.add_argument("--model", default="candidate", help="whose failures: candidate (default) or baseline")
    parser.add_argument("--clusters", type=int, default=8, help="MiniLM topic clusters for items without a category")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clustering")
    parser.add_argument("--examples", type=int, default=2, help="examples shown per group")
    parser.add_argument("--out", type=Path, help="the work list (JSONL; default: reports/RUN_ID/failures.jsonl)")
    add_store_arguments(parser)


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.cli.common import open_store
    from harness.errors import ConfigError
    from harness.lib.resultdoc import load_document
    from harness.tools.failures import collect_failures, group_failures, group_summary, work_records, write_jsonl

    if args.clusters < 1:
        raise ConfigError("harness failures: --clusters must be at least 1")
    store = open_store(args)
    try:
        doc = load_document(store, args.run)
    finally:
        store.close()
    failures = collect_failures(doc, args.benchmarks, args.model)
    groups = group_failures(failures, args.clusters, args.seed)
    out = args.out or Path("reports") / doc["run_id"] / "failures.jsonl"
    write_jsonl(out, work_records(doc["run_id"], groups))
    table = Table(title=f"Items the {args.model} got wrong in {doc['run_id']}: {len(failures)} in {len(groups)} group(s)")
    for column in ("group", "wrong", "regressions", "examples (prompt -> answer, expected)"):
        table.add_column(column)
    for row in group_summary(groups, args.examples):
        examples = "\n".join(f"{e['prompt']} -> {e['prediction']!r}, expected {e['reference']!r}" for e in row["examples"])
        table.add_row(escape(row["group"]), str(row["count"]), str(row["regressions"]), escape(examples))
    console.print(table)
    console.print(f"wrote {out} ({len(failures)} records, messages format): annotate, then harness curate {out}")
    return 0

"""``harness invariance SUITE --batch-sizes 1,8``: the suite's model scores the same items at each
batch size; any changed prediction, or log-probability beyond the tolerance, is reported with the
items (see ``harness.run.invariance``).  Exit 1 when a benchmark is not batch-invariant."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

NAME = "invariance"
HELP = "score the same items at batch size 1 and N and report any item whose result changes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", type=Path)
    parser.add_argument("--benchmarks", help="labels under the suite's 'evaluate' (default: all)")
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated; each is compared with the first (default: 1,8)")
    parser.add_argument("--limit", type=int, help="first N items of each benchmark")
    parser.add_argument(
        "--tolerance", type=float,
        help="largest tolerated log-probability difference in nats (default by precision: 0.001 in float32, 1.0 in bfloat16)",
    )  # fmt: skip


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.cli.common import load
    from harness.run.invariance import parse_batch_sizes, run_invariance

    sizes = parse_batch_sizes(args.batch_sizes)
    loaded, _pm, registries = load(args.suite)
    benchmarks = [b.strip() for b in args.benchmarks.split(",")] if args.benchmarks else None
    store = loaded.dir / (loaded.suite.store or ".harness")
    findings = run_invariance(loaded, registries, store / "work", benchmarks, sizes, args.limit, args.tolerance)
    for finding in findings:
        console.print(finding.line(), markup=False)
        if finding.affected:
            shown = ", ".join(finding.affected[:10])
            more = f" (and {len(finding.affected) - 10} more)" if len(finding.affected) > 10 else ""
            console.print(f"  items: {shown}{more}", markup=False)
    return 0 if all(f.invariant for f in findings) else 1

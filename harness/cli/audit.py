"""``harness audit``: what a data set (or a suite's curated data) looks like before training:
category balance, topics, duplicates, lengths and format."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

NAME = "audit"
HELP = "audit a data set (or a suite's curated data): balance, topics, duplicates, lengths, format"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=Path, metavar="DATA_OR_SUITE", help="a suite (.yaml), a data file or an hf_disk folder")
    parser.add_argument("--format", help="reader for a data file (default: by suffix; a folder is hf_disk)")
    parser.add_argument("--category-column", help="column (or JSON key) holding each record's category")
    parser.add_argument("--min-share", type=float, help="flag categories below this share (default: half the uniform share)")
    parser.add_argument("--user", help="user-turn template over the columns (csv, parquet, hf_disk)")
    parser.add_argument("--assistant", help="assistant-turn template over the columns")
    parser.add_argument("--system", help="optional system-turn template over the columns")
    parser.add_argument("--clusters", type=int, default=12, help="KMeans topic clusters; 0 skips embedding")
    parser.add_argument("--sample", type=int, help="embed a seeded sample of this many records (other measures use all)")
    parser.add_argument("--seed", type=int, help="seed of the sample and KMeans (default: the suite's, else 0)")
    parser.add_argument("--tokenizer", type=Path, help="local tokenizer folder, for lengths in tokens")
    parser.add_argument("--out", type=Path, default=Path("reports/audit"), help="folder for audit.json")


def run(args: argparse.Namespace, console: Console) -> int:
    """Audit a suite's curated data (its curate stage, filters included) or one data file read
    with the named reader, so problems in the data show before any training is paid for."""
    from harness.tools.audit import (
        audit,
        guess_format,
        load_tokenizer,
        read_categories,
        read_data,
        render,
    )
    from harness.lib.console import RunConsole
    from harness.cli import common

    registries = common.registries()
    categories: dict[str, str] | None = {} if args.category_column else None
    if args.target.suffix.lower() in {".yaml", ".yml"}:
        from harness.suite.config import load_suite
        from harness.run.plan import curate_suite as curate

        loaded = load_suite(args.target)
        seed = loaded.suite.seed if args.seed is None else args.seed
        outcome = curate(loaded, registries, args.out)
        records, quarantined = outcome.records, outcome.ledger.quarantined
        for i, src in enumerate(loaded.suite.data if categories is not None else ()):
            if categories is not None:
                path = loaded.resolve_path(src.path, ("data", i, "path"))
                categories.update(read_categories(path, src.path, src.format, args.category_column, src.options))
    else:
        seed = args.seed or 0
        fmt = args.format or guess_format(args.target)
        options = {k: getattr(args, k) for k in ("user", "assistant", "system") if getattr(args, k) is not None}
        source = str(args.target)
        records, quarantined = read_data(registries, args.target, source, fmt, options)
        if categories is not None:
            categories = read_categories(args.target, source, fmt, args.category_column, options)
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    with RunConsole(console).progress("audit") as progress:
        report = audit(
            records,
            categories=categories,
            min_share=args.min_share,
            clusters=args.clusters,
            seed=seed,
            embed_sample=args.sample,
            tokenizer=tokenizer,
            quarantined=quarantined,
            source=str(args.target),
            progress=progress,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "audit.json").write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
    render(report, console)
    console.print(f"audit written to {args.out / 'audit.json'}")
    return 0


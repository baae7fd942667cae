"""The ``harness`` command line.

Exit codes: 0 all gates pass, 1 a gate failed (or was inconclusive, as the suite says), 2 bad
input (config, data, plugins), 3 a check errored.  Expected problems are printed as one line,
without a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import __version__
from harness.console import make_console
from harness.errors import EXIT_CHECK_ERRORED, HarnessError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="curate, train, evaluate, gate and report a suite")
    run.add_argument("suite", type=Path)
    run.add_argument("--reports", type=Path, default=Path("reports"), help="report root folder")
    run.add_argument("--store", type=Path, help="store folder (default: the suite's)")
    run.add_argument("--no-cache", action="store_true", help="recompute everything")
    par = sub.add_parser("parity", help="run only the parity stage: offline pipeline vs production")
    par.add_argument("suite", type=Path)
    par.add_argument("--reports", type=Path, default=Path("reports"), help="report root folder")
    par.add_argument("--store", type=Path, help="store folder (default: the suite's)")
    par.add_argument("--no-cache", action="store_true", help="recompute everything")
    check = sub.add_parser("validate", help="check a suite and its components without running")
    check.add_argument("suite", type=Path)
    cur = sub.add_parser("curate", help="run only the curate stage and write the curated set")
    cur.add_argument("suite", type=Path)
    cur.add_argument("--out", type=Path, default=Path("reports/curated"))
    sub.add_parser("plugins", help="list every component with its kind and origin")
    aud = sub.add_parser(
        "audit",
        help="audit a data set (or a suite's curated data): balance, topics, duplicates, lengths, format",
    )
    aud.add_argument("target", type=Path, metavar="DATA_OR_SUITE", help="a suite (.yaml), a data file or an hf_disk folder")
    aud.add_argument("--format", help="reader for a data file (default: by suffix; a folder is hf_disk)")
    aud.add_argument("--category-column", help="column (or JSON key) holding each record's category")
    aud.add_argument("--min-share", type=float, help="flag categories below this share (default: half the uniform share)")
    aud.add_argument("--user", help="user-turn template over the columns (csv, parquet, hf_disk)")
    aud.add_argument("--assistant", help="assistant-turn template over the columns")
    aud.add_argument("--system", help="optional system-turn template over the columns")
    aud.add_argument("--clusters", type=int, default=12, help="KMeans topic clusters; 0 skips embedding")
    aud.add_argument("--sample", type=int, help="embed a seeded sample of this many records (other measures use all)")
    aud.add_argument("--seed", type=int, help="seed of the sample and KMeans (default: the suite's, else 0)")
    aud.add_argument("--tokenizer", type=Path, help="local tokenizer folder, for lengths in tokens")
    aud.add_argument("--out", type=Path, default=Path("reports/audit"), help="folder for audit.json")
    return parser


def _plugins(console: Console) -> int:
    from harness.plugins import get_plugin_manager
    from harness.registry import Registries

    registries = Registries.from_plugin_manager(get_plugin_manager())
    table = Table(title="Components")
    for column in ("kind", "name", "plugin", "distribution", "description"):
        table.add_column(column)
    for info in registries.all():
        table.add_row(info.kind, info.name, info.plugin, info.distribution, info.cls.description)
    console.print(table)
    return 0


def _setup(suite_path: Path):
    from harness.config import load_suite
    from harness.plugins import get_plugin_manager
    from harness.registry import Registries

    pm = get_plugin_manager()
    registries = Registries.from_plugin_manager(pm)
    return load_suite(suite_path), pm, registries


def _validate(args: argparse.Namespace, console: Console) -> int:
    from harness.components import RunContext
    from harness.config import ComponentRef, build_component

    loaded, _pm, registries = _setup(args.suite)
    suite = loaded.suite
    ctx = RunContext(loaded.dir, loaded.dir / ".harness" / "work", suite.seed)
    build_component(registries, "backend", ComponentRef(name=suite.model.backend), ("model",), loaded, ctx)
    for i, src in enumerate(suite.data):
        reader = ComponentRef(name=src.format, options=src.options)
        build_component(registries, "reader", reader, ("data", i, "format"), loaded, ctx, ("data", i))
    for i, ref in enumerate(suite.curate.filters):
        build_component(registries, "filter", ref, ("curate", "filters", i), loaded, ctx)
    if suite.train:
        build_component(registries, "trainer", suite.train, ("train",), loaded, ctx)
    for label, ref in suite.evaluate.items():
        build_component(registries, "benchmark", ref, ("evaluate", label), loaded, ctx)
    for i, ref in enumerate(suite.report):
        build_component(registries, "reporter", ref, ("report", i), loaded, ctx)
    if suite.parity:
        from harness.parity.stage import plan_parity

        plan_parity(loaded, registries, ctx)
    console.print(f"{args.suite}: valid")
    return 0


def _curate(args: argparse.Namespace, console: Console) -> int:
    from harness.components import RunContext
    from harness.curate import curate

    loaded, _pm, registries = _setup(args.suite)
    ctx = RunContext(loaded.dir, args.out, loaded.suite.seed)
    outcome = curate(loaded, registries, ctx)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "curated.jsonl").open("w", encoding="utf-8") as fh:
        for record in outcome.records:
            fh.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
    (args.out / "ledger.json").write_text(json.dumps(outcome.ledger.to_json(), indent=2))
    for stage in outcome.ledger.stages:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(stage.reasons.items()))
        console.print(
            f"{stage.name}: in {stage.n_in} = kept {stage.kept} + dropped {stage.dropped} "
            f"+ quarantined {stage.quarantined}" + (f" ({reasons})" if reasons else "")
        )
    console.print(f"{len(outcome.records)} records written to {args.out / 'curated.jsonl'}")
    return 0


def _audit(args: argparse.Namespace, console: Console) -> int:
    """Audit a suite's curated data (its curate stage, filters included) or one data file read
    with the named reader, so problems in the data show before any training is paid for."""
    from harness.audit import (
        audit,
        guess_format,
        load_tokenizer,
        read_categories,
        read_data,
    )
    from harness.console import RunConsole
    from harness.plugins import get_plugin_manager
    from harness.registry import Registries

    registries = Registries.from_plugin_manager(get_plugin_manager())
    categories: dict[str, str] | None = {} if args.category_column else None
    if args.target.suffix.lower() in {".yaml", ".yml"}:
        from harness.components import RunContext
        from harness.config import load_suite
        from harness.curate import curate

        loaded = load_suite(args.target)
        seed = loaded.suite.seed if args.seed is None else args.seed
        outcome = curate(loaded, registries, RunContext(loaded.dir, args.out, loaded.suite.seed))
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
    report.render(console)
    console.print(f"audit written to {args.out / 'audit.json'}")
    return 0


def _run(args: argparse.Namespace, console: Console) -> int:
    from harness.console import RunConsole
    from harness.runner import Runner, RunOptions

    loaded, pm, registries = _setup(args.suite)
    options = RunOptions(
        reports_root=args.reports,
        store_dir=args.store,
        use_cache=not args.no_cache,
        only_parity=args.command == "parity",
    )
    runner = Runner(loaded, pm, registries, RunConsole(console), options)
    try:
        return runner.run().exit_code
    finally:
        runner.store.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # The libraries' own progress bars (tqdm) would interleave with ours; read at their import.
    os.environ.setdefault("TQDM_DISABLE", "1")
    console = make_console()
    commands = {"run": _run, "parity": _run, "validate": _validate, "curate": _curate, "audit": _audit}
    try:
        if args.command == "plugins":
            return _plugins(console)
        return commands[args.command](args, console)
    except HarnessError as exc:
        if args.debug:
            raise
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return EXIT_CHECK_ERRORED
    except Exception as exc:  # an unexpected failure is a check that errored, never a pass
        if args.debug:
            raise
        print(f"harness: error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_CHECK_ERRORED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


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
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from harness import __version__
from harness.lib.console import make_console
from harness.errors import EXIT_CHECK_ERRORED, ConfigError, DataError, HarnessError

if TYPE_CHECKING:
    from harness.stages.curate import FilterStep
    from harness.plugin.registry import Registries

DEFAULT_MAX_QUARANTINED = 0.05
"""Largest malformed share of a data file or log (a suite's default, curate.max_quarantined_fraction)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="curate, train, evaluate, check parity, gate and report a suite")
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
    cur = sub.add_parser(
        "curate",
        help="curate a suite's data, a data file, or a production log (--from-log) into a curated set",
        description="Curate a suite's data (its curate stage), a data file (default filter chain "
        "unless --filters), or a production chat log (--from-log, appended to OUT/curated.jsonl). "
        "Writes curated.jsonl, quarantine.jsonl, ledger.json and report.json to --out.",
    )
    cur.add_argument("target", type=Path, nargs="?", metavar="SUITE_OR_DATA", help="a suite (.yaml) or a data file")
    cur.add_argument("--format", help="reader of the data file (default: by suffix)")
    cur.add_argument("--user", help="user-turn template over the columns (csv, parquet, hf_disk; data or --train file)")
    cur.add_argument("--assistant", help="assistant-turn template over the columns")
    cur.add_argument("--system", help="optional system-turn template over the columns")
    cur.add_argument(
        "--filters",
        metavar="FILTERS_YAML_OR_INLINE",
        help="filter chain: a YAML file or inline YAML ('[exact_dedup, {name: pii, action: drop}]', "
        "'exact_dedup,pii'); default: exact_dedup, min_response_length, pii (redact), repetition, format_check",
    )
    cur.add_argument(
        "--max-quarantined-fraction",
        type=float,
        help=f"fail when more of the input than this is malformed (default {DEFAULT_MAX_QUARANTINED})",
    )
    cur.add_argument("--from-log", type=Path, metavar="LOG.jsonl", help="ingest a production chat-completions log")
    cur.add_argument("--train", type=Path, metavar="TRAIN_FILE", help="the current training set (with --from-log)")
    cur.add_argument("--train-format", help="reader of the training file (default: by suffix)")
    cur.add_argument("--min-rating", type=float, help="lowest rating that counts as effective, 1-5 (default 4)")
    cur.add_argument("--keep-unrated", action="store_true", help="keep interactions without a rating or thumbs")
    cur.add_argument(
        "--novelty-threshold", type=float, help="Jaccard similarity to a training record that makes it known (default 0.8)"
    )
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
    from harness.tools import memory as pl

    plan = sub.add_parser(
        "plan",
        help="estimate a fine-tune's memory per GPU (weights, grads, optimizer, activations) and whether it fits",
    )
    plan.add_argument("--model", help=f"a preset ({', '.join(pl.PRESETS)}), {pl.EMBEDDED_NAME}, a model folder or config.json")
    plan.add_argument("--params", type=float, help="override the parameter count, e.g. 7e9 (alone: model state only)")
    plan.add_argument("--method", choices=pl.METHODS, default="full")
    plan.add_argument("--precision", choices=pl.PRECISIONS, default="bf16", help="mixed: bf16 compute, fp32 master weights")
    plan.add_argument("--optimizer", choices=pl.OPTIMIZERS, default="adamw")
    plan.add_argument("--seq-len", type=int, default=2048)
    plan.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU per step")
    plan.add_argument("--gradient-checkpointing", action="store_true")
    plan.add_argument("--attention", choices=pl.ATTENTIONS, default="sdpa", help="eager keeps the s^2 attention scores")
    plan.add_argument("--gpus", type=int, default=1)
    plan.add_argument("--sharding", choices=pl.SHARDINGS, help="default: zero3 (full sharding) when --gpus > 1")
    plan.add_argument("--gpu-memory", type=float, default=80.0, metavar="GIB", help="memory of one GPU (default 80)")
    plan.add_argument(
        "--reserve-gib",
        type=float,
        help="kept back for the CUDA context and allocator fragmentation (default 10%% of --gpu-memory)",
    )
    plan.add_argument("--lora-r", type=int, default=pl.DEFAULT_LORA_R)
    plan.add_argument("--lora-targets", default=",".join(pl.DEFAULT_LORA_TARGETS), help="Linear module names")
    plan.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    return parser


def _plugins(console: Console) -> int:
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries

    registries = Registries.from_plugin_manager(get_plugin_manager())
    table = Table(title="Components")
    for column in ("kind", "name", "plugin", "distribution", "description"):
        table.add_column(column)
    for info in registries.all():
        table.add_row(info.kind, info.name, info.plugin, info.distribution, info.cls.description)
    console.print(table)
    return 0


def _setup(suite_path: Path):
    from harness.suite.config import load_suite
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries

    pm = get_plugin_manager()
    registries = Registries.from_plugin_manager(pm)
    return load_suite(suite_path), pm, registries


def _validate(args: argparse.Namespace, console: Console) -> int:
    from harness.plugin.components import RunContext
    from harness.suite.config import ComponentRef, build_component

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
        from harness.stages.parity import plan_parity

        plan_parity(loaded, registries, ctx)
    console.print(f"{args.suite}: valid")
    return 0


def _curate(args: argparse.Namespace, console: Console) -> int:
    """Curate a suite's data, a data file or a production log (see ``_curate_file`` and
    ``_curate_log``); refuse options that do not apply to the chosen input."""

    def given(names: tuple[str, ...]) -> list[str]:
        return ["--" + n.replace("_", "-") for n in names if getattr(args, n) not in (None, False)]

    file_only = ("format", "user", "assistant", "system", "filters", "max_quarantined_fraction")
    log_only = ("train", "train_format", "keep_unrated", "min_rating", "novelty_threshold")
    if args.from_log is not None:
        if args.target is not None:
            raise ConfigError("harness curate: give a suite or data file, or --from-log, not both")
        if args.format is not None:
            raise ConfigError("harness curate: --format is for a data file; with --from-log use --train-format")
        if args.train is None:
            raise ConfigError("harness curate: --from-log needs --train TRAIN_FILE (the current training set)")
        return _curate_log(args, console)
    if args.target is None:
        raise ConfigError("harness curate: give a suite (.yaml), a data file, or --from-log LOG.jsonl")
    if given(log_only):
        raise ConfigError(f"harness curate: {given(log_only)[0]} is only for --from-log")
    if args.target.suffix.lower() in {".yaml", ".yml"}:
        if given(file_only):
            raise ConfigError(
                f"harness curate: {given(file_only)[0]} is for a data file; a suite sets it in "
                "its data and curate sections"
            )
        return _curate_suite(args, console)
    return _curate_file(args, console)


def _filter_chain(args: argparse.Namespace, registries: Registries) -> list[FilterStep]:
    """The filter steps of ``--filters`` (default chain without it), built outside a suite."""
    from harness.plugin.components import RunContext
    from harness.stages.curate import DEFAULT_FILTERS, build_filters, parse_filters

    refs, base = (list(DEFAULT_FILTERS), None) if args.filters is None else parse_filters(args.filters)
    ctx = RunContext(base or Path.cwd(), args.out)
    return build_filters(registries, refs, ctx, "--filters" if args.filters is not None else "default filters")


def _registries() -> Registries:
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries

    return Registries.from_plugin_manager(get_plugin_manager())


def _curate_suite(args: argparse.Namespace, console: Console) -> int:
    from harness.plugin.components import RunContext
    from harness.stages.curate import (
        Examples,
        build_report,
        curate,
        write_curated,
        write_run_files,
    )

    loaded, _pm, registries = _setup(args.target)
    ctx = RunContext(loaded.dir, args.out, loaded.suite.seed)
    examples = Examples()
    outcome = curate(loaded, registries, ctx, examples)
    report = build_report(outcome.ledger, len(outcome.records), outcome.inputs, examples, suite=str(args.target))
    write_curated(args.out, outcome.records)
    write_run_files(args.out, outcome.ledger, report)
    _print_report(console, report)
    console.print(f"{len(outcome.records)} records written to {args.out / 'curated.jsonl'}", markup=False)
    return 0


def _curate_file(args: argparse.Namespace, console: Console) -> int:
    """A data file: read with ``--format`` (default by suffix), the filter chain, all four files
    written even when nothing is left (then exit 2), so the reasons can be read."""
    from harness.tools.audit import guess_format
    from harness.plugin.components import RunContext
    from harness.stages.curate import (
        DataFile,
        Examples,
        build_report,
        curate_file,
        write_curated,
        write_run_files,
    )

    registries = _registries()
    options = {k: getattr(args, k) for k in ("user", "assistant", "system") if getattr(args, k) is not None}
    data = DataFile(args.target, args.format or guess_format(args.target), options)
    steps = _filter_chain(args, registries)
    examples = Examples()
    ctx = RunContext(args.target.parent, args.out)
    limit = DEFAULT_MAX_QUARANTINED if args.max_quarantined_fraction is None else args.max_quarantined_fraction
    outcome = curate_file(registries, data, steps, ctx, limit, examples)
    report = build_report(outcome.ledger, len(outcome.records), outcome.inputs, examples)
    write_curated(args.out, outcome.records)
    write_run_files(args.out, outcome.ledger, report)
    _print_report(console, report)
    if not outcome.records:
        raise DataError(f"{data.name}: no records left after curation (reasons in {args.out / 'report.json'})")
    console.print(f"{len(outcome.records)} records written to {args.out / 'curated.jsonl'}", markup=False)
    return 0


def _curate_log(args: argparse.Namespace, console: Console) -> int:
    """The data flywheel: effective, novel, clean interactions of a log appended to curated.jsonl."""
    from harness.tools.audit import guess_format
    from harness.plugin.components import RunContext
    from harness.stages.curate import DataFile, Examples, write_run_files
    from harness.tools.flywheel import FlywheelJob, FlywheelOptions, run_flywheel

    registries = _registries()
    options = {k: getattr(args, k) for k in ("user", "assistant", "system") if getattr(args, k) is not None}
    train = DataFile(args.train, args.train_format or guess_format(args.train), options)
    given = {
        "min_rating": args.min_rating,
        "novelty_threshold": args.novelty_threshold,
        "max_quarantined_fraction": args.max_quarantined_fraction,
    }
    fly = FlywheelOptions(
        keep_unrated=args.keep_unrated,
        **{k: v for k, v in given.items() if v is not None},  # FlywheelOptions holds the defaults
    )
    steps = _filter_chain(args, registries)
    examples = Examples()
    job = FlywheelJob(args.from_log, train, args.out, fly)
    result = run_flywheel(registries, job, steps, RunContext(Path.cwd(), args.out), examples)
    write_run_files(args.out, result.outcome.ledger, result.report)
    _print_report(console, result.report)
    novelty = result.report["flywheel"]["novelty"]
    console.print(
        f"{len(result.outcome.rows)} records appended to {result.curated} "
        f"(had {result.curated_before}; novelty by {novelty['method']} against {novelty['known_records']} records)",
        markup=False,
    )
    return 0


def _print_report(console: Console, report: dict[str, Any]) -> None:
    """The ledger, one line a step (``in = kept + dropped + quarantined``), and under each
    reason its examples (source id and redacted excerpt).  Printed without markup: an excerpt's
    ``[EMAIL]`` is text, not a style."""
    for stage in report["stages"]:
        counts = ", ".join(f"{k}: {v['count']}" for k, v in stage["reasons"].items())
        console.print(
            f"{stage['name']}: in {stage['in']} = kept {stage['kept']} + dropped {stage['dropped']} "
            f"+ quarantined {stage['quarantined']}" + (f" ({counts})" if counts else ""),
            markup=False,
            soft_wrap=True,
        )
        for reason, entry in stage["reasons"].items():
            for example in entry["examples"]:
                text = f"    {reason}: {example['source_id']}  {example['excerpt']}"
                console.print(text, markup=False, soft_wrap=True)
    for source in report["inputs"]:
        if source["lines"] is not None:
            console.print(
                f"{source['source']}: {source['lines']} lines = {source['records']} records "
                f"+ {source['quarantined']} quarantined + {source['blank_lines']} blank",
                markup=False,
            )


def _audit(args: argparse.Namespace, console: Console) -> int:
    """Audit a suite's curated data (its curate stage, filters included) or one data file read
    with the named reader, so problems in the data show before any training is paid for."""
    from harness.tools.audit import (
        audit,
        guess_format,
        load_tokenizer,
        read_categories,
        read_data,
    )
    from harness.lib.console import RunConsole
    from harness.plugin.manager import get_plugin_manager
    from harness.plugin.registry import Registries

    registries = Registries.from_plugin_manager(get_plugin_manager())
    categories: dict[str, str] | None = {} if args.category_column else None
    if args.target.suffix.lower() in {".yaml", ".yml"}:
        from harness.plugin.components import RunContext
        from harness.suite.config import load_suite
        from harness.stages.curate import curate

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


def _plan(args: argparse.Namespace, console: Console) -> int:
    """The memory a training setting needs per GPU and whether it fits (``harness/tools/memory.py``);
    exit 0 either way (``fits`` in ``--json``)."""
    from harness.tools.memory import PlanOptions, plan

    options = PlanOptions(
        method=args.method,
        precision=args.precision,
        optimizer=args.optimizer,
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
        gradient_checkpointing=args.gradient_checkpointing,
        attention=args.attention,
        gpus=args.gpus,
        sharding=args.sharding,
        gpu_memory_gib=args.gpu_memory,
        reserve_gib=args.reserve_gib,
        params=None if args.params is None else round(args.params),
        lora_r=args.lora_r,
        lora_targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()),
    )
    result = plan(args.model, options, Path.cwd())
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        result.render(console)
    return 0


def _run(args: argparse.Namespace, console: Console) -> int:
    from harness.lib.console import RunConsole
    from harness.run.runner import Runner, RunOptions

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
    commands = {"run": _run, "parity": _run, "validate": _validate, "curate": _curate, "audit": _audit, "plan": _plan}
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


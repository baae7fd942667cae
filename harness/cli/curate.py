"""``harness curate``: a suite's data, a data file, or a production log (the data flywheel) into a
curated set, with its ledger and report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from harness.cli import common
from harness.cli.common import load
from harness.errors import ConfigError, DataError

if TYPE_CHECKING:
    from harness.plugin.registry import Registries
    from harness.stages.curate import FilterStep
    from harness.stages.curate_report import CurateReport

NAME = "curate"
HELP = "curate a suite's data, a data file, or a production log (--from-log) into a curated set"
DESCRIPTION = (
    "Curate a suite's data (its curate stage), a data file (default filter chain "
    "unless --filters), or a production chat log (--from-log, appended to OUT/curated.jsonl). "
    "Writes curated.jsonl, quarantine.jsonl, ledger.json and report.json to --out."
)

DEFAULT_MAX_QUARANTINED = 0.05
"""Largest malformed share of a data file or log (a suite's default, curate.max_quarantined_fraction)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=Path, nargs="?", metavar="SUITE_OR_DATA", help="a suite (.yaml) or a data file")
    parser.add_argument("--format", help="reader of the data file (default: by suffix)")
    parser.add_argument("--user", help="user-turn template over the columns (csv, parquet, hf_disk; data or --train file)")
    parser.add_argument("--assistant", help="assistant-turn template over the columns")
    parser.add_argument("--system", help="optional system-turn template over the columns")
    parser.add_argument(
        "--filters",
        metavar="FILTERS_YAML_OR_INLINE",
        help="filter chain: a YAML file or inline YAML ('[exact_dedup, {name: pii, action: drop}]', "
        "'exact_dedup,pii'); default: exact_dedup, near_dedup, min_response_length, language (English), pii (redact), repetition, format_check",
    )
    parser.add_argument(
        "--max-quarantined-fraction",
        type=float,
        help=f"fail when more of the input than this is malformed (default {DEFAULT_MAX_QUARANTINED})",
    )
    parser.add_argument("--from-log", type=Path, metavar="LOG.jsonl", help="ingest a production chat-completions log")
    parser.add_argument("--train", type=Path, metavar="TRAIN_FILE", help="the current training set (with --from-log)")
    parser.add_argument("--train-format", help="reader of the training file (default: by suffix)")
    parser.add_argument("--min-rating", type=float, help="lowest rating that counts as effective, 1-5 (default 4)")
    parser.add_argument("--keep-unrated", action="store_true", help="keep interactions without a rating or thumbs")
    parser.add_argument(
        "--novelty-threshold", type=float, help="Jaccard similarity to a training record that makes it known (default 0.8)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/curated"))


def run(args: argparse.Namespace, console: Console) -> int:
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
    from harness.tools.curate_file import DEFAULT_FILTERS, build_filters, parse_filters

    refs, base = (list(DEFAULT_FILTERS), None) if args.filters is None else parse_filters(args.filters)
    ctx = RunContext(base or Path.cwd(), args.out, builder=registries)
    return build_filters(registries, refs, ctx, "--filters" if args.filters is not None else "default filters")


def _curate_suite(args: argparse.Namespace, console: Console) -> int:
    from harness.run.plan import curate_suite
    from harness.stages.curate_report import Examples, build_report, write_curated, write_run_files

    loaded, _pm, registries = load(args.target)
    examples = Examples()
    outcome = curate_suite(loaded, registries, args.out, examples)
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
    from harness.stages.curate_report import Examples, build_report, write_curated, write_run_files
    from harness.tools.curate_file import DataFile, curate_file

    registries = common.registries()
    options = {k: getattr(args, k) for k in ("user", "assistant", "system") if getattr(args, k) is not None}
    data = DataFile(args.target, args.format or guess_format(args.target), options)
    steps = _filter_chain(args, registries)
    examples = Examples()
    ctx = RunContext(args.target.parent, args.out, builder=registries)
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
    from harness.stages.curate_report import Examples, write_run_files
    from harness.tools.curate_file import DataFile
    from harness.tools.flywheel import FlywheelJob, FlywheelOptions, run_flywheel

    registries = common.registries()
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
    result = run_flywheel(registries, job, steps, RunContext(Path.cwd(), args.out, builder=registries), examples)
    write_run_files(args.out, result.outcome.ledger, result.report)
    _print_report(console, result.report)
    outcome = result.outcome
    console.print(
        f"{len(outcome.rows)} records appended to {result.curated} "
        f"(had {result.curated_before}; novelty by {outcome.novelty_method} against {outcome.pool} records)",
        markup=False,
    )
    return 0


def _print_report(console: Console, report: CurateReport) -> None:
    """The ledger, one line a step (``in = kept + dropped + quarantined``), and under each
    reason its examples (source id and redacted excerpt).  Printed without markup: an excerpt's
    ``[EMAIL]`` is text, not a style."""
    for stage in report.stages:
        counts = ", ".join(f"{k}: {v.count}" for k, v in stage.reasons.items())
        c = stage.counts
        console.print(
            f"{c.name}: in {c.n_in} = kept {c.kept} + dropped {c.dropped} "
            f"+ quarantined {c.quarantined}" + (f" ({counts})" if counts else ""),
            markup=False,
            soft_wrap=True,
        )
        for reason, entry in stage.reasons.items():
            for example in entry.examples:
                text = f"    {reason}: {example.source_id}  {example.excerpt}"
                console.print(text, markup=False, soft_wrap=True)
    for source in report.inputs:
        if source.lines is not None:
            console.print(
                f"{source.source}: {source.lines.lines} lines = {source.records} records "
                f"+ {source.quarantined} quarantined + {source.lines.blank} blank",
                markup=False,
            )

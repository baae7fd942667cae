"""``harness shadow --requests LOG.jsonl --baseline SPEC --candidate SPEC``, or ``harness shadow
--requests LOG.jsonl --suite SUITE [--baseline ARM] [--candidate ARM]``: replay logged production
requests against two models (or two of a suite's arms, by default its baseline and candidate) and
report agreement, accuracy where the log has references, and the disagreements (see
``harness.run.shadow`` and ``harness.run.shadow_arms``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.run.shadow import ShadowResult, ShadowSide

NAME = "shadow"
HELP = "replay logged production requests against two models and compare their answers"
SPEC_HELP = "a model source, or a YAML mapping like the suite's model block, plus an optional adapter"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=Path, required=True, help="JSONL of logged chat-completions requests (openai_requests)")
    parser.add_argument("--baseline", help=f"the model in production: {SPEC_HELP}; with --suite, an arm name")
    parser.add_argument("--candidate", help=f"the model to ship: {SPEC_HELP}; with --suite, an arm name")
    parser.add_argument(
        "--suite", type=Path,
        help="take both sides from this suite's arms (default: its baseline and candidate arms)",
    )
    parser.add_argument("--run", default="latest", help="with --suite: the stored run whose trained model is 'trained' (default: latest)")
    parser.add_argument("--store", type=Path, help="with --suite: its store folder (default: the suite's)")
    parser.add_argument("--limit", type=int, help="the first N requests of the log")
    parser.add_argument("--max-tokens", type=int, default=64, help="answer length budget (default 64)")
    parser.add_argument("--match", choices=("exact", "contains"), default="exact", help="how an answer matches a reference")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    parser.add_argument("--examples", type=int, default=10, help="disagreements shown (all are in the JSON)")
    parser.add_argument("--min-agreement", type=float, help="exit 1 when the agreement fraction is below this")


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.lib.model_api import GenerationConfig
    from harness.run.shadow import run_shadow

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: expected 1 or more")
    sides = _suite_sides(args) if args.suite is not None else _spec_sides(args)
    config = GenerationConfig(max_new_tokens=args.max_tokens)
    result = run_shadow(args.requests, sides, config, limit=args.limit, match=args.match)
    _print(console, result, args.examples)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 1 if args.min_agreement is not None and result.agreement < args.min_agreement else 0


def _spec_sides(args: argparse.Namespace) -> tuple[ShadowSide, ShadowSide]:
    """Both sides from ``--baseline`` and ``--candidate`` model specs."""
    from harness.cli.common import registries as load_registries
    from harness.plugin.components import RunContext
    from harness.run.shadow import ShadowModel, SpecSide

    for flag in ("baseline", "candidate"):
        if getattr(args, flag) is None:
            raise ConfigError(f"--{flag}: required without --suite (a model: {SPEC_HELP})")
    for flag in ("run", "store"):
        if getattr(args, flag) not in (None, "latest"):
            raise ConfigError(f"--{flag} goes with --suite (the suite whose arms and store to use)")
    here = Path.cwd()
    registries = load_registries()
    ctx = RunContext(here, here / ".harness" / "work" / "shadow", 0, registries)
    return (
        SpecSide(ShadowModel.parse("baseline", args.baseline, here), registries, ctx),
        SpecSide(ShadowModel.parse("candidate", args.candidate, here), registries, ctx),
    )


def _suite_sides(args: argparse.Namespace) -> tuple[ShadowSide, ShadowSide]:
    """Both sides from the suite's arms: ``--baseline``/``--candidate`` name them (default: the
    suite's own pair)."""
    from harness.cli.common import load
    from harness.run.shadow_arms import default_arms, suite_arms

    loaded, _pm, registries = load(args.suite)
    default_baseline, default_candidate = default_arms(loaded)
    baseline = args.baseline or default_baseline
    candidate = args.candidate or default_candidate
    if candidate is None:
        raise ConfigError(f"{loaded.path}: the suite has no candidate arm: name one with --candidate ARM")
    if baseline == candidate:
        raise ConfigError(f"--baseline and --candidate both name arm {baseline!r}: a shadow test compares two arms")
    store_dir = args.store or loaded.dir / (loaded.suite.store or ".harness")
    return suite_arms(loaded, registries, (baseline, candidate), store_dir, args.run)


def _print(console: Console, result: ShadowResult, examples: int) -> None:
    table = Table(title=f"shadow test: {result.requests} requests", title_justify="left")
    table.add_column("model")
    table.add_column(f"accuracy ({result.with_reference} with a reference)", justify="right")
    for label in result.models:
        acc = result.accuracy(label)
        table.add_row(label, "n/a" if acc is None else f"{acc:.3f} ({result.correct[label]}/{result.with_reference})")
    console.print(table)
    console.print(f"agreement: {result.agree}/{result.requests} ({result.agreement:.3f})", markup=False)
    if result.unreadable:
        console.print(f"unreadable log lines: {result.unreadable} (not replayed)", markup=False)
    if result.disagreements and examples > 0:
        shown = Table(title=f"disagreements ({len(result.disagreements)}, first {min(examples, len(result.disagreements))})", title_justify="left")
        for column in ("request", "prompt", *result.models, "reference"):
            shown.add_column(column, overflow="fold")
        for ex in result.disagreements[:examples]:
            shown.add_row(ex.request, ex.prompt[:120], *(ex.answers[m][:120] for m in result.models), ex.reference or "")
        console.print(shown)

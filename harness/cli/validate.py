"""``harness validate SUITE``: check a suite and its components without running anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

NAME = "validate"
HELP = "check a suite and its components without running"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", type=Path)


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.cli.common import load
    from harness.plugin.components import RunContext
    from harness.suite.config import ComponentRef, build_component

    loaded, _pm, registries = load(args.suite)
    suite = loaded.suite
    ctx = RunContext(loaded.dir, loaded.dir / ".harness" / "work", suite.seed, registries)
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


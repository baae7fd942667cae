"""``harness report RUN``: render a stored run again (HTML, Markdown, JSON, JUnit) without
recomputing anything; the files are byte for byte those the run wrote."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

NAME = "report"
HELP = "render a stored run again (html, md, json, junit) without recomputing it"
ALIASES = {"md": "markdown"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.cli.common import add_store_arguments

    parser.add_argument("run", help="run id (or a unique prefix or suffix, or 'latest'); see harness runs")
    parser.add_argument(
        "--format", action="append", dest="formats", metavar="FORMAT",
        help="html (default), md, json, junit, or any reporter that renders stored runs; repeatable",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: reports/RUN_ID)")
    add_store_arguments(parser)


def run(args: argparse.Namespace, console: Console) -> int:
    from harness.cli.common import open_store, registries
    from harness.errors import ConfigError, UnknownComponentError
    from harness.lib.resultdoc import load_document, write_files
    from harness.plugin.components import Reporter, RunContext

    store = open_store(args)
    try:
        doc = load_document(store, args.run)
    finally:
        store.close()
    regs = registries()
    out = args.out or Path("reports") / doc["run_id"]
    for name in args.formats or ["html"]:
        try:
            info = regs.get("reporter", ALIASES.get(name, name))
        except UnknownComponentError as exc:
            raise ConfigError(f"--format {name}: {exc}") from None
        cls = info.cls
        if not (issubclass(cls, Reporter) and cls.renders_documents()):
            raise ConfigError(f"--format {name}: reporter {info.name!r} cannot render a stored run")
        reporter = cls(cls.Config(), RunContext(Path.cwd(), out / ".work"))
        for path in write_files(reporter.render(doc), out):
            console.print(f"wrote {path}")
    return 0

"""The ``harness`` command line: one module per subcommand, assembled here.

Exit codes: 0 all gates pass, 1 a gate failed (or was inconclusive, as the suite says), 2 bad
input (config, data, plugins), 3 a check errored.  Expected problems are printed as one line,
without a traceback (``--debug`` shows it).

Each subcommand module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args, console) -> int``; ``COMMANDS`` lists them in the order ``--help`` shows.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from harness import __version__
from harness.cli import audit, compare, curate, memory, parity, plugins, report, run, runs, validate
from harness.errors import EXIT_CHECK_ERRORED, HarnessError
from harness.lib.console import make_console

COMMANDS: tuple[ModuleType, ...] = (run, parity, validate, curate, plugins, audit, memory, runs, report, compare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Evaluation and regression harness for fine-tuned LLMs: may this model ship?")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        sub_parser = sub.add_parser(
            command.NAME,
            help=command.HELP,
            description=getattr(command, "DESCRIPTION", None) or command.HELP,
        )
        command.add_arguments(sub_parser)
        sub_parser.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The libraries' own progress bars (tqdm) would interleave with ours; read at their import.
    os.environ.setdefault("TQDM_DISABLE", "1")
    console = make_console()
    try:
        return int(args.handler(args, console))
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

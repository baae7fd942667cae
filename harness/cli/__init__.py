"""The ``harness`` command line: one module per subcommand, assembled here.

Exit codes: 0 all gates pass, 1 a gate failed (or was inconclusive, as the suite says), 2 bad
input (config, data, plugins, an unusable store), 3 a check errored, 130 interrupted by SIGINT and
143 by SIGTERM (with a line saying what the store kept).  Expected problems are printed as one
line, without a traceback (``--debug`` shows it).

Each subcommand module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args, console) -> int``; ``COMMANDS`` lists them in the order ``--help`` shows.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from rich.console import Console

from harness import __version__
from harness.cli import (
    advise,
    agree,
    audit,
    common,
    compare,
    curate,
    failures,
    invariance,
    memory,
    new_plugin,
    parity,
    plugins,
    power,
    report,
    run,
    runs,
    store,
    validate,
)
from harness.errors import EXIT_CHECK_ERRORED, HarnessError
from harness.lib.console import make_console
from harness.lib.interrupt import Interrupted, handle_signals

COMMANDS: tuple[ModuleType, ...] = (
    run, parity, validate, power, curate, plugins, new_plugin, audit, memory, store, runs, report, compare, failures,
    agree, invariance, advise,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Evaluation and regression harness for fine-tuned LLMs: may this model ship?")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", "-q", action="store_true", help="only stage lines, results and errors: no notes or progress")
    loudness.add_argument(
        "--verbose", "-v", action="store_true",
        help="also show what the libraries print (progress bars, warnings, logs); by default a run sends it to run.log in its report folder",
    )
    parser.add_argument(
        "--strict-plugins",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a third-party plugin that fails to import or register is an error, not a warning "
        "(default: on when the CI environment variable is set)",
    )
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
    common.set_strict_plugins(args.strict_plugins)
    with handle_signals():
        return _dispatch(args, console)


def _dispatch(args: argparse.Namespace, console: Console) -> int:
    try:
        return int(args.handler(args, console))
    except HarnessError as exc:
        if args.debug:
            raise
        for line in str(exc).splitlines() or [type(exc).__name__]:  # a plan lists each problem on its own line
            print(f"harness: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        interrupted = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        print(f"harness: {interrupted.message()}", file=sys.stderr)
        return interrupted.exit_code
    except Exception as exc:  # an unexpected failure is a check that errored, never a pass
        if args.debug:
            raise
        print(f"harness: error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_CHECK_ERRORED

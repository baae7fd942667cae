"""``harness parity SUITE``: the parity stage alone, offline pipeline against production."""

from __future__ import annotations

import argparse

from rich.console import Console

from harness.cli import run as run_command

NAME = "parity"
HELP = "run only the parity stage: offline pipeline vs production"
add_arguments = run_command.add_common_arguments


def run(args: argparse.Namespace, console: Console) -> int:
    return run_command.run(args, console, only_parity=True)

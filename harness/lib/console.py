"""Terminal output while a run is in progress: stage lines and progress bars (rich).

On a terminal, long steps show a live progress bar; elsewhere (CI logs) they print a line at
every tenth of the way, so logs stay readable.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harness.types import ProgressFn


def make_console() -> Console:
    """A rich console; off a terminal (CI logs, pipes) it is wide enough that tables keep
    component names whole (``COLUMNS`` overrides the width)."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=int(os.environ.get("COLUMNS", "160")))
    return console


class RunConsole:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or make_console()

    def stage(self, name: str, message: str, style: str = "") -> None:
        text = escape(message)
        self.console.print(f"[bold cyan]{name:>9}[/] " + (f"[{style}]{text}[/]" if style else text))

    def note(self, message: str) -> None:
        self.console.print(f"          {escape(message)}")

    def curve(self, point: str, cells: list[str]) -> None:
        """One new point of a curve drawn while a run goes on (the live forgetting probes): printed
        above any progress bar, so the rows build up the curve line by line; a cell that says
        ``beyond bound`` is shown in red."""
        shown = [f"[red]{escape(c)}[/]" if c.endswith("beyond bound") else escape(c) for c in cells]
        self.console.print(f"[bold cyan]{'curve':>9}[/] [bold]{escape(point)}[/]  " + "  |  ".join(shown))
        sys.stdout.flush()

    @contextmanager
    def progress(self, description: str) -> Iterator[ProgressFn]:
        """Yield a ``progress(done, total, message)`` callback for one long step."""
        if self.console.is_terminal:
            columns = (
                TextColumn("          {task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[message]}"),
            )
            with Progress(*columns, console=self.console, transient=False) as bar:
                task = bar.add_task(description, total=None, message="")

                def update(done: int, total: int, message: str) -> None:
                    bar.update(task, completed=done, total=total, message=message)

                yield update
            return
        last = [-1]
        started = time.perf_counter()

        printed: list[tuple[int, int]] = []

        def log(done: int, total: int, message: str) -> None:
            tenth = int(10 * done / total) if total else 0
            if (tenth != last[0] or done == total) and (not printed or printed[-1] != (done, total)):
                last[0] = tenth
                printed.append((done, total))
                elapsed = time.perf_counter() - started
                line = f"{description}: {done}/{total} {message} ({elapsed:.0f}s)"
                self.console.print(f"          {escape(line)}")
                sys.stdout.flush()

        yield log

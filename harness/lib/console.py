"""Terminal output while a run is in progress: stage lines and progress bars (rich).

On a terminal, long steps show a live progress bar; elsewhere (CI logs), or when ``NO_COLOR`` is
set, they print a plain line at every tenth of the way, so logs stay readable.  While a run is in
progress, whatever the libraries print (progress bars, warnings, log lines, launcher banners) goes
to the run's log file, not the screen: only the harness's own lines are shown
(:func:`library_output_to`).
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

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
    screen = _SCREEN[-1][0] if _SCREEN else None  # the screen, while library output is logged
    console = Console(highlight=False, file=screen)
    if not console.is_terminal:
        console = Console(highlight=False, file=screen, width=int(os.environ.get("COLUMNS", "160")))
    return console


_SCREEN: list[tuple[TextIO, TextIO]] = []
"""The screen's stdout and stderr while library output is redirected (:func:`library_output_to`)."""


def screen_stderr() -> TextIO:
    """Where the harness's own warnings go: the screen, even while library output is logged."""
    return _SCREEN[-1][1] if _SCREEN else sys.stderr


def _screen_stream(stream: TextIO, fd: int) -> TextIO:
    """A handle on what ``fd`` shows now, kept when ``fd`` is pointed at the log file.

    A stream that is not this file descriptor (a test's capture) is kept as it is."""
    try:
        if stream.fileno() != fd:
            return stream
    except (AttributeError, OSError, io.UnsupportedOperation):
        return stream
    stream.flush()
    return open(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8", closefd=True)


@contextmanager
def library_output_to(log_path: Path, console: Console) -> Iterator[Path | None]:
    """Send everything the process (and its children) prints, other than ``console``, to a file.

    Both the file descriptors 1 and 2 and ``sys.stdout``/``sys.stderr`` point at ``log_path``
    for the duration, so tqdm bars, ``warnings``, ``logging`` handlers and launcher subprocesses
    all land there; ``console``, consoles made meanwhile by :func:`make_console` and
    :func:`screen_stderr` keep writing to the screen.  Yields the log's path, or ``None`` when it
    cannot be created (then nothing is redirected).
    """
    created = [d for d in (log_path.parent, *log_path.parent.parents) if not d.exists()]
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.touch()
    except OSError:
        yield None
        return
    try:
        with log_path.open("a", buffering=1, encoding="utf-8") as log, _redirected(log, console):
            yield log_path
    finally:
        _drop_if_empty(log_path, created)


@contextmanager
def _redirected(log: TextIO, console: Console) -> Iterator[None]:
    """Point fds 1 and 2 and ``sys.stdout``/``sys.stderr`` at ``log``; keep ``console`` and
    :func:`screen_stderr` on the screen; restore everything afterwards."""
    out, err = _screen_stream(sys.stdout, 1), _screen_stream(sys.stderr, 2)
    saved_fds, saved_streams, saved_file = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr), console._file
    console.file = out if console._file is None else console._file
    _SCREEN.append((out, err))
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    try:
        yield
    finally:
        log.flush()
        sys.stdout, sys.stderr = saved_streams
        for fd, saved in zip((1, 2), saved_fds, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        _SCREEN.pop()
        console._file = saved_file
        for stream in (out, err):
            if stream not in saved_streams:
                stream.close()


def _drop_if_empty(log_path: Path, created: list[Path]) -> None:
    """Remove an empty log, and the folders made for it that the run left empty (a run that
    stops at its plan leaves no report folder behind)."""
    try:
        if log_path.stat().st_size == 0:
            log_path.unlink()
            for folder in created:  # innermost first
                folder.rmdir()
    except OSError:
        pass


class RunConsole:
    """The harness's own lines during a run; ``quiet`` keeps only stage lines (no notes, no
    progress)."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or make_console()
        self.quiet = quiet

    def stage(self, name: str, message: str, style: str = "") -> None:
        text = escape(message)
        # soft_wrap: one line stays one line (a CI log must not split it); the terminal wraps it
        self.console.print(f"[bold cyan]{name:>9}[/] " + (f"[{style}]{text}[/]" if style else text), soft_wrap=True)

    def note(self, message: str) -> None:
        if self.quiet:
            return
        self.console.print(f"          {escape(message)}", soft_wrap=True)

    def curve(self, point: str, cells: list[str]) -> None:
        """One new point of a curve drawn while a run goes on (the live forgetting probes): printed
        above any progress bar, so the rows build up the curve line by line; a cell that says
        ``beyond bound`` is shown in red."""
        shown = [f"[red]{escape(c)}[/]" if c.endswith("beyond bound") else escape(c) for c in cells]
        self.console.print(f"[bold cyan]{'curve':>9}[/] [bold]{escape(point)}[/]  " + "  |  ".join(shown))
        sys.stdout.flush()

    @contextmanager
    def progress(self, description: str) -> Iterator[ProgressFn]:
        """Yield a ``progress(done, total, message)`` callback for one long step: a live bar on a
        colour terminal, plain lines elsewhere (``NO_COLOR``, pipes, CI), nothing when quiet."""
        if self.quiet:
            yield lambda done, total, message: None
            return
        if self.console.is_terminal and not os.environ.get("NO_COLOR"):
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

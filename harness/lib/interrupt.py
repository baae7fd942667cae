"""Interruptions (a cancelled CI job, Ctrl-C): exit 130 on SIGINT and 143 on SIGTERM, with a line
saying what the store kept, and the run marked ``interrupted`` in the store.

``handle_signals()`` turns both signals into ``Interrupted`` (a ``KeyboardInterrupt``, so code that
cleans up on Ctrl-C cleans up on SIGTERM too, and no ``except Exception`` swallows it).  Whoever
owns a run wraps it in ``recording(store, run_id)``: on the way out it closes the run in the store
as ``interrupted`` (or ``failed`` on an error) and adds what the store keeps to the exception, which
the CLI prints as its last line.  Work is never lost by the interruption itself: evaluation items
are committed as they are scored and training state as it is saved, so the next run resumes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

from harness.errors import EXIT_CHECK_ERRORED, HarnessError


class RunStore(Protocol):
    """What ``recording`` needs of the store (``harness.lib.store.Store``, which calls
    ``raise_pending`` itself, so this module cannot import it)."""

    def end_run(self, run_id: str, status: str, exit_code: int) -> None: ...

    def kept_summary(self) -> str: ...


HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The process got SIGINT or SIGTERM; ``exit_code`` is 128 + the signal's number."""

    def __init__(self, signum: int, kept: str = "") -> None:
        super().__init__(signum, kept)
        self.signum = signum
        self.kept = kept

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def message(self) -> str:
        kept = f"; {self.kept}" if self.kept else ""
        return f"interrupted by {self.name} (exit {self.exit_code}){kept}"


_pending: list[int] = []
"""The signal taken and not yet recorded by ``recording`` (at most one)."""


def _raise(signum: int, _frame: FrameType | None) -> None:
    # Once is enough: later signals are ignored while the interruption unwinds and is recorded
    # (a supervisor that means it follows up with SIGKILL, which nothing can catch).
    for other in HANDLED:
        signal.signal(other, signal.SIG_IGN)
    _pending[:] = [signum]
    raise Interrupted(signum)


def raise_pending() -> None:
    """Raise the interruption again if one was taken and never reached ``recording``.

    A handler's exception surfaces in whatever Python code the main thread runs at that moment;
    when that is a ``__del__``, a weakref or sqlite callback, or a library's broad ``except``, the
    exception is swallowed, later signals are already ignored, and the run would go on to finish
    as if never interrupted.  The runner calls this at its checkpoints (each committed batch of
    items, each stage, before closing a run) so such a run still stops and is marked interrupted.
    """
    if _pending:
        raise Interrupted(_pending[0])


@contextmanager
def handle_signals() -> Iterator[None]:
    """Raise ``Interrupted`` on SIGINT and SIGTERM inside the block (main thread only; elsewhere a
    no-op), and restore the previous handlers after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in HANDLED}
    for sig in HANDLED:
        signal.signal(sig, _raise)
    try:
        yield
    finally:
        _pending.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def recording(store: RunStore, run_id: str) -> Iterator[None]:
    """Close run ``run_id`` in ``store`` when the block does not finish it: ``interrupted`` with
    130/143 on a signal (re-raised with what the store keeps), ``failed`` on an error."""
    try:
        yield
    except KeyboardInterrupt as exc:
        interrupted = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        _pending.clear()
        store.end_run(run_id, "interrupted", interrupted.exit_code)
        kept = f"{store.kept_summary()}; run {run_id} is marked interrupted, and the same command resumes it"
        raise Interrupted(interrupted.signum, kept) from None
    except BaseException as exc:
        code = exc.exit_code if isinstance(exc, HarnessError) else EXIT_CHECK_ERRORED
        store.end_run(run_id, "failed", code)
        raise

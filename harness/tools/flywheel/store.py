"""``curated.jsonl``, the flywheel's append-only store: reading it back (records and the
provenance keys that make ingestion idempotent), appending atomically, and the lock file that
keeps two runs from interleaving."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import DataError
from harness.stages.curate_report import (
    jsonl,
)
from harness.types import (
    Conversation,
    Message,
)




@dataclass(frozen=True)
class CuratedStore:
    """What ``curated.jsonl`` already holds: its records (they count as known) and the
    provenance keys of the log lines it was fed from."""

    path: Path
    records: list[Conversation]
    keys: frozenset[tuple[str, str, int]]


def provenance_keys(provenance: Any) -> set[tuple[str, str, int]]:
    """The ingestion keys of one appended record's provenance (none for records without one)."""
    if not isinstance(provenance, dict) or not isinstance(provenance.get("line"), int):
        return set()
    line = provenance["line"]
    keys = set()
    if isinstance(provenance.get("log_sha256"), str):
        keys.add(("log", provenance["log_sha256"], line))
    if isinstance(provenance.get("line_sha256"), str):
        keys.add(("line", provenance["line_sha256"], line))
    return keys


class CuratedRowError(ValueError):
    """A line of ``curated.jsonl`` that is not a record this module (or ``harness curate``) wrote."""


def _curated_record(row: Any, source_id: str) -> Conversation:
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
        raise CuratedRowError("expected an object with a 'messages' list")
    messages = []
    for index, turn in enumerate(row["messages"]):
        if not isinstance(turn, dict) or turn.get("role") not in ("system", "user", "assistant"):
            raise CuratedRowError(f"message {index} needs a role among system, user, assistant")
        if not isinstance(turn.get("content"), str):
            raise CuratedRowError(f"message {index} content must be a string")
        messages.append(Message(turn["role"], turn["content"]))
    sid = row.get("source_id")
    return Conversation(tuple(messages), sid if isinstance(sid, str) else source_id)


def read_curated(path: Path) -> CuratedStore:
    """Read ``curated.jsonl`` (absent: empty).  It is this tool's own append-only output, so a
    bad line is an error naming it, never skipped: skipping would forget what was ingested."""
    records: list[Conversation] = []
    keys: set[tuple[str, str, int]] = set()
    if not path.exists():
        return CuratedStore(path, records, frozenset())
    with path.open("rb") as fh:
        for line, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8-sig" if line == 1 else "utf-8")
                if not text.strip():
                    continue
                row = json.loads(text)
                records.append(_curated_record(row, f"{path.name}:{line}"))
            except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
                raise DataError(
                    f"{path}:{line}: not a curated record ({exc}); curated.jsonl is append-only: repair or move it"
                ) from None
            keys |= provenance_keys(row.get("provenance"))
    return CuratedStore(path, records, frozenset(keys))


def append_curated(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Append ``rows`` in one write, flushed to disk; never rewrites what is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = b""
    if path.exists() and path.stat().st_size:
        with path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            prefix = b"" if fh.read(1) == b"\n" else b"\n"
    with path.open("ab") as fh:
        if rows:
            fh.write(prefix + jsonl(rows).encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (POSIX ``flock``; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

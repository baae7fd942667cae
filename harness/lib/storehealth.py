"""Checking and repairing a store (``harness store check`` / ``harness store repair``).

``check`` changes nothing: it reads the SQLite file (header, ``PRAGMA integrity_check``, the
tables) and every training the cache names (its folders there, its adapter's fingerprint).
``repair`` moves the file aside as ``store.sqlite.corrupt-<UTC time>``, starts a new one, and
puts back what still verifies:

* every row that can still be read from the old file, where a cache entry's key must still be
  the sha256 of its stored material and its value must parse, and a per-item result must belong
  to such an entry (run history is copied as it is);
* every training under ``artifacts/train/`` whose ``cache-entry.json`` (written beside the adapter
  when it was trained) verifies: key and material agree, the folders exist, the adapter has its
  fingerprint, so the next run reuses it even when nothing could be read from the old file.

Nothing is ever deleted: the bad file stays beside the new one.  Repair takes the store's open
lock, but it must not run while a run is using the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.lib.models import dir_fingerprint
from harness.lib.store import (
    DB_NAME,
    SQLITE_HEADER,
    TABLES,
    Store,
    canonical_json,
    file_lock,
    read_header,
)

ENTRY_FILE = "cache-entry.json"
"""A training's cache entry, written beside its adapter (``{key, kind, material, value}``)."""

_CHUNK = 256


@dataclass
class Health:
    """What ``check`` found: ``problems`` make the store unusable; ``stale`` entries are only
    never served (their artifacts are gone or changed)."""

    path: Path
    problems: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Repair:
    path: Path
    moved_to: Path | None
    kept: dict[str, int] = field(default_factory=dict)
    reindexed: int = 0
    """trainings put back from their ``cache-entry.json``"""


def training_problem(root: Path, value: dict[str, Any]) -> str | None:
    """Why a cached training (its value) cannot be served from the store at ``root``, or None.
    Relative paths in it are relative to the store's folder."""

    def on_disk(text: str) -> Path:
        path = Path(text)
        return path if path.is_absolute() else root / path

    try:
        output = on_disk(value["output"]["path"])
        checkpoints = [on_disk(e["path"]) for e in value.get("checkpoints", [])]
    except (KeyError, TypeError):
        return "the entry has no output path"
    missing = [p for p in [output, *checkpoints] if not p.is_dir()]
    if missing:
        return f"{missing[0]} is missing"
    if dir_fingerprint(output) != value.get("fingerprint"):
        return f"{output} does not have the fingerprint it was trained with"
    return None


def _connect_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def _file_problem(path: Path) -> str | None:
    try:
        head = read_header(path)  # not a plain open(): see harness.lib.store
    except FileNotFoundError:
        return "there is no store here"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not head:
        return "is empty (0 bytes): the run history it may have had is gone"
    if head != SQLITE_HEADER:
        return "is not an SQLite database (corrupted or overwritten)"
    return None


def check(root: Path) -> Health:
    """Read the store at ``root`` (a folder holding ``store.sqlite``) and report on it."""
    root = root.resolve()
    health = Health(root / DB_NAME)
    problem = _file_problem(health.path)
    if problem:
        health.problems.append(problem)
        return health
    try:
        db = _connect_readonly(health.path)
        try:
            rows = [r[0] for r in db.execute("PRAGMA integrity_check(20)")]
            if rows != ["ok"]:
                health.problems.extend(f"integrity check: {r}" for r in rows)
                return health
            present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            health.problems.extend(f"table {t!r} is missing" for t in TABLES if t not in present)
            for table in (t for t in TABLES if t in present):
                health.counts[table] = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            if "cache" in present:
                for key, value in db.execute("SELECT key, value FROM cache WHERE kind = 'train'"):
                    reason = training_problem(root, json.loads(value))
                    if reason:
                        health.stale.append(f"training {key[:12]}: {reason} (never served; retrained when needed)")
        finally:
            db.close()
    except (sqlite3.Error, ValueError) as exc:
        health.problems.append(f"is corrupted or unreadable: {exc}")
    return health


# ------------------------------------------------------------------------------- salvage


def _rows(db: sqlite3.Connection, table: str) -> Iterator[tuple[Any, ...]]:
    """Every row of ``table`` that can still be read; a damaged stretch is skipped chunk by chunk,
    then row by row."""
    try:
        yield from db.execute(f"SELECT * FROM {table}").fetchall()
        return
    except sqlite3.Error:
        pass
    try:
        top = db.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
    except sqlite3.Error:
        return
    for low in range(0, top + 1, _CHUNK):
        query = f"SELECT * FROM {table} WHERE rowid BETWEEN ? AND ?"
        try:
            yield from db.execute(query, (low, low + _CHUNK - 1)).fetchall()
        except sqlite3.Error:
            for rowid in range(low, low + _CHUNK):
                try:
                    yield from db.execute(query, (rowid, rowid)).fetchall()
                except sqlite3.Error:
                    continue


def _valid_entry(root: Path, key: str, kind: str, material: str, value: str) -> bool:
    if hashlib.sha256(material.encode()).hexdigest() != key:
        return False
    try:
        data = json.loads(value)
        json.loads(material)
    except ValueError:
        return False
    return kind != "train" or training_problem(root, data) is None


def _salvage(path: Path, root: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of the old file worth keeping, by table (nothing when it cannot be opened)."""
    if _file_problem(path) is not None:
        return {}
    try:
        db = _connect_readonly(path)
    except sqlite3.Error:
        return {}
    try:
        try:
            present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error:
            return {}
        found = {t: list(_rows(db, t)) for t in TABLES if t in present}
    finally:
        db.close()
    cache = [r for r in found.get("cache", []) if len(r) == 5 and _valid_entry(root, r[0], r[1], r[2], r[3])]
    keys = {r[0] for r in cache}
    items = [r for r in found.get("item_cache", []) if r[0] in keys and _parses(r[2])]
    return {**found, "cache": cache, "item_cache": items}


def _parses(text: Any) -> bool:
    try:
        json.loads(text)
    except (TypeError, ValueError):
        return False
    return True


def _insert(store: Store, table: str, rows: list[tuple[Any, ...]]) -> int:
    if not rows:
        return 0
    columns = [r[1] for r in store.db.execute(f"PRAGMA table_info({table})")]
    width = min(len(columns), len(rows[0]))
    names = ", ".join(columns[:width])
    marks = ", ".join("?" * width)
    with store.db:
        cursor = store.db.executemany(
            f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})",
            [tuple(r[:width]) for r in rows],
        )
    return cursor.rowcount


def _reindex(store: Store) -> int:
    """Put back every training under ``artifacts/train`` whose ``cache-entry.json`` verifies."""
    count = 0
    for entry_file in sorted(store.artifacts.glob(f"train/*/{ENTRY_FILE}")):
        try:
            entry = json.loads(entry_file.read_text(encoding="utf-8"))
            key, kind, material, value = entry["key"], entry["kind"], entry["material"], entry["value"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        try:
            text = canonical_json(value)
        except ValueError:
            continue
        if not _valid_entry(store.root, key, kind, material, text):
            continue
        with store.db:
            cursor = store.db.execute(
                "INSERT OR IGNORE INTO cache (key, kind, material, value, created) VALUES (?,?,?,?,?)",
                (key, kind, material, text, entry_file.stat().st_mtime),
            )
        count += cursor.rowcount
    return count


def repair(root: Path) -> Repair:
    """Move the store file at ``root`` aside, start a new one, keep what verifies (see the module
    docstring)."""
    root = root.resolve()
    path = root / DB_NAME
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    with file_lock(root / f"{DB_NAME}.lock"):
        salvaged = _salvage(path, root)
        moved: Path | None = None
        if path.exists():
            moved = path.with_name(f"{DB_NAME}.corrupt-{stamp}")
            os.replace(path, moved)
            for suffix in ("-wal", "-shm"):
                side = path.with_name(DB_NAME + suffix)
                if side.exists():
                    os.replace(side, moved.with_name(moved.name + suffix))
    store = Store(root)
    try:
        report = Repair(path, moved)
        for table in TABLES:
            rows = salvaged.get(table, [])
            report.kept[table] = _insert(store, table, rows)
        report.reindexed = _reindex(store)
    finally:
        store.close()
    return report

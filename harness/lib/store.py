"""The embedded SQLite store: runs, ledgers, per-item results, gate decisions, and a
content-addressed cache.

Cache keys are the sha256 of a canonical JSON "key material" (model fingerprint, component
config, data digest, backend, harness version, ...).  The material is stored beside the value and
compared on every read, so a hash collision or a stale schema can never serve a wrong entry.  Only
successful, non-empty results are ever written.

Several processes may share one store (CI jobs sharing a cache): SQLite runs in WAL mode with a
busy timeout and every write transaction starts ``IMMEDIATE``; the file is opened, checked and
migrated under a file lock; and ``lock(kind, key)`` gives a per-key lock that the train and
evaluate stages hold while they compute an entry, so a second run waits and then reuses it.
Opening runs ``PRAGMA quick_check``: a corrupted, unreadable or read-only store is a one-line
``StoreError`` naming the file and the fix (``harness store repair``, see
``harness.lib.storehealth``).  Paths of artifacts are stored relative to the store's folder, so a
copied store works.

Never open ``store.sqlite`` with plain ``open()`` while this process has it open in SQLite: closing
*any* descriptor of a file drops every POSIX lock the process holds on it, SQLite's included, and
another process then takes itself for the last connection, checkpoints and resets the WAL under
this one's feet, so this process's later commits stay invisible to everyone else (and can be
lost) until it exits (https://www.sqlite.org/howtocorrupt.html, section 2.2).  ``read_header``
is the one safe way to look at the file's first bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from harness import __version__
from harness.errors import StoreError
from harness.lib.interrupt import raise_pending
from harness.types import BenchmarkResult, Decision, Ledger

SCHEMA_VERSION = 1
"""Version of the cache keys' material (part of every key); not of the tables."""

DB_NAME = "store.sqlite"
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for another process's transaction before it gives up."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, suite TEXT, suite_path TEXT, started REAL, finished REAL,
    exit_code INTEGER, report_dir TEXT, status TEXT
);
CREATE TABLE IF NOT EXISTS ledgers (run_id TEXT PRIMARY KEY, ledger TEXT);
CREATE TABLE IF NOT EXISTS items (
    run_id TEXT, benchmark TEXT, model TEXT, item_id TEXT, prediction TEXT, reference TEXT,
    score REAL, PRIMARY KEY (run_id, benchmark, model, item_id)
);
CREATE TABLE IF NOT EXISTS decisions (run_id TEXT, gate TEXT, verdict TEXT, decision TEXT,
    PRIMARY KEY (run_id, gate));
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY, kind TEXT, material TEXT, value TEXT, created REAL
);
CREATE TABLE IF NOT EXISTS item_cache (
    key TEXT, item_id TEXT, result TEXT, PRIMARY KEY (key, item_id)
);
CREATE TABLE IF NOT EXISTS results (run_id TEXT PRIMARY KEY, suite TEXT, document TEXT);
"""

TABLES = ("runs", "ledgers", "items", "decisions", "cache", "item_cache")


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def cache_key(kind: str, material: dict[str, Any]) -> tuple[str, str]:
    """The key and the canonical material of a cache entry (harness and schema versions added)."""
    full = {"kind": kind, "harness": __version__, "schema": SCHEMA_VERSION, **material}
    text = canonical_json(full)
    return hashlib.sha256(text.encode()).hexdigest(), text


def warn(message: str) -> None:
    """A warning about the store, on stderr (the screen's, even during a run), in the CLI's
    one-line style."""
    from harness.lib.console import screen_stderr

    print(f"harness: warning: {message}", file=screen_stderr())


@contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (``flock``: released by the OS if the holder dies).

    When another process holds it, ``on_wait()`` is called once and this one blocks until it is
    free; the wait polls, so a signal (a cancelled CI job) still interrupts it."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire(poll_interval=0.2)
    try:
        yield
    finally:
        lock.release()


def repair_hint(root: Path) -> str:
    return f"run `harness store repair {root}` to set it aside and start a new one (artifacts that still verify are kept)"


_OPEN: Counter[Path] = Counter()
"""Database files this process holds open through a ``Store``, with how many stores hold each."""
_OPEN_GUARD = threading.Lock()


def read_header(db_path: Path) -> bytes:
    """The first 16 bytes of the store file ``db_path`` (``FileNotFoundError`` when there is none).

    A file this process holds open through a ``Store`` is not opened again (see the module
    docstring: closing that descriptor would release SQLite's locks); it was checked when it was
    opened and SQLite has written it since, so its header is SQLite's."""
    with _OPEN_GUARD:
        if _OPEN[db_path.resolve()] > 0:
            return SQLITE_HEADER
    with db_path.open("rb") as fh:
        return fh.read(len(SQLITE_HEADER))


def _check_header(db_path: Path, root: Path) -> bool:
    """Whether the file exists with content; a 0-byte file is a warning, a foreign one an error."""
    try:
        head = read_header(db_path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StoreError(f"{db_path}: the store cannot be read ({exc.strerror}); check its permissions") from None
    if not head:
        warn(f"{db_path} is empty (0 bytes): starting a new store there; its run history, if it had one, is gone")
        return False
    if head != SQLITE_HEADER:
        raise StoreError(f"{db_path}: the store is corrupted (not an SQLite database); {repair_hint(root)}")
    return True


def _writable_problem(root: Path, db_path: Path) -> str | None:
    for path in (root, db_path):
        if path.exists() and not os.access(path, os.W_OK):
            return f"{path}: the store is read-only; give the job write access, or copy it to a writable folder and pass that as --store"
    return None


class Store:
    """One SQLite file (WAL mode) plus an ``artifacts/`` folder beside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()  # cached artifact paths must not depend on the working directory
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot create the store folder ({exc.strerror}); pass a writable --store") from None
        self.artifacts = self.root / "artifacts"
        self.path = self.root / DB_NAME
        self.written: Counter[str] = Counter()
        """What this process committed, by kind (``items:evaluate``, ``entries:train``, ...)."""
        self.training: Path | None = None
        """The training folder being written now, if any (for the line an interruption prints)."""
        problem = _writable_problem(self.root, self.path)
        if problem:
            raise StoreError(problem)
        with file_lock(self.root / f"{DB_NAME}.lock"):
            self.db = self._open()
        with _OPEN_GUARD:
            _OPEN[self.path] += 1
        self._closed = False

    def _open(self) -> sqlite3.Connection:
        existed = _check_header(self.path, self.root)
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level="IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: the store cannot be opened ({exc}); check the folder's permissions") from None
        try:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if existed:
                problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
                if problems != ["ok"]:
                    raise StoreError(f"{self.path}: the store is corrupted ({problems[0]}); {repair_hint(self.root)}")
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            if "status" not in columns:  # stores written before runs had a status
                db.execute("ALTER TABLE runs ADD COLUMN status TEXT")
            db.commit()
        except StoreError:
            db.close()
            raise
        except sqlite3.Error as exc:
            db.close()
            text = str(exc)
            if "readonly" in text or "read-only" in text:
                raise StoreError(f"{self.path}: the store is read-only ({text}); give the job write access, or copy it to a writable folder and pass that as --store") from None
            raise StoreError(f"{self.path}: the store is corrupted or unreadable ({text}); {repair_hint(self.root)}") from None
        return db

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with _OPEN_GUARD:
                _OPEN[self.path] -= 1
        self.db.close()

    # ------------------------------------------------------------------------ locks, paths

    def lock(
        self, kind: str, key: str, on_wait: Callable[[], None] | None = None, part: str = ""
    ) -> AbstractContextManager[None]:
        """A context manager holding the lock of cache entry ``key`` of ``kind`` (see
        ``file_lock``): whoever holds it is the one computing that entry.  A ``part`` of the entry
        computed on its own (an item shard) has its own lock, so parts never wait for each other."""
        name = f"{kind}-{key[:24]}" + (f"-{part}" if part else "")
        return file_lock(self.root / "locks" / f"{name}.lock", on_wait)

    def relative(self, path: Path) -> str:
        """``path`` as stored: relative to the store's folder when it lies inside it."""
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def absolute(self, stored: str) -> Path:
        """A stored path back on disk (a relative one is under this store's folder)."""
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    def kept_summary(self) -> str:
        """What this process left in the store, for the line an interrupted run prints."""
        parts = []
        items = sum(n for kind, n in self.written.items() if kind.startswith("items:"))
        entries = sum(n for kind, n in self.written.items() if kind.startswith("entries:"))
        if items:
            parts.append(f"{items} scored item{'s' if items != 1 else ''}")
        if entries:
            parts.append(f"{entries} finished result{'s' if entries != 1 else ''}")
        if self.training is not None:
            steps = sorted(p.name for p in (self.training / "state").glob("step-*") if p.is_dir())
            if steps:
                parts.append(f"training state at step {int(steps[-1].split('-')[1])}")
        kept = ", ".join(parts) if parts else "everything finished before this run"
        return f"the store {self.root} keeps {kept}"

    # -------------------------------------------------------------------------- cache

    def cache_get(self, kind: str, material: dict[str, Any]) -> Any | None:
        key, text = cache_key(kind, material)
        row = self.db.execute("SELECT material, value FROM cache WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] != text:
            return None
        return json.loads(row[1])

    def cache_put(self, kind: str, material: dict[str, Any], value: Any) -> str:
        key, text = cache_key(kind, material)
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO cache (key, kind, material, value, created) VALUES (?,?,?,?,?)",
                (key, kind, text, canonical_json(value), time.time()),
            )
        self.written[f"entries:{kind}"] += 1
        return key

    def cached_items(self, kind: str, material: dict[str, Any]) -> dict[str, Any]:
        """Per-item values stored under ``material`` (only when the stored material matches)."""
        key, text = cache_key(kind, material)
        row = self.db.execute("SELECT material FROM cache WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] != text:
            return {}
        rows = self.db.execute("SELECT item_id, result FROM item_cache WHERE key = ?", (key,))
        return {item_id: json.loads(result) for item_id, result in rows}

    def put_items(self, kind: str, material: dict[str, Any], values: dict[str, Any]) -> str:
        """Store per-item values under ``material``, committed at once (a kill loses nothing)."""
        key, text = cache_key(kind, material)
        with self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO cache (key, kind, material, value, created) VALUES (?,?,?,?,?)",
                (key, kind, text, "null", time.time()),
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO item_cache VALUES (?,?,?)",
                [(key, item_id, canonical_json(v)) for item_id, v in values.items()],
            )
        self.written[f"items:{kind}"] += len(values)
        raise_pending()  # kept what was scored; an interruption a library swallowed stops here
        return key

    # --------------------------------------------------------------------------- runs

    def start_run(self, run_id: str, suite: str, suite_path: Path) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO runs (run_id, suite, suite_path, started, status) VALUES (?,?,?,?,?)",
                (run_id, suite, str(suite_path), time.time(), "running"),
            )

    def save_ledger(self, run_id: str, ledger: Ledger) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO ledgers VALUES (?,?)", (run_id, canonical_json(ledger.to_json()))
            )

    def save_items(self, run_id: str, label: str, result: BenchmarkResult) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO items VALUES (?,?,?,?,?,?,?)",
                [
                    (run_id, label, result.model, i.item_id, i.prediction, i.reference, i.score)
                    for i in result.items
                ],
            )

    def save_decisions(self, run_id: str, decisions: list[Decision]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO decisions VALUES (?,?,?,?)",
                [(run_id, d.gate, d.verdict.value, canonical_json(d.to_json())) for d in decisions],
            )

    def finish_run(self, run_id: str, exit_code: int, report_dir: Path) -> None:
        with self.db:
            self.db.execute(
                "UPDATE runs SET finished = ?, exit_code = ?, report_dir = ?, status = ? WHERE run_id = ?",
                (time.time(), exit_code, str(report_dir), "finished", run_id),
            )

    def end_run(self, run_id: str, status: str, exit_code: int) -> None:
        """Close a run that did not finish: ``interrupted`` (a signal) or ``failed`` (an error)."""
        with self.db:
            self.db.execute(
                "UPDATE runs SET finished = ?, exit_code = ?, status = ? WHERE run_id = ? AND status = 'running'",
                (time.time(), exit_code, status, run_id),
            )

    # ------------------------------------------------------------------ result documents

    def save_result(self, run_id: str, suite: str, document: dict[str, Any]) -> None:
        """Keep a run's full result document (``harness report`` re-renders it from here)."""
        text = json.dumps(document, ensure_ascii=False)
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO results VALUES (?,?,?)", (run_id, suite, text))

    def load_result(self, run_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT document FROM results WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def list_runs(self, suite: str | None = None) -> list[dict[str, Any]]:
        """Every run (of ``suite``, when given), oldest first, with whether its result
        document is kept (runs from before documents were stored, or killed, have none)."""
        rows = self.db.execute(
            "SELECT r.run_id, r.suite, r.started, r.finished, r.exit_code, r.report_dir,"
            " d.run_id IS NOT NULL FROM runs r LEFT JOIN results d ON d.run_id = r.run_id"
            " WHERE ? IS NULL OR r.suite = ? ORDER BY r.started, r.run_id",
            (suite, suite),
        )
        keys = ("run_id", "suite", "started", "finished", "exit_code", "report_dir", "has_result")
        return [{**dict(zip(keys, row)), "has_result": bool(row[6])} for row in rows]

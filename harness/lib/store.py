"""The embedded SQLite store: runs, ledgers, per-item results, gate decisions, and a
content-addressed cache.

Cache keys are the sha256 of a canonical JSON "key material" (model fingerprint, component
config, data digest, backend, harness version, ...).  The material is stored beside the value and
compared on every read, so a hash collision or a stale schema can never serve a wrong entry.  Only
successful, non-empty results are ever written.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from harness import __version__
from harness.types import BenchmarkResult, Decision, Ledger

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, suite TEXT, suite_path TEXT, started REAL, finished REAL,
    exit_code INTEGER, report_dir TEXT
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


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def cache_key(kind: str, material: dict[str, Any]) -> tuple[str, str]:
    """The key and the canonical material of a cache entry (harness and schema versions added)."""
    full = {"kind": kind, "harness": __version__, "schema": SCHEMA_VERSION, **material}
    text = canonical_json(full)
    return hashlib.sha256(text.encode()).hexdigest(), text


class Store:
    """One SQLite file (WAL mode) plus an ``artifacts/`` folder beside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()  # cached artifact paths must not depend on the working directory
        self.root.mkdir(parents=True, exist_ok=True)
        self.artifacts = self.root / "artifacts"
        self.db = sqlite3.connect(self.root / "store.sqlite", timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

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
        return key

    # --------------------------------------------------------------------------- runs

    def start_run(self, run_id: str, suite: str, suite_path: Path) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO runs (run_id, suite, suite_path, started) VALUES (?,?,?,?)",
                (run_id, suite, str(suite_path), time.time()),
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
                "UPDATE runs SET finished = ?, exit_code = ?, report_dir = ? WHERE run_id = ?",
                (time.time(), exit_code, str(report_dir), run_id),
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

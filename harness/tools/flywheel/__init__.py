"""The data flywheel: production chat logs in, new training records out.

A production log holds one chat-completions interaction per line::

    {"request": {"messages": [...]},
     "response": {"choices": [{"message": {"role": "assistant", "content": "..."}}]},
     "feedback": {"rating": 1-5, "thumbs": "up"|"down", "rephrased": true|false}}

(``feedback`` optional; ``request``/``response`` may also be OpenAI Batch API envelopes holding
the body under ``body``).  Only interactions that worked, and that teach something the training
set does not already hold, are worth training on, so a line is appended to ``curated.jsonl``
only when it is

* **effective**: rated at least ``min_rating`` or thumbed up, not thumbed down or rated low (a
  conflicting pair counts as negative: one explicit complaint outweighs the other signal), not
  followed by a rephrase of the request (the user did not get what they asked for), and not cut
  off (``finish_reason`` ``length``/``content_filter``); unrated lines only with ``keep_unrated``;
* **novel**: not a near-duplicate of any training record or of anything an earlier run appended
  (MinHash LSH with exact-Jaccard verification, the ``near_dedup`` filter's machinery; a
  normalised exact match when that is not installed), and
* **clean**: it survives the curation filter chain (``curate.DEFAULT_FILTERS`` by default: its
  PII is redacted before it is written).

Every non-blank log line ends up in exactly one place, all in the ledger: appended, dropped with
a reason (``already_ingested``, ``low_rating``, ``thumbs_down``, ``rephrased``, ``unrated``,
``truncated``, ``known``, or a filter's), or quarantined with its ``file:line`` (``not UTF-8``,
``invalid JSON``, ``missing request``, ``missing response``, ``wrong type``, ``bad value``,
``unsupported``).

``curated.jsonl`` is append-only.  Each appended record carries its provenance (log, the log's
sha256, line, the line's sha256, the feedback, the time); a line whose (log sha256, line) or
(line sha256, line) is already there is dropped as ``already_ingested``, so running the same
log twice, or a log that has grown since, never duplicates a record.  A lock file beside it
keeps two runs from interleaving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from harness.plugin.components import RunContext
from harness.plugin.registry import Registries
from harness.stages.curate import FilterStep, ReadResult
from harness.stages.curate_report import CurateReport, Examples, InputSummary, build_report
from harness.tools.curate_file import DataFile, read_file

from .ingest import IngestOutcome, find_known, ingest, judge
from .log import (
    FEEDBACK_KEYS,
    TRUNCATED,
    Feedback,
    FlywheelOptions,
    LogEntry,
    LogRead,
    LogRecordError,
    parse_feedback,
    parse_interaction,
    read_log,
)
from .store import CuratedRowError, CuratedStore, append_curated, locked, provenance_keys, read_curated

__all__ = [
    "FEEDBACK_KEYS",
    "TRUNCATED",
    "CuratedRowError",
    "CuratedStore",
    "Feedback",
    "FlywheelJob",
    "FlywheelOptions",
    "FlywheelResult",
    "IngestOutcome",
    "LogEntry",
    "LogRead",
    "LogRecordError",
    "append_curated",
    "find_known",
    "ingest",
    "judge",
    "locked",
    "parse_feedback",
    "parse_interaction",
    "provenance_keys",
    "read_curated",
    "read_log",
    "run_flywheel",
]


@dataclass(frozen=True)
class FlywheelJob:
    """One flywheel run: the log, the current training file, and the output folder."""

    log: Path
    train: DataFile
    out_dir: Path
    options: FlywheelOptions = field(default_factory=FlywheelOptions)
    log_source: str = ""
    """what the log's source ids start with (default: the path as given)"""


@dataclass(frozen=True)
class FlywheelResult:
    """What a flywheel run did: its outcome, the training file read, the ``curated.jsonl`` it
    appended to (and how many records that held before), and the report to write."""

    outcome: IngestOutcome
    train: ReadResult
    curated: Path
    curated_before: int
    report: CurateReport


def run_flywheel(
    registries: Registries,
    job: FlywheelJob,
    steps: Sequence[FilterStep],
    ctx: RunContext,
    examples: Examples | None = None,
    now: datetime | None = None,
) -> FlywheelResult:
    """Read the training file, ``curated.jsonl`` and the log, ingest it, append the survivors.
    The reading and the append happen under one lock, so what a run decided against is what
    it appends to.  Returns the outcome and ``report.json``'s content (the caller writes the
    ledger, quarantine and report files)."""
    curated = job.out_dir / "curated.jsonl"
    with locked(job.out_dir / ".curated.lock"):
        train = read_file(registries, job.train, ctx)
        store = read_curated(curated)
        log = read_log(job.log, job.log_source or str(job.log))
        outcome = ingest(log, [*train.records, *store.records], store.keys, steps, job.options, examples, now)
        append_curated(curated, outcome.rows)
    summary = InputSummary(log.source, "chat_log", len(log.entries), len(log.quarantined), log.lines)
    report = build_report(
        outcome.ledger,
        len(outcome.rows),
        [summary],
        examples,
        sections={"flywheel": {
            "log": log.source,
            "log_sha256": log.sha256,
            "appended": len(outcome.rows),
            "curated": str(curated),
            "curated_before": len(store.records),
            "train": {
                "source": job.train.name,
                "records": len(train.records),
                "quarantined": len(train.quarantined),
            },
            "novelty": {
                "method": outcome.novelty_method,
                "scope": job.options.novelty_scope,
                "threshold": job.options.novelty_threshold,
                "known_records": outcome.pool,
            },
            "options": asdict(job.options),
        }},
    )
    return FlywheelResult(outcome, train, curated, len(store.records), report)

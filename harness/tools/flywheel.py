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

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from harness.errors import ConfigError, DataError
from harness.lib.records import RecordError, parse_message, request_body, type_name
from harness.lib.text import normalise
from harness.plugin.components import RunContext
from harness.plugin.registry import Registries
from harness.stages.curate import (
    FilterStep,
    ReadResult,
    UnbalancedLedgerError,
    check_quarantined,
    curate_records,
    verify_ledger,
)
from harness.stages.curate_report import (
    CurateReport,
    Examples,
    InputSummary,
    LineCount,
    build_report,
    jsonl,
    read_reason,
)
from harness.tools.curate_file import DataFile, read_file
from harness.types import (
    Conversation,
    Dropped,
    Ledger,
    Message,
    Quarantined,
    StageLedger,
)

Thumbs = Literal["up", "down"]
Scope = Literal["prompt", "response", "both"]

_SCOPE_ROLES: dict[str, tuple[str, ...]] = {"prompt": ("user",), "response": ("assistant",), "both": ("user", "assistant")}
TRUNCATED = frozenset({"length", "content_filter"})
"""``finish_reason`` values of an answer that was cut off: training on it teaches running on."""
FEEDBACK_KEYS = ("rating", "thumbs", "rephrased")
"""The feedback fields copied into provenance; anything else (a free-text comment) may hold PII."""


LogRecordError = RecordError
"""A log line that is JSON but not a usable interaction (``harness.lib.records.RecordError``): the
message starts with its kind (``missing request``, ``wrong type``...), the ledger's reason key."""


# ------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class FlywheelOptions:
    """What makes a logged interaction worth training on."""

    min_rating: float = 4.0
    keep_unrated: bool = False
    novelty_threshold: float = 0.8
    novelty_scope: Scope = "both"
    max_quarantined_fraction: float = 0.05

    def __post_init__(self) -> None:
        if not 1 <= self.min_rating <= 5:
            raise ConfigError(f"--min-rating must be from 1 to 5, got {self.min_rating:g}")
        if not 0 < self.novelty_threshold <= 1:
            raise ConfigError(f"--novelty-threshold must be in (0, 1], got {self.novelty_threshold:g}")
        if self.novelty_scope not in _SCOPE_ROLES:
            raise ConfigError(f"--novelty-scope must be one of {sorted(_SCOPE_ROLES)}")
        if not 0 <= self.max_quarantined_fraction <= 1:
            raise ConfigError("--max-quarantined-fraction must be from 0 to 1")


# ------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Feedback:
    """The user's verdict on one interaction (``raw``: the logged fields of ``FEEDBACK_KEYS``)."""

    rating: float | None = None
    thumbs: Thumbs | None = None
    rephrased: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def rated(self) -> bool:
        return self.rating is not None or self.thumbs is not None


@dataclass(frozen=True)
class LogEntry:
    """One parsed log line: the conversation (request turns + the answer) and what came with it."""

    record: Conversation
    line: int
    line_sha256: str
    feedback: Feedback | None
    finish_reason: str | None

    def keys(self, log_sha256: str) -> set[tuple[str, str, int]]:
        """The provenance keys that mark this line as ingested (see the module docstring)."""
        return {("log", log_sha256, self.line), ("line", self.line_sha256, self.line)}










def parse_feedback(value: Any) -> Feedback | None:
    """``feedback`` of a log line; ``None`` when absent.  A value of the wrong type is a malformed
    line, never a guess (a rating of "5" or thumbs "yes" would be read wrongly either way)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise LogRecordError(f"wrong type: feedback must be an object, got {type_name(value)}")
    rating = value.get("rating")
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, (int, float)):
            raise LogRecordError(f"wrong type: feedback.rating must be a number from 1 to 5, got {type_name(rating)}")
        if not 1 <= rating <= 5:
            raise LogRecordError(f"bad value: feedback.rating must be from 1 to 5, got {rating!r}")
    thumbs = value.get("thumbs")
    if thumbs is not None and not isinstance(thumbs, str):
        raise LogRecordError(f"wrong type: feedback.thumbs must be 'up' or 'down', got {type_name(thumbs)}")
    if thumbs is not None and thumbs not in ("up", "down"):
        raise LogRecordError(f"bad value: feedback.thumbs must be 'up' or 'down', got {thumbs[:20]!r}")
    rephrased = value.get("rephrased")
    if rephrased is not None and not isinstance(rephrased, bool):
        raise LogRecordError(f"wrong type: feedback.rephrased must be true or false, got {type_name(rephrased)}")
    raw = {k: value[k] for k in FEEDBACK_KEYS if k in value}
    checked = cast("Literal['up', 'down'] | None", thumbs)  # checked above
    return Feedback(None if rating is None else float(rating), checked, bool(rephrased), raw)


def parse_interaction(line: Any, source_id: str) -> tuple[Conversation, Feedback | None, str | None]:
    """The conversation (request turns, then the first choice's answer), feedback and
    ``finish_reason`` of one decoded log line; ``LogRecordError`` when it is not usable."""
    if not isinstance(line, dict):
        raise LogRecordError(f"wrong type: expected a JSON object, got {type_name(line)}")
    request = request_body(line, "request")
    turns = request.get("messages")
    if turns is None:
        raise LogRecordError("missing request: the request has no 'messages'")
    if not isinstance(turns, list) or not turns:
        raise LogRecordError(f"wrong type: request.messages must be a non-empty list, got {type_name(turns)}")
    messages = [parse_message(turn, f"request.messages[{i}]") for i, turn in enumerate(turns)]
    if not any(m.role == "user" for m in messages):
        raise LogRecordError("missing request: the request has no user message")
    response = request_body(line, "response")
    choices = response.get("choices")
    if choices is None:
        raise LogRecordError("missing response: the response has no 'choices'")
    if not isinstance(choices, list) or not choices:
        raise LogRecordError(f"wrong type: response.choices must be a non-empty list, got {type_name(choices)}")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise LogRecordError(f"wrong type: response.choices[0] must be an object, got {type_name(choice)}")
    if choice.get("message") is None:
        raise LogRecordError("missing response: response.choices[0] has no 'message'")
    answer = parse_message(choice["message"], "response.choices[0].message")
    if answer.role != "assistant":
        raise LogRecordError(f"unsupported: response.choices[0].message.role is {answer.role!r}, not 'assistant'")
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise LogRecordError(f"wrong type: response.choices[0].finish_reason must be a string, got {type_name(finish)}")
    feedback = parse_feedback(line.get("feedback"))
    return Conversation((*messages, answer), source_id), feedback, finish


@dataclass(frozen=True)
class LogRead:
    """A log read line by line: its interactions, its malformed lines, and its ledger step."""

    source: str
    sha256: str
    entries: list[LogEntry]
    quarantined: list[Quarantined]
    stage: StageLedger
    lines: LineCount


def read_log(path: Path, source: str) -> LogRead:
    """Parse every line of a log; nothing stops at a bad line, each is quarantined with its
    ``file:line`` and raw text.  Lines are decoded like ``read_jsonl`` does (a UTF-8 BOM at the
    start is allowed); the file's sha256 is computed on the same pass."""
    if not path.is_file():
        raise DataError(f"{source}: log file not found")
    entries: list[LogEntry] = []
    quarantined: list[Quarantined] = []
    digest = hashlib.sha256()
    lines = blank = 0
    with path.open("rb") as fh:
        for lines, raw_bytes in enumerate(fh, start=1):  # the last index is the line count
            digest.update(raw_bytes)
            source_id = f"{source}:{lines}"
            body = raw_bytes.rstrip(b"\r\n")
            raw = body.decode("utf-8", errors="replace")
            try:
                text = body.decode("utf-8-sig" if lines == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                quarantined.append(Quarantined(source_id, f"not UTF-8: {exc.reason} at byte {exc.start}", raw))
                continue
            if not text.strip():
                blank += 1
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                quarantined.append(Quarantined(source_id, f"invalid JSON: {exc.msg} (column {exc.colno})", raw))
                continue
            try:
                record, feedback, finish = parse_interaction(value, source_id)
            except LogRecordError as exc:
                quarantined.append(Quarantined(source_id, str(exc), raw))
                continue
            entries.append(LogEntry(record, lines, hashlib.sha256(body).hexdigest(), feedback, finish))
    stage = StageLedger(f"read {Path(source).name}", n_in=len(entries) + len(quarantined))
    stage.kept, stage.quarantined = len(entries), len(quarantined)
    stage.reasons.update(Counter(read_reason(q) for q in quarantined))
    if stage.n_in != lines - blank:  # the promise of this module; cheap to keep honest
        raise UnbalancedLedgerError(f"step {stage.name!r}: {stage.n_in} entries for {lines - blank} non-blank lines")
    return LogRead(source, digest.hexdigest(), entries, quarantined, stage, LineCount(lines, blank))


# ----------------------------------------------------------------------- curated store


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


# ----------------------------------------------------------------------------- judging


def judge(entry: LogEntry, options: FlywheelOptions) -> tuple[str, str] | None:
    """``(reason, detail)`` when ``entry`` was not an effective interaction, else ``None``."""
    fb = entry.feedback
    if fb is not None and fb.rating is not None and fb.rating < options.min_rating:
        return "low_rating", f"rating {fb.rating:g} < {options.min_rating:g}"
    if fb is not None and fb.thumbs == "down":
        return "thumbs_down", ""
    if fb is not None and fb.rephrased:
        return "rephrased", "the user rephrased the request after this answer"
    if (fb is None or not fb.rated) and not options.keep_unrated:
        return "unrated", "no rating or thumbs (--keep-unrated keeps these)"
    if entry.finish_reason in TRUNCATED:
        return "truncated", f"finish_reason {entry.finish_reason}"
    return None


def _exact_key(record: Conversation, scope: Scope) -> tuple[tuple[str, str], ...]:
    roles = _SCOPE_ROLES[scope]
    return tuple((m.role, normalise(m.content)) for m in record.messages if m.role in roles)


def find_known(
    candidates: Sequence[Conversation], pool: Sequence[Conversation], threshold: float, scope: Scope
) -> tuple[dict[int, tuple[str, float]], str]:
    """Which ``candidates`` are near-duplicates of a ``pool`` record: ``{index: (pool source id,
    similarity)}`` (the best match), and the method, ``minhash`` or ``exact``.

    MinHash: ``near_dedup``'s index over pool + candidates (pool first); a candidate is known when
    its shingle set equals a pool record's or a verified pair links it to one.  Pairs between
    two candidates do not count (the filter chain's dedup sees those).  Without ``near_dedup``
    (or ``rensa``), a normalised exact match of the turns in scope."""
    if not candidates or not pool:
        return {}, "minhash"
    try:
        from harness.lib.minhash import Params, build_index

        index = build_index([*pool, *candidates], Params(scope=scope, threshold=threshold))
    except ImportError:
        first: dict[tuple[tuple[str, str], ...], str] = {}
        for record in pool:
            first.setdefault(_exact_key(record, scope), record.source_id)
        hits = {j: (first[key], 1.0) for j, r in enumerate(candidates) if (key := _exact_key(r, scope)) and key in first}
        return hits, "exact"
    n = len(pool)
    best: dict[int, tuple[float, int]] = {}
    for a, b, value in index.pairs:  # a < b; pool nodes come first (their records do)
        if index.first[a] < n <= index.first[b] and (b not in best or value > best[b][0]):
            best[b] = (value, a)
    hits = {}
    for j in range(len(candidates)):
        node = index.node_of[n + j]
        if node < 0:
            continue
        if index.first[node] < n:
            hits[j] = (pool[index.first[node]].source_id, 1.0)
        elif node in best:
            value, a = best[node]
            hits[j] = (pool[index.first[a]].source_id, value)
    return hits, "minhash"


# ----------------------------------------------------------------------------- ingesting


@dataclass
class IngestOutcome:
    """What one log gave: the rows to append, the ledger, and how novelty was judged."""

    rows: list[dict[str, Any]]
    ledger: Ledger
    log: LogRead
    novelty_method: str
    pool: int


def _drop_step(
    ledger: Ledger,
    examples: Examples | None,
    name: str,
    label: str,
    entries: list[LogEntry],
    decide: Callable[[LogEntry], tuple[str, str] | None],
) -> list[LogEntry]:
    """One ledger step that keeps or drops each entry with a reason; returns the kept ones."""
    stage = StageLedger(label, n_in=len(entries))
    kept: list[LogEntry] = []
    drops: list[Dropped] = []
    for entry in entries:
        verdict = decide(entry)
        if verdict is None:
            kept.append(entry)
        else:
            drops.append(Dropped(entry.record.source_id, name, *verdict))
    stage.kept, stage.dropped = len(kept), len(drops)
    stage.reasons.update(Counter(d.reason for d in drops))
    ledger.stages.append(stage)
    ledger.dropped.extend(drops)
    if examples is not None:
        examples.dropped(stage, drops, {e.record.source_id: e.record for e in entries})
    return kept


def ingest(
    log: LogRead,
    pool: Sequence[Conversation],
    ingested: frozenset[tuple[str, str, int]] | set[tuple[str, str, int]],
    steps: Sequence[FilterStep],
    options: FlywheelOptions,
    examples: Examples | None = None,
    now: datetime | None = None,
) -> IngestOutcome:
    """Decide every line of ``log``: already ingested, effective, novel against ``pool``, then
    the filter chain ``steps``; the survivors as ``curated.jsonl`` rows with their provenance."""
    ledger = Ledger(stages=[log.stage], quarantined=list(log.quarantined))
    if examples is not None:
        examples.quarantined(log.stage, log.quarantined)
    check_quarantined(
        log.quarantined,
        log.stage.n_in,
        options.max_quarantined_fraction,
        f"--max-quarantined-fraction {options.max_quarantined_fraction:g}",
    )

    def already(entry: LogEntry) -> tuple[str, str] | None:
        hit = entry.keys(log.sha256) & ingested
        return ("already_ingested", f"line {entry.line} is in curated.jsonl") if hit else None

    entries = _drop_step(ledger, examples, "ingested", "already ingested", log.entries, already)
    rule = f"rating >= {options.min_rating:g} or thumbs up, not rephrased" + (", unrated kept" if options.keep_unrated else "")
    entries = _drop_step(ledger, examples, "feedback", f"effective ({rule})", entries, lambda e: judge(e, options))
    hits, method = find_known([e.record for e in entries], pool, options.novelty_threshold, options.novelty_scope)
    known = {entries[j].record.source_id: hit for j, hit in hits.items()}
    word = "jaccard" if method == "minhash" else "exact match"

    def novel(entry: LogEntry) -> tuple[str, str] | None:
        hit = known.get(entry.record.source_id)
        return None if hit is None else ("known", f"{word} {hit[1]:.2f} with {hit[0]}")

    label = f"novel ({method}, {options.novelty_scope}, threshold {options.novelty_threshold:g}, {len(pool)} known records)"
    entries = _drop_step(ledger, examples, "novelty", label, entries, novel)
    by_id = {e.record.source_id: e for e in entries}
    records = curate_records([e.record for e in entries], steps, ledger, examples)
    verify_ledger(ledger)
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    rows = [_row(record, by_id[record.source_id], log, stamp) for record in records]
    return IngestOutcome(rows, ledger, log, method, len(pool))


def _row(record: Conversation, entry: LogEntry, log: LogRead, stamp: str) -> dict[str, Any]:
    provenance = {
        "log": log.source,
        "log_sha256": log.sha256,
        "line": entry.line,
        "line_sha256": entry.line_sha256,
        "feedback": entry.feedback.raw if entry.feedback is not None else None,
        "ingested_at": stamp,
    }
    return {"messages": [asdict(m) for m in record.messages], "source_id": record.source_id, "provenance": provenance}


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

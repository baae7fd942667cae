"""Judging and ingesting a log: which interactions were effective, which are already known
(near-duplicates of the training set or the store), and the filter chain over the rest, with
every line accounted for in the ledger."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from harness.lib.text import normalise
from harness.stages.curate import (
    FilterStep,
    check_quarantined,
    curate_records,
    verify_ledger,
)
from harness.stages.curate_report import (
    Examples,
)
from harness.types import (
    Conversation,
    Dropped,
    Ledger,
    StageLedger,
)

from .log import SCOPE_ROLES, TRUNCATED, FlywheelOptions, LogEntry, LogRead, Scope


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
    roles = SCOPE_ROLES[scope]
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

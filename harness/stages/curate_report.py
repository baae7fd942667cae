"""What curation reports: examples of each reason (PII-redacted excerpts), the report document,
and the files a curation writes (curated set, ledger, quarantine, report), each written
atomically.  Shared by the curate stage, ``harness curate`` and the data flywheel."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.plugin.components import FilterResult
from harness.types import Conversation, Dropped, Ledger, Quarantined, StageLedger

@dataclass(frozen=True)
class LineCount:
    """Physical lines of a line-oriented file, and how many of them are blank (never records)."""

    lines: int
    blank: int


@dataclass(frozen=True)
class InputSummary:
    """What one input gave: for the report's "nothing disappears" identity
    ``lines == records + quarantined + blank_lines`` (line-oriented inputs only)."""

    source: str
    format: str
    records: int
    quarantined: int
    lines: LineCount | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "records": self.records,
            "quarantined": self.quarantined,
            "lines": self.lines.lines if self.lines else None,
            "blank_lines": self.lines.blank if self.lines else None,
        }


REPORT_SCHEMA = "finetune-harness/curate-report/v1"


EXAMPLES_PER_REASON = 3


EXCERPT_CHARS = 160


DETAIL_CHARS = 240


@dataclass(frozen=True)
class Example:
    """One record behind a reason: its source id and a short, PII-redacted excerpt."""

    source_id: str
    excerpt: str
    detail: str = ""


def redact(text: str) -> str:
    """``text`` with every PII match the ``pii`` filter finds replaced by its placeholder.

    Reports are read by more people than the data is, so examples never carry PII, whatever the
    filter chain did with the record (RELIABILITY.md §4)."""
    from harness.lib.pii import find_pii, redact_pii

    return redact_pii(text, find_pii(text))


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """Whitespace collapsed, PII redacted, then cut to ``limit`` characters.  Redaction comes
    first: a cut through an email would leave a fragment the patterns no longer recognise."""
    flat = " ".join(redact(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def render(record: Conversation, user_chars: int = 60) -> str:
    """A record's last exchange as one line, ``(+2 earlier turns) user: ... | assistant: ...``,
    PII redacted: what most reasons are about (an empty, looping or too long answer) is at the
    end, so the excerpt starts at the last user turn, itself cut to ``user_chars`` when an
    answer follows (redaction first, as in ``excerpt``)."""
    turns = record.messages
    last_user = max((i for i, m in enumerate(turns) if m.role == "user"), default=0)
    parts = [f"{m.role}: {' '.join(redact(m.content).split())}" for m in turns[last_user:]]
    if len(parts) > 1 and len(parts[0]) > user_chars:
        parts[0] = parts[0][: user_chars - 1] + "…"
    return (f"(+{last_user} earlier turns) " if last_user else "") + " | ".join(parts)


def read_reason(q: Quarantined) -> str:
    """The ledger key of a line a reader quarantined: the kind of problem, without its detail."""
    return f"quarantined: {q.reason.split(':')[0]}"


def filter_quarantine_reason(q: Quarantined) -> str:
    """The ledger key of a record a filter quarantined (``filter: reason``)."""
    return f"quarantined: {q.filter}: {q.reason}" if q.filter else read_reason(q)


class Examples:
    """Up to ``per_reason`` redacted examples of every reason of every ledger step.

    Steps are keyed by identity, not name (two sources may share a file name, a chain may use a
    filter twice); ``for_stage`` looks them up when the report is built."""

    def __init__(self, per_reason: int = EXAMPLES_PER_REASON) -> None:
        self.per_reason = per_reason
        self._by_stage: dict[int, dict[str, list[Example]]] = {}

    def wants(self, stage: StageLedger, reason: str) -> bool:
        """Whether ``reason`` of ``stage`` has room for another example (checked before a record
        is rendered: redaction is the costly part, and most drops of a big file are not shown)."""
        return len(self._by_stage.get(id(stage), {}).get(reason, ())) < self.per_reason

    def add(self, stage: StageLedger, reason: str, source_id: str, text: str, detail: str = "") -> None:
        if self.wants(stage, reason):
            bucket = self._by_stage.setdefault(id(stage), {}).setdefault(reason, [])
            bucket.append(Example(source_id, excerpt(text), excerpt(detail, DETAIL_CHARS) if detail else ""))

    def for_stage(self, stage: StageLedger) -> dict[str, list[Example]]:
        return self._by_stage.get(id(stage), {})

    def quarantined(
        self, stage: StageLedger, items: Iterable[Quarantined], key: Callable[[Quarantined], str] = read_reason
    ) -> None:
        for q in items:
            if self.wants(stage, key(q)):
                self.add(stage, key(q), q.source_id, q.raw, q.reason)

    def dropped(self, stage: StageLedger, drops: Iterable[Dropped], by_id: Mapping[str, Conversation]) -> None:
        for d in drops:
            if self.wants(stage, d.reason):
                record = by_id.get(d.source_id)
                self.add(stage, d.reason, d.source_id, render(record) if record else "", d.detail)

    def filtered(self, stage: StageLedger, before: Sequence[Conversation], result: FilterResult) -> None:
        """Examples of a filter step: its drops and quarantines, and the records it redacted
        (shown as redacted, under each kind the original held)."""
        by_id = {r.source_id: r for r in before}
        self.dropped(stage, result.dropped, by_id)
        self.quarantined(stage, result.quarantined, filter_quarantine_reason)
        if not any(self.wants(stage, f"redacted: {kind}") for kind in result.redacted):
            return
        from harness.lib.pii import find_pii

        for record in result.kept:
            if not any(self.wants(stage, f"redacted: {kind}") for kind in result.redacted):
                return
            original = by_id.get(record.source_id)
            if original is None or original == record:
                continue
            kinds: set[str] = {str(k) for m in original.messages for k, _, _ in find_pii(m.content)} & set(result.redacted)
            for kind in sorted(kinds) or sorted(result.redacted):
                self.add(stage, f"redacted: {kind}", record.source_id, render(record))


@dataclass(frozen=True)
class ReasonReport:
    """One reason of a step: how many records it took, and up to a few redacted examples."""

    count: int
    examples: tuple[Example, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "examples": [asdict(e) for e in self.examples]}


@dataclass(frozen=True)
class StageReport:
    """One ledger step as the report shows it: its counts (``n_in == kept + dropped +
    quarantined``, a copy of the step's ``StageLedger``) and, per reason in name order, its
    count and examples."""

    counts: StageLedger
    reasons: Mapping[str, ReasonReport]

    @classmethod
    def of(cls, stage: StageLedger, examples: Examples | None) -> StageReport:
        """The report of ledger step ``stage`` with the examples gathered for it."""
        found = examples.for_stage(stage) if examples else {}
        reasons = {
            reason: ReasonReport(count, tuple(found.get(reason, ())))
            for reason, count in sorted(stage.reasons.items())
        }
        return cls(replace(stage, reasons=Counter(stage.reasons)), reasons)

    def to_json(self) -> dict[str, Any]:
        """The step's counts as ``ledger.json`` has them, each reason with its examples."""
        return {**self.counts.to_json(), "reasons": {reason: entry.to_json() for reason, entry in self.reasons.items()}}


@dataclass(frozen=True)
class CurateReport:
    """``report.json`` as a value: per step the counts, per reason its count and examples (source
    id, redacted excerpt, detail), and what each input gave.  Unlike ``ledger.json`` and
    ``quarantine.jsonl`` it holds no raw text, so it can be attached to a CI run or a ticket.

    ``suite`` names the suite a suite's curation came from; ``sections`` are a tool's own
    top-level JSON sections (the data flywheel's ``flywheel``), written as given."""

    balanced: bool
    kept: int
    inputs: tuple[InputSummary, ...]
    stages: tuple[StageReport, ...]
    suite: str | None = None
    sections: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The document ``report.json`` holds (schema ``REPORT_SCHEMA``)."""
        return {
            "schema": REPORT_SCHEMA,
            "balanced": self.balanced,
            "kept": self.kept,
            "inputs": [i.to_json() for i in self.inputs],
            "stages": [s.to_json() for s in self.stages],
            **({"suite": self.suite} if self.suite is not None else {}),
            **self.sections,
        }


def build_report(
    ledger: Ledger,
    kept: int,
    inputs: Sequence[InputSummary],
    examples: Examples | None,
    suite: str | None = None,
    sections: Mapping[str, Any] | None = None,
) -> CurateReport:
    """The report of a curation: ``ledger``'s steps with the ``examples`` gathered for them."""
    return CurateReport(
        balanced=ledger.balanced,
        kept=kept,
        inputs=tuple(inputs),
        stages=tuple(StageReport.of(stage, examples) for stage in ledger.stages),
        suite=suite,
        sections=dict(sections or {}),
    )


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half a file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_run_files(out_dir: Path, ledger: Ledger, report: CurateReport) -> list[Path]:
    """``ledger.json``, ``quarantine.jsonl`` (every quarantined record: source id, reason, raw
    text; written even when empty, so a stale one never survives) and ``report.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_atomic(out_dir / "ledger.json", json.dumps(ledger.to_json(), indent=2, ensure_ascii=False)),
        write_atomic(out_dir / "quarantine.jsonl", jsonl(asdict(q) for q in ledger.quarantined)),
        write_atomic(out_dir / "report.json", json.dumps(report.to_json(), indent=2, ensure_ascii=False)),
    ]


def write_curated(out_dir: Path, records: Sequence[Conversation]) -> Path:
    """``curated.jsonl``: the curated set, replaced as a whole."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_atomic(out_dir / "curated.jsonl", jsonl(r.to_json() for r in records))

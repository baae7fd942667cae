"""The curate stage: read data, select its split, run the filters, keep a ledger, report examples.

Every record is accounted for: at each step ``in = kept + dropped + quarantined``, each filter
drop carries a reason and the source id, and each malformed line is quarantined with its
``file:line`` and reason.  A step whose output does not account for its input (a filter that
loses or invents records, a reader that skips a line or repeats a source id, a selection that
returns records it was not given) raises ``UnbalancedLedgerError`` naming the step: the run is
a check that errored (exit 3), never a silently smaller data set.

Three callers share this module: a suite's curate stage (``curate``), a data file given on the
command line (``curate_file``) and the data flywheel (``harness.tools.flywheel``).  All of them run
their filter chain through ``curate_records`` and collect their examples with ``Examples``, so
the accounting and the report cannot drift apart between them.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import EXIT_CHECK_ERRORED, CheckError, DataError, PluginError
from harness.lib.data import in_split, seeded_sample
from harness.lib.refs import DataSource
from harness.plugin.components import Filter, Reader
from harness.stages.curate_report import Examples, InputSummary, LineCount, filter_quarantine_reason, read_reason
from harness.suite.preflight import check_sample_size
from harness.suite.yamlpos import Loc
from harness.types import Conversation, Ledger, Quarantined, StageLedger

LINE_READERS = frozenset({"alpaca", "sharegpt", "messages", "openai_requests", "auto"})
"""The built-in JSONL readers: one record or quarantine entry per non-blank line, which the
read step checks against the file.  A third-party reader opts in with ``line_oriented = True``."""


class UnbalancedLedgerError(PluginError, CheckError):
    """A curation step lost, invented or double-counted records.  It is the step's plugin that
    misbehaved (a ``PluginError``), and the curated set cannot be trusted, so the command fails
    as a check that errored (exit 3) rather than as bad input."""

    exit_code = EXIT_CHECK_ERRORED


# ------------------------------------------------------------------------------- outcomes


@dataclass
class CurateOutcome:
    records: list[Conversation]
    ledger: Ledger
    inputs: list[InputSummary] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """Content hash of the curated set, in order; keys the training cache."""
        h = hashlib.sha256()
        for record in self.records:
            h.update(json.dumps(record.to_json(), ensure_ascii=False, sort_keys=True).encode())
        return h.hexdigest()


@dataclass(frozen=True)
class ReadResult:
    """One input read by a reader, with its ledger step."""

    records: list[Conversation]
    quarantined: list[Quarantined]
    stage: StageLedger
    lines: LineCount | None = None


@dataclass(frozen=True)
class FilterStep:
    """A constructed filter and where it came from (``plugin (distribution)``), for errors."""

    filter: Filter
    origin: str


# ----------------------------------------------------------------------------- examples


# -------------------------------------------------------------------------------- reading


def count_lines(path: Path) -> LineCount:
    """Lines of a JSONL file and how many are blank, decoded exactly as ``read_jsonl`` decodes
    them (``utf-8-sig`` on the first line, so a BOM alone is blank; a line that is not UTF-8 is
    never blank: it is quarantined)."""
    lines = blank = 0
    with path.open("rb") as fh:
        for lines, raw in enumerate(fh, start=1):  # the last index is the line count
            try:
                text = raw.decode("utf-8-sig" if lines == 1 else "utf-8")
            except UnicodeDecodeError:
                continue
            blank += not text.strip()
    return LineCount(lines, blank)


def _is_line_reader(reader: Reader) -> bool:
    declared = getattr(reader, "line_oriented", None)
    return bool(declared) if declared is not None else reader.name in LINE_READERS


def read_records(reader: Reader, path: Path, source: str, origin: str) -> ReadResult:
    """Read ``path`` with ``reader`` and check that the reader accounted for its input: only
    conversations and quarantine entries, no source id twice, and (for a line-oriented reader)
    one of them for every non-blank line of the file."""
    stage = StageLedger(f"read {Path(source).name}")
    records: list[Conversation] = []
    quarantined: list[Quarantined] = []
    who = f"reader {reader.name!r} from {origin}"
    for item in reader.read(path, source):
        if isinstance(item, Conversation):
            records.append(item)
        elif isinstance(item, Quarantined):
            quarantined.append(item)
        else:
            raise UnbalancedLedgerError(
                f"step {stage.name!r}: {who} returned a {type(item).__name__}, "
                "not a Conversation or a Quarantined entry"
            )
    stage.n_in = len(records) + len(quarantined)
    stage.kept, stage.quarantined = len(records), len(quarantined)
    stage.reasons.update(Counter(read_reason(q) for q in quarantined))
    repeated = [sid for sid, n in Counter([*(r.source_id for r in records), *(q.source_id for q in quarantined)]).items() if n > 1]
    if repeated:
        raise UnbalancedLedgerError(
            f"step {stage.name!r}: {who} returned source id {repeated[0]!r} more than once "
            f"({len(repeated)} ids repeated): its records cannot be traced back"
        )
    lines = count_lines(path) if path.is_file() and _is_line_reader(reader) else None
    if lines is not None and stage.n_in != lines.lines - lines.blank:
        raise UnbalancedLedgerError(
            f"step {stage.name!r}: {who} accounts for {stage.n_in} of the "
            f"{lines.lines - lines.blank} non-blank lines of {source} "
            f"({stage.kept} records + {stage.quarantined} quarantined)"
        )
    return ReadResult(records, quarantined, stage, lines)


# ------------------------------------------------------------------------------ selection


def select(src: DataSource, records: list[Conversation], where: str = "") -> tuple[list[Conversation], StageLedger]:
    """Keep ``src``'s split, then its seeded sample; the ledger counts what was left out.  A
    sample larger than what the split holds is a ``DataError`` (at ``where``, the suite's line)."""
    stage = StageLedger(f"select {Path(src.path).name} (split={src.split}, sample={src.sample})")
    stage.n_in = len(records)
    chosen = [r for r in records if in_split(r.source_id, src.split, src.holdout_fraction, src.seed)]
    if len(chosen) < len(records):
        stage.reasons[f"not in {src.split} split"] = len(records) - len(chosen)
    too_large = check_sample_size(src.sample, len(chosen), where=where or src.path, path=src.path, split=src.split)
    if too_large:
        raise DataError(str(too_large[0]))
    if isinstance(src.sample, int) and src.sample < len(chosen):
        sampled = seeded_sample(chosen, src.sample, src.seed, key=lambda r: r.source_id)
        stage.reasons["not sampled"] = len(chosen) - len(sampled)
        chosen = sampled
    stage.kept = len(chosen)
    stage.dropped = sum(stage.reasons.values())
    if not stage.balanced or not Counter(r.source_id for r in chosen) <= Counter(r.source_id for r in records):
        raise UnbalancedLedgerError(
            f"step {stage.name!r} does not account for its input: {stage.n_in} in, "
            f"{stage.kept} kept, {stage.dropped} left out, or records it was not given"
        )
    return chosen, stage


# -------------------------------------------------------------------------------- filters


def _run_filter(step: FilterStep, records: list[Conversation], ledger: Ledger, examples: Examples | None) -> list[Conversation]:
    flt = step.filter
    result = flt.apply(records)
    stage = StageLedger(f"filter {flt.name}", n_in=len(records))
    stage.kept, stage.dropped, stage.quarantined = len(result.kept), len(result.dropped), len(result.quarantined)
    stage.reasons.update(Counter(d.reason for d in result.dropped))
    stage.reasons.update(Counter(filter_quarantine_reason(q) for q in result.quarantined))
    stage.reasons.update(Counter({f"redacted: {k}": v for k, v in result.redacted.items()}))
    seen = (
        Counter(r.source_id for r in result.kept)
        + Counter(d.source_id for d in result.dropped)
        + Counter(q.source_id for q in result.quarantined)
    )
    if not stage.balanced or seen != Counter(r.source_id for r in records):
        raise UnbalancedLedgerError(
            f"filter {flt.name!r} from {step.origin} does not account for its input: {stage.n_in} in, "
            f"{stage.kept} kept, {stage.dropped} dropped, {stage.quarantined} quarantined"
        )
    ledger.stages.append(stage)
    ledger.dropped.extend(result.dropped)
    ledger.quarantined.extend(result.quarantined)
    if examples is not None:
        examples.filtered(stage, records, result)
    return list(result.kept)


def curate_records(
    records: list[Conversation], steps: Sequence[FilterStep], ledger: Ledger, examples: Examples | None = None
) -> list[Conversation]:
    """Run the filter chain over ``records``: one ledger step per filter, each checked to account
    for its input record by record; the records that survive, in order."""
    for step in steps:
        records = _run_filter(step, records, ledger, examples)
    return records


def check_quarantined(quarantined: Sequence[Quarantined], total: int, limit: float, setting: str) -> None:
    """Fail (``DataError`` naming the first bad line) when more than ``limit`` of ``total`` input
    records are malformed: that many bad lines means the wrong format or a broken export."""
    fraction = len(quarantined) / total if total else 0.0
    if fraction > limit:
        first = quarantined[0]
        raise DataError(
            f"{first.source_id}: {len(quarantined)} of {total} records are malformed "
            f"({fraction:.1%} > {setting}); first: {first.reason}"
        )


def verify_ledger(ledger: Ledger) -> None:
    """Raise ``UnbalancedLedgerError`` naming the first step where ``in != kept + dropped +
    quarantined``; every caller checks this before it writes a curated set."""
    for stage in ledger.stages:
        if not stage.balanced:
            raise UnbalancedLedgerError(
                f"step {stage.name!r} does not balance: in {stage.n_in} != kept {stage.kept} "
                f"+ dropped {stage.dropped} + quarantined {stage.quarantined}"
            )


# ------------------------------------------------------------------------ the entry points


# -------------------------------------------------------------------------------- outputs


# ------------------------------------------------------------------------------ the stage


@dataclass(frozen=True)
class SourcePlan:
    """One data source, the reader that reads it, and where both stand in the suite."""

    loc: Loc
    source: DataSource
    reader: Reader
    origin: str
    path: Path
    where: str
    """``file:line`` of the source's ``path`` key."""
    read: ReadResult | None = None
    """The data, when the run plan already read it (it checks the data before any work)."""


@dataclass(frozen=True)
class CuratePlan:
    """The curate stage's part of the run plan: sources in order, then the filter chain."""

    sources: tuple[SourcePlan, ...]
    filters: tuple[FilterStep, ...]
    max_quarantined_fraction: float
    where: str
    """``file:line`` of the suite's ``data`` key, for errors about the data as a whole."""


def read_source(source: SourcePlan) -> ReadResult:
    """Read one planned source (every line accounted for); an empty one is a ``DataError``."""
    if source.read is not None:
        return source.read
    result = read_records(source.reader, source.path, source.source.path, source.origin)
    if result.stage.n_in == 0:
        raise DataError(f"{source.where}: data set is empty: {source.path}")
    return result


def read_selected(source: SourcePlan, max_quarantined_fraction: float, setting: str) -> list[Conversation]:
    """The records of one source after its split and sample (a trainer's replay data, say)."""
    read = read_source(source)
    check_quarantined(read.quarantined, read.stage.n_in, max_quarantined_fraction, setting)
    return select(source.source, read.records, source.where)[0]


def curate(plan: CuratePlan, examples: Examples | None = None) -> CurateOutcome:
    """Run the curate stage: read every source, select its split and sample, run the filters;
    raise ``DataError`` when nothing usable is left."""
    ledger = Ledger()
    records: list[Conversation] = []
    inputs: list[InputSummary] = []
    total_in = 0
    for source in plan.sources:
        read = read_source(source)
        total_in += read.stage.n_in
        ledger.stages.append(read.stage)
        ledger.quarantined.extend(read.quarantined)
        if examples is not None:
            examples.quarantined(read.stage, read.quarantined)
        src = source.source
        inputs.append(InputSummary(src.path, src.format, len(read.records), len(read.quarantined), read.lines))
        chosen, select_stage = select(src, read.records, source.where)
        ledger.stages.append(select_stage)
        records.extend(chosen)
    check_quarantined(ledger.quarantined, total_in, plan.max_quarantined_fraction, "curate.max_quarantined_fraction")
    records = curate_records(records, plan.filters, ledger, examples)
    if not records:
        sources = ", ".join(s.source.path for s in plan.sources) or "no data sources"
        raise DataError(f"{plan.where}: no records left after curation of {sources}")
    verify_ledger(ledger)
    return CurateOutcome(records, ledger, inputs)

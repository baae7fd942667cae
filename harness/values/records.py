"""The records curation reads and keeps, and its ledger: every record in, kept, dropped or
quarantined, with a reason."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True)
class Conversation:
    """A normalised training or evaluation record.

    ``source_id`` is ``file:line`` (JSONL) or ``file:row`` (CSV) so that any record, kept or
    dropped, can be traced back to the exact place it came from.
    """

    messages: tuple[Message, ...]
    source_id: str

    def digest(self) -> str:
        """Content hash of the messages (not the source id): equal text, equal digest."""
        payload = json.dumps([[m.role, m.content] for m in self.messages], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"source_id": self.source_id, "messages": [asdict(m) for m in self.messages]}


@dataclass(frozen=True)
class Quarantined:
    """A record set aside with its raw text: one a reader could not parse (``filter`` empty,
    ``reason`` the parse error), or one a filter quarantined (``filter``, its reason code and a
    human ``detail``, the same fields a ``Dropped`` record carries)."""

    source_id: str
    reason: str
    raw: str
    filter: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Dropped:
    """A record a filter removed, with the filter's reason code and a human detail."""

    source_id: str
    filter: str
    reason: str
    detail: str = ""


@dataclass
class StageLedger:
    """Accounting for one curation step: ``n_in == kept + dropped + quarantined`` always."""

    name: str
    n_in: int = 0
    kept: int = 0
    dropped: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def balanced(self) -> bool:
        return self.n_in == self.kept + self.dropped + self.quarantined

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.n_in,
            "kept": self.kept,
            "dropped": self.dropped,
            "quarantined": self.quarantined,
            "reasons": dict(sorted(self.reasons.items())),
        }


@dataclass
class Ledger:
    """The curation ledger: one ``StageLedger`` per reader and filter, plus every drop."""

    stages: list[StageLedger] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return all(s.balanced for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return {
            "balanced": self.balanced,
            "stages": [s.to_json() for s in self.stages],
            "dropped": [asdict(d) for d in self.dropped],
            "quarantined": [asdict(q) for q in self.quarantined],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ledger:
        stages = [
            StageLedger(
                name=s["name"],
                n_in=s["in"],
                kept=s["kept"],
                dropped=s["dropped"],
                quarantined=s["quarantined"],
                reasons=Counter(s["reasons"]),
            )
            for s in data["stages"]
        ]
        return cls(
            stages=stages,
            dropped=[Dropped(**d) for d in data["dropped"]],
            quarantined=[Quarantined(**q) for q in data["quarantined"]],
        )


"""Reading a production chat log: the flywheel's options, each line's interaction and feedback,
and the quarantine of lines that are not usable interactions (with the ledger's reason keys)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from harness.errors import ConfigError, DataError
from harness.lib.records import RecordError, parse_message, request_body, type_name
from harness.stages.curate import (
    UnbalancedLedgerError,
)
from harness.stages.curate_report import (
    LineCount,
    read_reason,
)
from harness.types import (
    Conversation,
    Quarantined,
    StageLedger,
)

Thumbs = Literal["up", "down"]
Scope = Literal["prompt", "response", "both"]

SCOPE_ROLES: dict[str, tuple[str, ...]] = {"prompt": ("user",), "response": ("assistant",), "both": ("user", "assistant")}
TRUNCATED = frozenset({"length", "content_filter"})
"""``finish_reason`` values of an answer that was cut off: training on it teaches running on."""
FEEDBACK_KEYS = ("rating", "thumbs", "rephrased")
"""The feedback fields copied into provenance; anything else (a free-text comment) may hold PII."""


LogRecordError = RecordError
"""A log line that is JSON but not a usable interaction (``harness.lib.records.RecordError``): the
message starts with its kind (``missing request``, ``wrong type``...), the ledger's reason key."""


# ------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class FlywheelOptions:
    """What makes a logged interaction worth training on."""

    min_rating: float = 4.0
    keep_unrated: bool = False
    novelty_threshold: float = 0.8
    novelty_scope: Scope = "both"
    max_quarantined_fraction: float = 0.05

    def __post_init__(self) -> None:
        if not 1 <= self.min_rating <= 5:
            raise ConfigError(f"--min-rating must be from 1 to 5, got {self.min_rating:g}")
        if not 0 < self.novelty_threshold <= 1:
            raise ConfigError(f"--novelty-threshold must be in (0, 1], got {self.novelty_threshold:g}")
        if self.novelty_scope not in SCOPE_ROLES:
            raise ConfigError(f"--novelty-scope must be one of {sorted(SCOPE_ROLES)}")
        if not 0 <= self.max_quarantined_fraction <= 1:
            raise ConfigError("--max-quarantined-fraction must be from 0 to 1")


# ------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Feedback:
    """The user's verdict on one interaction (``raw``: the logged fields of ``FEEDBACK_KEYS``)."""

    rating: float | None = None
    thumbs: Thumbs | None = None
    rephrased: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def rated(self) -> bool:
        return self.rating is not None or self.thumbs is not None


@dataclass(frozen=True)
class LogEntry:
    """One parsed log line: the conversation (request turns + the answer) and what came with it."""

    record: Conversation
    line: int
    line_sha256: str
    feedback: Feedback | None
    finish_reason: str | None

    def keys(self, log_sha256: str) -> set[tuple[str, str, int]]:
        """The provenance keys that mark this line as ingested (see the module docstring)."""
        return {("log", log_sha256, self.line), ("line", self.line_sha256, self.line)}










def parse_feedback(value: Any) -> Feedback | None:
    """``feedback`` of a log line; ``None`` when absent.  A value of the wrong type is a malformed
    line, never a guess (a rating of "5" or thumbs "yes" would be read wrongly either way)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise LogRecordError(f"wrong type: feedback must be an object, got {type_name(value)}")
    rating = value.get("rating")
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, (int, float)):
            raise LogRecordError(f"wrong type: feedback.rating must be a number from 1 to 5, got {type_name(rating)}")
        if not 1 <= rating <= 5:
            raise LogRecordError(f"bad value: feedback.rating must be from 1 to 5, got {rating!r}")
    thumbs = value.get("thumbs")
    if thumbs is not None and not isinstance(thumbs, str):
        raise LogRecordError(f"wrong type: feedback.thumbs must be 'up' or 'down', got {type_name(thumbs)}")
    if thumbs is not None and thumbs not in ("up", "down"):
        raise LogRecordError(f"bad value: feedback.thumbs must be 'up' or 'down', got {thumbs[:20]!r}")
    rephrased = value.get("rephrased")
    if rephrased is not None and not isinstance(rephrased, bool):
        raise LogRecordError(f"wrong type: feedback.rephrased must be true or false, got {type_name(rephrased)}")
    raw = {k: value[k] for k in FEEDBACK_KEYS if k in value}
    checked = cast("Literal['up', 'down'] | None", thumbs)  # checked above
    return Feedback(None if rating is None else float(rating), checked, bool(rephrased), raw)


def parse_interaction(line: Any, source_id: str) -> tuple[Conversation, Feedback | None, str | None]:
    """The conversation (request turns, then the first choice's answer), feedback and
    ``finish_reason`` of one decoded log line; ``LogRecordError`` when it is not usable."""
    if not isinstance(line, dict):
        raise LogRecordError(f"wrong type: expected a JSON object, got {type_name(line)}")
    request = request_body(line, "request")
    turns = request.get("messages")
    if turns is None:
        raise LogRecordError("missing request: the request has no 'messages'")
    if not isinstance(turns, list) or not turns:
        raise LogRecordError(f"wrong type: request.messages must be a non-empty list, got {type_name(turns)}")
    messages = [parse_message(turn, f"request.messages[{i}]") for i, turn in enumerate(turns)]
    if not any(m.role == "user" for m in messages):
        raise LogRecordError("missing request: the request has no user message")
    response = request_body(line, "response")
    choices = response.get("choices")
    if choices is None:
        raise LogRecordError("missing response: the response has no 'choices'")
    if not isinstance(choices, list) or not choices:
        raise LogRecordError(f"wrong type: response.choices must be a non-empty list, got {type_name(choices)}")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise LogRecordError(f"wrong type: response.choices[0] must be an object, got {type_name(choice)}")
    if choice.get("message") is None:
        raise LogRecordError("missing response: response.choices[0] has no 'message'")
    answer = parse_message(choice["message"], "response.choices[0].message")
    if answer.role != "assistant":
        raise LogRecordError(f"unsupported: response.choices[0].message.role is {answer.role!r}, not 'assistant'")
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise LogRecordError(f"wrong type: response.choices[0].finish_reason must be a string, got {type_name(finish)}")
    feedback = parse_feedback(line.get("feedback"))
    return Conversation((*messages, answer), source_id), feedback, finish


@dataclass(frozen=True)
class LogRead:
    """A log read line by line: its interactions, its malformed lines, and its ledger step."""

    source: str
    sha256: str
    entries: list[LogEntry]
    quarantined: list[Quarantined]
    stage: StageLedger
    lines: LineCount


def read_log(path: Path, source: str) -> LogRead:
    """Parse every line of a log; nothing stops at a bad line, each is quarantined with its
    ``file:line`` and raw text.  Lines are decoded like ``read_jsonl`` does (a UTF-8 BOM at the
    start is allowed); the file's sha256 is computed on the same pass."""
    if not path.is_file():
        raise DataError(f"{source}: log file not found")
    entries: list[LogEntry] = []
    quarantined: list[Quarantined] = []
    digest = hashlib.sha256()
    lines = blank = 0
    with path.open("rb") as fh:
        for lines, raw_bytes in enumerate(fh, start=1):  # the last index is the line count
            digest.update(raw_bytes)
            source_id = f"{source}:{lines}"
            body = raw_bytes.rstrip(b"\r\n")
            raw = body.decode("utf-8", errors="replace")
            try:
                text = body.decode("utf-8-sig" if lines == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                quarantined.append(Quarantined(source_id, f"not UTF-8: {exc.reason} at byte {exc.start}", raw))
                continue
            if not text.strip():
                blank += 1
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                quarantined.append(Quarantined(source_id, f"invalid JSON: {exc.msg} (column {exc.colno})", raw))
                continue
            try:
                record, feedback, finish = parse_interaction(value, source_id)
            except LogRecordError as exc:
                quarantined.append(Quarantined(source_id, str(exc), raw))
                continue
            entries.append(LogEntry(record, lines, hashlib.sha256(body).hexdigest(), feedback, finish))
    stage = StageLedger(f"read {Path(source).name}", n_in=len(entries) + len(quarantined))
    stage.kept, stage.quarantined = len(entries), len(quarantined)
    stage.reasons.update(Counter(read_reason(q) for q in quarantined))
    if stage.n_in != lines - blank:  # the promise of this module; cheap to keep honest
        raise UnbalancedLedgerError(f"step {stage.name!r}: {stage.n_in} entries for {lines - blank} non-blank lines")
    return LogRead(source, digest.hexdigest(), entries, quarantined, stage, LineCount(lines, blank))

"""Readers for the common fine-tuning data formats.

* ``alpaca``: JSONL ``{instruction, input?, output, system?}``
* ``sharegpt``: JSONL ``{conversations: [{from, value}, ...]}`` (human/gpt/system)
* ``messages``: JSONL in the OpenAI chat format ``{messages: [{role, content}, ...]}``
* ``openai_requests``: JSONL of logged chat-completions requests, for parity replay: the
  request body, or ``{request: body, reference?}``; no assistant turn needed
* ``csv``: a CSV file with a header; ``user``/``assistant``/``system`` are templates over its
  columns, e.g. ``user: "{instruction}"``, ``assistant: "{intent}"``
* ``auto``: JSONL of any of the three JSON formats, detected line by line

Every record's source id is ``file:line``.  A line that cannot be decoded, parsed or mapped is
returned as ``Quarantined`` with the reason; reading never stops at a bad line.
"""

from __future__ import annotations

import io
import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

import harness
from harness.plugin.components import ComponentConfig, Reader
from harness.lib.data import csv_rows
from harness.errors import DataError
from harness.types import Conversation, Message, Quarantined

_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "system": "system",
}
_ROLES = {"system", "user", "assistant"}


class RecordError(ValueError):
    """A record is well-formed JSON but does not fit the format."""


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _conversation(messages: list[Message], source_id: str) -> Conversation:
    if not any(m.role == "assistant" for m in messages):
        raise RecordError("no assistant turn")
    return Conversation(tuple(messages), source_id)


def from_alpaca(record: dict[str, Any], source_id: str) -> Conversation:
    for key in ("instruction", "output"):
        if key not in record:
            raise RecordError(f"alpaca record has no {key!r} field")
    prompt = _text(record["instruction"], "instruction")
    extra = record.get("input") or ""
    if _text(extra, "input").strip():
        prompt = f"{prompt}\n\n{extra}"
    messages = []
    if record.get("system"):
        messages.append(Message("system", _text(record["system"], "system")))
    messages += [Message("user", prompt), Message("assistant", _text(record["output"], "output"))]
    return _conversation(messages, source_id)


def from_sharegpt(record: dict[str, Any], source_id: str) -> Conversation:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RecordError("sharegpt record has no 'conversations' list")
    messages = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RecordError(f"turn {index} needs 'from' and 'value'")
        role = _SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise RecordError(f"turn {index} has unknown role {turn['from']!r}")
        messages.append(Message(role, _text(turn["value"], f"turn {index} value")))  # type: ignore[arg-type]
    return _conversation(messages, source_id)


def _turns(record: dict[str, Any]) -> list[Message]:
    turns = record.get("messages")
    if not isinstance(turns, list) or not turns:
        raise RecordError("record has no 'messages' list")
    messages = []
    for index, turn in enumerate(turns):
        role = turn.get("role") if isinstance(turn, dict) else None
        if not isinstance(role, str) or role not in _ROLES:
            raise RecordError(f"message {index} needs a role among {sorted(_ROLES)}")
        messages.append(Message(turn["role"], _text(turn.get("content"), f"message {index} content")))
    return messages


def from_messages(record: dict[str, Any], source_id: str) -> Conversation:
    return _conversation(_turns(record), source_id)


def from_openai_request(record: dict[str, Any], source_id: str) -> Conversation:
    """A logged chat-completions request: the body itself, or ``{"request": body, ...}``.

    The expected answer, when the log has one, is ``reference`` beside the body or
    ``metadata.reference`` inside it; it becomes a final assistant turn."""
    body = record.get("request", record)
    if not isinstance(body, dict):
        raise RecordError("'request' must be a JSON object")
    messages = _turns(body)
    if not any(m.role == "user" for m in messages):
        raise RecordError("request has no user message")
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    reference = record.get("reference", metadata.get("reference"))
    if reference is not None:
        messages.append(Message("assistant", _text(reference, "reference")))
    return Conversation(tuple(messages), source_id)


def detect(record: dict[str, Any]) -> str:
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record:
        return "alpaca"
    raise RecordError("unrecognised record: expected 'messages', 'conversations' or 'instruction'")


_PARSERS = {
    "alpaca": from_alpaca,
    "sharegpt": from_sharegpt,
    "messages": from_messages,
    "openai_requests": from_openai_request,
}


def read_jsonl(path: Path, source: str, fmt: str) -> Iterator[Conversation | Quarantined]:
    """Yield one conversation or quarantine entry per non-blank line."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{source}: data file not found") from None
    with handle:
        for line_no, raw_bytes in enumerate(handle, start=1):
            source_id = f"{source}:{line_no}"
            raw = raw_bytes.decode("utf-8", errors="replace").rstrip("\r\n")
            try:
                text = raw_bytes.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield Quarantined(source_id, f"not UTF-8: {exc.reason} at byte {exc.start}", raw)
                continue
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Quarantined(source_id, f"invalid JSON: {exc.msg} (column {exc.colno})", raw)
                continue
            try:
                if not isinstance(record, dict):
                    raise RecordError(f"expected a JSON object, got {type(record).__name__}")
                yield _PARSERS[detect(record) if fmt == "auto" else fmt](record, source_id)
            except RecordError as exc:
                yield Quarantined(source_id, str(exc), raw)


class _JsonlConfig(ComponentConfig):
    pass


class AlpacaReader(Reader):
    name = "alpaca"
    description = "JSONL with instruction, input, output (Stanford Alpaca)"
    Config = _JsonlConfig

    def read(self, path: Path, source: str) -> Iterator[Conversation | Quarantined]:
        return read_jsonl(path, source, self.name)


class ShareGPTReader(AlpacaReader):
    name = "sharegpt"
    description = "JSONL with conversations: [{from, value}] (ShareGPT / FastChat)"


class MessagesReader(AlpacaReader):
    name = "messages"
    description = "JSONL with messages: [{role, content}] (OpenAI chat format)"


class OpenAIRequestsReader(AlpacaReader):
    name = "openai_requests"
    description = "JSONL of logged chat-completions requests (body, or {request, reference})"


class AutoReader(AlpacaReader):
    name = "auto"
    description = "JSONL in any of alpaca, sharegpt or messages, detected per line"


class CsvConfig(ComponentConfig):
    user: str = Field(description="template of the user turn over the columns, e.g. '{instruction}'")
    assistant: str = Field(description="template of the assistant turn, e.g. '{response}'")
    system: str | None = Field(None, description="optional template of a system turn")
    delimiter: str = ","


class CsvReader(Reader):
    name = "csv"
    description = "CSV with a header; user/assistant/system turns are templates over its columns"
    Config = CsvConfig

    def _columns(self) -> set[str]:
        cfg: CsvConfig = self.config  # type: ignore[assignment]
        names = set()
        for template in (cfg.user, cfg.assistant, cfg.system or ""):
            names |= {f for _, f, _, _ in string.Formatter().parse(template) if f}
        return names

    def read(self, path: Path, source: str) -> Iterator[Conversation | Quarantined]:
        cfg: CsvConfig = self.config  # type: ignore[assignment]
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except FileNotFoundError:
            raise DataError(f"{source}: data file not found") from None
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise DataError(f"{source}:{line}: not UTF-8 ({exc.reason})") from None
        rows = csv_rows(io.StringIO(text, newline=""), cfg.delimiter)
        header_line, header = next(rows, (1, []))
        missing = self._columns() - set(header)
        if missing:
            raise DataError(
                f"{source}:{header_line}: CSV has no column(s) {sorted(missing)}; columns: {header}"
            )
        for start, values in rows:
            source_id = f"{source}:{start}"
            row = dict(zip(header, values))
            if len(values) != len(header):
                raw = json.dumps(values, ensure_ascii=False)
                yield Quarantined(source_id, f"row has {len(values)} fields, header has {len(header)}", raw)
                continue
            messages = []
            if cfg.system:
                messages.append(Message("system", cfg.system.format(**row)))
            messages.append(Message("user", cfg.user.format(**row)))
            messages.append(Message("assistant", cfg.assistant.format(**row)))
            yield Conversation(tuple(messages), source_id)


@harness.hookimpl
def harness_register_readers(registrar) -> None:
    for cls in (AlpacaReader, ShareGPTReader, MessagesReader, OpenAIRequestsReader, AutoReader, CsvReader):
        registrar.add(cls)

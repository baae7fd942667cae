"""One parser for chat messages and fine-tuning records, shared by the readers, the data flywheel
and every filter that reads a labelled file.

OpenAI chat messages (``{role, content}``) appear in training files (``messages``), logged
requests (``openai_requests``) and production logs (the flywheel).  They are parsed here, once, so
the three cannot disagree on what a valid message is: a role among ``system``, ``developer`` (read
as ``system``), ``user`` and ``assistant``; content a string or a list of text parts (joined);
a tool call is not text and is refused.

Errors are ``RecordError`` whose message starts with its kind (``wrong type``, ``missing``,
``unsupported``), which the data flywheel uses as the ledger's reason key; readers quarantine the
line with the whole message.
"""

from __future__ import annotations

import io
import json
import string
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.errors import DataError
from harness.lib.data import csv_rows
from harness.types import Conversation, Message, Quarantined, Role

ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
"""Chat roles and what each is read as."""

SHAREGPT_ROLES: dict[str, Role] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "system": "system",
}


class RecordError(ValueError):
    """A record is well-formed JSON but does not fit its format.  The message starts with its
    kind (``wrong type``, ``missing ...``, ``unsupported``)."""


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def text_of(value: Any, where: str) -> str:
    """A message's content: a string, or a list of text parts (joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for index, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type", "text") != "text" or not isinstance(part.get("text"), str):
                raise RecordError(f"unsupported: {where}[{index}] is not a text part")
            texts.append(part["text"])
        return "".join(texts)
    raise RecordError(f"wrong type: {where} must be a string, got {type_name(value)}")


def parse_message(turn: Any, where: str) -> Message:
    """One chat message ``{role, content}``; ``where`` names it in errors (``messages[2]``)."""
    if not isinstance(turn, dict):
        raise RecordError(f"wrong type: {where} must be an object, got {type_name(turn)}")
    role = turn.get("role")
    if not isinstance(role, str):
        raise RecordError(f"wrong type: {where}.role must be a string, got {type_name(role)}")
    if role not in ROLES:
        raise RecordError(f"unsupported: {where}.role {role!r} (system, developer, user and assistant turns only)")
    if turn.get("content") is None and turn.get("tool_calls"):
        raise RecordError(f"unsupported: {where} is a tool call, not text")
    return Message(ROLES[role], text_of(turn.get("content"), f"{where}.content"))


def parse_messages(turns: Any, where: str = "messages") -> list[Message]:
    """A non-empty list of chat messages."""
    if turns is None:
        raise RecordError(f"missing messages: the record has no {where!r} list")
    if not isinstance(turns, list) or not turns:
        raise RecordError(f"wrong type: {where} must be a non-empty list, got {type_name(turns)}")
    return [parse_message(turn, f"{where}[{i}]") for i, turn in enumerate(turns)]


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"wrong type: {where} must be a string, got {type_name(value)}")
    return value


def _conversation(messages: list[Message], source_id: str) -> Conversation:
    if not any(m.role == "assistant" for m in messages):
        raise RecordError("missing answer: no assistant turn")
    return Conversation(tuple(messages), source_id)


def from_alpaca(record: Mapping[str, Any], source_id: str) -> Conversation:
    """``{instruction, input?, output, system?}`` (Stanford Alpaca)."""
    for key in ("instruction", "output"):
        if key not in record:
            raise RecordError(f"missing {key}: alpaca record has no {key!r} field")
    prompt = _string(record["instruction"], "instruction")
    extra = record.get("input") or ""
    if _string(extra, "input").strip():
        prompt = f"{prompt}\n\n{extra}"
    messages = []
    if record.get("system"):
        messages.append(Message("system", _string(record["system"], "system")))
    messages += [Message("user", prompt), Message("assistant", _string(record["output"], "output"))]
    return _conversation(messages, source_id)


def from_sharegpt(record: Mapping[str, Any], source_id: str) -> Conversation:
    """``{conversations: [{from, value}, ...]}`` (ShareGPT / FastChat)."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RecordError("missing conversations: sharegpt record has no 'conversations' list")
    messages = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RecordError(f"wrong type: conversations[{index}] needs 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise RecordError(f"unsupported: conversations[{index}] has unknown role {turn['from']!r}")
        messages.append(Message(role, _string(turn["value"], f"conversations[{index}].value")))
    return _conversation(messages, source_id)


def from_messages(record: Mapping[str, Any], source_id: str) -> Conversation:
    """``{messages: [{role, content}, ...]}`` (the OpenAI chat format), with an assistant turn."""
    return _conversation(parse_messages(record.get("messages")), source_id)


def request_body(line: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``line[key]`` as an object; an OpenAI Batch API envelope (``{custom_id, body: {...}}``)
    gives its ``body``."""
    value = line.get(key)
    if value is None:
        raise RecordError(f"missing {key}: the line has no {key!r} object")
    if not isinstance(value, dict):
        raise RecordError(f"wrong type: {key} must be an object, got {type_name(value)}")
    inner = value.get("body")
    if isinstance(inner, dict) and "messages" not in value and "choices" not in value:
        return inner
    return value


def from_openai_request(record: Mapping[str, Any], source_id: str) -> Conversation:
    """A logged chat-completions request: the body itself, or ``{"request": body, ...}``.

    The expected answer, when the log has one, is ``reference`` beside the body or
    ``metadata.reference`` inside it; it becomes a final assistant turn."""
    body = request_body(record, "request") if "request" in record else record
    messages = parse_messages(body.get("messages"), "request.messages" if "request" in record else "messages")
    if not any(m.role == "user" for m in messages):
        raise RecordError("missing request: the request has no user message")
    metadata = body["metadata"] if isinstance(body.get("metadata"), dict) else {}
    reference = record.get("reference", metadata.get("reference"))
    if reference is not None:
        messages.append(Message("assistant", _string(reference, "reference")))
    return Conversation(tuple(messages), source_id)


def detect(record: Mapping[str, Any]) -> str:
    """The JSON format of one record, by its keys."""
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record:
        return "alpaca"
    raise RecordError("unsupported: unrecognised record, expected 'messages', 'conversations' or 'instruction'")


PARSERS: dict[str, Callable[[Mapping[str, Any], str], Conversation]] = {
    "alpaca": from_alpaca,
    "sharegpt": from_sharegpt,
    "messages": from_messages,
    "openai_requests": from_openai_request,
}


def read_jsonl(path: Path, source: str, fmt: str) -> Iterator[Conversation | Quarantined]:
    """One conversation or quarantine entry per non-blank line (``fmt`` a key of ``PARSERS`` or
    ``auto``); reading never stops at a bad line."""
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
                    raise RecordError(f"wrong type: expected a JSON object, got {type_name(record)}")
                yield PARSERS[detect(record) if fmt == "auto" else fmt](record, source_id)
            except RecordError as exc:
                yield Quarantined(source_id, str(exc), raw)


def template_fields(template: str) -> list[str]:
    """The column names a ``str.format`` template refers to (``{a}``, ``{a!r}``, ``{a:>9}``).

    Positional fields (``{}``, ``{0}``) cannot name a column and are refused."""
    names: list[str] = []
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        if not field or field.isdigit():
            raise ValueError(f"template {template!r} has a positional field; name a column, e.g. '{{text}}'")
        root = field.split(".", 1)[0].split("[", 1)[0]
        if root not in names:
            names.append(root)
    return names


def read_csv(
    path: Path, source: str, user: str, assistant: str, system: str | None = None, delimiter: str = ","
) -> Iterator[Conversation | Quarantined]:
    """A CSV file with a header, each row a conversation whose turns are templates over its
    columns (``user="{instruction}"``); a row of the wrong width is quarantined."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{source}: data file not found") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{source}:{line}: not UTF-8 ({exc.reason})") from None
    rows = csv_rows(io.StringIO(text, newline=""), delimiter)
    header_line, header = next(rows, (1, []))
    try:
        needed = {name for template in (user, assistant, system or "") for name in template_fields(template)}
    except ValueError as exc:
        raise DataError(f"{source}: {exc}") from None
    missing = needed - set(header)
    if missing:
        raise DataError(f"{source}:{header_line}: CSV has no column(s) {sorted(missing)}; columns: {header}")
    for start, values in rows:
        source_id = f"{source}:{start}"
        if len(values) != len(header):
            raw = json.dumps(values, ensure_ascii=False)
            yield Quarantined(source_id, f"row has {len(values)} fields, header has {len(header)}", raw)
            continue
        row = dict(zip(header, values))
        messages = [Message("system", system.format(**row))] if system else []
        messages.append(Message("user", user.format(**row)))
        messages.append(Message("assistant", assistant.format(**row)))
        yield Conversation(tuple(messages), source_id)


def load_saved_dataset(path: Path, source: str, split: str | None = None) -> Any:
    """A ``datasets.Dataset`` written with ``save_to_disk`` (the ``split`` of a ``DatasetDict``,
    which may be omitted when it holds a single split)."""
    from harness.errors import require

    datasets = require("datasets")
    if not path.is_dir():
        what = "not found" if not path.exists() else "not a folder"
        raise DataError(f"{source}: {what}; hf_disk reads the folder written by Dataset.save_to_disk")
    try:
        data = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise DataError(f"{source}: not a dataset saved with save_to_disk ({exc})") from None
    if isinstance(data, datasets.DatasetDict):
        splits = sorted(data)
        chosen = split or (splits[0] if len(splits) == 1 else None)
        if chosen is None or chosen not in data:
            raise DataError(
                f"{source}: a DatasetDict with splits {splits}; "
                + ("set dataset_split to one of them" if chosen is None else f"has no split {chosen!r}")
            )
        return data[chosen]
    if split is not None:
        raise DataError(f"{source}: dataset_split={split!r} given, but this is a single Dataset")
    return data

"""Readers for the common fine-tuning data formats.

* ``alpaca``: JSONL ``{instruction, input?, output, system?}``
* ``sharegpt``: JSONL ``{conversations: [{from, value}, ...]}`` (human/gpt/system)
* ``messages``: JSONL in the OpenAI chat format ``{messages: [{role, content}, ...]}``
* ``openai_requests``: JSONL of logged chat-completions requests, for parity replay: the
  request body, or ``{request: body, reference?}``; no assistant turn needed
* ``csv``: a CSV file with a header; ``user``/``assistant``/``system`` are templates over its
  columns, e.g. ``user: "{instruction}"``, ``assistant: "{intent}"``
* ``auto``: JSONL of any of the three JSON formats, detected line by line

The parsing itself is ``harness.lib.records`` (one parser for readers, the flywheel and
filters).  Every record's source id is ``file:line``.  A line that cannot be decoded, parsed or mapped is
returned as ``Quarantined`` with the reason; reading never stops at a bad line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

import harness
from harness.lib.records import read_csv, read_jsonl
from harness.plugin.components import ComponentConfig, Reader
from harness.types import Conversation, Quarantined
from harness.plugin.registry import Registrar


class _JsonlConfig(ComponentConfig):
    pass


class AlpacaReader(Reader[_JsonlConfig]):
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


class CsvReader(Reader[CsvConfig]):
    name = "csv"
    description = "CSV with a header; user/assistant/system turns are templates over its columns"
    Config = CsvConfig

    def read(self, path: Path, source: str) -> Iterator[Conversation | Quarantined]:
        cfg = self.config
        return read_csv(path, source, cfg.user, cfg.assistant, cfg.system, cfg.delimiter)


@harness.hookimpl
def harness_register_readers(registrar: Registrar) -> None:
    for cls in (AlpacaReader, ShareGPTReader, MessagesReader, OpenAIRequestsReader, AutoReader, CsvReader):
        registrar.add(cls)

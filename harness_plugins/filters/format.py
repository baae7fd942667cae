"""The ``format_check`` filter: records that training would render, truncate or learn wrongly.

A record can be well-formed JSON and still be useless or harmful to train on: the chat template
refuses it (roles that do not alternate, a role the template rejects), it is longer than the
training context, the truncation cuts the final end-of-turn token so that the model learns never
to stop, an assistant turn is empty, or (for structured-output tasks) an answer is not the JSON the
application parses.  This filter finds those before training, one reason per record:

* ``template_error``: the chat template raised while rendering (detail: the exception message);
* ``empty_response``: an assistant turn is empty or blank (or there is no assistant turn);
* ``not_json`` / ``schema_violation``: with ``schema``, every assistant turn must be one JSON
  document (surrounding whitespace allowed, nothing else) valid against it (detail: the parser's
  or the validator's message and where);
* ``stop_token_truncated``: the record is just over ``max_tokens``: the final assistant answer
  fits, but the truncation cuts its end-of-turn token (the model would learn to run on);
* ``too_long_for_context``: any other record of more than ``max_tokens`` tokens
  (detail ``"2310 > 2048 tokens"`` and what the truncation cuts);
* ``stop_token_missing``: the template renders no end-of-turn token at the end of the final
  assistant turn (a custom template that leaves it out).

"Renders under the training template" means exactly what training does: the rendering,
tokenisation and assistant masking are the LoRA trainer's own ``encode()``
(``harness_plugins.trainers.lora``), and the truncation applied to its untruncated output is the
trainer's rule, keep the first ``max_length`` tokens.  ``max_tokens`` must therefore equal the
trainer's ``max_length``.  The end-of-turn token is the special token the template renders right
after an assistant answer (``<|im_end|>`` for SmolLM2's ChatML).

The tokenizer (not the model) is loaded once per process and folder, on first use.
``chat_template`` / ``chat_template_file`` replace the tokenizer's template, e.g. to check data
against the stricter template of the model that will actually be trained or served.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import cached_property, lru_cache
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

import harness
from harness.plugin.components import Filter, FilterActionConfig, FilterOutcome, FilterResult
from harness.errors import CheckError, ConfigError, require
from harness.lib.models import model_folder
from harness.types import Conversation, Message
from harness.plugin.registry import Registrar

_PROBE = "FORMATCHECKPROBE"
_DETAIL_CHARS = 240


class FormatCheckConfig(FilterActionConfig):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    model: str = Field(
        "smollm2-135m-instruct",
        description="source of the tokenizer and chat template: an embedded model or a folder",
    )
    chat_template: str | None = Field(
        None, description="a Jinja chat template replacing the tokenizer's"
    )
    chat_template_file: str | None = Field(
        None, description="a file holding the chat template (relative to the suite's folder)"
    )
    max_tokens: int = Field(
        2048, ge=8, description="the training context: the trainer's max_length, in tokens"
    )
    json_schema: dict[str, Any] | None = Field(
        None,
        alias="schema",
        description="when given, every assistant turn must be a JSON document valid against it",
    )
    require_stop_token: bool = Field(
        True, description="the final assistant turn must keep its end-of-turn token"
    )

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            jsonschema = require("jsonschema", extra="parity")
            try:
                jsonschema.validators.validator_for(value).check_schema(value)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        return value

    @model_validator(mode="after")
    def _one_template(self) -> FormatCheckConfig:
        if self.chat_template is not None and self.chat_template_file is not None:
            raise ValueError("give chat_template or chat_template_file, not both")
        return self


@lru_cache(maxsize=4)
def load_tokenizer(path: str) -> Any:
    """The tokenizer of a model folder, loaded once per process (never mutated by callers)."""
    transformers = require("transformers")
    try:
        return transformers.AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ConfigError(f"format_check: cannot load a tokenizer from {path}: {exc}") from None


class TemplatedTokenizer:
    """A tokenizer whose ``apply_chat_template`` uses another template; everything else is the
    wrapped tokenizer's, so the shared, cached tokenizer is never changed."""

    def __init__(self, tokenizer: Any, template: str) -> None:
        self._tokenizer = tokenizer
        self.chat_template = template

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any:
        return self._tokenizer.apply_chat_template(
            conversation, chat_template=self.chat_template, **kwargs
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def _short(text: str, limit: int = _DETAIL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FormatCheck(Filter[FormatCheckConfig]):
    name = "format_check"
    description = (
        "drops records the chat template rejects, longer than the training context, whose "
        "truncation cuts the stop token, with empty turns, or with answers not valid JSON"
    )
    Config = FormatCheckConfig

    @property
    def cfg(self) -> FormatCheckConfig:
        return self.config

    # ------------------------------------------------------------------------- lazy state

    @cached_property
    def tokenizer(self) -> Any:
        """The model's tokenizer (loaded once per process), with the configured template."""
        from harness.lib.data import resolve_data_path

        folder = model_folder(self.cfg.model, str(self.ctx.suite_dir))
        tokenizer = load_tokenizer(folder)
        template = self.cfg.chat_template
        if self.cfg.chat_template_file is not None:
            path = resolve_data_path(self.cfg.chat_template_file, self.ctx.suite_dir)
            if not path.is_file():
                raise ConfigError(f"format_check.chat_template_file: not found: {path}")
            template = path.read_text(encoding="utf-8")
        if template is not None:
            return TemplatedTokenizer(tokenizer, template)
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"format_check: the tokenizer in {folder} has no chat template; give chat_template"
            )
        return tokenizer

    @cached_property
    def stop_token(self) -> tuple[int, str] | None:
        """The end-of-turn token: the special token rendered right after an assistant answer
        (id and text), or None when the template renders none there."""
        return self._probe_stop_token()[0]

    def _probe_stop_token(self) -> tuple[tuple[int, str] | None, str]:
        """Render a probe answer followed by a user turn (then, if the template refuses that, as
        the last turn); ``(token, "")`` or ``(None, why there is none)``."""
        tokenizer = self.tokenizer
        exchange = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": _PROBE}]
        text, problem = None, ""
        for messages in (exchange + [{"role": "user", "content": "pong"}], exchange):
            try:
                text = tokenizer.apply_chat_template(messages, tokenize=False)
                break
            except Exception as exc:  # noqa: BLE001 - whatever the template raises, say it
                problem = f"the chat template cannot render a user/assistant exchange ({exc})"
        if text is None:
            return None, problem
        end = text.rfind(_PROBE) + len(_PROBE)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        special = set(tokenizer.all_special_ids)
        special |= set(getattr(tokenizer, "added_tokens_decoder", {}))
        for token, (begin, _end) in zip(enc["input_ids"], enc["offset_mapping"]):
            if begin >= end:
                if token in special:
                    return (token, tokenizer.convert_ids_to_tokens(token)), ""
                break
        after = text[end : end + 20]
        return None, f"the chat template renders no special token right after an answer ({after!r})"

    @cached_property
    def _template_errors(self) -> tuple[type[Exception], ...]:
        """What rendering a record can raise: ``raise_exception(...)`` in a template is a
        ``jinja2.TemplateError``; a template mishandling a value fails with ``TypeError`` & co;
        the trainer's ``CheckError``: the template does not render prefix by prefix."""
        jinja2 = require("jinja2")
        return (jinja2.TemplateError, CheckError, TypeError, ValueError, KeyError, IndexError)

    @cached_property
    def validator(self) -> Any:
        if self.cfg.json_schema is None:
            return None
        jsonschema = require("jsonschema", extra="parity")
        cls = jsonschema.validators.validator_for(self.cfg.json_schema)
        return cls(self.cfg.json_schema)

    # ---------------------------------------------------------------------------- checks

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        if self.cfg.require_stop_token and self.stop_token is None:
            raise ConfigError(
                f"format_check: {self._probe_stop_token()[1]}, so no end-of-turn token can be "
                "checked; set require_stop_token: false"
            )
        outcome = FilterOutcome(self.name, self.cfg.action)
        for record in records:
            problem = self.check(record)
            if problem is None:
                outcome.keep(record)
            else:
                outcome.remove(record, *problem)
        return outcome.result()

    def check(self, record: Conversation) -> tuple[str, str] | None:
        """``(reason, detail)`` of the first problem of ``record``, or None when it is fine."""
        from harness.lib.training.examples import encode_conversation as encode

        try:
            ids, labels, _ = encode(self.tokenizer, record, sys.maxsize)
        except self._template_errors as exc:
            return "template_error", _short(str(exc) or type(exc).__name__)
        turns = [(i, m) for i, m in enumerate(record.messages) if m.role == "assistant"]
        if not turns:
            return "empty_response", "no assistant turn"
        for index, message in turns:
            if not message.content.strip():
                where = f"message {index + 1} of {len(record.messages)}"
                return "empty_response", f"{where} (assistant) is empty"
        if self.validator is not None:
            for index, message in turns:
                problem = self._check_json(index, message)
                if problem is not None:
                    return problem
        return self._check_length(ids, labels)

    def _check_json(self, index: int, message: Message) -> tuple[str, str] | None:
        from jsonschema.exceptions import best_match

        try:
            value = json.loads(message.content)
        except json.JSONDecodeError as exc:
            # The parser's message and position only: the answer itself may hold personal data.
            where = f"line {exc.lineno} column {exc.colno}"
            return "not_json", f"message {index + 1}: {exc.msg} at {where}"
        error = best_match(self.validator.iter_errors(value))
        if error is None:
            return None
        path = error.json_path if hasattr(error, "json_path") else "$"
        return "schema_violation", _short(f"message {index + 1} at {path}: {error.message}")

    def _check_length(self, ids: list[int], labels: list[int]) -> tuple[str, str] | None:
        from harness.lib.training.examples import IGNORE

        limit, count = self.cfg.max_tokens, len(ids)
        # The final assistant turn: the last run of supervised tokens (content, end-of-turn...).
        end = max((i + 1 for i, label in enumerate(labels) if label != IGNORE), default=0)
        start = end
        while start > 0 and labels[start - 1] != IGNORE:
            start -= 1
        stop = None
        if self.stop_token is not None:
            stop_id = self.stop_token[0]
            stop = max((i for i in range(start, end) if ids[i] == stop_id), default=None)
        stop_text = self.stop_token[1] if self.stop_token else "end-of-turn token"
        if count <= limit:
            if self.cfg.require_stop_token and stop is None:
                return (
                    "stop_token_missing",
                    f"the template renders no {stop_text} at the end of the final assistant turn",
                )
            return None
        if self.cfg.require_stop_token and stop is not None and stop == limit:
            return (
                "stop_token_truncated",
                (
                    f"{count} > {limit} tokens: the final answer fits, but the truncation cuts "
                    f"its {stop_text} (token {stop + 1})"
                ),
            )
        first = next((i for i, label in enumerate(labels) if label != IGNORE), end)
        answer_end = stop if stop is not None else end  # the final answer's text ends here
        if first >= limit:
            cut = "no assistant token is left"
        elif start >= limit:
            cut = "the final assistant turn is cut entirely"
        elif answer_end > limit:
            lost = answer_end - limit
            cut = f"the final answer loses {lost} token{'s' if lost > 1 else ''}"
            cut += f" and its {stop_text}" if stop is not None else ""
        elif stop is not None and stop >= limit:
            cut = f"the final answer fits, but its {stop_text} is cut"
        else:
            after = stop_text if stop is not None else "answer"
            cut = f"only what follows the final {after} is cut"
        return "too_long_for_context", f"{count} > {limit} tokens ({cut})"


@harness.hookimpl
def harness_register_filters(registrar: Registrar) -> None:
    registrar.add(FormatCheck)

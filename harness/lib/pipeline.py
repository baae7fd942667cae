"""A described pipeline, made executable: render, tokenize, truncate, sample and parse as it would.

Both the offline pipeline and production go through this one implementation, so that a
difference in what they do can only come from a difference in how they are described.  The
steps, in order, follow what an OpenAI-compatible server does with a chat request:

1. preprocess each message's text (unicode normalisation, whitespace);
2. add or replace the system prompt;
3. render the chat template (``add_generation_prompt``) to text;
4. tokenize the text without special tokens, then prepend BOS when the tokenizer adds one
   (this is how a template that already starts with BOS ends up with two);
5. truncate to ``max_input_tokens`` on the configured side;
6. sample with the effective parameters: explicit values, else ``generation_config.json``
   values when the pipeline takes them (as vLLM's server does by default), else the OpenAI
   API's defaults;
7. parse the answer out of the completion.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, require
from harness.lib.pipeline_spec import PipelineSpec, PostprocessSpec
from harness.types import Conversation, Message

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_tokens", "stop", "repetition_penalty", "seed")
API_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": -1,
    "max_tokens": 256,
    "stop": [],
    "repetition_penalty": 1.0,
    "seed": None,
}
"""What an OpenAI-compatible server uses for a parameter nobody set (the OpenAI API's defaults:
a request without ``temperature`` is sampled at 1.0, not greedy)."""

_GENERATION_CONFIG_KEYS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
    "max_new_tokens": "max_tokens",
}
"""``generation_config.json`` keys a server takes as defaults, and the request key each sets."""


@dataclass(frozen=True)
class Request:
    """One production request: what the client sent, and the expected answer when known."""

    id: str
    messages: tuple[Message, ...]
    reference: str | None = None

    @classmethod
    def from_conversation(cls, conv: Conversation) -> Request:
        """A final assistant turn is the reference answer, not part of the request."""
        messages = conv.messages
        reference = None
        if messages and messages[-1].role == "assistant":
            reference, messages = messages[-1].content, messages[:-1]
        if not messages:
            raise ConfigError(f"{conv.source_id}: a request needs at least one user turn")
        return cls(conv.source_id, messages, reference)

    def text(self) -> str:
        """The request's own words (every turn), for comparing traffic."""
        return "\n".join(m.content for m in self.messages if m.role != "system")


@dataclass(frozen=True)
class Rendered:
    """A prompt as the model receives it."""

    messages: tuple[tuple[str, str], ...]
    text: str
    ids: tuple[int, ...]
    full_length: int
    """token count before truncation"""

    @property
    def truncated(self) -> bool:
        return len(self.ids) < self.full_length


@dataclass(frozen=True)
class EffectiveSampling:
    """The sampling parameters a pipeline really uses, and where each value came from."""

    values: dict[str, Any]
    sources: dict[str, str]

    @property
    def greedy(self) -> bool:
        return float(self.values["temperature"]) == 0.0

    def request_params(self) -> dict[str, Any]:
        """The parameters as an OpenAI-compatible request body carries them."""
        params = {k: v for k, v in self.values.items() if v is not None}
        if params.get("top_k") == -1:
            params.pop("top_k")
        if not params.get("stop"):
            params.pop("stop", None)
        return params

    def differences(self, other: EffectiveSampling) -> dict[str, tuple[Any, Any]]:
        """``{key: (self value, other value)}`` for every parameter that changes generation.
        ``seed`` matters only when sampling; ``max_tokens`` and ``stop`` always do."""
        keys = [k for k in SAMPLING_KEYS if k != "seed" or not (self.greedy and other.greedy)]
        if self.greedy and other.greedy:
            keys = [k for k in keys if k not in ("top_p", "top_k")]  # no effect on argmax
        return {k: (self.values[k], other.values[k]) for k in keys if self.values[k] != other.values[k]}


@dataclass(frozen=True)
class Parsed:
    """An answer read from a completion, or why it could not be read."""

    ok: bool
    answer: str | None = None
    error: str | None = None


class Pipeline:
    """One described pipeline over a concrete tokenizer."""

    def __init__(
        self,
        name: str,
        spec: PipelineSpec,
        tokenizer: Any,
        template: str | None,
        generation_config: dict[str, Any] | None,
        tokenizer_dir: Path,
    ) -> None:
        self.name = name
        self.spec = spec
        self.tokenizer = tokenizer
        self.template = template
        self.generation_config = generation_config or {}
        self.tokenizer_dir = tokenizer_dir

    @classmethod
    def build(cls, name: str, spec: PipelineSpec, model_dir: Path, base_dir: Path) -> Pipeline:
        """Load the tokenizer, template and generation config the spec names (paths relative to
        ``base_dir``, the suite's folder); the model's own by default."""
        transformers = require("transformers")
        tok_dir = _resolve(spec.tokenizer, base_dir) if spec.tokenizer else model_dir
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
        except OSError as exc:
            raise ConfigError(f"{name}.tokenizer: cannot load a tokenizer from {tok_dir}: {exc}") from None
        template = spec.chat_template
        if spec.chat_template_file:
            path = _resolve(spec.chat_template_file, base_dir)
            if not path.is_file():
                raise ConfigError(f"{name}.chat_template_file: not found: {path}")
            template = path.read_text(encoding="utf-8")
        if template is None and not tokenizer.chat_template:
            raise ConfigError(f"{name}: the tokenizer in {tok_dir} has no chat template; give chat_template")
        gen_config = None
        source = spec.sampling.generation_config
        if source != "ignore":
            path = tok_dir / "generation_config.json" if source == "auto" else _resolve(source, base_dir)
            if source != "auto" and not path.is_file():
                raise ConfigError(f"{name}.sampling.generation_config: not found: {path}")
            gen_config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return cls(name, spec, tokenizer, template, gen_config, tok_dir)

    # ------------------------------------------------------------------------ input side

    def preprocess_text(self, text: str) -> str:
        pre = self.spec.preprocess
        if pre.normalize != "none":
            text = unicodedata.normalize(pre.normalize, text)
        if pre.whitespace == "strip":
            text = text.strip()
        elif pre.whitespace == "collapse":
            text = " ".join(text.split())
        return text

    def messages(self, request: Request, *, preprocess: bool = True) -> list[dict[str, str]]:
        """The turns the template renders: preprocessed, with the pipeline's system prompt."""
        turns = [
            {"role": m.role, "content": self.preprocess_text(m.content) if preprocess else m.content}
            for m in request.messages
        ]
        prompt = self.spec.system_prompt
        if prompt is not None:
            has_system = bool(turns) and turns[0]["role"] == "system"
            if has_system and self.spec.system_prompt_mode == "replace":
                turns[0] = {"role": "system", "content": prompt}
            elif not has_system:
                turns.insert(0, {"role": "system", "content": prompt})
        return turns

    def render(self, request: Request, *, preprocess: bool = True, truncate: bool = True) -> Rendered:
        turns = self.messages(request, preprocess=preprocess)
        text = self.tokenizer.apply_chat_template(
            turns,
            chat_template=self.template,
            add_generation_prompt=self.spec.add_generation_prompt,
            tokenize=False,
        )
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if self.spec.add_bos and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id] + ids
        full = len(ids)
        limit = self.spec.preprocess.max_input_tokens
        if truncate and limit is not None and full > limit:
            ids = ids[-limit:] if self.spec.preprocess.truncation_side == "left" else ids[:limit]
        return Rendered(tuple((t["role"], t["content"]) for t in turns), text, tuple(ids), full)

    # ----------------------------------------------------------------------- sampling

    @cached_property
    def sampling(self) -> EffectiveSampling:
        explicit = self.spec.sampling.model_dump(exclude={"generation_config"})
        from_config = {
            request_key: self.generation_config[key]
            for key, request_key in _GENERATION_CONFIG_KEYS.items()
            if key in self.generation_config
        }
        values, sources = {}, {}
        for key in SAMPLING_KEYS:
            if explicit.get(key) is not None:
                values[key], sources[key] = explicit[key], "explicit"
            elif key in from_config:
                values[key], sources[key] = from_config[key], "generation_config"
            else:
                values[key], sources[key] = API_DEFAULTS[key], "default"
        if values["top_k"] == 0:  # transformers' "off" is vLLM's -1
            values["top_k"] = -1
        return EffectiveSampling(values, sources)

    # ----------------------------------------------------------------------- output side

    def parse(self, text: str) -> Parsed:
        return parse(self.spec.postprocess, text)

    def passes(self, text: str, reference: str) -> bool:
        """Whether this pipeline counts ``text`` as the right answer ``reference``."""
        if self.spec.postprocess.parser == "contains":
            return reference.strip().lower() in text.lower()
        parsed = self.parse(text)
        return parsed.ok and (parsed.answer or "").strip() == reference.strip()

    # ----------------------------------------------------------------------- identity

    @cached_property
    def tokenizer_digest(self) -> str:
        """Hash of what decides tokenization: vocabulary, merges, added tokens, normalizer."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None) or getattr(self.tokenizer, "_tokenizer", None)
        if backend is not None:
            data = json.loads(backend.to_str())
            material = {k: data.get(k) for k in ("model", "added_tokens", "normalizer", "pre_tokenizer")}
        else:  # a slow tokenizer: its vocabulary is all we can see
            material = {"vocab": sorted(self.tokenizer.get_vocab().items())}
        text = json.dumps(material, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        """What the pipeline is, for reports (no secrets: the endpoint's key variable name only)."""
        return {
            "tokenizer": str(self.tokenizer_dir.name),
            "tokenizer_digest": self.tokenizer_digest[:16],
            "template_digest": hashlib.sha256((self.template or self.tokenizer.chat_template).encode()).hexdigest()[:16],
            "system_prompt": self.spec.system_prompt,
            "add_bos": self.spec.add_bos,
            "sampling": self.sampling.values,
            "sampling_sources": self.sampling.sources,
            "preprocess": self.spec.preprocess.model_dump(),
            "postprocess": self.spec.postprocess.model_dump(by_alias=True),
            "endpoint": (
                {"url": self.spec.endpoint.url, "model": self.spec.endpoint.model}
                if self.spec.endpoint
                else None
            ),
        }


def parse(spec: PostprocessSpec, text: str) -> Parsed:
    """Read the answer from ``text`` as ``spec`` says (see :class:`PostprocessSpec`)."""
    if spec.parser == "contains":
        return Parsed(True, text)
    if spec.parser == "strip":
        return Parsed(True, text.strip())
    if spec.parser == "regex":
        match = re.search(spec.pattern or "", text)
        if not match:
            return Parsed(False, error=f"no match for {spec.pattern!r}")
        return Parsed(True, match.group(1) if match.groups() else match.group(0))
    body = text.strip()
    if spec.parser == "lenient_json":
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end < start:
            return Parsed(False, error="no JSON object in the text")
        body = text[start : end + 1]
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return Parsed(False, error=f"not JSON: {exc.msg} at column {exc.colno}")
    if spec.json_schema is not None:
        jsonschema = require("jsonschema")
        try:
            jsonschema.validate(value, spec.json_schema)
        except jsonschema.ValidationError as exc:
            return Parsed(False, error=f"schema: {exc.message}")
    if spec.field is not None:
        if not isinstance(value, dict) or spec.field not in value:
            return Parsed(False, error=f"no {spec.field!r} key")
        value = value[spec.field]
    return Parsed(True, value if isinstance(value, str) else json.dumps(value))


def _resolve(raw: str, base_dir: Path) -> Path:
    from harness.lib.data import resolve_data_path

    return resolve_data_path(raw, base_dir)

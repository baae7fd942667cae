"""Shadow test: logged production requests replayed against two models (the one in production and
the candidate), compared answer by answer.

The log is JSONL of chat-completions requests (the ``openai_requests`` format: the request body,
or ``{request: body, reference?}``; a line that cannot be read is counted, never dropped
silently).  Each request's messages go to both models through the model API's
``generate_chat`` (greedy by default, so the comparison is about the models, not the sampling).
Two answers *agree* when they are equal after whitespace and case are normalised.  Where the log
has a reference answer, each model's accuracy is the share of those requests it answers with the
reference (``exact``, normalised as above, or ``contains``: the reference appears in the answer).
The disagreements are kept as examples, with both answers and the reference.

Each side is a model given as the suite's ``model`` block (a source, or ``{source, backend,
backend_options, dtype}``) plus an optional ``adapter`` folder, or an arm of a suite (see
``harness.run.shadow_arms``): any backend serves either side, so a deployed endpoint (``openai``)
can be the baseline and a local adapter, or the suite's ``trained`` arm, the candidate.

It is a command (``harness shadow``) beside ``harness agree``, not a benchmark: a benchmark scores
one model at a time, item by item, while a shadow test needs both models' answers to the same
request side by side, and its log is production traffic, not a benchmark's items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from harness.errors import ConfigError
from harness.lib.model_api import GenerationConfig, ModelAPI, model_api
from harness.lib.models import ModelRef, resolve_model
from harness.lib.records import read_jsonl
from harness.plugin.components import Backend, RunContext
from harness.plugin.registry import Registries
from harness.suite.config import ModelSpec
from harness.types import Conversation

Match = Literal["exact", "contains"]


@dataclass(frozen=True)
class ShadowModel:
    """One side of the comparison: how to load it, and the name the report gives it."""

    label: str
    spec: ModelSpec
    adapter: Path | None = None

    @classmethod
    def parse(cls, label: str, text: str, base_dir: Path) -> ShadowModel:
        """``text`` as given on the command line: a model source, or a YAML/JSON mapping like the
        suite's ``model`` block with an optional ``adapter``."""
        import yaml
        from pydantic import ValidationError

        value = yaml.safe_load(text)
        adapter = value.pop("adapter", None) if isinstance(value, dict) else None
        try:
            spec = ModelSpec.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "model"
            raise ConfigError(f"--{label} {text!r}: {where}: {first['msg']}") from None
        return cls(label, spec, None if adapter is None else (base_dir / str(adapter)).resolve())


@dataclass(frozen=True)
class ShadowExample:
    """One request the two models answered differently."""

    request: str
    prompt: str
    reference: str | None
    answers: dict[str, str]


@dataclass(frozen=True)
class ShadowResult:
    """Agreement of two models on replayed requests, and accuracy where references exist."""

    models: tuple[str, str]
    requests: int
    agree: int
    with_reference: int
    correct: dict[str, int]
    unreadable: int = 0
    disagreements: tuple[ShadowExample, ...] = field(default_factory=tuple)

    @property
    def agreement(self) -> float:
        return self.agree / self.requests if self.requests else float("nan")

    def accuracy(self, model: str) -> float | None:
        return self.correct[model] / self.with_reference if self.with_reference else None

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "agreement": self.agreement,
            "accuracy": {m: self.accuracy(m) for m in self.models},
        }


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def is_correct(answer: str, reference: str, match: Match) -> bool:
    got, want = normalise(answer), normalise(reference)
    return got == want if match == "exact" else want in got


def split_reference(conv: Conversation) -> tuple[list[dict[str, str]], str | None]:
    """The request's messages, and its reference answer (a final assistant turn) if it has one."""
    messages = [{"role": m.role, "content": m.content} for m in conv.messages]
    if messages and messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]["content"]
    return messages, None


def compare_answers(
    requests: Sequence[Conversation], answers: Mapping[str, Sequence[str]], match: Match = "exact", unreadable: int = 0
) -> ShadowResult:
    """Both models' answers to ``requests`` (same order), compared; ``answers`` has two entries,
    baseline first."""
    labels = tuple(answers)
    if len(labels) != 2:
        raise ValueError("a shadow test compares exactly two models")
    a, b = labels
    agree, with_reference, correct = 0, 0, dict.fromkeys(labels, 0)
    examples: list[ShadowExample] = []
    for i, conv in enumerate(requests):
        messages, reference = split_reference(conv)
        got = {label: answers[label][i] for label in labels}
        same = normalise(got[a]) == normalise(got[b])
        agree += same
        if reference is not None:
            with_reference += 1
            for label in labels:
                correct[label] += is_correct(got[label], reference, match)
        if not same:
            examples.append(ShadowExample(conv.source_id, messages[-1]["content"], reference, got))
    return ShadowResult((a, b), len(requests), agree, with_reference, correct, unreadable, tuple(examples))


def read_requests(path: Path, limit: int | None = None) -> tuple[list[Conversation], int]:
    """The log's requests (the first ``limit``) and how many lines could not be read."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such request log")
    requests: list[Conversation] = []
    unreadable = 0
    for record in read_jsonl(path, path.name, "openai_requests"):
        if isinstance(record, Conversation):
            requests.append(record)
        else:
            unreadable += 1
    if not requests:
        raise ConfigError(f"{path}: no readable request in the log ({unreadable} unreadable lines)")
    return requests[:limit] if limit else requests, unreadable


class ShadowSide(Protocol):
    """One side of the comparison, ready to load: a model spec (``SpecSide``) or a suite's arm
    (``harness.run.shadow_arms.SuiteArm``)."""

    @property
    def label(self) -> str: ...

    def load(self) -> ModelAPI: ...


@dataclass(frozen=True)
class SpecSide:
    """A :class:`ShadowModel` with the registries and context that build its backend."""

    model: ShadowModel
    registries: Registries
    ctx: RunContext

    @property
    def label(self) -> str:
        return self.model.label

    def load(self) -> ModelAPI:
        spec = self.model.spec
        backend = self.registries.build("backend", spec.backend, dict(spec.backend_options), self.ctx)
        assert isinstance(backend, Backend)
        ref: ModelRef = resolve_model(spec.source, spec.backend, spec.dtype, self.ctx.suite_dir)
        if self.model.adapter is not None:
            ref = ref.with_adapter(self.model.label, self.model.adapter)
        return model_api(backend.load(ref))


def _answers(side: ShadowSide, requests: Sequence[Conversation], config: GenerationConfig) -> list[str]:
    api = side.load()
    try:
        return api.generate_chat([split_reference(conv)[0] for conv in requests], config)
    finally:
        api.close()


def run_shadow(
    log: Path,
    sides: tuple[ShadowSide, ShadowSide],
    config: GenerationConfig,
    *,
    limit: int | None = None,
    match: Match = "exact",
) -> ShadowResult:
    """Replay ``log`` against both sides (one model in memory at a time) and compare their answers."""
    requests, unreadable = read_requests(log, limit)
    answers = {side.label: _answers(side, requests, config) for side in sides}
    return compare_answers(requests, answers, match, unreadable)

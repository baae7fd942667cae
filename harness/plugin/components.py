"""Base classes of the components that plugins contribute.

A component is a small class with a unique ``name`` (used in suites and reports), a typed pydantic
``Config`` (``extra="forbid"``) and one or two methods.  Components are constructed by the runner
with their validated config and the run's ``RunContext``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol

from pydantic import Field
from typing_extensions import TypeVar

# Re-exported: plugins import what they build on from here.
from harness.errors import DataError
from harness.lib.refs import ComponentConfig as ComponentConfig
from harness.lib.training.context import TrainContext as TrainContext
from harness.lib.model_api import Capabilities as Capabilities
from harness.types import (
    ProgressFn as ProgressFn,
    Comparison,
    Conversation,
    Dropped,
    ItemResult,
    Quarantined,
    TrainOutput,
)

if TYPE_CHECKING:
    from harness.lib.models import LoadedModel, ModelRef
    from harness.types import RunResult


class ComponentBuilder(Protocol):
    """Builds a registered component by kind and name (``Registries`` is one)."""

    def build(self, kind: str, name: str, options: Mapping[str, Any], ctx: RunContext) -> Component: ...


@dataclass(frozen=True)
class RunContext:
    """What a component may need from the run around it.

    ``builder`` lets a component use another component through the registries (the
    ``decontaminate`` filter reads the ``mmlu`` benchmark's items), never by importing its
    plugin, so a blocked plugin is really gone."""

    suite_dir: Path
    work_dir: Path
    seed: int = 0
    builder: ComponentBuilder | None = field(default=None, compare=False, repr=False)

    @property
    def data_dir(self) -> Path:
        from harness.lib.data import data_dir

        return data_dir()

    def data_path(self, relative: str, what: str) -> Path:
        """A file or folder under the data folder; missing, it is a ``DataError`` naming ``what``."""
        from harness.errors import DataError

        path = self.data_dir / relative
        if not path.exists():
            raise DataError(f"{what} not found: {path}")
        return path

    def component(self, kind: str, name: str, options: Mapping[str, Any] | None = None) -> Component:
        """Another registered component, built with ``options`` (errors name it and its plugin)."""
        if self.builder is None:
            from harness.errors import ConfigError

            raise ConfigError(f"{kind} {name!r} is needed, but this context has no component registries")
        return self.builder.build(kind, name, dict(options or {}), self)


ConfigT = TypeVar("ConfigT", bound=ComponentConfig, default=ComponentConfig, covariant=True)
"""A component's validated config type: ``class MMLU(Benchmark[MMLUConfig])`` types
``self.config`` as ``MMLUConfig``."""


class Component(Generic[ConfigT]):
    """Common shape of all components."""

    kind: ClassVar[str] = "component"
    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    def __init__(self, config: ConfigT, ctx: RunContext) -> None:
        self.config: ConfigT = config
        self.ctx = ctx

    def cache_material(self) -> dict[str, Any]:
        """What identifies this component's output besides its inputs: its name, its config and
        its code (distribution, version and, unless it is a fixed release, a source digest)."""
        from harness.plugin.identity import code_identity

        return {
            "component": self.name,
            "config": self.config.model_dump(mode="json"),
            "code": code_identity(type(self).__module__),
        }


class Reader(Component[ConfigT]):
    """Reads one data file into conversations; unparseable lines come back as ``Quarantined``."""

    kind = "reader"

    def read(self, path: Path, source: str) -> Iterator[Conversation | Quarantined]:
        """The records of ``path``; ``source`` is how the suite names it (for source ids)."""
        raise NotImplementedError


@dataclass(frozen=True)
class FilterResult:
    """What a filter returns: every input appears exactly once, kept (possibly redacted),
    dropped or quarantined.  ``redacted`` counts kept records the filter changed, by reason."""

    kept: list[Conversation]
    dropped: list[Dropped]
    quarantined: list[Quarantined] = field(default_factory=list)
    redacted: Counter[str] = field(default_factory=Counter)


class FilterActionConfig(ComponentConfig):
    """Config base of filters whose removals can be drops or quarantines."""

    action: Literal["drop", "quarantine"] = Field(
        "drop", description="drop a flagged record (ledger entry) or quarantine it (quarantine file)"
    )


class FilterOutcome:
    """Builds a ``FilterResult`` one record at a time, routing removals by the filter's action."""

    def __init__(self, filter_name: str, action: str = "drop") -> None:
        self.filter_name, self.action = filter_name, action
        self.kept: list[Conversation] = []
        self.dropped: list[Dropped] = []
        self.quarantined: list[Quarantined] = []
        self.redacted: Counter[str] = Counter()

    def keep(self, record: Conversation) -> None:
        self.kept.append(record)

    def redact(self, record: Conversation, reasons: Sequence[str]) -> None:
        """Keep ``record`` (the changed copy), counting what was redacted."""
        self.kept.append(record)
        self.redacted.update(reasons)

    def remove(self, record: Conversation, reason: str, detail: str = "") -> None:
        if self.action == "quarantine":
            raw = json.dumps(record.to_json(), ensure_ascii=False)
            self.quarantined.append(Quarantined(record.source_id, reason, raw, self.filter_name, detail))
        else:
            self.dropped.append(Dropped(record.source_id, self.filter_name, reason, detail))

    def result(self) -> FilterResult:
        return FilterResult(self.kept, self.dropped, self.quarantined, self.redacted)


class Filter(Component[ConfigT]):
    """Removes records from the curated set; every removal carries a reason code."""

    kind = "filter"

    def apply(self, records: Sequence[Conversation]) -> FilterResult:
        raise NotImplementedError


class Trainer(Component[ConfigT]):
    """Fine-tunes a base model on curated conversations and returns the adapter or model dir.

    A trainer that runs in other processes (``in_process = False``: torchrun, the DeepSpeed
    launcher) gets a ``LoadedModel`` with the tokenizer only (``model`` is None), so the parent
    does not hold a copy of the weights its workers load."""

    kind = "trainer"
    in_process: ClassVar[bool] = True

    def train(
        self, base: LoadedModel, data: Sequence[Conversation], ctx: TrainContext
    ) -> TrainOutput:
        """Train on ``data`` and save the result as safetensors under ``ctx.output_dir``."""
        raise NotImplementedError


Item = dict[str, Any]
"""One benchmark item: JSON-serialisable, with a unique string ``"id"`` (read it with
``item_id``) and whatever fields its benchmark needs.

A plain mapping rather than a ``TypedDict``: a TypedDict that stays open to each benchmark's own
keys needs PEP 728 (``extra_items``), which mypy does not check yet, and a closed one would make
every benchmark cast its own fields.  ``item_id`` gives the one field all items share a type."""


def item_id(item: Item) -> str:
    """``item``'s ``"id"``; an item without a non-empty string id is a ``DataError`` (results
    are paired and cached by it, so a missing or numeric one must not pass silently)."""
    value = item.get("id")
    if not isinstance(value, str) or not value:
        shown = json.dumps(item, ensure_ascii=False, default=str)[:120]
        raise DataError(f"benchmark item without a string id: {shown}")
    return value

PROMPT_CHARS = 4000
"""How much of an item's prompt a per-item result keeps for reports."""


class Benchmark(Component[ConfigT]):
    """Scores a model item by item.

    ``items()`` must be deterministic and cheap (no model needed): their digest keys the
    evaluation cache together with the model fingerprint.  The runner calls ``evaluate`` on
    chunks of at most ``chunk_size`` items and caches each chunk's results as soon as it is
    scored, so an interrupted run resumes without recomputing finished items.
    """

    kind = "benchmark"
    metric: str = "accuracy"
    chance: ClassVar[float | None] = None
    """The score of a random guesser, when it is known (e.g. 0.25 for 4-choice MMLU)."""
    chunk_size: ClassVar[int] = 64
    proportion: ClassVar[bool] = True
    """Whether per-item scores are 0/1 (or in [0, 1]); power analysis plans with a proportion's
    variance only then, other metrics need the baseline's scores in the store."""
    cluster_field: ClassVar[str | None] = None
    """The item field naming the item's source (items sharing it are not independent, e.g.
    HellaSwag's activity, MMLU's subject); ``None`` when items are independent."""
    needs: ClassVar[tuple[str, ...]] = ()
    """The model capabilities (``harness.lib.model_api.Capabilities`` fields) ``evaluate`` uses;
    the run plan refuses the suite when the backend lacks one."""

    def required_capabilities(self) -> tuple[str, ...]:
        """What this benchmark needs of the model; override when it depends on the config."""
        return self.needs

    def items(self) -> list[Item]:
        raise NotImplementedError

    def check_ready(self) -> None:
        """Raise a ``HarnessError`` when this benchmark cannot run here (e.g. no sandbox); the
        runner calls it before any work, so a run fails closed instead of scoring zeros."""

    def items_digest(self) -> str:
        """sha256 of the items' canonical JSON."""
        if getattr(self, "_digest", None) is None:
            text = json.dumps(self.items(), sort_keys=True, ensure_ascii=False)
            self._digest = hashlib.sha256(text.encode()).hexdigest()
        return self._digest

    def evaluate(
        self, model: LoadedModel, items: Sequence[Item], progress: ProgressFn
    ) -> list[ItemResult]:
        """Score exactly ``items`` (a chunk of ``items()``), one result per item, same order."""
        raise NotImplementedError

    def item_prompt(self, item: Item) -> str:
        """What the model is asked on ``item``, as reports show it: its ``prompt`` field, else
        the item's other fields as compact JSON; cut to ``PROMPT_CHARS`` characters."""
        text = item.get("prompt")
        if not isinstance(text, str):
            rest = {k: v for k, v in item.items() if k != "id"}
            text = json.dumps(rest, ensure_ascii=False, sort_keys=True, default=str)
        return text if len(text) <= PROMPT_CHARS else text[: PROMPT_CHARS - 1] + "…"

    def item_messages(self, item: Item) -> list[dict[str, str]] | None:
        """The conversation a chat benchmark sends for ``item`` (before any prompt variant adds
        to it), or ``None`` when the benchmark does not say.  A prompt-variant arm's prompt cost
        (its examples' tokens, input tokens per request) is measured over these."""
        return None

    def clusters(self) -> dict[str, str] | None:
        """Item id -> cluster label from ``cluster_field``; ``None`` when items are independent."""
        if self.cluster_field is None:
            return None
        return {item_id(i): str(i.get(self.cluster_field, item_id(i))) for i in self.items()}

    def summary(self, results: Sequence[ItemResult]) -> dict[str, float]:
        """Headline figures of a whole result (default: the weighted mean of the scores)."""
        total = sum(r.weight for r in results)
        return {self.metric: sum(r.score * r.weight for r in results) / total if total else float("nan")}


class Statistic(Component[ConfigT]):
    """A paired test of candidate against baseline on per-item scores."""

    kind = "statistic"

    def applies_to(self, scores: Sequence[float]) -> bool:
        return True

    def compare(
        self,
        baseline: Sequence[float],
        candidate: Sequence[float],
        alpha: float,
        clusters: Sequence[str] | None = None,
    ) -> Comparison:
        """Candidate against baseline at one-sided ``alpha``; ``clusters`` labels each item's
        source (items of one cluster are not independent), ``None`` when they are."""
        raise NotImplementedError


class Backend(Component[ConfigT]):
    """Loads a model (and optional adapter) for training and evaluation."""

    kind = "backend"
    capabilities: Capabilities = Capabilities()
    """What the models this backend returns can do (log-likelihoods, generation, chat)."""
    reads_model_folder: ClassVar[bool] = False
    """Whether ``load`` reads the suite's ``model`` as a local folder (``config.json`` and
    ``*.safetensors``) or an embedded model; the run plan then checks it before any work.
    Backends whose model lives elsewhere (an endpoint, a test double) leave it ``False``."""

    def load(self, ref: ModelRef, *, trainable: bool = False) -> LoadedModel:
        raise NotImplementedError

    def cache_material_for(self, ref: ModelRef) -> dict[str, Any]:
        """What besides the model's fingerprint changes its outputs (precision, device...)."""
        return {**self.cache_material(), "dtype": ref.dtype}


class Reporter(Component[ConfigT]):
    """Renders a finished run; returns the files it wrote (if any)."""

    kind = "reporter"

    def report(self, result: RunResult, out_dir: Path) -> list[Path]:
        raise NotImplementedError

    def render(self, document: dict[str, Any]) -> dict[str, str]:
        """The files (name -> text) this reporter makes from a run's result document (see
        ``harness.lib.resultdoc``), so that ``harness report`` re-renders a stored run without
        recomputing it.  Reporters that only render live runs (the terminal) do not override it."""
        raise NotImplementedError(f"reporter {self.name!r} cannot render a stored run")

    @classmethod
    def renders_documents(cls) -> bool:
        """Whether ``render`` is implemented (``harness report --format`` offers only these)."""
        return cls.render is not Reporter.render



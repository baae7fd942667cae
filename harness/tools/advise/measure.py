"""What ``harness advise`` measures per arm, from a finished run's result (nothing is scored again).

For one benchmark (the domain task the decision is about) and every arm the run scored on it:

* **quality**: the arm's score, and its paired difference from the best arm on the items both
  scored, with the interval of the gates' own statistics (``harness.lib.stats``: exact McNemar
  with the Agresti-Min interval for 0/1 scores, else the paired bootstrap);
* **format failures**: answers the benchmark's parser would reject (see :func:`format_check`);
* **prompt cost** (input tokens per request, the examples' tokens and their share of the
  context window): given by the caller, per arm, as the prompt variants' ``prompt_cost`` reports
  it (or a ``--prompt-costs`` file), else read from the result document's ``prompt_costs``;
  never guessed;
* **training time**: the trained arm's measured training seconds (the run's ``train`` output,
  or a ``compare_train`` output of the same name).

An arm's kind says how it was made: ``prompting`` (the base model, zero- or few-shot), ``lora``
or ``full`` (trained).  :func:`arm_kind` reads it from a document's ``arms`` entry when it has
one; else from the run's model description, which names the arm (``base`` and prompt variants
are prompting, ``trained`` is this run's trainer output: LoRA, or full fine-tuning when the suite
trains with a ``full*`` trainer); else from the result label (``candidate``/``trained`` the
trainer output, ``lora*`` LoRA, ``full*`` full fine-tuning, any other arm a prompting arm).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field, ValidationError

from harness.errors import ConfigError, DataError
from harness.lib.refs import StrictModel
from harness.lib.resultdoc import result_document
from harness.lib.stats import clip_interval, is_binary, mcnemar, paired_bootstrap
from harness.suite.yamlpos import load_yaml
from harness.types import Comparison, RunResult

ArmKind = Literal["prompting", "lora", "full"]
TRAINED: tuple[ArmKind, ...] = ("lora", "full")
KINDS: dict[str, ArmKind] = {"prompting": "prompting", "lora": "lora", "full": "full"}


class PromptCostLike(Protocol):
    """What the prompting work's ``prompt_cost`` returns (``PromptCost``), read by attribute."""

    @property
    def example_tokens(self) -> float: ...
    @property
    def mean_input_tokens(self) -> float: ...
    @property
    def context_share(self) -> float: ...


@dataclass(frozen=True)
class PromptCost:
    """An arm's prompt cost: tokens of its examples, mean input tokens per request, and the share
    of the model's context window the examples take."""

    example_tokens: float
    mean_input_tokens: float
    context_share: float
    output_tokens: float | None = None
    """Mean output tokens per request, when measured (priced with ``--price-per-1k-output-tokens``)."""


@dataclass(frozen=True)
class ArmMeasure:
    """One arm, measured on the advised benchmark."""

    name: str
    kind: ArmKind
    score: float
    n: int
    vs_best: Comparison | None
    """This arm minus the best arm, paired on shared items (``None`` for the best arm itself)."""
    format_failures: int | None
    """Answers the benchmark's parser rejects; ``None`` when the benchmark has no format check."""
    cost: PromptCost | None = None
    train_seconds: float | None = None
    examples: int = 0
    """Examples in the arm's prompt (a prompt variant's ``shots`` or ``nearest``), as the run
    describes the arm; 0 when it has none or the run does not say."""

    @property
    def format_failure_rate(self) -> float | None:
        return None if self.format_failures is None or not self.n else self.format_failures / self.n

    @property
    def has_examples(self) -> bool:
        return self.examples > 0 or (self.cost is not None and self.cost.example_tokens > 0)


@dataclass(frozen=True)
class Measurements:
    """Every arm of one benchmark, the best arm, and the size of the labelled training data."""

    benchmark: str
    metric: str
    arms: tuple[ArmMeasure, ...]
    best: str
    labelled_examples: int | None
    format_check: str
    trained_vs_prompting: Comparison | None = None
    """The best trained arm minus the best few-shot arm (the best prompting arm when none has
    examples), paired; ``None`` without both kinds."""

    def arm(self, name: str) -> ArmMeasure:
        return next(a for a in self.arms if a.name == name)

    def best_of(self, kinds: Sequence[ArmKind], with_examples: bool = False) -> ArmMeasure | None:
        """The highest-scoring arm of these kinds (with examples in the prompt, if asked)."""
        pool = [a for a in self.arms if a.kind in kinds and (a.has_examples or not with_examples)]
        return max(pool, key=lambda a: a.score, default=None)

    def few_shot(self) -> ArmMeasure | None:
        """The best prompting arm with examples, else the best prompting arm."""
        return self.best_of(("prompting",), with_examples=True) or self.best_of(("prompting",))


_DESCRIBED = re.compile(r"^(\S+?)(?: \(([^)]*)\))?: ")
"""A result's model description that names its arm: ``NAME: ...`` or ``NAME (prompt {...}): ...``."""


def arm_kind(label: str, doc: Mapping[str, Any], trained: ArmKind = "lora") -> ArmKind:
    """How the arm whose results are keyed ``label`` was made (see the module docstring);
    ``trained`` is the kind of this run's trainer output."""
    declared = doc.get("arms", {}).get(label, {}).get("kind")
    if isinstance(declared, str) and declared in KINDS:
        return KINDS[declared]
    match = _DESCRIBED.match(str(doc.get("models", {}).get(label, "")))
    if match is not None:
        name, extras = match.group(1), match.group(2) or ""
        if "prompt" in extras or name == "base":
            return "prompting"
        if name == "trained":
            return trained
        label = name
    lowered = label.lower()
    if lowered in ("trained", "candidate"):
        return trained
    if lowered.startswith(("lora", "full")):
        return "lora" if lowered.startswith("lora") else "full"
    return "prompting"


_EXAMPLES = re.compile(r"'(?:shots|nearest)': (\d+)")


def prompt_examples(label: str, doc: Mapping[str, Any]) -> int:
    """The examples a prompt variant's description names (``prompt {'shots': 5}``), else 0."""
    match = _DESCRIBED.match(str(doc.get("models", {}).get(label, "")))
    found = _EXAMPLES.findall(match.group(2) or "") if match is not None else []
    return sum(int(k) for k in found)


def format_check(per_arm: Mapping[str, Mapping[str, Any]]) -> tuple[str, set[str] | None]:
    """How the benchmark's answers are checked for format, and the accepted answers.

    A benchmark whose items carry a category equal to their reference is a label task (the
    built-in ``support_intent``: the intent is both): an answer is well-formed when it is one of
    the labels the run's items carry, which is what a production parser of the label accepts.
    Other benchmarks have no format check: multiple choice scored by log-likelihood always
    yields a choice, perplexity has no answer, and code is judged by its tests.
    """
    items = [i for res in per_arm.values() for i in res.get("items", [])]
    if items and all(i.get("category") and i["category"] == i["reference"] for i in items):
        return "label", {i["reference"] for i in items}
    return "none", None


def _paired(doc_items: Sequence[Mapping[str, Any]], best_items: Sequence[Mapping[str, Any]], alpha: float,
            seed: int) -> Comparison:
    mine = {i["item_id"]: float(i["score"]) for i in doc_items}
    theirs = {i["item_id"]: float(i["score"]) for i in best_items}
    shared = sorted(set(mine) & set(theirs))
    if not shared:
        raise DataError("no items shared with the best arm, so no paired comparison")
    base, cand = [theirs[k] for k in shared], [mine[k] for k in shared]
    if is_binary(base) and is_binary(cand):  # clipped to the differences the scores allow, as gates do
        return clip_interval(mcnemar(base, cand, alpha))
    return paired_bootstrap(base, cand, alpha, seed=seed)


def is_run_trained(label: str, doc: Mapping[str, Any]) -> bool:
    """Whether the arm keyed ``label`` is this run's trainer output (arm ``trained``), not a
    model trained elsewhere."""
    match = _DESCRIBED.match(str(doc.get("models", {}).get(label, "")))
    return match.group(1) == "trained" if match is not None else label in ("candidate", "trained")


def _train_seconds(label: str, kind: ArmKind, doc: Mapping[str, Any]) -> float | None:
    """Measured training seconds: a ``compare_train`` output of the arm's label, else the run's
    training when the arm is its output; ``None`` for a model trained elsewhere."""
    if kind not in TRAINED:
        return None
    other = doc.get("compare_train", {}).get(label)
    if isinstance(other, dict) and "seconds" in other:
        return float(other["seconds"])
    train = doc.get("train")
    return float(train["seconds"]) if train and is_run_trained(label, doc) else None


def labelled_examples(doc: Mapping[str, Any]) -> int | None:
    """Labelled training examples: what curation kept (the data set the decision is about), else
    the trainer's count (which leaves out examples too long to train on)."""
    stages = (doc.get("ledger") or {}).get("stages") or []
    if stages:
        return int(stages[-1]["kept"])
    return int(doc["train"]["examples"]) if doc.get("train") else None


def _cost(arm: str, raw: PromptCostLike | Mapping[str, Any] | None) -> PromptCost | None:
    """An arm's prompt cost from a ``PromptCost``-like object or its JSON form."""
    if raw is None:
        return None
    names = ("example_tokens", "mean_input_tokens", "context_share", "output_tokens")
    values: dict[str, Any]
    if isinstance(raw, Mapping):
        values = {k: raw.get(k) for k in names}
    else:
        values = {k: getattr(raw, k, None) for k in names}
    missing = [k for k in names[:3] if values[k] is None]
    if missing:
        raise DataError(f"prompt cost of arm {arm!r}: no {', '.join(missing)}")
    output = values["output_tokens"]
    return PromptCost(float(values["example_tokens"]), float(values["mean_input_tokens"]),
                      float(values["context_share"]), None if output is None else float(output))


class _CostEntry(StrictModel):
    example_tokens: float = Field(ge=0)
    mean_input_tokens: float = Field(ge=0)
    context_share: float = Field(ge=0, le=1)
    output_tokens: float | None = Field(None, ge=0)


def read_prompt_costs(path: Path) -> dict[str, PromptCost]:
    """Prompt costs per arm from a YAML (or JSON) file: ``ARM: {example_tokens, mean_input_tokens,
    context_share, output_tokens?}``; a bad entry is a one-line error naming the file and line."""
    data, positions = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: prompt costs must be a mapping of arm -> cost")
    costs = {}
    for arm, raw in data.items():
        try:
            entry = _CostEntry.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = (str(arm), *map(str, err["loc"]))
            raise ConfigError(f"{positions.where(loc)}: {'.'.join(loc)}: {err['msg']}") from None
        costs[str(arm)] = PromptCost(**entry.model_dump())
    return costs


def pick_benchmark(doc: Mapping[str, Any], benchmark: str | None) -> str:
    """The benchmark to advise on: the one named, else the first with more than one arm."""
    stored = doc.get("benchmarks", {})
    if benchmark is not None:
        if benchmark not in stored:
            raise DataError(f"run {doc.get('run_id')}: no benchmark {benchmark!r} (benchmarks: {', '.join(stored) or 'none'})")
        return benchmark
    for label, per_arm in stored.items():
        if len(per_arm) > 1:
            return str(label)
    raise DataError(f"run {doc.get('run_id')}: no benchmark scored on two or more arms, nothing to compare")


def measure_arms(result: RunResult | Mapping[str, Any], benchmark: str | None = None,
                 costs: Mapping[str, PromptCostLike | Mapping[str, Any]] | None = None,
                 alpha: float = 0.05, seed: int = 0, trained_kind: ArmKind = "lora") -> Measurements:
    """Measure every arm of ``benchmark`` in a finished run (a ``RunResult`` or its stored
    result document); ``costs`` gives prompt costs per arm, over the document's ``prompt_costs``."""
    doc: Mapping[str, Any] = result_document(result) if isinstance(result, RunResult) else result
    label = pick_benchmark(doc, benchmark)
    per_arm: Mapping[str, Mapping[str, Any]] = doc["benchmarks"][label]
    costs = {**doc.get("prompt_costs", {}), **(costs or {})}
    check, labels = format_check(per_arm)
    scores = {name: float(res["score"]) for name, res in per_arm.items()}
    best = max(scores, key=lambda n: scores[n])
    arms = []
    for name, res in per_arm.items():
        kind = arm_kind(name, doc, trained_kind)
        items = res["items"]
        arms.append(ArmMeasure(
            name, kind, scores[name], len(items),
            None if name == best else _paired(items, per_arm[best]["items"], alpha, seed),
            None if labels is None else sum(1 for i in items if i["prediction"] not in labels),
            _cost(name, costs.get(name)), _train_seconds(name, kind, doc), prompt_examples(name, doc),
        ))
    metric = str(next(iter(per_arm.values())).get("metric", ""))
    m = Measurements(label, metric, tuple(arms), best, labelled_examples(doc), check)
    trained, prompting = m.best_of(TRAINED), m.few_shot()
    if trained is None or prompting is None:
        return m
    pair = _paired(per_arm[trained.name]["items"], per_arm[prompting.name]["items"], alpha, seed)
    return replace(m, trained_vs_prompting=pair)

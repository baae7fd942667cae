"""``harness advise``'s decision rules as data, and the suite's ``deployment:`` and ``advise:``
blocks.

The rules live in ``advise_rules.yaml`` beside this module.  Each names the chapter passage it
comes from, the measurement it reads, its thresholds and what it recommends (``prompting`` or
``fine_tune``); the table's order is the order in which they decide (the first that fires gives
the recommendation).  Code only knows how to read each measurement
(``harness.tools.advise.decide``).  Thresholds are overridden by rule id from a suite's
``advise:`` block (checked when the suite loads, so ``harness validate`` names a typo) or a
``--rules`` file, each unknown id or threshold a one-line error naming where it was written.

``deployment`` states the traffic and prices the advice's economics use (the command's flags
override it).  Neither block changes what ``harness run`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from harness.errors import ConfigError
from harness.lib.refs import StrictModel
from harness.suite.yamlpos import load_yaml



Recommends = Literal["prompting", "fine_tune"]
Reads = Literal[
    "labelled_examples", "format_failure_rate", "context_share", "quality_gap", "break_even_days",
    "prompt_tokens_and_traffic",
]


class Rule(StrictModel):
    """One decision rule of the chapter, with its thresholds."""

    id: str = Field(description="short name used in reasons and overrides")
    source: str = Field(description="where the chapter states it (section or question)")
    chapter: str = Field(description="the chapter's wording")
    reads: Reads = Field(description="the measurement the rule reads")
    thresholds: dict[str, float] = Field(description="threshold name -> value")
    recommends: Recommends = Field(description="what the rule recommends when it fires")


class RuleTable(StrictModel):
    rules: tuple[Rule, ...]


@cache
def default_rules() -> tuple[Rule, ...]:
    """The rules shipped with the harness (``advise_rules.yaml``), in deciding order."""
    path = Path(str(resources.files("harness.suite").joinpath("advise_rules.yaml")))
    data, _ = load_yaml(path)
    return RuleTable.model_validate(data).rules


Where = Callable[[tuple[str, ...]], str]
"""``where(("few_examples", "min_examples"))``: the ``file:line`` an override was written at."""


def override_problem(rules: tuple[Rule, ...], overrides: Mapping[str, Mapping[str, float]]) -> tuple[tuple[str, ...], str] | None:
    """The first unknown rule or threshold in ``overrides``: where it is (rule id, threshold)
    and what is wrong; ``None`` when every override names a rule's threshold."""
    by_id = {r.id: r for r in rules}
    for rule_id, values in overrides.items():
        if rule_id not in by_id:
            return (rule_id,), f"unknown advise rule {rule_id!r}; rules: {', '.join(by_id)}"
        unknown = sorted(set(values) - set(by_id[rule_id].thresholds))
        if unknown:
            known = ", ".join(by_id[rule_id].thresholds)
            return (rule_id, unknown[0]), f"rule {rule_id!r} has no threshold {unknown[0]!r}; thresholds: {known}"
    return None


def apply_overrides(rules: tuple[Rule, ...], overrides: Mapping[str, Mapping[str, float]], where: Where) -> tuple[Rule, ...]:
    """``rules`` with the thresholds ``overrides`` names replaced; ``where`` locates an override
    for the one-line error an unknown rule or threshold gets."""
    problem = override_problem(rules, overrides)
    if problem is not None:
        raise ConfigError(f"{where(problem[0])}: {problem[1]}")
    return tuple(
        r.model_copy(update={"thresholds": {**r.thresholds, **overrides.get(r.id, {})}}) for r in rules
    )


def read_overrides(path: Path) -> tuple[dict[str, dict[str, float]], Where]:
    """The overrides in a ``--rules`` file (``rules: {ID: {THRESHOLD: VALUE}}``) and where each is."""
    data, positions = load_yaml(path)
    try:
        parsed = _Overrides.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        raise ConfigError(f"{positions.where(loc)}: {'.'.join(map(str, loc)) or '(top level)'}: {err['msg']}") from None
    return parsed.rules, lambda loc: positions.where(("rules", *loc))


class _Overrides(StrictModel):
    rules: dict[str, dict[str, float]]


def load_rules(suite_overrides: Mapping[str, Mapping[str, float]] | None = None, suite_where: Where | None = None,
               rules_file: Path | None = None) -> tuple[Rule, ...]:
    """The shipped rules, then the suite's overrides, then a ``--rules`` file's."""
    rules = default_rules()
    if suite_overrides:
        rules = apply_overrides(rules, suite_overrides, suite_where or (lambda loc: "advise.rules." + ".".join(loc)))
    if rules_file is not None:
        overrides, where = read_overrides(rules_file)
        rules = apply_overrides(rules, overrides, where)
    return rules


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def rules_table_markdown(rules: tuple[Rule, ...]) -> str:
    """The rules as a Markdown table (for docs/advise.md)."""
    lines = ["| order | id | source | reads | thresholds | recommends | the chapter's wording |", "| --- " * 7 + "|"]
    for n, r in enumerate(rules, 1):
        thresholds = ", ".join(f"`{k}` = {_number(v)}" for k, v in r.thresholds.items())
        lines.append(f"| {n} | `{r.id}` | {r.source} | `{r.reads}` | {thresholds} | {r.recommends} | {r.chapter} |")
    return "\n".join(lines)


class DeploymentSpec(StrictModel):
    """Traffic and prices of the deployment the advice is for."""

    requests_per_month: float | None = Field(None, ge=0, description="requests the model serves per month")
    price_per_1k_input_tokens: float | None = Field(None, ge=0, description="serving price of 1,000 input tokens")
    price_per_1k_output_tokens: float | None = Field(None, ge=0, description="serving price of 1,000 output tokens")
    gpu_hour_price: float | None = Field(None, ge=0, description="price of one GPU-hour of training")


class AdviseSpec(StrictModel):
    """Overrides of ``harness advise``'s decision rules (see docs/advise.md)."""

    rules: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="rule id -> threshold name -> value (e.g. few_examples: {min_examples: 50})"
    )

    @model_validator(mode="after")
    def _known(self) -> AdviseSpec:
        problem = override_problem(default_rules(), self.rules)
        if problem is not None:
            raise ValueError(problem[1])
        return self

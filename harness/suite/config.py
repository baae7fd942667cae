"""Suite configuration: pydantic models and YAML loading with positions.

Every error names ``file:line`` and the offending key.  Component options are validated by the
component's own ``Config`` model when the run plan builds it (``harness.run.plan``), with the same
messages, so a typo inside a trainer block is reported just like a typo at the top level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, StrictInt, ValidationError, model_validator

from harness.errors import ConfigError
from harness.suite.advise import AdviseSpec, DeploymentSpec
from harness.suite.arms import ArmSpec, check_arms
from harness.suite.parity import ParitySpec
from harness.lib.refs import ComponentRef, DataSource, StrictModel
from harness.suite.yamlpos import Loc, Positions, load_yaml


class ModelSpec(StrictModel):
    """The base model: the embedded default's name, or a local Hugging Face model folder."""

    source: str = Field(description="'smollm2-135m-instruct' or a path to a model folder")
    backend: str = Field("hf", description="the backend component that loads it")
    backend_options: dict[str, Any] = Field(
        default_factory=dict, description="the backend's options (e.g. openai: url, served_model, api_key_env)"
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="'auto' uses bfloat16 when the CPU or GPU supports it"
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value


class CurateSpec(StrictModel):
    filters: list[ComponentRef] = Field(default_factory=list, description="filter components, applied in order")
    ablate: list[str] = Field(
        default_factory=list,
        description="filters of the chain to switch off, one at a time: each trains one more candidate "
        "(same data otherwise, same seed) and the report shows what the filter bought",
    )
    max_quarantined_fraction: float = Field(
        0.05, ge=0, le=1, description="fail the run when more of the input than this is malformed"
    )


class TrainSpec(ComponentRef):
    """The trainer component with its options, and the training seeds: ``seeds: [1, 2, 3]``
    trains one candidate per seed (the rest of the block unchanged)."""

    seeds: list[StrictInt] | None = Field(
        None, description="train one candidate per seed (arms 'trained@seed=N'); default: the suite's seed"
    )
    seed_rule: Literal["all", "pooled"] = Field(
        "all",
        description="all: every seed's candidate must pass each gate; pooled: one decision on the items "
        "of every seed, clustered by item",
    )


class GateSpec(StrictModel):
    """A rule on one benchmark: ``non_inferior(margin=0.02)`` or ``{rule: superior(), ...}``."""

    rule: str = Field(description="a gate rule: non_inferior(margin=...), superior(), no_regression(...)")
    benchmark: str | None = Field(None, description="evaluate label; defaults to the gate name")
    blocking: bool = Field(True, description="advisory gates are reported but never fail a run")
    statistic: str = Field("auto", description="mcnemar, paired_bootstrap, or auto")
    assumed_baseline: float | None = Field(
        None, ge=0, le=1, description="baseline score power analysis assumes for this gate when the store has none"
    )
    baseline: str | None = Field(None, description="the arm this gate takes as baseline; default: the suite's")
    candidate: str | None = Field(None, description="the arm this gate takes as candidate; default: the suite's")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"rule": value} if isinstance(value, str) else value


class GatingSpec(StrictModel):
    alpha: float = Field(0.05, gt=0, lt=0.5, description="one-sided level of each test")
    correction: Literal["holm", "bonferroni", "none"] = Field(
        "holm", description="family-wise correction over the blocking gates (Holm's step-down by default)"
    )
    require_power: bool = Field(
        False,
        description="a blocking gate whose sample cannot detect its margin is an error at validate, and an "
        "underpowered no_regression pass is inconclusive",
    )
    assumed_baseline: float | None = Field(
        None, ge=0, le=1, description="baseline score assumed by power analysis when the store has none"
    )
    assumed_correlation: float = Field(
        0.5, ge=0, lt=1, description="item correlation of baseline and candidate assumed by power analysis"
    )
    inconclusive: Literal["fail", "pass"] = Field(
        "fail", description="whether an inconclusive blocking gate fails the run (exit 1)"
    )
    check_batch_invariance: bool = Field(
        False,
        description="before gating, score the baseline's benchmarks at batch sizes 1 and 8 and report any item "
        "whose prediction (or log-probability, beyond the precision's tolerance) changes; advisory",
    )


class StopSpec(StrictModel):
    """When the live forgetting probes end the training early."""

    when: Literal["bound_exceeded", "bound_exceeded_before_domain_converged"] = Field(
        description="bound_exceeded: a general probe shows evidence of a drop beyond its bound "
        "(its no_regression test fails against step 0); bound_exceeded_before_domain_converged: "
        "the same, while the domain probe is still improving (so no earlier checkpoint has learned it)"
    )
    min_domain_gain: float = Field(
        0.01, ge=0, description="the domain has converged once a checkpoint gains less than this over the previous one"
    )


class ForgettingSpec(StrictModel):
    """Probes evaluated on the base model (step 0) and on every training checkpoint, the bounds
    the general probes must stay within, and how the checkpoint to ship is chosen."""

    probes: dict[str, ComponentRef] = Field(
        description="small, fixed benchmark subsets (label -> benchmark), same items at every point"
    )
    domain: str = Field(description="the probe label that measures the domain skill")
    bounds: dict[str, float] = Field(
        default_factory=dict, description="largest tolerated drop per general probe (its margin)"
    )
    default_bound: float = Field(0.05, ge=0, description="margin of general probes not in bounds")
    compare: dict[str, ComponentRef] = Field(
        default_factory=dict,
        description="other trainings on the same curated data (e.g. the same trainer with replay or "
        "EWC) whose curves are drawn beside the main one; compared, never gated",
    )
    selection: Literal["no_regression", "non_inferior"] = Field(
        "no_regression",
        description="a checkpoint is eligible when no general probe shows evidence of a drop "
        "beyond its bound (no_regression), or when each shows evidence it stays within (non_inferior)",
    )
    live: bool = Field(
        True,
        description="score the probes on each checkpoint while the trainer goes on (between steps), "
        "drawing the curve as it grows; false scores them all after training",
    )
    stop: StopSpec | None = Field(None, description="end the training early when forgetting shows (needs live)")

    @model_validator(mode="after")
    def _labels(self) -> ForgettingSpec:
        if self.domain not in self.probes:
            raise ValueError(f"domain {self.domain!r} is not one of the probes {sorted(self.probes)}")
        unknown = sorted(set(self.bounds) - set(self.probes))
        if unknown:
            raise ValueError(f"bounds for unknown probes {unknown}")
        if self.stop is not None and not self.live:
            raise ValueError("stop needs live: true (the probes must be scored while training)")
        return self


class Suite(StrictModel):
    name: str = Field(description="the suite's name, shown in reports and run history")
    description: str = Field("", description="free text shown in reports")
    seed: int = Field(0, description="seed of every random choice (sampling, splits, training, bootstrap)")
    model: ModelSpec = Field(description="the base model (a string is its source); the arm named 'base'")
    models: dict[str, ArmSpec] = Field(
        default_factory=dict,
        description="more arms (name -> arm): a model folder, an adapter folder, an endpoint, or a prompt variant ('of')",
    )
    baseline: str = Field("base", description="the arm the gates take as baseline")
    candidate: str | None = Field(
        None, description="the arm the gates take as candidate; default: 'trained' (this run's trainer output)"
    )
    data: list[DataSource] = Field(default_factory=list, description="training data files")
    curate: CurateSpec = Field(default_factory=CurateSpec, description="filters applied to the training data")
    train: TrainSpec | None = Field(
        None, description="the trainer component (and its seeds); none: evaluate the base model only"
    )
    forgetting: ForgettingSpec | None = Field(None, description="probes and bounds that track forgetting during training")
    evaluate: dict[str, ComponentRef] = Field(default_factory=dict, description="benchmarks run on every arm the gates use (label -> benchmark)")
    gates: dict[str, GateSpec] = Field(default_factory=dict, description="ship/no-ship rules on benchmarks (gate name -> rule)")
    gating: GatingSpec = Field(default_factory=GatingSpec, description="the level of the gate tests and what an inconclusive gate does")
    report: list[ComponentRef] = Field(
        description="reporter components",
        default_factory=lambda: [
            ComponentRef(name=n) for n in ("terminal", "json", "junit", "curve", "html", "markdown")
        ]
    )
    parity: ParitySpec | None = Field(None, description="compare the offline pipeline with production")
    store: str | None = Field(None, description="store folder; default '.harness' beside the suite")
    deployment: DeploymentSpec | None = Field(None, description="traffic and prices for harness advise's economics")
    advise: AdviseSpec | None = Field(None, description="threshold overrides of harness advise's decision rules")


class LoadedSuite:
    """A validated suite with the positions of its keys, for error messages later on."""

    def __init__(self, suite: Suite, path: Path, positions: Positions) -> None:
        self.suite = suite
        self.path = path
        self.positions = positions

    @property
    def dir(self) -> Path:
        return self.path.parent

    def where(self, loc: Loc) -> str:
        return self.positions.where(loc)

    def resolve_path(self, raw: str, loc: Loc) -> Path:
        """Resolve a data path: ``${data}/x`` against the data folder, others against the suite."""
        from harness.lib.data import resolve_data_path

        try:
            return resolve_data_path(raw, self.dir)
        except ConfigError as exc:
            raise ConfigError(f"{self.where(loc)}: {exc}") from None


def format_validation(exc: ValidationError, positions: Positions, prefix: Loc) -> str:
    # A typo shows up as an unknown key *and* a missing one: name the unknown key first.
    err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc: Loc = prefix + tuple(p for p in err["loc"] if p != "options")
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    else:
        msg = err["msg"]
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{positions.where(loc)}: {dotted}: {msg}{more}"


def load_suite(path: Path | str) -> LoadedSuite:
    """Read and validate a suite file; raise ``ConfigError`` naming ``file:line`` on any problem."""
    from harness.suite.rules import parse_rule

    path = Path(path)
    data, positions = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a suite must be a mapping of keys to values")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, positions, ())) from None
    loaded = LoadedSuite(suite, path, positions)
    if suite.forgetting is not None and suite.train is None:
        raise ConfigError(f"{loaded.where(('forgetting',))}: forgetting: needs a 'train' stage to draw a curve")
    check_arms(loaded)
    check_seeds(loaded)
    for gate_name, gate in suite.gates.items():
        label = gate.benchmark or gate_name
        if label not in suite.evaluate:
            known = ", ".join(sorted(suite.evaluate)) or "none"
            raise ConfigError(
                f"{loaded.where(('gates', gate_name))}: gates.{gate_name}: no benchmark "
                f"{label!r} under 'evaluate'; available: {known}"
            )
        try:
            parse_rule(gate.rule)
        except ConfigError as exc:
            raise ConfigError(f"{loaded.where(('gates', gate_name))}: gates.{gate_name}: {exc}") from None
    return loaded




def check_seeds(loaded: LoadedSuite) -> None:
    """``train.seeds``: at least one seed, each once, and the suite's candidate is ``trained``
    (the arm the seeds multiply); ``ConfigError`` naming ``file:line`` otherwise."""
    train = loaded.suite.train
    if train is None or train.seeds is None:
        return
    where = loaded.where(("train", "seeds"))
    if not train.seeds:
        raise ConfigError(f"{where}: train.seeds: an empty list; give at least one seed (or remove the key)")
    twice = sorted({s for s in train.seeds if train.seeds.count(s) > 1})
    if twice:
        raise ConfigError(f"{where}: train.seeds: seed {twice[0]} is listed twice")
    candidate = loaded.suite.candidate
    if candidate is not None and candidate != "trained":
        raise ConfigError(
            f"{loaded.where(('candidate',))}: candidate: train.seeds trains one candidate per seed, so the "
            f"candidate must be 'trained', not {candidate!r}"
        )

"""Arms: the named models a suite compares.

A suite's ``models:`` maps a name to an arm: a model folder or an embedded model (``source``), a
peft adapter folder on the base model (``adapter``), an endpoint (``backend: openai``), or a
prompt variant of another arm (``of`` + ``prompt``).  Two names are reserved: ``base`` is the
suite's ``model:`` and ``trained`` is this run's trainer output (only when ``train:`` is set).
``baseline:`` and ``candidate:`` name the arms the gates compare (defaults ``base`` and
``trained``); a gate may name its own pair.

Results are keyed by a *label* per arm: the suite's baseline arm is ``baseline`` and its candidate
``candidate`` (as before arms existed, so reports and stored runs read the same); any other arm a
gate uses is keyed by its own name.  Those two labels are therefore not valid arm names.

This module checks what can be checked from the file alone (unknown names, cycles, ``trained``
without ``train:``), each error naming ``file:line``; the run plan builds each arm's backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from pydantic import Field, model_validator

from harness.errors import ConfigError
from harness.lib.prompting import PromptSpec
from harness.lib.refs import StrictModel

BASE = "base"
TRAINED = "trained"
RESERVED = frozenset({BASE, TRAINED})
RESULT_LABELS = ("baseline", "candidate")
"""The result labels of the suite's baseline and candidate arms (never arm names)."""


class ArmSpec(StrictModel):
    """One named model: a source (folder or embedded name), an adapter, an endpoint, or a prompt
    variant of another arm.  A string is short for ``{source: ...}``."""

    source: str | None = Field(None, description="a model folder or an embedded model's name; default: the base model's")
    adapter: str | None = Field(None, description="a peft adapter folder (trained anywhere) applied to the source")
    backend: str | None = Field(None, description="the backend that serves this arm; default: the base model's")
    backend_options: dict[str, Any] | None = Field(
        None, description="the backend's options; default: the base model's when the backend is the same"
    )
    dtype: Literal["auto", "float32", "bfloat16"] | None = Field(None, description="default: the base model's")
    of: str | None = Field(None, description="the arm this one is a prompt variant of (needs 'prompt')")
    prompt: PromptSpec | None = Field(None, description="system prompt, seeded shots or nearest examples")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _kind(self) -> ArmSpec:
        if self.of is not None:
            own = [k for k in ("source", "adapter", "backend", "backend_options", "dtype") if getattr(self, k) is not None]
            if own:
                raise ValueError(f"a prompt variant ('of') uses its inner arm's model; it takes no {', '.join(own)}")
            if self.prompt is None:
                raise ValueError("'of' makes a prompt variant: add 'prompt' (system, shots or nearest)")
        elif self.prompt is not None:
            raise ValueError("'prompt' needs 'of': the arm whose model the variant prompts")
        return self

    @property
    def is_variant(self) -> bool:
        return self.of is not None


class GateArms(Protocol):
    """What this module reads of a gate (``harness.suite.config.GateSpec``)."""

    @property
    def baseline(self) -> str | None: ...
    @property
    def candidate(self) -> str | None: ...


class Suite(Protocol):
    """What this module reads of a suite (``harness.suite.config.Suite``, which imports this
    module: a protocol keeps the two free of an import cycle)."""

    @property
    def models(self) -> Mapping[str, ArmSpec]: ...
    @property
    def baseline(self) -> str: ...
    @property
    def candidate(self) -> str | None: ...
    @property
    def train(self) -> object: ...
    @property
    def gates(self) -> Mapping[str, GateArms]: ...


class LoadedSuite(Protocol):
    """A suite with the positions of its keys (``harness.suite.config.LoadedSuite``)."""

    @property
    def suite(self) -> Suite: ...
    def where(self, loc: tuple[str | int, ...]) -> str: ...


def candidate_arm(suite: Suite) -> str | None:
    """The suite's candidate arm: ``candidate:``, else ``trained`` when the suite trains."""
    if suite.candidate is not None:
        return suite.candidate
    return TRAINED if suite.train is not None else None


def arm_label(suite: Suite, arm: str) -> str:
    """The key of ``arm``'s results: ``baseline``/``candidate`` for the suite's pair, else its name."""
    if arm == suite.baseline:
        return "baseline"
    if arm == candidate_arm(suite):
        return "candidate"
    return arm


def gate_arms(suite: Suite, gate_name: str) -> tuple[str, str | None]:
    """The (baseline, candidate) arms a gate compares."""
    gate = suite.gates[gate_name]
    return gate.baseline or suite.baseline, gate.candidate or candidate_arm(suite)


def declared(suite: Suite) -> set[str]:
    """Every arm name the suite can use: its ``models`` and the reserved ones that exist."""
    return set(suite.models) | {BASE} | ({TRAINED} if suite.train is not None else set())


def used_arms(suite: Suite) -> list[str]:
    """The arms evaluated, in order: baseline, candidate, then the gates' own arms.  A variant's
    inner arm is not among them unless named itself (the variant needs its model, not its results)."""
    order: list[str] = [suite.baseline]
    cand = candidate_arm(suite)
    if cand is not None:
        order.append(cand)
    for gate_name in suite.gates:
        order.extend(a for a in gate_arms(suite, gate_name) if a is not None)
    return list(dict.fromkeys(order))


def root_of(suite: Suite, arm: str) -> str:
    """The arm whose model ``arm`` runs on (itself unless it is a prompt variant)."""
    while arm in suite.models and suite.models[arm].of is not None:
        arm = str(suite.models[arm].of)
    return arm


def variant_chain(suite: Suite, arm: str) -> list[PromptSpec]:
    """The prompt variants from the root model out to ``arm`` (innermost first)."""
    chain: list[PromptSpec] = []
    while arm in suite.models and suite.models[arm].of is not None:
        spec = suite.models[arm]
        assert spec.prompt is not None
        chain.append(spec.prompt)
        arm = str(spec.of)
    return chain[::-1]


def check_arms(loaded: LoadedSuite) -> None:
    """Load-time checks of the arms and the names that refer to them; ``ConfigError`` naming
    ``file:line`` on the first problem."""
    suite = loaded.suite
    for name in suite.models:
        if name in RESERVED or name in RESULT_LABELS:
            why = "is reserved" if name in RESERVED else "is a result label"
            raise ConfigError(f"{loaded.where(('models', name))}: models.{name}: the name {name!r} {why}; choose another")
    known = declared(suite)
    for name, spec in suite.models.items():
        if spec.of is not None:
            _check_name(loaded, ("models", name, "of"), spec.of, known)
    _check_cycles(loaded)
    _check_name(loaded, ("baseline",), suite.baseline, known)
    if suite.candidate is not None:
        _check_name(loaded, ("candidate",), suite.candidate, known)
    for gate_name, gate in suite.gates.items():
        for role in ("baseline", "candidate"):
            value = getattr(gate, role)
            if value is not None:
                _check_name(loaded, ("gates", gate_name, role), value, known)
        base, cand = gate_arms(suite, gate_name)
        if base == cand:
            where = loaded.where(("gates", gate_name))
            raise ConfigError(f"{where}: gates.{gate_name}: compares arm {base!r} with itself")


def _check_name(loaded: LoadedSuite, loc: tuple[str, ...], name: str, known: set[str]) -> None:
    if name in known:
        return
    dotted = ".".join(loc)
    where = loaded.where(loc)
    if name == TRAINED:
        raise ConfigError(f"{where}: {dotted}: arm 'trained' needs a 'train' stage (this suite trains nothing)")
    raise ConfigError(f"{where}: {dotted}: unknown arm {name!r}; available: {', '.join(sorted(known))}")


def _check_cycles(loaded: LoadedSuite) -> None:
    models = loaded.suite.models
    for start in models:
        path, arm = [start], start
        while arm in models and models[arm].of is not None:
            arm = str(models[arm].of)
            if arm in path:
                cycle = " -> ".join([*path[path.index(arm):], arm])
                raise ConfigError(f"{loaded.where(('models', start, 'of'))}: models.{start}.of: a cycle of prompt variants: {cycle}")
            path.append(arm)

"""The arms of a run plan: every arm the gates use, each with its own backend built and checked
before any work.

An arm's backend is the base model's unless the arm names another; its options are the base
model's when the backend is the same and the arm gives none.  A prompt variant runs on its root
arm's backend and model.  Checked here (each problem naming ``file:line``): the backend's
options and its own readiness (an ``openai`` API key variable that is unset), a model folder's
files, an adapter folder trained on another base model (naming both), a benchmark that needs what
an arm's backend cannot do, a suite that gates without a candidate, and a data block that nothing
uses.  Arms declared but used by no gate are a note.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.lib.prompting import PromptSpec
from harness.lib.refs import ComponentRef
from harness.lib.models import ModelRef, resolve_model
from harness.plugin.components import Backend, Benchmark
from harness.plugin.registry import narrow
from harness.suite.arms import BASE, TRAINED, arm_label, candidate_arm, root_of, used_arms, variant_chain
from harness.suite.config import LoadedSuite
from harness.suite.preflight import Problem, check_model_reference
from harness.suite.yamlpos import Loc


@dataclass(frozen=True)
class ArmPlan:
    """One arm, ready to run: its result label, its backend (a variant's is its root's), the model
    to load (``source`` and ``adapter``; ``None`` source: the base model's) and its prompt
    variants from the root outwards."""

    name: str
    label: str
    root: str
    backend: Backend
    loc: Loc
    source: str | None = None
    adapter: Path | None = None
    dtype: str = "auto"
    prompts: tuple[PromptSpec, ...] = ()

    @property
    def needs_examples(self) -> bool:
        return any(p.needs_examples for p in self.prompts)


def needs_curation(loaded: LoadedSuite) -> bool:
    """Whether the run curates its data: to train, or to draw a used prompt variant's examples."""
    suite = loaded.suite
    return suite.train is not None or any(
        any(p.needs_examples for p in variant_chain(suite, arm)) for arm in used_arms(suite)
    )


def plan_arms(
    loaded: LoadedSuite,
    base_backend: Backend | None,
    build: Callable[[str, ComponentRef, Loc], Backend],
    found: list[HarnessError],
    notes: list[str],
) -> dict[str, ArmPlan]:
    """Every arm the run evaluates (and the roots of its variants), by name; problems are added to
    ``found`` and declared-but-unused arms to ``notes``.  ``build(kind, ref, loc)`` builds a
    component as the plan does."""
    suite = loaded.suite
    _check_roles(loaded, found)
    used = used_arms(suite)
    unused = sorted(set(suite.models) - {a for u in used for a in _lineage(loaded, u)})
    notes.extend(f"{loaded.where(('models', name))}: models.{name}: declared but no gate compares it" for name in unused)
    if base_backend is None:
        return {}
    roots: dict[str, ArmPlan] = {}
    broken: set[str] = set()
    arms: dict[str, ArmPlan] = {}
    for arm in used:
        root = root_of(suite, arm)
        if root in broken:
            continue
        if root not in roots:
            try:
                roots[root] = _root(loaded, root, base_backend, build)
            except HarnessError as exc:  # reported once, however many variants run on it
                found.append(exc)
                broken.add(root)
                continue
        chain = tuple(variant_chain(suite, arm))
        where: Loc = ("models", arm) if arm in suite.models else roots[root].loc
        arms[arm] = ArmPlan(
            arm, arm_label(suite, arm), root, roots[root].backend, where,
            roots[root].source, roots[root].adapter, roots[root].dtype, chain,
        )  # fmt: skip
    return arms


def arm_groups(arms: Mapping[str, ArmPlan]) -> dict[str, list[ArmPlan]]:
    """The arms grouped by the model they run on (root first when it is used itself), so that
    each model is loaded once and its variants reuse it."""
    grouped: dict[str, list[ArmPlan]] = {}
    for arm in arms.values():
        grouped.setdefault(arm.root, []).append(arm)
    return {root: sorted(group, key=lambda a: a.name != root) for root, group in grouped.items()}


def declared_model(loaded: LoadedSuite, arm: ArmPlan) -> ModelRef:
    """The model of a root arm declared under ``models:`` (a folder, an adapter on a source, or
    the local tokenizer folder of an endpoint), labelled as the results name its arm.  A source
    that does not resolve is an error naming ``models.<root>`` at its ``file:line``.  The run and
    ``harness shadow --suite`` both load such arms through here."""
    if arm.source is None:
        raise ValueError(f"arm {arm.name!r} declares no model of its own")
    try:
        ref = resolve_model(arm.source, arm.backend.name, arm.dtype, loaded.dir)
    except HarnessError as exc:
        raise type(exc)(f"{loaded.where(('models', arm.root))}: models.{arm.root}: {exc}") from None
    label = arm_label(loaded.suite, arm.root)
    return ref.with_adapter(label, arm.adapter) if arm.adapter is not None else replace(ref, label=label)


def _lineage(loaded: LoadedSuite, arm: str) -> list[str]:
    out = [arm]
    while arm in loaded.suite.models and loaded.suite.models[arm].of is not None:
        arm = str(loaded.suite.models[arm].of)
        out.append(arm)
    return out


def _check_roles(loaded: LoadedSuite, found: list[HarnessError]) -> None:
    """A suite that gates needs a candidate; a data block needs a user (training or examples)."""
    suite = loaded.suite
    if suite.gates and candidate_arm(suite) is None:
        first = next(iter(suite.gates))
        found.append(ConfigError(
            f"{loaded.where(('gates', first))}: gates: nothing to gate: the suite trains nothing ('train') and "
            "names no 'candidate' arm (a model folder, an adapter or an endpoint under 'models')"
        ))
    if suite.data and not needs_curation(loaded):
        found.append(ConfigError(
            f"{loaded.where(('data',))}: data: nothing uses it: the suite trains nothing ('train') and no "
            "prompt variant it compares draws examples ('shots' or 'nearest'); remove it or add one"
        ))
    for arm in used_arms(suite):
        if any(p.needs_examples for p in variant_chain(suite, arm)) and not suite.data:
            found.append(ConfigError(
                f"{loaded.where(('models', arm))}: models.{arm}.prompt: draws examples from the training data, "
                "but the suite has no 'data'"
            ))


def _root(loaded: LoadedSuite, name: str, base_backend: Backend, build: Callable[[str, ComponentRef, Loc], Backend]) -> ArmPlan:
    """A model arm: ``base``, ``trained`` or a ``models`` entry without ``of``."""
    suite = loaded.suite
    dtype = suite.model.dtype
    if name in (BASE, TRAINED):
        loc: Loc = ("model",) if name == BASE else ("train",)
        return ArmPlan(name, arm_label(suite, name), name, base_backend, loc, suite.model.source, None, dtype)
    spec = suite.models[name]
    loc = ("models", name)
    backend_name = spec.backend or suite.model.backend
    options = spec.backend_options
    if options is None:
        options = suite.model.backend_options if backend_name == suite.model.backend else {}
    backend = _backend(loaded, build, backend_name, options, loc)
    source = spec.source or suite.model.source
    problems: list[Problem] = []
    if backend.reads_model_folder:
        problems += check_model_reference(source, loaded.dir, where=loaded.where(loc + (("source",) if spec.source else ())))
    adapter = _adapter(loaded, spec.adapter, source, loc) if spec.adapter is not None else None
    if problems:
        raise ConfigError(str(problems[0]))
    return ArmPlan(name, arm_label(suite, name), name, backend, loc, source, adapter, spec.dtype or dtype)


def _backend(
    loaded: LoadedSuite, build: Callable[[str, ComponentRef, Loc], Backend], name: str, options: dict[str, object], loc: Loc
) -> Backend:
    """The arm's backend; an error its constructor raises (an unset API key variable) names the arm."""
    try:
        return narrow(build("backend", ComponentRef(name=name, options=dict(options)), loc), Backend)
    except HarnessError as exc:
        text = str(exc)
        if text.startswith(str(loaded.path)):
            raise
        dotted = ".".join(map(str, loc))
        raise type(exc)(f"{loaded.where(loc)}: {dotted}: {text}") from None


def _adapter(loaded: LoadedSuite, raw: str, source: str, loc: Loc) -> Path:
    """The adapter folder: it exists, holds a peft adapter, and was trained on ``source``."""
    from harness.lib.models import adapter_base_mismatch

    where = loaded.where(loc + ("adapter",))
    dotted = ".".join(map(str, loc)) + ".adapter"
    path = Path(raw) if Path(raw).is_absolute() else loaded.dir / raw
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"{where}: {dotted}: {path} is not a peft adapter folder (no adapter_config.json)")
    why = adapter_base_mismatch(path, source, loaded.dir)
    if why is not None:
        raise ConfigError(f"{where}: {dotted}: {why}")
    return path


def check_arm_capabilities(
    loaded: LoadedSuite, arms: Mapping[str, ArmPlan], benchmarks: Mapping[Loc, Benchmark], found: list[HarnessError]
) -> None:
    """A benchmark that needs what an arm's backend cannot do, or that a prompt variant cannot
    change (raw text), is a problem naming both (the base model's backend is checked by the plan
    itself)."""
    from harness.lib.prompting import check_variant_benchmark

    seen: set[int] = set()
    for arm in arms.values():
        for loc, bench in benchmarks.items():
            dotted = ".".join(map(str, loc))
            why = check_variant_benchmark(bench.name, bench.required_capabilities()) if arm.prompts else None
            if why is not None:
                found.append(ConfigError(f"{loaded.where(loc)}: {dotted}: {why} (arm {arm.name!r})"))
        if arm.root in (BASE, TRAINED) or id(arm.backend) in seen:
            continue
        seen.add(id(arm.backend))
        for loc, bench in benchmarks.items():
            missing = arm.backend.capabilities.missing(bench.required_capabilities())
            if missing:
                dotted = ".".join(map(str, loc))
                found.append(ConfigError(
                    f"{loaded.where(loc)}: {dotted}: benchmark {bench.name!r} needs {', '.join(missing)}, which "
                    f"backend {arm.backend.name!r} of arm {arm.root!r} does not provide"
                ))


# ------------------------------------------------------------------- in the run's result


def describe_arms(
    arms: Mapping[str, ArmPlan], refs: Mapping[str, ModelRef | None], base_backend: str, train: ComponentRef | None
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Per result label, each evaluated arm's description, naming the arm first and the
    fingerprint last (``few8 (prompt {'shots': 8}): PATH [fingerprint]``), and its entry for
    ``RunResult.arms``; an arm without a model (its training failed) is left out."""
    models: dict[str, str] = {}
    entries: dict[str, dict[str, str]] = {}
    for arm in arms.values():
        ref = refs.get(arm.root)
        if ref is None:
            continue
        extras = [f"prompt {p.model_dump(exclude_defaults=True)}" for p in arm.prompts]
        extras += [f"via {arm.backend.name}"] if arm.backend.name != base_backend else []
        more = f" ({'; '.join(extras)})" if extras else ""
        models[arm.label] = f"{arm.name}{more}: {ref.describe()}"
        entries[arm.label] = _arm_entry(arm, train)
    return models, entries


def _arm_entry(arm: ArmPlan, train: ComponentRef | None) -> dict[str, str]:
    """An arm's name, backend and, where it is plain, its kind (``prompting``: the base model or a
    prompt variant; ``lora`` / ``full``: a trained model or an adapter)."""
    entry = {"name": arm.name, "backend": arm.backend.name}
    if arm.prompts or arm.root == BASE:
        entry["kind"] = "prompting"
    elif arm.root == TRAINED and train is not None and train.name in ("lora", "full"):
        entry["kind"] = train.name
    elif arm.adapter is not None:
        entry["kind"] = "lora"
    return entry

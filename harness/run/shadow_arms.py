"""A suite's arms as the two sides of a shadow test (``harness shadow --suite S``).

The arms are resolved exactly as ``harness run`` resolves them: the suite's plan is built (so each
arm's backend, model folder, adapter and API key are checked before any request is sent), an
endpoint arm is the same endpoint, and a prompt variant wraps its root model with the same system
prompt and examples (a variant that draws examples curates the suite's data for its pool, as the
run does).  ``trained`` is the model a stored run of the suite gated: its adapter or model folder
(the forgetting curve's selected checkpoint where the run selected one), checked against the
fingerprint the run recorded, so the shadow test replays traffic against the model the gate saw.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.lib.model_api import ModelAPI, model_api
from harness.lib.models import ModelRef, resolve_model
from harness.lib.resultdoc import find_run
from harness.lib.store import Store
from harness.plugin.components import Backend
from harness.plugin.registry import Registries
from harness.run.arms import ArmPlan, declared_model
from harness.run.plan import plan_run
from harness.stages.curate import curate
from harness.stages.evaluate import PromptVariant
from harness.suite.arms import BASE, TRAINED, arm_label, candidate_arm
from harness.suite.config import LoadedSuite


@dataclass(frozen=True)
class SuiteArm:
    """One side of a shadow test taken from a suite: the arm's backend, its model, and its
    prompt variants (``None`` for a plain model)."""

    label: str
    backend: Backend
    ref: ModelRef
    variant: PromptVariant | None = None

    def load(self) -> ModelAPI:
        """The arm's model API, seen through its prompt variants."""
        model = self.backend.load(self.ref)
        if self.variant is not None:
            model = self.variant.wrap(model)
        return model_api(model)


def default_arms(loaded: LoadedSuite) -> tuple[str, str | None]:
    """The suite's own baseline and candidate arms."""
    return loaded.suite.baseline, candidate_arm(loaded.suite)


def suite_arms(
    loaded: LoadedSuite, registries: Registries, names: tuple[str, str], store_dir: Path, run: str
) -> tuple[SuiteArm, SuiteArm]:
    """The two arms ``names`` of ``loaded`` (``trained`` from the stored run ``run``), planned and
    checked; a one-line error naming the suite for an arm it does not evaluate."""
    plan = plan_run(loaded, registries, store_dir / "work", store_dir=store_dir)
    for name in names:
        if name not in plan.arms:
            known = ", ".join(sorted(plan.arms)) or "none"
            raise ConfigError(f"{loaded.path}: no arm {name!r} that the suite evaluates (its arms: {known})")
    pool: tuple[Any, ...] = ()
    if any(plan.arms[n].needs_examples for n in names):
        assert plan.curate is not None  # a variant drawing examples makes the plan curate
        pool = tuple(curate(plan.curate).records)
    return (
        _arm(loaded, plan.arms[names[0]], store_dir, run, pool),
        _arm(loaded, plan.arms[names[1]], store_dir, run, pool),
    )


def _arm(
    loaded: LoadedSuite, arm: ArmPlan, store_dir: Path, run: str, pool: tuple[Any, ...]
) -> SuiteArm:
    suite = loaded.suite
    model = suite.model
    if arm.root == TRAINED:
        ref = trained_model(loaded, store_dir, run)
    elif arm.root == BASE:
        ref = resolve_model(model.source, model.backend, model.dtype, loaded.dir)
    else:
        ref = declared_model(loaded, arm)
    variant = PromptVariant(arm.prompts, pool, suite.seed) if arm.prompts else None
    return SuiteArm(arm.name, arm.backend, replace(ref, label=arm_label(suite, arm.root)), variant)


def trained_model(loaded: LoadedSuite, store_dir: Path, run: str) -> ModelRef:
    """The model the stored run ``run`` of the suite trained and gated, as a reference on the
    suite's base model; an error when the run trained nothing, its output is gone, or the folder
    changed since the run (another fingerprint)."""
    if not (store_dir / "store.sqlite").is_file():
        raise ConfigError(f"{store_dir}: no harness store: run the suite first ('harness run {loaded.path}')")
    store = Store(store_dir)
    try:
        run_id = find_run(store, run)
        doc = store.load_result(run_id)
    finally:
        store.close()
    where = f"{store_dir / 'store.sqlite'}: run {run_id}"
    train = (doc or {}).get("train")
    if doc is None or not train:
        raise ConfigError(f"{where}: no trained model (the run trained nothing, or its training failed)")
    forgetting = doc.get("forgetting") or {}
    path = Path(forgetting.get("selected_path") or train["path"])
    if not path.is_dir():
        raise ConfigError(f"{where}: the trained model {path} is gone (run the suite again)")
    model = loaded.suite.model
    ref = resolve_model(model.source, model.backend, model.dtype, loaded.dir).derived("candidate", path)
    recorded = _recorded_fingerprint(doc)
    if recorded is not None and not ref.fingerprint.startswith(recorded):
        raise ConfigError(
            f"{where}: {path} changed since the run gated it (fingerprint {ref.fingerprint[:12]}, "
            f"the run recorded {recorded})"
        )
    return ref


def _recorded_fingerprint(doc: dict[str, Any]) -> str | None:
    """The short fingerprint the run printed for its candidate (``... [abcdef012345]``)."""
    text = (doc.get("models") or {}).get("candidate")
    if not isinstance(text, str) or not text.endswith("]") or "[" not in text:
        return None
    return text.rsplit("[", 1)[1][:-1]
